"""An SSE client that keeps the view a browser would have: for tests and benchmarks.

It applies ``snapshot`` and ``delta`` events with :func:`apviz.live.diff.apply`, exactly as
``web/js/stream.js`` does, and lets callers wait for a view that satisfies a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from apviz.live.diff import apply


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
