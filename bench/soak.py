"""Benchmark: a long exhibit day in miniature. Memory must stop growing; nothing may fail.

Run as root from the repository root: ``.venv/bin/python bench/soak.py [--seconds 3600]``.
By default it runs 5 minutes, as the test suite (``tests/test_soak_lab.py``) and ``make bench`` do;
the documented run is an hour.

A lab with 30 phones in exhibit mode, each with its persona's background traffic (DNS lookups and
connections to the lab's world, as ``apviz lab`` makes them). Every ``--churn`` seconds the phone
that has been there longest leaves (its lease is released, its namespace deleted) and a new one
joins with a new MAC, so over an hour about 360 visitors come and go. apviz runs as a separate
process (``apviz serve`` with the lab's configuration, exhibit mode, visitors forgotten
``--forget-after`` seconds after they leave) and ``--clients`` SSE clients follow ``/events``.

Measured, after a warm-up (by then every phone of the first crowd has left and been forgotten, so
the state has reached its working size):

- memory growth: mean RSS over the last fifth of the measured window against the mean over its
  first fifth (target < 5 %);
- CPU of the apviz process, in % of one core;
- dropped events: conntrack resyncs (events the kernel could not deliver) and updates slow SSE
  clients missed; parse errors of dnsmasq lines and leases;
- errors: ERROR/CRITICAL log lines and tracebacks in apviz's output, and apviz exiting (target 0);
- liveness: per 30 s, the connections apviz began to follow (``apviz_flows_new_total``: new
  connections of the phones, from conntrack NEW events) and the DNS answers it read from dnsmasq's
  log (``apviz_dns_answers_total``). An interval without either fails the run: the phones fell
  silent, or apviz stopped hearing them. Not ``apviz_events_total``: that one also rises with every
  conntrack refresh dump and every DHCP and lease event of the phones that join, so a lab whose
  phones said nothing at all would still pass. ``--silence-after S`` stops every phone's traffic
  after S seconds (phones that join later stay quiet too): that run must fail
  (``tests/test_soak_lab.py``).

Progress goes to stderr; the last line on stdout is one JSON object. Exit code 0 even when a
target is missed (``"pass": false`` says so); non-zero only when the benchmark itself fails.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import cpu_seconds, free_port, metrics, rss_mb, say  # noqa: E402
from bench.steady import Followers, wait_healthy  # noqa: E402

TARGET_GROWTH_PCT = 5.0
ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback \(most recent call last\)")
STEADY = str(ROOT / "bench" / "steady.py")  # its --serve runs `apviz serve` from a JSON config
INTERVAL = 30.0
TALK = {"flows_new": "apviz_flows_new_total", "dns_answers": "apviz_dns_answers_total"}
# Reported beside them to show what the old check counted: it rises in a silent lab too.
PER_INTERVAL = {**TALK, "events": "apviz_events_total"}


def silent(intervals: list[dict[str, int]]) -> list[int]:
    """Indexes of the intervals in which the phones were not heard: no new connection or no answer.

    Either alone is a failure: connections without answers mean apviz stopped reading dnsmasq's
    log (or the phones stopped asking), answers without connections that conntrack went quiet.
    """
    return [i for i, n in enumerate(intervals) if n["flows_new"] <= 0 or n["dns_answers"] <= 0]


class Output:
    """apviz's stderr, kept (the last 200 lines) and scanned for errors as it arrives."""

    def __init__(self, stream: object) -> None:
        self.errors: list[str] = []
        self.tail: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: object) -> None:
        for raw in stream:  # type: ignore[attr-defined]
            line = raw.decode(errors="replace").rstrip()
            self.tail = [*self.tail[-199:], line]
            if ERROR_LINE.search(line):
                self.errors.append(line)


