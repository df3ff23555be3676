"""An SSE client that keeps the view a browser would have: for tests and benchmarks.

It applies ``snapshot`` and ``delta`` events with :func:`apviz.live.diff.apply`, exactly as
``web/js/stream.js`` does, and lets callers wait for a view that satisfies a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx
import uvicorn

from apviz.live.diff import apply

if TYPE_CHECKING:
    from apviz.lab.lab import Lab
    from apviz.service import Service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(
    lab: Lab,
    flow_hold: float,
    *,
    names: dict[str, Any] | None = None,
    on_service: Callable[[Service], None] | None = None,
    ready_timeout: float = 10.0,
) -> AsyncIterator[str]:
    """The service as ``apviz lab --view serve`` builds it, on loopback; yields its base URL once
    the server listens and the sources are up. ``names`` overrides the ``[names]`` section;
    ``on_service`` sees the service before it starts (a bench's observer on its state)."""
    from apviz.app import build_service
    from apviz.lab.serve import lab_config
    from apviz.server.app import create_app

    port = free_port()
    service = build_service(lab_config(lab, port, state={"flow_hold": flow_hold}, names=names or {}))
    if on_service is not None:
        on_service(service)
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        await asyncio.wait_for(service.pipeline.ready.wait(), ready_timeout)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class ViewFollower:
    """An SSE client that keeps the view a browser would have, and when each version arrived."""

    def __init__(self) -> None:
        self.view: dict[str, Any] = {}
        self.changed = asyncio.Event()
        self.events = 0

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
                self.events += 1
                self.changed.set()
            fields = {}

    async def until(self, predicate: Callable[[dict[str, Any]], Any], timeout: float, what: str) -> Any:
        """Wait for a view that satisfies ``predicate``; return its value and when it arrived."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self.view)
            if value:
                return value, time.monotonic()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no view with {what} within {timeout} s; last view: {self.view}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
