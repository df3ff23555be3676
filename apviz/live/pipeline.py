"""Runs the sources and the single owner of the live state.

Each source runs in its own task and puts events on one bounded queue; one task takes them off
and applies them. When the state falls behind, ``put`` waits, the sources stop reading, and the
kernel's buffers take the slack (conntrack then reports ENOBUFS and its source resynchronises):
memory stays bounded and nothing is silently half-applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass

from apviz.events import Event, SourceError
from apviz.live.state import LiveState

log = logging.getLogger(__name__)


@dataclass(slots=True)
class NamedSource:
    """A source and how to (re)open it. ``factory`` is called again after a recoverable failure."""

    name: str
    factory: Callable[[], AsyncIterable[Event]]
    restart: bool = True
    # Ready only once it delivered an event (conntrack's first dump). Quiet sources (a log nobody
    # writes to on an empty network) count as ready once they are open and waiting.
    must_deliver: bool = False


class Pipeline:
    """Owns the event queue, the source tasks and the task that applies events to the state."""

    def __init__(
        self,
        state: LiveState,
        sources: list[NamedSource],
        queue_size: int = 16384,
        expire_interval: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.state = state
        self.sources = sources
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=queue_size)
        self.expire_interval = expire_interval
        self.max_backoff = max_backoff
        # Set once every source is open: those with ``must_deliver`` after their first event, the
        # others after their first read did not fail at once (a quiet log may stay silent for hours).
        self.ready = asyncio.Event()
        self.after_apply: list[Callable[[], None]] = []
        self._started: set[str] = set()

    def _started_ok(self, name: str) -> None:
        if name not in self._started:
            self._started.add(name)
            if len(self._started) == len(self.sources):
                self.ready.set()

    def _ready_if_alive(self, name: str, ended: asyncio.Event) -> None:
        if not ended.is_set():
            self._started_ok(name)

    async def _pump(self, src: NamedSource) -> None:
        backoff = 0.5
        loop = asyncio.get_running_loop()
        while True:
            ended = asyncio.Event()  # this attempt failed or ended
            if not src.must_deliver:
                # Open and still running a moment later: as ready as a quiet source gets.
                loop.call_later(0.5, self._ready_if_alive, src.name, ended)
            try:
                async for event in src.factory():
                    self._started_ok(src.name)
                    await self.queue.put(event)
                    backoff = 0.5
                if not src.restart:
                    return
                msg = "ended"
            except PermissionError:
                raise
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not src.restart:
                    raise
                msg = f"failed: {exc}"
                log.warning("source %s %s; retrying in %.1f s", src.name, msg, backoff, exc_info=True)
            ended.set()
            await self.queue.put(SourceError(src.name, f"source {msg}"))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _owner(self) -> None:
        loop = asyncio.get_running_loop()
        next_expire = loop.time() + self.expire_interval
        while True:
            timeout = max(0.0, next_expire - loop.time())
            # A flow waiting for its own name (``name_wait``) is due sooner than the next expiry:
            # wake for it, so it shows when its wait ends and not up to a second later.
            due = self.state.next_name_deadline()
            if due is not None:
                timeout = min(timeout, due)
            event = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    event = await self.queue.get()
            if event is not None:
                self.state.apply(event)
                # Drain what is already queued before telling observers, so one burst is one update.
                for _ in range(2000):
                    if self.queue.empty():
                        break
                    self.state.apply(self.queue.get_nowait())
                for hook in self.after_apply:
                    hook()
                await asyncio.sleep(0)  # let the sources and the server run during a long burst
            if loop.time() >= next_expire:
                self.state.expire()
                next_expire = loop.time() + self.expire_interval
            elif due is not None:
                self.state.settle_names()

    async def run(self) -> None:
        """Run until cancelled; a source's PermissionError (no CAP_NET_ADMIN) stops everything."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._owner(), name="apviz-owner")
            for src in self.sources:
                tg.create_task(self._pump(src), name=f"apviz-source-{src.name}")
