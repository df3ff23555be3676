"""Benchmark: from a lab phone's connect() to the SSE event that first shows the new connection.

Run as root from the repository root: ``.venv/bin/python bench/latency.py [--connections N]``.
Brings up its own lab (one quiet phone), runs the real service (conntrack events, dnsmasq log,
leases, enrichment) on uvicorn on loopback in this process, and follows ``/events`` with httpx as a
browser would. For each connection the phone first resolves the name (so the flow is credited to
it), then the clock starts and the phone connects; the clock stops when the client has applied
the delta whose ``totals.connections`` counts the new flow. ``flow_hold`` is long, so that count only
grows. A random pause of 0 to 0.5 s before each connection samples both regimes of the tick: a
connection within 250 ms of the last update waits for the 4 Hz budget, one after a quiet spell is
published at once.

Progress goes to stderr; the last line on stdout is one JSON object. Exit code 0 even when the
target is missed (``"pass": false`` says so); non-zero only when the benchmark itself fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from apviz.lab.lab import Lab
from bench._common import percentile, say
from tests.sseview import ViewFollower, serving

TARGET_MS = 250.0
NAMES = ("static.criteo.net", "graph.facebook.com", "googleads.g.doubleclick.net", "www.google.com")


def counted(view: dict[str, Any]) -> int:
    return int(view.get("totals", {}).get("connections", -1))


async def measure(lab: Lab, connections: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    phone = lab.phones[0]
    latencies: list[float] = []
    follower = ViewFollower()
    async with (
        serving(lab, flow_hold=3600.0) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as http,
        http.stream("GET", "/events") as response,
    ):
        reader = asyncio.create_task(follower.follow(response))
        try:
            while counted(follower.view) < 0:
                await asyncio.sleep(0.01)
            count = counted(follower.view)
            for i in range(connections):
                name = NAMES[i % len(NAMES)]
                resolved = await asyncio.to_thread(lab.phone_resolve, phone, name)
                await asyncio.sleep(rng.uniform(0.0, 0.5))  # busy and quiet phases alike
                started = time.monotonic()
                await asyncio.to_thread(lab.phone_connect, phone, None, 200, address=resolved.addresses[0])
                count += 1
                _, seen = await follower.until(
                    lambda view, n=count: counted(view) >= n, 5.0, f"{count} connections"
                )
                latencies.append((seen - started) * 1000)
                if (i + 1) % 50 == 0:
                    say(f"{i + 1}/{connections}: p50 {statistics.median(latencies):.0f} ms")
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=200, help="connections to time (>= 200)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the pauses between connections")
    args = parser.parse_args()
    lab = Lab(phones=1, traffic=False)
    try:
        lab.start()
        say(f"lab {lab.prefix} up; timing {args.connections} connections")
        latencies = asyncio.run(measure(lab, args.connections, args.seed))
    finally:
        lab.close()
    p95 = percentile(latencies, 0.95)
    result = {
        "bench": "latency",
        "connections": len(latencies),
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p95_ms": round(p95, 1),
        "max_ms": round(max(latencies), 1),
        "target_ms": TARGET_MS,
        "pass": p95 <= TARGET_MS,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
