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
``/events``. Then 100k UDP flows from one phone (LAN flows through the gateway, as a busy real
gateway would have) fill the gateway's conntrack, and apviz's RSS is read once it holds them all.

Progress goes to stderr; the last line on stdout is one JSON object. Exit code 0 even when a
target is missed (``"pass": false`` says so); non-zero only when the benchmark itself fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
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

from bench._common import cpu_seconds, free_port, rss_mb  # noqa: E402
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


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- server


def serve(config_file: Path) -> None:
    """``apviz serve`` with a configuration written by the conductor (SIGTERM ends it cleanly)."""
    from apviz.config import from_dict
    from apviz.server.run import serve as run

    cfg = from_dict(json.loads(config_file.read_text()), env={})
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(cfg))


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("apviz_") and " " in line:
            key, _, value = line.partition(" ")
            out[key] = float(value)
    return out


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
        self.started = 0
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

    def prefill(self, n: int, lifetime: float, budget: float) -> float:
        """``n`` connections that end spread over ``lifetime`` seconds after ``budget`` from now."""
        ends_from = time.monotonic() + budget
        futures = []
        for i in range(n):
            end = ends_from + self.rng.uniform(0, lifetime)
            futures.append(self.pool.submit(lambda i=i, end=end: self._one(i, end - time.monotonic())))
        for f in futures:
            f.result()
        self.started += n
        return ends_from

    def steady(self, rate: float, lifetime: float, until: float) -> None:
        """Start ``rate`` connections a second, each held ``lifetime`` s, until ``until`` (monotonic)."""
        index = self.started
        due = time.monotonic()
        while due < until:
            self.pool.submit(self._one, index, lifetime)
            index += 1
            due += 1.0 / rate
            time.sleep(max(0.0, due - time.monotonic()))
        self.started = index

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


def udp_entries(lab: Lab) -> int:
    out = lab.exec_in(lab.gateway_ns, ["conntrack", "-L", "-p", "udp"], timeout=120).stdout
    return out.count("\n")


def flood(lab: Lab, phone: Phone, total: int) -> int:
    """UDP flows from ``phone`` through the gateway until its conntrack holds ``total`` UDP entries."""
    sent = 0
    count = udp_entries(lab)
    for _ in range(5):
        if count >= total:
            break
        batch = total - count
        lab.exec_in(phone.ns, [sys.executable, "-c", FLOOD_SCRIPT, str(batch), str(sent)], timeout=300)
        sent += batch
        count = udp_entries(lab)
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
        started_before = load.started
        load.steady(args.rate, args.lifetime, stop_at)
        cpu1, t1 = cpu_seconds(server.pid), time.monotonic()
        sampler_stop.set()
        sampler.join()
        rss_end = rss_mb(server.pid)
        after = metrics(port)
        cpu_pct = 100 * (cpu1 - cpu0) / (t1 - t0)
        rss = max(rss_peak, rss_end)
        result.update(
            phones=len(lab.phones),
            sse_clients=followers.stats.connected,
            seconds=round(t1 - t0, 1),
            new_flows_per_s=round((load.started - started_before) / (t1 - t0), 1),
            flows_open_start=int(before.get("apviz_flows_open", 0)),
            flows_open_end=int(after.get("apviz_flows_open", 0)),
            connect_failures=load.failed,
            deltas_per_client_per_s=round((followers.stats.deltas - deltas0) / args.clients / (t1 - t0), 2),
            cpu_pct=round(cpu_pct, 1),
            rss_mb=round(rss, 1),
            target_cpu_pct=TARGET_CPU_PCT,
            target_rss_mb=TARGET_RSS_MB,
        )
        say(f"cpu {cpu_pct:.1f} % of one core, rss {rss:.0f} MB, open flows {result['flows_open_end']}")
        load.close()
        load = None

        if args.flows_100k:
            say(f"filling the gateway's conntrack with {args.flows_100k} UDP flows from a phone")
            t = time.monotonic()
            entries = flood(lab, lab.phones[0], args.flows_100k)
            # Ingested once apviz holds at least that many flows and has stopped gaining any for 3 s
            # with an empty queue (the TCP load's flows end meanwhile, so no exact count is expected).
            flows, best, best_at = 0.0, 0.0, time.monotonic()
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                now_metrics = metrics(port)
                flows = now_metrics.get("apviz_flows", 0)
                if flows > best:
                    best, best_at = flows, time.monotonic()
                settled = time.monotonic() - best_at >= 3 and not now_metrics.get("apviz_queue_depth", 0)
                if flows >= entries and settled:
                    break
                time.sleep(0.5)
            ingest = time.monotonic() - t
            time.sleep(5.0)  # a few view builds and a counter refresh over the full table
            rss_100k = max(rss_mb(server.pid) for _ in range(5) if time.sleep(1.0) is None)
            say(f"{int(flows)} flows in apviz ({entries} UDP conntrack entries) after {ingest:.1f} s")
            say(f"rss {rss_100k:.0f} MB")
            result.update(
                udp_entries=entries,
                resyncs=int(metrics(port).get("apviz_resyncs", 0)),
                flows_100k=int(flows),
                ingest_100k_s=round(ingest, 1),
                rss_100k_mb=round(rss_100k, 1),
                target_rss_100k_mb=TARGET_RSS_100K_MB,
            )
        ok = cpu_pct <= TARGET_CPU_PCT and rss <= TARGET_RSS_MB
        if args.flows_100k:
            ok = ok and result["flows_100k"] >= args.flows_100k and rss_100k <= TARGET_RSS_100K_MB
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
