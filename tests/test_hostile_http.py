"""Hostile HTTP clients against the real server, run with the uvicorn settings of ``apviz serve``
(tests/hostile_server.py, in its own process): a thousand event streams from one address, huge
bodies and headers, slowloris connections, and the operator API without a session. Throughout, a
visitor on another address (127.0.0.2: loopback answers the whole 127/8) keeps its live view.

Figures (RSS growth, latency under attack) are printed with ``-s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench._common import rss_mb
from tests.sseview import ViewFollower
from tests.test_exhibit_server import PASSWORD

REPO = Path(__file__).resolve().parents[1]
VISITOR = "127.0.0.2"  # the bystander whose live view must survive
STREAM_REQUEST = b"GET /events HTTP/1.1\r\nHost: kiosk\r\nAccept: text/event-stream\r\n\r\n"


@dataclass
class Target:
    port: int
    pid: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def hostile_server(**server: object) -> Iterator[Target]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.hostile_server", json.dumps({"server": server})],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready "), f"the server did not start (exit code {proc.poll()})"
        yield Target(int(line.split()[1]), proc.pid)
    finally:
        proc.terminate()  # our own child, by its handle
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def client_from(target: Target, local: str, **kwargs: object) -> httpx.AsyncClient:
    """An HTTP client whose connections come from ``local`` (a loopback address)."""
    transport = httpx.AsyncHTTPTransport(local_address=local)
    return httpx.AsyncClient(transport=transport, base_url=target.base, timeout=15, **kwargs)  # type: ignore[arg-type]


class Watch:
    """A visitor following /events from its own address, with the time of every message."""

    def __init__(self) -> None:
        self.follower = ViewFollower()
        self.times: list[float] = []

    async def run(self, target: Target) -> None:
        async with client_from(target, VISITOR) as http, http.stream("GET", "/events") as resp:
            assert resp.status_code == 200
            original = self.follower.changed.set

            def changed() -> None:
                self.times.append(time.monotonic())
                original()

            self.follower.changed.set = changed  # type: ignore[method-assign]
            await self.follower.follow(resp)

    async def more(self, n: int, timeout: float) -> None:
        """Wait until ``n`` more messages arrived: the view is live."""
        want = len(self.times) + n
        deadline = time.monotonic() + timeout
        while len(self.times) < want:
            assert time.monotonic() < deadline, f"the visitor got no update for {timeout} s"
            await asyncio.sleep(0.05)

    def longest_gap(self, since: float) -> float:
        times = [since] + [t for t in self.times if t >= since] + [time.monotonic()]
        return max(b - a for a, b in itertools.pairwise(times))


@contextlib.asynccontextmanager
async def watching(target: Target) -> AsyncIterator[Watch]:
    watch = Watch()
    task = asyncio.create_task(watch.run(target))
    try:
        await watch.more(2, 15)  # the snapshot and a first delta
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await task


async def connect(target: Target, local: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", target.port, local_addr=(local, 0)), 15
    )


async def status_line(reader: asyncio.StreamReader, timeout: float = 15) -> str:
    """The response's status code, or "closed" when the server ended the connection without one."""
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, asyncio.IncompleteReadError):
        return "closed"
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", line)
    return match[1].decode() if match else "closed"


async def metric(http: httpx.AsyncClient, name: str) -> float:
    text = (await http.get("/metrics")).text
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, name
    return float(match[1])


async def until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()


# ------------------------------------------------------------------------------ many streams


def test_a_thousand_event_streams_from_one_address_leave_other_visitors_live():
    async def main():
        with hostile_server() as target:
            async with watching(target) as watch, client_from(target, VISITOR) as http:
                rss_before = rss_mb(target.pid)
                start = time.monotonic()
                held: list[asyncio.StreamWriter] = []
                outcomes: Counter[str] = Counter()

                async def attempt() -> None:
                    try:
                        reader, writer = await connect(target, "127.0.0.1")
                    except OSError:
                        outcomes["connect failed"] += 1
                        return
                    held.append(writer)  # the attacker never lets go
                    writer.write(STREAM_REQUEST)
                    outcomes[await status_line(reader)] += 1

                for _ in range(10):
                    await asyncio.gather(*(attempt() for _ in range(100)))
                rss_peak = rss_mb(target.pid)
                await watch.more(4, 10)  # still live after the attack, with 1000 sockets held
                gap = watch.longest_gap(start)

                assert sum(outcomes.values()) == 1000
                assert outcomes["200"] == 8, outcomes  # server.max_streams_per_address
                assert set(outcomes) <= {"200", "429", "closed"}, outcomes
                assert outcomes["429"] >= 900, outcomes  # refused with an answer, not a hang
                assert gap < 3.0, f"the visitor's view stalled for {gap:.1f} s"
                assert rss_peak - rss_before < 40, (rss_before, rss_peak)

                close_all(held)
                await until(lambda: _clients_are(http, 1), 20, "the attacker's streams to be released")
                reader, writer = await connect(target, "127.0.0.1")  # the address may stream again
                writer.write(STREAM_REQUEST)
                assert await status_line(reader) == "200"
                writer.close()
                print(
                    f"\n1000 SSE attempts from one address: {dict(outcomes)}; server RSS "
                    f"{rss_before:.1f} -> {rss_peak:.1f} MB (+{rss_peak - rss_before:.1f}), "
                    f"{rss_mb(target.pid):.1f} MB after; visitor's longest gap {gap:.2f} s"
                )

    asyncio.run(main())


