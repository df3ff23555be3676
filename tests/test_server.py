"""The HTTP side, served by a real uvicorn on loopback: SSE snapshot + deltas, API, metrics, and
no task left behind after many connect/disconnect cycles (sse-starlette issue #152)."""

import asyncio
import contextlib
import json
import socket
import time

import httpx
import uvicorn

from apviz.events import (
    DnsAnswer,
    DnsAnswerKind,
    DnsQuery,
    Flow,
    FlowEvent,
    FlowEventKind,
    FlowTuple,
    Lease,
    LeaseSnapshot,
)
from apviz.live.pipeline import NamedSource
from apviz.live.privacy import Mode, Privacy
from apviz.live.publicview import ViewBuilder
from apviz.live.state import LiveState, StateConfig, networks
from apviz.server.app import create_app
from apviz.server.hub import Hub
from apviz.service import Service


class Feed:
    """A source the test pushes events into."""

    def __init__(self):
        self.queue = asyncio.Queue()

    async def __aiter__(self):
        while True:
            yield await self.queue.get()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def running(max_per_address=8):
    feed = Feed()
    state = LiveState(StateConfig(lan=networks(["10.99.1.0/24"])))
    service = Service(
        state,
        [NamedSource("feed", lambda: feed)],
        ViewBuilder(privacy=Privacy(Mode.HOME)),  # these tests follow hostnames; privacy: test_privacy
        Hub(max_per_address=max_per_address),
    )
    port = free_port()
    app = create_app(service)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield feed, service, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def phone_flow_events(fid=1, name="doubleclick.net"):
    f = Flow(
        fid,
        socket.AF_INET,
        FlowTuple(6, "10.99.1.101", "198.18.0.10", 40000 + fid, 443),
        FlowTuple(6, "198.18.0.10", "10.99.255.2", 443, 40000 + fid),
        orig_bytes=100,
        reply_bytes=900,
        orig_packets=2,
    )
    return [
        LeaseSnapshot((Lease(0, "02:a5:00:00:00:01", "10.99.1.101", "phone-1", None),)),
        DnsQuery(time.time(), fid, "10.99.1.101", "A", name),
        DnsAnswer(time.time(), fid, "10.99.1.101", DnsAnswerKind.REPLY, name, "198.18.0.10"),
        FlowEvent(FlowEventKind.NEW, f),
    ]


async def sse_events(response):
    fields = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield fields["event"], int(fields["id"].partition(".")[2]), json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            k, _, v = line.partition(": ")
            fields[k] = v


def test_sse_snapshot_then_delta_and_api():
    async def main():
        async with running() as (feed, _, base), httpx.AsyncClient(base_url=base, timeout=10) as http:
            async with http.stream("GET", "/events") as resp:
                assert resp.headers["content-type"].startswith("text/event-stream")
                events = sse_events(resp)
                kind, seq, data = await anext(events)
                assert kind == "snapshot" and data["view"]["nodes"] == {}
                for ev in phone_flow_events():
                    await feed.queue.put(ev)
                kind, seq2, data = await anext(events)
                while "nodes" not in data["changes"]:
                    kind, seq2, data = await anext(events)
                assert kind == "delta" and seq2 > seq
                labels = {n["label"] for n in data["changes"]["nodes"]["upsert"]}
                assert {"phone-1", "doubleclick.net"} <= labels
            state = (await http.get("/api/state")).json()
            dev_id = next(iter(state["view"]["devices"]))
            # A device's detail is for that device only (tests/test_web.py, tests/test_web_lab.py):
            # loopback is no device here, so it gets neither this one's nor an answer about "nope".
            assert (await http.get(f"/api/devices/{dev_id}")).status_code == 403
            assert (await http.get("/api/devices/nope")).status_code == 403
            assert (await http.get("/api/me")).status_code == 404
            metrics = (await http.get("/metrics")).text
            assert "apviz_flows 1.0" in metrics and "apviz_devices 1.0" in metrics
            # What the soak's liveness counts (bench/soak.py): one new connection, one DNS answer.
            assert "apviz_flows_new_total 1.0" in metrics and "apviz_dns_answers_total 1.0" in metrics
            assert (await http.get("/healthz")).json()["status"] == "ok"
            # No address, MAC or client id in the public view.
            text = json.dumps(state)
            assert "10.99.1.101" not in text and "02:a5:00:00:00:01" not in text

    asyncio.run(main())


def test_per_address_stream_limit_returns_429():
    async def main():
        async with running(max_per_address=2) as (_, service, base):
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                async with http.stream("GET", "/events"), http.stream("GET", "/events"):
                    while len(service.hub.clients) < 2:
                        await asyncio.sleep(0.01)
                    assert (await http.get("/events")).status_code == 429
                for _ in range(200):
                    if not service.hub.clients:
                        break
                    await asyncio.sleep(0.01)
                assert service.hub.clients == set()

    asyncio.run(main())


def test_thousand_connect_disconnect_cycles_leave_no_task_behind():
    async def main():
        async with running(max_per_address=4) as (_, service, base):
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:

                async def cycle():
                    async with http.stream("GET", "/events") as resp:
                        async for line in resp.aiter_lines():
                            if line.startswith("data:"):
                                break

                await cycle()
                await asyncio.sleep(0.2)
                baseline = len(asyncio.all_tasks())
                for _ in range(1000):
                    await cycle()
                for _ in range(100):
                    await asyncio.sleep(0.05)
                    if len(asyncio.all_tasks()) <= baseline and not service.hub.clients:
                        break
                leftover = len(asyncio.all_tasks()) - baseline
                assert leftover <= 0, [t.get_name() for t in asyncio.all_tasks()]
                assert service.hub.clients == set() and service.hub._per_address == {}

    asyncio.run(main())
