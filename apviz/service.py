"""A running apviz: sources -> state -> views -> hub, with the tick that joins them.

The pipeline applies events; a tick (at most ``tick_hz`` times a second) rebuilds the public view
when something changed, diffs it against the last one and publishes the delta to the hub. Views
are therefore never patched in place and a burst of events costs one rebuild, not one per event.

The tick is not a fixed clock: a change after a quiet spell is published ``settle`` seconds later
(enough for the rest of its burst, e.g. the DNS name behind a new connection, to land in the same
view), and only busy periods wait for the ``1 / tick_hz`` spacing. A fixed 4 Hz clock made a
visitor's first connection wait anything up to 250 ms before the screen could show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from apviz.live.diff import diff
from apviz.live.pipeline import NamedSource, Pipeline
from apviz.live.publicview import ViewBuilder
from apviz.live.state import LiveState
from apviz.replay.attract import Attract, Screen
from apviz.server.hub import Hub

if TYPE_CHECKING:
    from apviz.block.runner import Blocker
    from apviz.config import Config

log = logging.getLogger(__name__)


class LiveTap(Protocol):
    """Something that follows the live view (``apviz serve --record``'s recorder)."""

    def live(self, view: dict[str, Any], delta: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class Service:
    def __init__(
        self,
        state: LiveState,
        sources: list[NamedSource],
        builder: ViewBuilder,
        hub: Hub,
        tick_hz: float = 4.0,
        counters: list[Callable[[], dict[str, int]]] | None = None,
        settle: float = 0.02,
    ) -> None:
        if not 0 < tick_hz <= 4:
            raise ValueError(f"tick rate must be within (0, 4] per second, got {tick_hz!r}")
        if not 0 <= settle <= 1 / tick_hz:
            raise ValueError(f"settle must be within [0, 1/tick_hz] seconds, got {settle!r}")
        self.state = state
        self.pipeline = Pipeline(state, sources)
        self.builder = builder
        self.hub = hub
        self.tick = 1.0 / tick_hz
        self.settle = settle
        self._wake = asyncio.Event()
        self._revision = -1
        self.counters = counters or []
        self._dirty = True
        self._eps = 0.0
        self.started = time.time()
        # The checked configuration, set by apviz.app.build_service: the exhibit's routes (operator
        # console, join card) read [exhibit] and [operator] from it. None: those routes stay off.
        self.config: Config | None = None
        # Attract mode (apviz.replay.attract): when set, it decides whether the live view or a
        # recording is on screen. The live view is built either way and kept here.
        self.attract: Attract | None = None
        self.live_view: dict[str, Any] = {}
        self.taps: list[LiveTap] = []  # off unless the operator turns recording on
        # Tracker blocking ([exhibit] blocking): the blocker applies the state's decisions with nft
        # (the decisions and the operator's switch live in state.blocking).
        self.blocker: Blocker | None = None
        state.observers.append(self._on_change)
        self.pipeline.after_apply.append(self._mark)
        self._task: asyncio.Task[None] | None = None

    def _on_change(self, _change: object) -> None:
        self._dirty = True
        self._wake.set()

    def _attempts_counted(self) -> None:
        # A blocked attempt is no conntrack flow and no Change: the kiosk's "blocked: N" needs a build.
        self._dirty = True
        self._wake.set()

    def _mark(self) -> None:
        # Counter refreshes change bytes without a Change, so a batch that moved the state's revision
        # may alter the view. A batch of DNS lines alone does not: rebuilding for it would spend the
        # tick's budget just before the connection that usually follows a lookup.
        if self.state.revision != self._revision:
            self._revision = self.state.revision
            self._dirty = True
            self._wake.set()

    def publish_now(self) -> None:
        """Rebuild the view and publish its delta (the tick calls this; tests may too)."""
        view = self.builder.build(self.state)
        delta = diff(self.live_view, view)
        on_screen = not (self.hub.view.get("screen") or {}).get("recording")
        # "time" changes on every build; it is not a reason to wake every browser.
        if set(delta) == {"time"} and self.hub.seq:
            self.live_view = view
            if on_screen:
                self.hub.view = view
            return
        self.live_view = view
        for tap in self.taps:
            tap.live(view, delta)
        if self.attract is not None:
            screen = self.attract.on_live(view)
            if screen is Screen.RECORDING:
                return
            if screen is Screen.RESUMED or not on_screen:
                self.hub.replace(view)
                return
        self.hub.publish(view, delta if on_screen else diff(self.hub.view, view))

    async def _ticker(self) -> None:
        """Publish soon after the first change, then at most once per ``tick`` while changes go on."""
        loop = asyncio.get_running_loop()
        last_events = self.state.counts["events"]
        last = loop.time()
        last_build = -self.tick
        while True:
            with contextlib.suppress(TimeoutError):
                # The timeout only keeps the events-per-second figure fresh while all is quiet.
                async with asyncio.timeout(self.tick):
                    await self._wake.wait()
            self._wake.clear()
            now = loop.time()
            if self._dirty:
                await asyncio.sleep(max(last_build + self.tick, now + self.settle) - now)
            now = loop.time()
            if now - last >= self.tick:
                events = self.state.counts["events"]
                self._eps = (events - last_events) / (now - last)
                last_events, last = events, now
            if self._dirty:
                self._dirty = False
                last_build = now
                try:
                    self.publish_now()
                except Exception:
                    log.exception("building the view failed; the last view stays on screen")

    async def run(self) -> None:
        self.publish_now()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.pipeline.run(), name="apviz-pipeline")
            tg.create_task(self._ticker(), name="apviz-ticker")
            if self.attract is not None:
                tg.create_task(self.attract.run(), name="apviz-attract")
            if self.blocker is not None:
                self.blocker.on_attempts = self._attempts_counted
                tg.create_task(self.blocker.run(), name="apviz-blocker")

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="apviz-service")

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The running service task (``apviz.server.notify`` watches it to stop a server whose
        service died)."""
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        # A task that already failed is left for whoever watches it to report; re-raising here, in
        # the server's lifespan shutdown, would only print the same error again as a traceback.
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for tap in self.taps:
            tap.close()

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
            "flows_new": self.state.counts["flows_new"],
            "dns_answers": self.state.counts["dns_answers"],
            "dropped": self.hub.stats["dropped"],
            "parse_errors": parse_errors,
            "resyncs": self.state.counts.get("resyncs", 0),
            "refused": self.hub.stats["refused"],
            "published": self.hub.stats["published"],
        }