async def _clients_are(http: httpx.AsyncClient, n: int) -> bool:
    return await metric(http, "apviz_sse_clients") == n


def test_one_address_cannot_hold_more_connections_than_its_share():
    async def main():
        with hostile_server(max_connections_per_address=20) as target:
            async with client_from(target, VISITOR) as http:
                held = [await connect(target, "127.0.1.9") for _ in range(26)]
                answers = await asyncio.gather(*(status_line(reader, 10) for reader, _ in held[20:]))
                assert answers == ["429"] * 6  # refused at once, with a reason
                assert (await http.get("/healthz")).status_code == 200  # others are served
                close_all([writer for _, writer in held])

                async def accepted_again() -> bool:
                    reader, writer = await connect(target, "127.0.1.9")
                    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    answer = await status_line(reader, 5)
                    writer.close()
                    return answer == "200"

                await until(accepted_again, 10, "closed connections to free the address's share")

    asyncio.run(main())


# ------------------------------------------------------------------------------ big requests


async def post_huge(target: Target, path: str, size: int, *, chunked: bool = False) -> tuple[str, float]:
    """POST a ``size``-byte body as fast as the server takes it; the status and how long it took.
    The answer is read after the first 256 KiB: it must come without the rest being sent."""
    reader, writer = await connect(target, "127.0.0.3")
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{target.port}\r\nOrigin: {target.base}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n\r\n"
    )
    t0 = time.monotonic()
    chunk = b"[" * 65536
    piece = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
    writer.write(head.encode())
    with contextlib.suppress(OSError):
        for _ in range(4):
            writer.write(piece)
            await writer.drain()
    answer = await status_line(reader, 10)
    took = time.monotonic() - t0
    with contextlib.suppress(OSError):  # the server closed the connection: sending the rest fails
        for _ in range(size // len(chunk)):
            writer.write(piece)
            await writer.drain()
    writer.close()
    return answer, took


def test_oversized_bodies_and_headers_are_refused_and_others_still_served():
    async def main():
        with hostile_server() as target:
            async with watching(target) as watch, client_from(target, VISITOR) as http:
                rss_before = rss_mb(target.pid)
                for path in ("/api/me/forget", "/api/operator/login"):
                    answer, took = await post_huge(target, path, 16 << 20)
                    assert answer == "413" and took < 5, (path, answer, took)
                    answer, _ = await post_huge(target, path, 4 << 20, chunked=True)
                    assert answer == "413", (path, answer)
                rss_after = rss_mb(target.pid)
                assert rss_after - rss_before < 8, (rss_before, rss_after)  # 40 MB were sent at it

                reader, writer = await connect(target, "127.0.0.3")
                pad = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(100))
                with contextlib.suppress(OSError):
                    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + pad + b"\r\n")
                    await writer.drain()
                assert await status_line(reader) in ("400", "431")  # 100 KB of headers
                writer.close()

                # A small body still reaches the route whole (the limit buffers, then replays it).
                login = await http.post(
                    "/api/operator/login", json={"password": "wrong"}, headers={"Origin": target.base}
                )
                assert login.status_code == 403 and login.json()["error"] == "wrong password"
                assert (await http.get("/healthz")).status_code == 200
                await watch.more(4, 10)
                print(f"\n56 MB of hostile bodies: server RSS {rss_before:.1f} -> {rss_after:.1f} MB")

    asyncio.run(main())


# ------------------------------------------------------------------------------ slowloris


