"""Benchmark: 500 SSE clients on loopback, updates at the tick rate; server CPU and delivery lag.

Run from the repository root: ``.venv/bin/python bench/fanout.py [--clients 500] [--seconds 20]``.
Three processes, so that the figures are the server's own: this one (the conductor), the server
(this file with ``--serve``: the real Service, hub and Starlette app on uvicorn, fed by the
synthetic world of ``tests/browser/fakefeed.py`` whose byte counters grow every 100 ms, so every
tick publishes a delta), and the clients (this file with ``--clients-only``: raw asyncio streams,
since 500 httpx clients would cost more CPU than the server on a two-core box). The server allows
any number of streams per address: here every client is 127.0.0.1.

Delivery lag is the client's clock at receipt minus the view's ``time`` (set when it was built, just
before the hub publishes it); both processes read the same system clock. Server CPU is the change
of utime+stime in ``/proc/PID/stat`` over the measured window, as a share of one core.

``pass`` needs, besides the lag target: every client connected (no connect failure) and none lost
before the end of the window; no snapshot sent because a client fell behind (``catch_up_snapshots``,
and the server's ``apviz_dropped_events_total``); and every delta the hub published in the window
delivered to every client by its end, less two ticks for the window's edges (``undelivered``: work
still queued for the clients when the CPU window closes).

Progress goes to stderr; the last line on stdout is one JSON object. Exit code 0 even when the
target is missed (``"pass": false`` says so); non-zero only when the benchmark itself fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import cpu_seconds, free_port, metrics, percentile, rss_mb, say  # noqa: E402

TARGET_LAG_MS = 200.0
DELTA_TIME = re.compile(rb'"time":\{"set":([0-9.]+)\}')  # only deltas carry "time" as a set change


# ------------------------------------------------------------------------------------------- server


async def serve(port: int, devices: int, per_device: int) -> None:
    """The real service and app on loopback, fed a synthetic world that changes every 100 ms."""
    import uvicorn

    from apviz.live.pipeline import NamedSource
    from apviz.live.publicview import ViewBuilder, ViewOptions
    from apviz.live.state import LiveState, StateConfig, networks
    from apviz.server.app import create_app
    from apviz.server.hub import Hub
    from apviz.service import Service
    from tests.browser.fakefeed import FakeWorld, Feed

    world = FakeWorld(destinations=44)
    feed = Feed()
    state = LiveState(StateConfig(lan=networks(["10.99.0.0/16"])))
    builder = ViewBuilder(ViewOptions(gateway_lat=52.52, gateway_lon=13.40), world.describe)
    hub = Hub(max_per_address=100_000)
    service = Service(state, [NamedSource("fake", lambda: feed)], builder, hub, tick_hz=4.0)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            backlog=4096,
            timeout_graceful_shutdown=1,
        )
    )
    feed.push(world.populate(devices, per_device))

    async def drive() -> None:
        while True:
            await asyncio.sleep(0.1)
            feed.push(world.grow(0.05))

    task = asyncio.create_task(server.serve())
    driver = asyncio.create_task(drive())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    # The conductor closes our stdin to stop us.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    driver.cancel()
    server.should_exit = True
    await task


# ------------------------------------------------------------------------------------------- clients


class Stats:
    def __init__(self) -> None:
        self.lags: list[float] = []
        self.connected = 0
        self.deltas = 0
        self.snapshots = 0
        self.errors: list[str] = []
        self.lost = 0  # clients whose stream ended or failed after it had begun
        self.measuring = False


async def sse_client(port: int, stats: Stats, stop: asyncio.Event) -> None:
    """One EventSource, by hand: request, headers, then scan the body for deltas' build times."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        stats.errors.append(f"connect: {exc}")
        return
    try:
        writer.write(
            f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            stats.errors.append(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            return
        stats.connected += 1
        pending = b""
        while not stop.is_set():
            data = await reader.read(65536)
            if not data:
                stats.errors.append("server closed the stream")
                stats.lost += 1
                return
            now = time.time()
            pending += data
            cut = pending.rfind(b"\n\n")
            if cut < 0:
                continue
            complete, pending = pending[: cut + 2], pending[cut + 2 :]
            stats.snapshots += complete.count(b"event: snapshot")
            for match in DELTA_TIME.finditer(complete):
                stats.deltas += 1
                if stats.measuring:
                    stats.lags.append((now - float(match.group(1))) * 1000)
    except (OSError, asyncio.IncompleteReadError) as exc:
        stats.errors.append(f"stream: {exc!r}")
        stats.lost += 1
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def run_clients(port: int, clients: int, seconds: float) -> dict[str, object]:
    """Connect all clients, tell the conductor (one stdout line), measure ``seconds``, report."""
    stats = Stats()
    stop = asyncio.Event()
    tasks = []
    for _ in range(clients):
        tasks.append(asyncio.create_task(sse_client(port, stats, stop)))
        await asyncio.sleep(0.002)  # a ramp, not a SYN flood
    deadline = time.monotonic() + 30
    while stats.connected + len(stats.errors) < clients and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # every client past its snapshot
    print(json.dumps({"connected": stats.connected}), flush=True)
    stats.measuring = True
    start_deltas = stats.deltas
    await asyncio.sleep(seconds)
    stats.measuring = False
    received = stats.deltas - start_deltas
    lost = stats.lost  # before stop: cancelling the clients below is not losing them
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "connected": stats.connected,
        "errors": stats.errors[:5],
        "error_count": len(stats.errors),
        "lost": lost,
        "deltas": received,
        "snapshots": stats.snapshots,
        "lags": [round(x, 2) for x in stats.lags],
    }


# ------------------------------------------------------------------------------------------- conductor


def conduct(args: argparse.Namespace) -> dict[str, object]:
    port = free_port()
    me = [sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen(
        [*me, "--serve", "--port", str(port), "--devices", str(args.devices)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    clients: subprocess.Popen | None = None
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the server did not start (exit code {server.poll()})")
        say(f"server pid {server.pid} on 127.0.0.1:{port}; connecting {args.clients} clients")
        argv = [*me, "--clients-only", "--port", str(port), "--clients", str(args.clients)]
        argv += ["--seconds", str(args.seconds)]
        clients = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        assert clients.stdout is not None
        hello = json.loads(clients.stdout.readline() or b"{}")
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
        m0 = metrics(port)
        say(f"{hello.get('connected')} clients connected; measuring {args.seconds} s")
        report = json.loads(clients.stdout.readline() or b"{}")
        cpu1, t1 = cpu_seconds(server.pid), time.monotonic()
        m1 = metrics(port)
        rss = rss_mb(server.pid)
        clients.wait(timeout=30)
    finally:
        for proc in (clients, server):
            if proc is None:
                continue
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()  # our own child
                proc.wait()
    lags = report.get("lags") or [float("inf")]
    p95 = percentile(lags, 0.95)  # type: ignore[arg-type]
    connected = int(report.get("connected") or 0)
    published = int(m1["apviz_updates_published_total"] - m0["apviz_updates_published_total"])
    received = int(report.get("deltas") or 0)
    # Each client should have every delta published in the window; two ticks of slack for the
    # window's edges (the clients' window and the conductor's metric reads are a few ms apart).
    undelivered = max(0, args.clients * (published - 2) - received)
    catch_up = int(report.get("snapshots") or 0) - connected  # the first snapshot is not one
    dropped = int(m1["apviz_dropped_events_total"] - m0["apviz_dropped_events_total"])
    checks = {
        "lag": p95 <= TARGET_LAG_MS,
        "connected": connected == args.clients,
        "lost": report.get("lost") == 0,
        "catch_up_snapshots": catch_up == 0 and dropped == 0,
        "undelivered": undelivered == 0 and published > 0,
    }
    return {
        "bench": "fanout",
        "clients": report.get("connected"),
        "client_errors": report.get("error_count"),
        "clients_lost": report.get("lost"),
        "catch_up_snapshots": catch_up,
        "dropped_updates": dropped,
        "seconds": round(t1 - t0, 1),
        "deltas_published": published,
        "deltas_received": received,
        "undelivered": undelivered,
        "deltas_per_client_per_s": round(int(report.get("deltas") or 0) / args.clients / (t1 - t0), 2),
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
        "server_rss_mb": round(rss, 1),
        "lag_p50_ms": round(percentile(lags, 0.50), 1),  # type: ignore[arg-type]
        "lag_p95_ms": round(p95, 1),
        "lag_max_ms": round(max(lags), 1),  # type: ignore[type-var]
        "target_lag_ms": TARGET_LAG_MS,
        "failed_checks": [name for name, ok in checks.items() if not ok],
        "pass": all(checks.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=500, help="concurrent SSE clients")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window")
    parser.add_argument("--devices", type=int, default=12, help="devices in the synthetic world")
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--clients-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.port, args.devices, 8))
        return 0
    if args.clients_only:
        print(json.dumps(asyncio.run(run_clients(args.port, args.clients, args.seconds))), flush=True)
        return 0
    print(json.dumps(conduct(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
