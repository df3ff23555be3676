"""Applying the live state's block decisions to the kernel, off the event loop, and reading back attempts.

The state's :class:`~apviz.live.blocking.BlockDecider` calls :meth:`Blocker.queue` with each action
(cheap: a deque append and a wake-up). :meth:`Blocker.run` installs the table (replacing a crashed
run's), then batches whatever is queued into one ``nft -f`` in an executor thread, so the pipeline
never waits for nft. Blocked attempts come from the sets' per-element counters, read every
``poll`` seconds (0.25 s: the kiosk's 1 s budget holds with a tick of 0.25 s on top) and handed to
the decider as deltas. Counters were chosen over the NFLOG copies for the count: they need no
packet decoding and cannot be lost to a full socket buffer; the copies still go to the capture group
for anyone who wants each attempt's tuple. At stop (task cancelled) the table is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from apviz.block.table import BlockTable
from apviz.live.blocking import BlockAction, BlockDecider
from apviz.sources.capture import CaptureError

log = logging.getLogger(__name__)

MAX_QUEUED = 65536  # actions waiting for nft; beyond it the oldest are dropped (and counted)


class Blocker:
    def __init__(self, table: BlockTable, poll: float = 0.25) -> None:
        self.table = table
        self.poll = poll
        self.decider: BlockDecider | None = None  # set by the assembler after creating the decider
        self.on_attempts: Callable[[], None] | None = None  # the service's "rebuild the view"
        self._queue: deque[BlockAction] = deque(maxlen=MAX_QUEUED)
        self._wake: asyncio.Event | None = None
        self._last: dict[tuple[str, str], int] = {}
        self.counts = {"applied": 0, "errors": 0, "batches": 0}
        self.ready = False

    def queue(self, action: BlockAction) -> None:
        self._queue.append(action)
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        try:
            await loop.run_in_executor(None, self.table.install)
            self.ready = True
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll):
                        await self._wake.wait()
                self._wake.clear()
                await self._flush(loop)
                await self._read_counters(loop)
        finally:
            self.ready = False
            await asyncio.shield(loop.run_in_executor(None, self.table.remove))

    async def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._queue:
            return
        batch = list(self._queue)
        self._queue.clear()
        try:
            await loop.run_in_executor(None, self.table.apply, batch)
            self.counts["applied"] += len(batch)
            self.counts["batches"] += 1
        except CaptureError as exc:
            self.counts["errors"] += 1
            log.warning("block: %s", exc)

    async def _read_counters(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.decider is None or not self.table.present:
            return
        now = await loop.run_in_executor(None, self.table.counters)
        moved = False
        for key, packets in now.items():
            delta = packets - self._last.get(key, 0)
            if delta < 0:  # the element was removed and added again: its counter restarted
                delta = packets
            if delta:
                self.decider.on_blocked_attempt(key[0], key[1], delta)
                moved = True
        self._last = now
        if moved and self.on_attempts is not None:
            self.on_attempts()
