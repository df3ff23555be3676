"""Benchmark: apviz's conntrack dump+decode against `conntrack -L`, and event ingestion without loss.

Run as root from the repository root: ``.venv/bin/python bench/conntrack_dump.py [--entries N]``.
Progress goes to stderr; the last line on stdout is one JSON object. Exit code 0 even when the
target is missed (``"pass": false`` says so); non-zero only when the benchmark itself fails.
The dump is timed on the lab gateway filled from a lab phone; the event burst runs in an ``avct``
namespace of its own. Everything either makes is deleted on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apviz.events import FlowEvent, FlowEventKind, FlowSnapshot
from apviz.lab.lab import Lab
from apviz.sources.conntrack import ConntrackSource, dump
from tests.ctlab import CtNamespace

TARGET = 1.5
STRETCH = 1.0


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def best_of(runs: int, fn) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[1])):
    host, port = divmod(i, 100)
    s.sendto(b"x", (f"198.18.{100 + host // 256}.{host % 256}", 20000 + port))
"""


def bench_dump(entries: int) -> dict[str, float | int]:
    """Fill the lab gateway's table from a phone (one UDP flow per packet, NATed), then time both."""
    with Lab(phones=1, traffic=False) as lab:
        phone = lab.phones[0]
        say(
            f"[{lab.gateway_ns}] filling the gateway's conntrack with {entries} entries from {phone.hostname}"
        )
        lab.exec_in(phone.ns, [sys.executable, "-c", SENDER, str(entries)], timeout=300)
        count = len(dump(lab.gateway_ns))
        if count < entries:
            raise RuntimeError(f"expected {entries} entries, the table holds {count}")

        def conntrack_list() -> None:
            subprocess.run(
                ["ip", "netns", "exec", lab.gateway_ns, "conntrack", "-L"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
            )

        def apviz_dump() -> None:
            flows = dump(lab.gateway_ns)
            if len(flows) < entries:
                raise RuntimeError(f"apviz dump returned {len(flows)} of {entries} entries")

        conntrack_s = best_of(3, conntrack_list)
        say(f"conntrack -L: {conntrack_s:.3f} s")
        apviz_s = best_of(3, apviz_dump)
        say(f"apviz dump+decode: {apviz_s:.3f} s")
        return {"entries": count, "conntrack_L_s": round(conntrack_s, 4), "apviz_s": round(apviz_s, 4)}


async def ingest(ns: CtNamespace, burst: int) -> tuple[float, int, int]:
    """Time from the burst's start until its last NEW event is in; returns (seconds, received, enobufs)."""
    source = ConntrackSource(ns.name, refresh_interval=None)  # 64 MiB buffer, NEW|DESTROY
    seen: set[tuple[int, object]] = set()
    ready = asyncio.Event()
    last = [0.0]

    async def consume() -> None:
        async for item in source:
            if isinstance(item, FlowSnapshot):
                ready.set()
            elif isinstance(item, FlowEvent) and item.kind is FlowEventKind.NEW:
                seen.add((item.flow.id, item.flow.orig))
                last[0] = time.perf_counter()

    task = asyncio.create_task(consume())
    await ready.wait()
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*ns.flood_cmd(burst))
    try:
        await proc.wait()
        quiet_since = time.perf_counter()
        while len(seen) < burst and time.perf_counter() - max(last[0], quiet_since) < 3.0:
            await asyncio.sleep(0.01)  # the stream went quiet for 3 s: the rest was lost
    finally:
        if proc.returncode is None:
            proc.kill()  # our own child
            await proc.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return last[0] - start, len(seen), source.counts["enobufs"]


def bench_events(burst: int) -> dict[str, float | int]:
    with CtNamespace() as ns:
        say(f"[{ns.name}] burst of {burst} new flows into a 64 MiB event buffer")
        seconds, received, enobufs = asyncio.run(ingest(ns, burst))
    say(f"received {received}/{burst} NEW events in {seconds:.3f} s (ENOBUFS {enobufs})")
    return {
        "events": burst,
        "events_per_s": round(received / seconds) if seconds > 0 else 0,
        "events_lost": burst - received,
        "enobufs": enobufs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000, help="conntrack entries to dump")
    parser.add_argument("--burst", type=int, default=100_000, help="new flows in the event burst")
    args = parser.parse_args()
    result: dict[str, object] = {"bench": "conntrack_dump"}
    result.update(bench_dump(args.entries))
    result.update(bench_events(args.burst))
    ratio = float(result["apviz_s"]) / float(result["conntrack_L_s"])  # type: ignore[arg-type]
    result.update(
        ratio=round(ratio, 3),
        target=TARGET,
        stretch=STRETCH,
        stretch_met=ratio <= STRETCH,
        **{"pass": ratio <= TARGET and result["events_lost"] == 0},
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
