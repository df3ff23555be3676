"""The server tests/test_hostile_http.py attacks: the real app with the uvicorn settings of
``apviz serve`` (:func:`apviz.server.run.uvicorn_config`), fed by a synthetic source whose view
changes four times a second, so that a visitor's live view can be watched while the server is
under attack. It runs in its own process so its memory and event loop are its own, not the
attackers'.

``python -m tests.hostile_server '<config as JSON>'`` prints ``ready PORT`` once it serves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys

import uvicorn

from apviz.config import from_dict
from apviz.events import FlowEvent, FlowEventKind
from apviz.live.pipeline import NamedSource
from apviz.live.privacy import Privacy
from apviz.live.publicview import ViewBuilder
from apviz.live.state import LiveState, StateConfig, networks
from apviz.server.app import create_app
from apviz.server.hub import Hub
from apviz.server.run import raise_open_file_limit, uvicorn_config
from apviz.service import Service
from tests.sseview import free_port
from tests.test_exhibit_server import HASH, Feed, describe, phone

TICK = 0.25


async def tick(feed: Feed) -> None:
    """One phone whose connection moves more bytes every tick: the view changes every tick."""
    events = phone(ip="10.99.1.7", mac="02:a5:00:00:00:07", host="visitor", fid=1)
    for event in events:
        await feed.queue.put(event)
    flow = events[-1].flow
    n = 0
    while True:
        await asyncio.sleep(TICK)
        n += 1
        flow = dataclasses.replace(flow, orig_bytes=flow.orig_bytes + 1000 * n)
        await feed.queue.put(FlowEvent(FlowEventKind.UPDATE, flow))


async def main(config: dict[str, object]) -> None:
    port = free_port()
    cfg = from_dict({**config, "operator": {"password_hash": HASH}}, env={})
    cfg.server.port = port
    feed = Feed()
    state = LiveState(StateConfig(lan=networks(["10.99.1.0/24"])))
    builder = ViewBuilder(describe=describe, privacy=Privacy("home"))
    hub = Hub(queue_size=cfg.server.client_queue, max_per_address=cfg.server.max_streams_per_address)
    service = Service(state, [NamedSource("feed", lambda: feed)], builder, hub)
    service.config = cfg
    raise_open_file_limit()
    server = uvicorn.Server(uvicorn_config(create_app(service), cfg))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.01)
    ticker = asyncio.create_task(tick(feed))
    print(f"ready {port}", flush=True)
    await serving
    ticker.cancel()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
