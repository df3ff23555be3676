"""Cancelling the journal source always ends it, even while journald wakes it constantly.

On Python 3.11 ``asyncio.wait_for`` swallows a cancel that lands in the same loop turn as the
awaited wake-up; the source then loops on and whoever cancelled it waits forever (this hung a CI
run). The fake journal below keeps its descriptor readable so that every turn is such a race."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random

from apviz.sources.journal import DnsmasqJournalSource


class _AlwaysReadyReader:
    """A journal reader with no entries whose descriptor is never drained: always readable."""

    def __init__(self, **_: object) -> None:
        self._r, self._w = os.pipe()
        os.write(self._w, b"x")
        self.turns = 0

    def add_match(self, **_: object) -> None: ...

    def seek_realtime(self, _: float) -> None: ...

    def _next(self) -> bool:
        self.turns += 1
        if self.turns > 2000:  # a cancelled source that keeps polling fails the test, not hangs it
            raise RuntimeError("the source ignored its cancellation")
        return False

    def fileno(self) -> int:
        return self._r

    def process(self) -> int:
        return 0

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


class _FakeJournal:
    Reader = _AlwaysReadyReader
    INVALIDATE = 2


def test_cancel_always_ends_the_source(monkeypatch):
    monkeypatch.setattr("apviz.sources.journal._journal_module", lambda: _FakeJournal)
    rng = random.Random(7)

    async def consume(source: DnsmasqJournalSource) -> None:
        async for _ in source:
            pass

    async def main() -> int:
        ignored = 0
        for _ in range(300):
            task = asyncio.create_task(consume(DnsmasqJournalSource(path="/x", poll_interval=0.5)))
            for _ in range(rng.randrange(1, 6)):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            if not task.cancelled():
                ignored += 1
        return ignored

    assert asyncio.run(main()) == 0
