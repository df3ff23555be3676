"""The Starlette application: routes only; the work lives in the service and the hub."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from apviz.server.exhibit import exhibit_routes
from apviz.server.hub import TooManyStreams
from apviz.server.limits import RequestLimits
from apviz.server.me import me_routes
from apviz.server.metrics import make_registry, render
from apviz.server.static import SecurityHeaders, static_routes
from apviz.service import Service

HEARTBEAT_SECONDS = 15.0


class _Stream(EventSourceResponse):
    """An event stream that releases its hub slot however the response ends (disconnect, error,
    server shutdown), so the per-address count and the client set can never leak."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close
        self._content = content

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
            aclose = getattr(self._content, "aclose", None)
            if aclose is not None:
                await aclose()


def create_app(service: Service, manage_service: bool = True, web_dir: Path | str | None = None) -> Starlette:
    """The app for one service. With ``manage_service`` the app starts and stops it with its lifespan.
    ``web_dir`` is the static front-end (default: the repository's ``web/``)."""
    registry = make_registry(service.figures)

    async def healthz(request: Request) -> Response:
        ready = service.pipeline.ready.is_set()
        body: dict[str, Any] = {
            "status": "ok" if ready else "starting",
            "uptime": round(time.time() - service.started, 1),
        }
        if service.attract is not None:  # a missing or damaged recording shows here, never as an error
            body["attract"] = service.attract.status()
        return JSONResponse(body, status_code=200 if ready else 503)

    async def state(request: Request) -> Response:
        return JSONResponse({"seq": service.hub.seq, "view": service.hub.view})

    async def events(request: Request) -> Response:
        address = request.client.host if request.client else "unknown"
        try:
            client = service.hub.connect(address, request.headers.get("last-event-id"))
        except TooManyStreams:
            return JSONResponse(
                {"error": "too many event streams from this address; close other tabs"}, status_code=429
            )

        return _Stream(
            service.hub.stream(client),
            on_close=lambda: service.hub.disconnect(client),
            ping=HEARTBEAT_SECONDS,
            send_timeout=30.0,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def metrics(request: Request) -> Response:
        return Response(render(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_service:
            await service.start()
        try:
            yield
        finally:
            if manage_service:
                await service.stop()

    routes = [
        Route("/healthz", healthz),
        Route("/api/state", state),
        *me_routes(service, HEARTBEAT_SECONDS),  # /api/me, /api/me/events, /api/devices/{id}
        Route("/events", events),
        Route("/metrics", metrics),
    ]
    routes += exhibit_routes(service, web_dir)  # /api/me/forget, /operator, /api/operator/*, join card
    routes += static_routes(web_dir)
    middleware = [Middleware(SecurityHeaders), Middleware(RequestLimits)]  # 431/413 over 16/64 KiB
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
