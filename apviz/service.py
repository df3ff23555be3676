"""A running apviz: sources -> state -> views -> hub, with the tick that joins them.

The pipeline applies events; a tick (at most ``tick_hz`` times a second) rebuilds the public view
when something changed, diffs it against the last one and publishes the delta to the hub. Views
are therefore never patched in place and a burst of events costs one rebuild, not one per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from apviz.live.diff import diff
from apviz.live.pipeline import NamedSource, Pipeline
from apviz.live.publicview import ViewBuilder
from apviz.live.state import LiveState
from apviz.server.hub import Hub

log = logging.getLogger(__name__)


class Service:
    def __init__(
        self,
        state: LiveState,
        sources: list[NamedSource],
        builder: ViewBuilder,
        hub: Hub,
        tick_hz: float = 4.0,
        counters: list[Callable[[], dict[str, int]]] | None = None,
    ) -> None:
        if not 0 < tick_hz <= 4:
            raise ValueError(f"tick rate must be within (0, 4] per second, got {tick_hz!r}")
        self.state = state
        self.pipeline = Pipeline(state, sources)
        self.builder = builder
        self.hub = hub
        self.tick = 1.0 / tick_hz
        self.counters = counters or []
        self._dirty = True
        self._eps = 0.0
        self.started = time.time()
        state.observers.append(self._on_change)
        self.pipeline.after_apply.append(self._mark)
        self._task: asyncio.Task[None] | None = None

    def _on_change(self, _change: object) -> None:
        self._dirty = True

    def _mark(self) -> None:
        # Counter refreshes change bytes without a Change; any applied batch may alter the view.
        self._dirty = True

    def publish_now(self) -> None:
        """Rebuild the view and publish its delta (the tick calls this; tests may too)."""
        view = self.builder.build(self.state)
        delta = diff(self.hub.view, view)
        # "time" changes on every build; it is not a reason to wake every browser.
        if set(delta) == {"time"} and self.hub.seq:
            self.hub.view = view
            return
        self.hub.publish(view, delta)

    async def _ticker(self) -> None:
        last_events = self.state.counts["events"]
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.tick)
            now = time.monotonic()
            events = self.state.counts["events"]
            self._eps = (events - last_events) / max(now - last, 1e-6)
            last_events, last = events, now
            if self._dirty:
                self._dirty = False
                try:
                    self.publish_now()
                except Exception:
                    log.exception("building the view failed; the last view stays on screen")

    async def run(self) -> None:
        self.publish_now()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.pipeline.run(), name="apviz-pipeline")
            tg.create_task(self._ticker(), name="apviz-ticker")

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="apviz-service")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def figures(self) -> dict[str, Any]:
        """Everything /metrics and /healthz report, read at request time."""
        parse_errors = 0
        for read in self.counters:
            parse_errors += sum(v for k, v in read().items() if k in ("unparsed", "errors", "parse_errors"))
        flows = self.state.flows
        return {
            "flows": len(flows),
            "flows_open": sum(1 for r in flows.values() if r.open),
            "devices": len(self.state.devices),
            "sse_clients": len(self.hub.clients),
            "queue_depth": self.pipeline.queue.qsize(),
            "eps": round(self._eps, 2),
            "events": self.state.counts["events"],
            "dropped": self.hub.stats["dropped"],
            "parse_errors": parse_errors,
            "resyncs": self.state.counts.get("resyncs", 0),
            "refused": self.hub.stats["refused"],
            "published": self.hub.stats["published"],
        }
