"""``apviz replay``: the kiosk's web app driven by a recording instead of live sources.

It is the ordinary service with no sources and attract mode always on: the same routes, pages and
stream, so a replay looks exactly like the live run it recorded, except that every view says
``screen.recording``.
"""

from __future__ import annotations

import logging

import uvicorn

from apviz.config import Config
from apviz.live.publicview import ViewBuilder
from apviz.live.state import LiveState
from apviz.replay.attract import Attract
from apviz.replay.recording import Recording
from apviz.server.app import create_app
from apviz.server.hub import Hub
from apviz.service import Service

log = logging.getLogger(__name__)


def replay_service(rec: Recording, loop: bool = False, speed: float = 1.0, gap: float = 3.0) -> Service:
    """A service whose screen is the recording from the start (it has no live devices to yield to)."""
    hub = Hub()
    service = Service(LiveState(), [], ViewBuilder(), hub)
    service.config = Config()  # defaults: no operator console, no join card
    service.attract = Attract(hub, rec, idle_after=0.0, loop=loop, speed=speed, gap=gap)
    service.pipeline.ready.set()  # no source to wait for
    return service


async def replay(rec: Recording, listen: str, port: int, loop: bool = False, speed: float = 1.0) -> None:
    """Serve the replay until Ctrl-C."""
    service = replay_service(rec, loop=loop, speed=speed)
    host = listen if ":" not in listen else f"[{listen}]"
    views = len(rec.frames) + 1
    looping = ", looping" if loop else ""
    print(
        f"replaying {views} view{'s' if views > 1 else ''} ({rec.duration:.0f} s{looping}) "
        f"on http://{host}:{port}/  (Ctrl-C ends)",
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service),
            host=listen,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
    )
    await server.serve()
