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
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import uvicorn

from apviz.lab.lab import Lab
from apviz.lab.serve import lab_config
from apviz.live.diff import apply

TARGET_MS = 250.0
NAMES = ("static.criteo.net", "graph.facebook.com", "googleads.g.doubleclick.net", "www.google.com")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the value at least ``q`` of the samples do not exceed."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


class Follower:
    """Rebuilds the view from the stream and wakes waiters on every event."""

    def __init__(self) -> None:
        self.view: dict[str, Any] = {}
        self.changed = asyncio.Event()

    async def follow(self, response: httpx.Response) -> None:
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line:
                if not line.startswith(":"):
                    key, _, value = line.partition(": ")
                    fields[key] = value
                continue
            if "data" in fields:
                data = json.loads(fields["data"])
                if fields.get("event") == "snapshot":
                    self.view = data["view"]
                else:
                    self.view = apply(self.view, data["changes"])
                self.changed.set()
            fields = {}

    def connections(self) -> int:
        return int(self.view.get("totals", {}).get("connections", -1))

    async def until_connections(self, n: int, timeout: float) -> float:
        """Monotonic time at which the view first counted ``n`` connections."""
        deadline = time.monotonic() + timeout
        while self.connections() < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the stream never counted {n} connections (has {self.connections()})")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return time.monotonic()


@contextlib.asynccontextmanager
async def serving(lab: Lab) -> AsyncIterator[str]:
    from apviz.app import build_service
    from apviz.server.app import create_app

    port = free_port()
    service = build_service(lab_config(lab, port, state={"flow_hold": 3600.0}))
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        await asyncio.wait_for(service.pipeline.ready.wait(), 10)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def measure(lab: Lab, connections: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    phone = lab.phones[0]
    latencies: list[float] = []
    follower = Follower()
    async with (
        serving(lab) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as http,
        http.stream("GET", "/events") as response,
    ):
        reader = asyncio.create_task(follower.follow(response))
        try:
            while follower.connections() < 0:
                await asyncio.sleep(0.01)
            count = follower.connections()
            for i in range(connections):
                name = NAMES[i % len(NAMES)]
                resolved = await asyncio.to_thread(lab.phone_resolve, phone, name)
                await asyncio.sleep(rng.uniform(0.0, 0.5))  # busy and quiet phases alike
                started = time.monotonic()
                await asyncio.to_thread(lab.phone_connect, phone, None, 200, address=resolved.addresses[0])
                count += 1
                seen = await follower.until_connections(count, 5.0)
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