def churn(
    lab: object,
    stop: threading.Event,
    every: float,
    counts: dict[str, int],
    lock: threading.Lock,
    quiet: threading.Event,
) -> None:
    """The longest-present phone leaves, a new one joins, every ``every`` seconds."""
    while not stop.wait(every):
        try:
            with lock:
                oldest = min(lab.phones, key=lambda p: p.index)  # type: ignore[attr-defined]
                lab.remove_phone(oldest)  # type: ignore[attr-defined]
                counts["left"] += 1
                lab.add_phone(traffic=not quiet.is_set())  # type: ignore[attr-defined]
                counts["joined"] += 1
        except Exception as exc:  # the lab failing is the bench failing: report, do not hide
            counts["churn_failures"] += 1
            say(f"churn failed: {exc}")


def run(args: argparse.Namespace) -> dict[str, object]:
    from apviz.lab.lab import Lab
    from apviz.lab.serve import lab_config

    seconds = args.seconds
    warmup = args.warmup if args.warmup is not None else max(60.0, 0.3 * seconds)
    result: dict[str, object] = {"bench": "soak", "seconds": seconds, "warmup_s": warmup}
    lab = Lab(phones=args.phones, traffic=True, seed=args.seed)
    server: subprocess.Popen | None = None
    followers: Followers | None = None
    stop = threading.Event()
    counts = {"joined": 0, "left": 0, "churn_failures": 0}
    lab_lock, quiet = threading.Lock(), threading.Event()
    churner: threading.Thread | None = None
    try:
        t = time.monotonic()
        lab.start()
        say(f"lab {lab.prefix}: {len(lab.phones)} phones with traffic in {time.monotonic() - t:.1f} s")
        port = free_port()
        cfg = lab_config(
            lab,
            port,
            exhibit={"mode": "exhibit", "forget_after": args.forget_after},
            state={"device_idle": args.forget_after, "flow_hold": 10.0},
            server={"max_streams_per_address": 64},
        )
        conf = Path(tempfile.mkstemp(prefix="apviz-soak-", suffix=".json", dir=lab.run_dir)[1])
        conf.write_text(json.dumps(asdict(cfg)))
        server = subprocess.Popen(
            [sys.executable, STEADY, "--serve", str(conf)], cwd=ROOT, stderr=subprocess.PIPE
        )
        output = Output(server.stderr)
        wait_healthy(port, server)
        followers = Followers(port, args.clients)
        followers.start()
        churner = threading.Thread(
            target=churn, args=(lab, stop, args.churn, counts, lab_lock, quiet), daemon=True
        )
        churner.start()
        say(f"apviz pid {server.pid} on :{port}; warming up {warmup:.0f} s, then measuring")

        samples: list[tuple[float, float]] = []  # (seconds since start of measurement, RSS MB)
        start = time.monotonic()
        measure_from = start + warmup
        end = start + seconds
        m0: dict[str, float] = {}
        cpu0 = 0.0
        next_report = start + INTERVAL
        silence_at = start + args.silence_after if args.silence_after is not None else None
        # Liveness: the phones always make traffic, so every 30 s must bring new connections and
        # DNS answers. A lab that fell silent would otherwise look like a perfectly flat memory curve.
        m = metrics(port)
        talk_before = {key: m[name] for key, name in PER_INTERVAL.items()}
        per_interval: list[dict[str, int]] = []
        while time.monotonic() < end:
            if silence_at is not None and time.monotonic() >= silence_at and not quiet.is_set():
                with lab_lock:
                    quiet.set()
                    for phone in list(lab.phones):
                        lab.set_traffic(phone, False)
                say(f"{time.monotonic() - start:5.0f} s: --silence-after: every phone's traffic stopped")
            if server.poll() is not None:
                raise RuntimeError(f"apviz exited with {server.returncode}: {output.tail[-5:]}")
            now = time.monotonic()
            if now >= measure_from:
                if not m0:
                    m0, cpu0, measure_from = metrics(port), cpu_seconds(server.pid), now
                samples.append((now - measure_from, rss_mb(server.pid)))
            if now >= next_report:
                next_report += INTERVAL
                m = metrics(port)
                talk_now = {key: m[name] for key, name in PER_INTERVAL.items()}
                per_interval.append({key: int(talk_now[key] - talk_before[key]) for key in PER_INTERVAL})
                talk_before = talk_now
                say(
                    f"{now - start:5.0f} s: rss {rss_mb(server.pid):.0f} MB, {len(lab.phones)} phones, "
                    f"{counts['joined']} joined / {counts['left']} left, "
                    f"{per_interval[-1]['flows_new']} new connections, "
                    f"{per_interval[-1]['dns_answers']} DNS answers ({per_interval[-1]['events']} events), "
                    f"{len(output.errors)} errors"
                )
            time.sleep(2.0)
        if not samples:
            raise RuntimeError("the run ended during the warm-up: give --seconds more than --warmup")
        m1, cpu1 = metrics(port), cpu_seconds(server.pid)
        window = time.monotonic() - measure_from
        fifth = max(1, len(samples) // 5)
        first = statistics.fmean(r for _, r in samples[:fifth])
        last = statistics.fmean(r for _, r in samples[-fifth:])
        growth = 100 * (last - first) / first

        def delta(name: str) -> int:
            return int(m1[name] - m0[name])

        stop.set()
        churner.join(timeout=60)
        errors = len(output.errors) + counts["churn_failures"]
        result.update(
            phones=args.phones,
            visitors_joined=counts["joined"],
            visitors_left=counts["left"],
            sse_clients=followers.stats.connected,
            measured_s=round(window, 1),
            rss_start_mb=round(first, 1),
            rss_end_mb=round(last, 1),
            rss_peak_mb=round(max(r for _, r in samples), 1),
            growth_pct=round(growth, 2),
            target_growth_pct=TARGET_GROWTH_PCT,
            cpu_pct=round(100 * (cpu1 - cpu0) / window, 1),
            events=delta("apviz_events_total"),
            resyncs=delta("apviz_resyncs_total"),
            dropped_updates=delta("apviz_dropped_events_total"),
            parse_errors=delta("apviz_parse_errors_total"),
            flows_new=delta("apviz_flows_new_total"),
            dns_answers=delta("apviz_dns_answers_total"),
            devices_end=int(m1["apviz_devices"]),
            flows_end=int(m1["apviz_flows"]),
            silence_after_s=args.silence_after,
            intervals=len(per_interval),
            min_flows_new_per_30s=min((n["flows_new"] for n in per_interval), default=0),
            min_dns_answers_per_30s=min((n["dns_answers"] for n in per_interval), default=0),
            silent_intervals=len(silent(per_interval)),
            first_silent_interval=next(iter(silent(per_interval)), None),
            **{f"{key}_per_30s": [n[key] for n in per_interval] for key in PER_INTERVAL},
            errors=errors,
            error_lines=output.errors[:5],
        )
        live = bool(per_interval) and not silent(per_interval)
        result["pass"] = growth < TARGET_GROWTH_PCT and errors == 0 and live
        return result
    finally:
        stop.set()
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
        if churner is not None:
            churner.join(timeout=60)
        lab.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=300.0,
        help="whole run, warm-up included (default 300; documented: 3600)",
    )
    parser.add_argument("--warmup", type=float, default=None, help="default: 30 %% of the run, >= 60 s")
    parser.add_argument("--phones", type=int, default=30, help="phones present at any time")
    parser.add_argument(
        "--churn", type=float, default=10.0, help="seconds between one leaving and one joining"
    )
    parser.add_argument("--forget-after", type=float, default=30.0, help="exhibit.forget_after, seconds")
    parser.add_argument("--clients", type=int, default=10, help="SSE clients")
    parser.add_argument("--seed", type=int, default=7, help="the phones' traffic seed")
    parser.add_argument(
        "--silence-after",
        type=float,
        default=None,
        help="stop every phone's traffic after this many seconds (the liveness check must fail)",
    )
    args = parser.parse_args()
    # Stopped with SIGTERM (kill, a CI timeout): unwind like Ctrl-C, so the lab and apviz go too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
