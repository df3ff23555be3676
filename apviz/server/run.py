"""Running the web service under uvicorn, bound only where the configuration says.

The server faces the visitors' Wi-Fi, so its settings are bounds, not tuning:

- ``limit_concurrency`` (2048): above it uvicorn answers 503 instead of starting more work; the
  process's open-file limit is raised to fit it (systemd's default soft limit of 1024 would refuse
  connections at accept() first);
- ``server.max_connections_per_address`` and ``server.request_timeout`` (:mod:`apviz.server.limits`):
  one address cannot take the slots of everyone else, and a client that sends its request a byte at
  a time is closed after the timeout;
- ``timeout_keep_alive`` (5 s): idle keep-alive connections are closed;
- ``h11_max_incomplete_event_size`` (16 KiB): a request head still incomplete at that size is refused
  with 400; one that arrives complete but larger gets 431 from :class:`~apviz.server.limits.RequestLimits`;
- request bodies over 64 KiB are refused with 413 (:class:`~apviz.server.limits.RequestLimits`).
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp

from apviz.app import build_service
from apviz.config import Config
from apviz.server.app import create_app
from apviz.server.limits import MAX_HEAD, guarded_h11
from apviz.server.notify import supervise
from apviz.service import Service

log = logging.getLogger(__name__)

LIMIT_CONCURRENCY = 2048
KEEP_ALIVE_SECONDS = 5


def uvicorn_config(app: ASGIApp, cfg: Config, **overrides: object) -> uvicorn.Config:
    """The uvicorn configuration ``apviz serve`` uses (tests serve with it too)."""
    options: dict[str, object] = {
        "host": cfg.server.listen,
        "port": cfg.server.port,
        "log_level": "warning",
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 2,
        "http": guarded_h11(cfg.server.request_timeout, cfg.server.max_connections_per_address),
        "limit_concurrency": LIMIT_CONCURRENCY,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "h11_max_incomplete_event_size": MAX_HEAD,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]


def raise_open_file_limit(wanted: int = LIMIT_CONCURRENCY + 256) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (never above the hard limit); the new value."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit to %d: %s", target, exc)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning("open-file limit is %d; connections beyond it are refused at accept()", soft)
    return soft


async def serve(cfg: Config, prepare: Callable[[Service], None] | None = None) -> None:
    """``apviz serve``: ``prepare`` may attach to the service before it starts (``--record``)."""
    service = build_service(cfg)
    if prepare is not None:
        prepare(service)
    app = create_app(service)
    host = cfg.server.listen
    raise_open_file_limit()
    log.warning("apviz serving on http://%s:%d/", host if ":" not in host else f"[{host}]", cfg.server.port)
    server = uvicorn.Server(uvicorn_config(app, cfg))
    await supervise(server, service)  # sd_notify READY/WATCHDOG; a failed service stops the server
