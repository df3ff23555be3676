"""Benchmark: apviz under exhibit load in the lab, and its memory with 100k flows.

Run as root from the repository root: ``.venv/bin/python bench/steady.py [--seconds 60]``.
This process brings up a lab (30 quiet phones) and drives it; apviz runs as a separate process
(this file with ``--serve FILE``: exactly what ``apviz serve`` runs, with the configuration
``apviz lab --view serve`` uses, the conntrack refresh at the real default of 10 s), so that
``/proc/PID`` gives apviz's own CPU time and RSS.

Exhibit load: the phones open about 3,000 TCP connections to the lab's world (each name resolved
through the gateway's dnsmasq, so the log follower works too) and keep them open; then for the
measured window ~50 new connections a second, each held ``--lifetime`` seconds, while the prefilled
ones end spread over that lifetime, so about 3,000 stay open throughout; 20 SSE clients follow
``/events``. Then 100k UDP flows from a phone that joins for it (LAN flows through the gateway, as
a busy real gateway would have) fill the gateway's conntrack, and apviz's RSS is read once it holds
them all; the flows counted are that phone's (its ``connections`` in the view), not the table's.

``pass`` needs, besides the CPU and memory targets: no failed connection; every SSE client
connected and none lost; no snapshot sent because a client fell behind (``catch_up_snapshots``,
also apviz's ``apviz_dropped_events_total``); no conntrack resync in the measured window; the
connections actually made in the window at the target rate (less one second's worth, the window's
edge); at most one second's worth of connections still queued or in flight when the CPU window
closes (else the load generator, not apviz, set the pace); and the 100k flows all in apviz.

Progress goes to stderr; the last line on stdout is one JSON object. Exit code 0 even when a
target is missed (``"pass": false`` says so); non-zero only when the benchmark itself fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apviz.lab.lab import Lab
    from apviz.lab.phone import Phone

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import cpu_seconds, free_port, metrics, rss_mb, serve_logging  # noqa: E402
from bench.fanout import Stats, sse_client  # noqa: E402

TARGET_CPU_PCT = 10.0
TARGET_RSS_MB = 150.0
TARGET_RSS_100K_MB = 300.0
NAMES = (
    "graph.facebook.com",
    "www.google.com",
    "static.criteo.net",
    "googleads.g.doubleclick.net",
    "youtube.com",
    "gateway.icloud.com",
    "mc.yandex.ru",
    "login.microsoftonline.com",
)
FLOOD_SCRIPT = """
import socket, struct, sys, time
n, base = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ntoa, pack, send = socket.inet_ntoa, struct.pack, s.sendto
for i in range(base, base + n):  # flow i: 198.18.0.1 + i // 250, port 20000 + i % 250
    send(b"x", (ntoa(pack("!I", 0xC6120001 + i // 250)), 20000 + i % 250))
    if i % 500 == 499:
        time.sleep(0.002)  # let the bridge and the gateway keep up: a lost datagram is a lost flow
"""
FLOOD_ENTRY = re.compile(r"^udp .*? dst=198\.1[89]\.\d+\.\d+ sport=\d+ dport=20[0-2]\d\d ", re.M)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- server


def serve(config_file: Path) -> None:
    """``apviz serve`` with a configuration written by the conductor (SIGTERM ends it cleanly)."""
    from apviz.config import from_dict
    from apviz.server.run import serve as run

    serve_logging()
    cfg = from_dict(json.loads(config_file.read_text()), env={})
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(cfg))


# ------------------------------------------------------------------------------------------- clients


class Followers:
    """``n`` SSE clients on their own event loop in a thread, so the load generator can block."""

    def __init__(self, port: int, n: int) -> None:
        self.stats = Stats()
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.port, self.n = port, n
        self.thread = threading.Thread(target=self._run, name="sse-clients", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            await asyncio.gather(*(sse_client(self.port, self.stats, self.stop) for _ in range(self.n)))

        self.loop.run_until_complete(main())

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while self.stats.connected < self.n and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=5)  # each client notices at its next delta


# ------------------------------------------------------------------------------------------- load


class Load:
    """Connections from the phones: a prefill, then a steady rate of new ones."""

    def __init__(self, lab: Lab, seed: int = 1) -> None:
        self.lab = lab
        self.rng = random.Random(seed)
        self.pool = ThreadPoolExecutor(max_workers=2 * len(lab.phones))
        self.started = 0  # jobs submitted
        self.made = 0  # connections made (the phone's helper connected and moved the bytes)
        self.failed = 0
        self._lock = threading.Lock()

    def _one(self, index: int, hold: float) -> None:
        phone = self.lab.phones[index % len(self.lab.phones)]
        name = NAMES[index % len(NAMES)]
        try:
            self.lab.phone_connect(phone, name, 2000, upload=200, hold=max(hold, 0.5), timeout=30)
        except Exception as exc:  # counted and reported: a lost connection is a smaller load
            with self._lock:
                self.failed += 1
            if self.failed <= 3:
                say(f"connect failed: {exc}")
        else:
            with self._lock:
                self.made += 1

    def backlog(self) -> int:
        """Connections submitted but not yet made or failed (queued or in flight)."""
        with self._lock:
            return self.started - self.made - self.failed

    def prefill(self, n: int, lifetime: float, budget: float) -> float:
        """``n`` connections that end spread over ``lifetime`` seconds after ``budget`` from now."""
        ends_from = time.monotonic() + budget
        futures = []
        for i in range(n):
            end = ends_from + self.rng.uniform(0, lifetime)
            futures.append(self.pool.submit(lambda i=i, end=end: self._one(i, end - time.monotonic())))
            with self._lock:
                self.started += 1
        for f in futures:
            f.result()
        return ends_from

    def steady(self, rate: float, lifetime: float, until: float) -> None:
        """Start ``rate`` connections a second, each held ``lifetime`` s, until ``until`` (monotonic)."""
        index = self.started
        due = time.monotonic()
        while due < until:
            with self._lock:
                self.started += 1
            self.pool.submit(self._one, index, lifetime)
            index += 1
            due += 1.0 / rate
            time.sleep(max(0.0, due - time.monotonic()))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------- conductor


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"apviz exited with {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("apviz did not become healthy")


def udp_entries(lab: Lab, phone: Phone) -> int:
    """The gateway's conntrack entries of the flood: UDP from ``phone`` to ports 20000-20249.

    Not every UDP entry: the phones' DNS lookups through the gateway are UDP entries too.
    """
    out = lab.exec_in(
        lab.gateway_ns, ["conntrack", "-L", "-p", "udp", "-s", str(phone.ip)], timeout=120
    ).stdout
    return len(FLOOD_ENTRY.findall(out))


def view_connections(port: int, hostname: str) -> int | None:
    """``connections`` of the device labelled ``hostname`` in apviz's view (home mode: hostnames)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=60) as resp:
        devices = json.loads(resp.read())["view"]["devices"]
    found = [d["connections"] for d in devices.values() if d["label"] == hostname]
    return found[0] if len(found) == 1 else None


def flood(lab: Lab, phone: Phone, total: int) -> int:
    """UDP flows from ``phone`` through the gateway until its conntrack holds ``total`` UDP entries."""
    sent = 0
    count = udp_entries(lab, phone)
    for _ in range(5):
        if count >= total:
            break
        batch = total - count
        lab.exec_in(phone.ns, [sys.executable, "-c", FLOOD_SCRIPT, str(batch), str(sent)], timeout=300)
        sent += batch
        count = udp_entries(lab, phone)
    return count


def run(args: argparse.Namespace) -> dict[str, object]:
    from apviz.lab.lab import Lab
    from apviz.lab.serve import lab_config

    result: dict[str, object] = {"bench": "steady"}
    lab = Lab(phones=args.phones, traffic=False)
    server: subprocess.Popen | None = None
    followers: Followers | None = None
    load: Load | None = None
    try:
        lab.start()
        # UDP flows without answers live 30 s in conntrack; the 100k phase needs them to stay.
        lab.exec_in(lab.gateway_ns, ["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_udp_timeout=600"])
        port = free_port()
        cfg = lab_config(
            lab,
            port,
            sources={"conntrack_refresh": args.refresh},
            server={"max_streams_per_address": 64},
        )
        conf = Path(tempfile.mkstemp(prefix="apviz-steady-", suffix=".json", dir=lab.run_dir)[1])
        conf.write_text(json.dumps(asdict(cfg)))
        server = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(conf)], cwd=ROOT
        )
        wait_healthy(port, server)
        say(f"lab {lab.prefix} with {len(lab.phones)} phones; apviz pid {server.pid} on :{port}")
        followers = Followers(port, args.clients)
        followers.start()
        load = Load(lab)
        t = time.monotonic()
        ends_from = load.prefill(args.open_flows, args.lifetime, budget=args.prefill_budget)
        say(f"prefilled {args.open_flows} connections in {time.monotonic() - t:.1f} s ({load.failed} failed)")
        time.sleep(max(0.0, ends_from - time.monotonic()))
        time.sleep(2.0)  # apviz has applied the prefill
        before = metrics(port)
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
        deltas0 = followers.stats.deltas
        made0 = load.made
        rss_peak = 0.0
        stop_at = t0 + args.seconds
        sampler_stop = threading.Event()

        def sample() -> None:
            nonlocal rss_peak
            while not sampler_stop.wait(1.0):
                rss_peak = max(rss_peak, rss_mb(server.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        say(f"measuring {args.seconds:.0f} s at {args.rate:.0f} new connections/s")
        load.steady(args.rate, args.lifetime, stop_at)
        cpu1, t1 = cpu_seconds(server.pid), time.monotonic()
        made, backlog = load.made - made0, load.backlog()
        sampler_stop.set()
        sampler.join()
        rss_end = rss_mb(server.pid)
        after = metrics(port)
        cpu_pct = 100 * (cpu1 - cpu0) / (t1 - t0)
        rss = max(rss_peak, rss_end)
        stats = followers.stats
        lost = len(stats.errors)  # a client whose stream ended or failed
        catch_up = stats.snapshots - stats.connected  # each client's first snapshot is not one
        result.update(
            phones=len(lab.phones),
            sse_clients=stats.connected,
            sse_clients_lost=lost,
            sse_errors=stats.errors[:3],
            catch_up_snapshots=catch_up,
            dropped_updates=int(after["apviz_dropped_events_total"] - before["apviz_dropped_events_total"]),
            seconds=round(t1 - t0, 1),
            connections_made=made,
            new_flows_per_s=round(made / (t1 - t0), 1),
            target_new_flows_per_s=args.rate,
            queued_at_window_end=backlog,
            flows_open_start=int(before["apviz_flows_open"]),
            flows_open_end=int(after["apviz_flows_open"]),
            connect_failures=load.failed,
            resyncs_in_window=int(after["apviz_resyncs_total"] - before["apviz_resyncs_total"]),
            deltas_per_client_per_s=round((stats.deltas - deltas0) / args.clients / (t1 - t0), 2),
            cpu_pct=round(cpu_pct, 1),
            rss_mb=round(rss, 1),
            target_cpu_pct=TARGET_CPU_PCT,
            target_rss_mb=TARGET_RSS_MB,
        )
        say(f"cpu {cpu_pct:.1f} % of one core, rss {rss:.0f} MB, open flows {result['flows_open_end']}")
        say(f"{made} connections made in the window, {backlog} still queued or in flight")
        load.close()
        load = None
        checks = {
            "cpu": cpu_pct <= TARGET_CPU_PCT,
            "rss": rss <= TARGET_RSS_MB,
            "connect_failures": result["connect_failures"] == 0,
            "sse_clients": stats.connected == args.clients and lost == 0,
            "catch_up_snapshots": catch_up == 0 and result["dropped_updates"] == 0,
            "resyncs": result["resyncs_in_window"] == 0,
            "rate": made >= args.rate * (args.seconds - 1.0),
            "queued": backlog <= args.rate,
        }

        if args.flows_100k:
            flooder = lab.add_phone(traffic=False)  # its only connections are the flood's
            say(f"filling the gateway's conntrack with {args.flows_100k} UDP flows from {flooder.hostname}")
            t = time.monotonic()
            entries = flood(lab, flooder, args.flows_100k)
            # Ingested once apviz holds that phone's flows and has stopped gaining any for 3 s with
            # an empty queue.
            flows, best, best_at = 0, 0, time.monotonic()
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                flows = view_connections(port, flooder.hostname) or 0
                if flows > best:
                    best, best_at = flows, time.monotonic()
                settled = time.monotonic() - best_at >= 3 and not metrics(port)["apviz_queue_depth"]
                if flows >= entries and settled:
                    break
                time.sleep(1.0)
            ingest = time.monotonic() - t
            time.sleep(5.0)  # a few view builds and a counter refresh over the full table
            rss_100k = max(rss_mb(server.pid) for _ in range(5) if time.sleep(1.0) is None)
            end = metrics(port)
            say(
                f"{flows} flows of {flooder.hostname} in apviz ({entries} flood entries) after {ingest:.1f} s"
            )
            say(f"rss {rss_100k:.0f} MB")
            result.update(
                udp_entries=entries,
                resyncs=int(end["apviz_resyncs_total"]),
                flows_100k=flows,
                flows_all=int(end["apviz_flows"]),
                ingest_100k_s=round(ingest, 1),
                rss_100k_mb=round(rss_100k, 1),
                target_rss_100k_mb=TARGET_RSS_100K_MB,
            )
            checks["flows_100k"] = flows >= args.flows_100k and entries >= args.flows_100k
            checks["rss_100k"] = rss_100k <= TARGET_RSS_100K_MB
        result["failed_checks"] = [name for name, ok in checks.items() if not ok]
        ok = not result["failed_checks"]
        result["pass"] = ok
        return result
    finally:
        if load is not None:
            load.close()
        if followers is not None:
            followers.close()
        if server is not None:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)  # our own child
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        lab.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--phones", type=int, default=30)
    parser.add_argument("--open-flows", type=int, default=3000, help="connections kept open")
    parser.add_argument("--rate", type=float, default=50.0, help="new connections per second")
    parser.add_argument("--lifetime", type=float, default=60.0, help="seconds each connection stays open")
    parser.add_argument("--prefill-budget", type=float, default=8.0, help="seconds allowed for the prefill")
    parser.add_argument("--clients", type=int, default=20, help="SSE clients")
    parser.add_argument("--refresh", type=float, default=10.0, help="apviz conntrack counter refresh, s")
    parser.add_argument(
        "--flows-100k", type=int, default=100_000, help="UDP flows for the RSS check (0: skip)"
    )
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