def test_slow_requests_do_not_stop_others_and_are_closed():
    timeout = 3.0

    async def main():
        with hostile_server(request_timeout=timeout) as target:
            async with watching(target) as watch, client_from(target, VISITOR) as http:
                lasted: list[float] = []

                async def slow(local: str, trickle: bool, first: bool = False) -> None:
                    reader, writer = await connect(target, local)
                    if first:  # one complete request first: the slow one is the next on the connection
                        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                        assert await status_line(reader) == "200"
                        head = await reader.readuntil(b"\r\n\r\n")
                        await reader.readexactly(int(re.search(rb"content-length: (\d+)", head)[1]))
                    t0 = time.monotonic()
                    payload = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
                    try:
                        for i in range(len(payload)):
                            if trickle:
                                writer.write(payload[i : i + 1])  # a byte every 0.5 s
                                await writer.drain()
                            with contextlib.suppress(TimeoutError):
                                if await asyncio.wait_for(reader.read(100), 0.5) == b"":
                                    break  # the server closed it
                    except OSError:
                        pass
                    lasted.append(time.monotonic() - t0)
                    writer.close()

                locals_ = [f"127.0.1.{1 + i % 4}" for i in range(200)]
                attackers = [
                    asyncio.create_task(slow(local, trickle=i % 4 != 0, first=i % 50 == 1))
                    for i, local in enumerate(locals_)
                ]
                await asyncio.sleep(1.0)  # all 200 connected and dribbling
                latencies = []
                for _ in range(10):
                    t0 = time.monotonic()
                    assert (await http.get("/healthz")).status_code == 200
                    latencies.append(time.monotonic() - t0)
                await watch.more(2, 10)
                await asyncio.wait_for(asyncio.gather(*attackers), timeout + 20)

                assert len(lasted) == 200
                assert max(latencies) < 2.0, latencies
                assert min(lasted) > timeout - 1.0, sorted(lasted)[:5]  # closed by the deadline ...
                assert max(lasted) < timeout + 8.0, sorted(lasted)[-5:]  # ... and not much later
                print(
                    f"\n200 slowloris connections: a normal request took {1000 * max(latencies):.0f} ms at "
                    f"most ({1000 * sum(latencies) / len(latencies):.0f} ms mean); slow ones closed after "
                    f"{min(lasted):.1f}-{max(lasted):.1f} s (request_timeout {timeout} s)"
                )

    asyncio.run(main())


# ------------------------------------------------------------------------------ operator API

ACTIONS = ("mode", "language", "pause", "reset", "hide")


def test_operator_api_refuses_forged_sessions_and_tokens():
    """Complements tests/test_exhibit_server.py (no session, wrong token, cross-site): forged and
    foreign cookies, another session's token, requests without any origin, wrong methods."""

    async def main():
        with hostile_server() as target:
            origin = {"Origin": target.base}
            async with client_from(target, "127.0.0.4", headers=origin) as http:
                forged = [
                    secrets.token_urlsafe(32),
                    "",
                    "x" * 4000,
                    "../../etc/passwd",
                    '"; apviz_operator=1',
                ]
                for token in forged:
                    cookie = {"Cookie": f"apviz_operator={token}", **origin}
                    assert (await http.get("/api/operator/state", headers=cookie)).status_code == 401
                    for action in ACTIONS:
                        resp = await http.post(f"/api/operator/{action}", json={}, headers=cookie)
                        assert resp.status_code == 401, (token, action, resp.status_code)
                for action in (*ACTIONS, "login", "logout"):
                    assert (await http.get(f"/api/operator/{action}")).status_code == 405
                for path in ("/api/operator/", "/api/operator/nope", "/api/operator/state/x"):
                    assert (await http.get(path)).status_code == 404

                one = await http.post("/api/operator/login", json={"password": PASSWORD})
                assert one.status_code == 200
                cookie_one = {"Cookie": f"apviz_operator={one.cookies['apviz_operator']}"}
                http.cookies.clear()
                two = await http.post("/api/operator/login", json={"password": PASSWORD})
                http.cookies.clear()
                csrf_one, csrf_two = one.json()["csrf"], two.json()["csrf"]

                mine = {**cookie_one, **origin}
                refused = [
                    {**mine, "X-CSRF-Token": csrf_two},  # another operator's token
                    {**cookie_one, "X-CSRF-Token": csrf_one, "Origin": "null"},
                    {**cookie_one, "X-CSRF-Token": csrf_one, "Sec-Fetch-Site": "cross-site"},
                ]
                async with client_from(target, "127.0.0.4") as bare:  # sends no Origin of its own
                    refused_status = [
                        (await bare.post("/api/operator/pause", json={}, headers=h)).status_code
                        for h in refused
                    ]
                    no_origin = {**cookie_one, "X-CSRF-Token": csrf_one}
                    refused_status.append(
                        (await bare.post("/api/operator/pause", headers=no_origin)).status_code
                    )
                assert refused_status == [403] * 4

                # Logging out with a forged cookie ends nobody's session.
                forged_out = {"Cookie": f"apviz_operator={secrets.token_urlsafe(32)}", **origin}
                assert (await http.post("/api/operator/logout", headers=forged_out)).status_code == 200
                assert (await http.get("/api/operator/state", headers=mine)).status_code == 200

                screen = (await http.get("/api/state")).json()["view"]["screen"]
                assert screen["paused"] is False and screen["mode"] == "home"  # nothing got through

    asyncio.run(main())
