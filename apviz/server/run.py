"""Running the web service under uvicorn, bound only where the configuration says."""

from __future__ import annotations

import logging

import uvicorn

from apviz.app import build_service
from apviz.config import Config
from apviz.server.app import create_app
from apviz.server.notify import supervise

log = logging.getLogger(__name__)


async def serve(cfg: Config) -> None:
    service = build_service(cfg)
    app = create_app(service)
    host = cfg.server.listen
    log.warning("apviz serving on http://%s:%d/", host if ":" not in host else f"[{host}]", cfg.server.port)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=cfg.server.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
            limit_concurrency=2048,
            h11_max_incomplete_event_size=16 * 1024,
        )
    )
    await supervise(server, service)  # sd_notify READY/WATCHDOG; a failed service stops the server
