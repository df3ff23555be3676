"""Playing a recording back in time: which view is due when, at a speed, once or in a loop.

Every view played is marked ``screen.recording = true`` so the kiosk can say "Recording — not
live": a recording must never pass for the present. The clock and the sleep are parameters so the
timing can be tested without waiting for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from apviz.live.diff import View
from apviz.replay.recording import Recording

MIN_SPEED, MAX_SPEED = 0.1, 100.0


@dataclass(frozen=True, slots=True)
class Frame:
    at: float  # seconds after playing started
    view: View  # the whole view, marked as a recording
    first: bool  # the start of a pass: show it as a fresh snapshot, not as a change


def marked(view: View) -> View:
    """The view as shown from a recording (a copy; the recording itself is not changed)."""
    return {**view, "screen": {**(view.get("screen") or {}), "recording": True}}


def schedule(rec: Recording, speed: float = 1.0, loop: bool = False, gap: float = 3.0) -> Iterator[Frame]:
    """The frames with their due times; with ``loop`` it never ends, each pass starting ``gap``
    seconds (real time, not scaled) after the last view of the one before."""
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise ValueError(f"replay speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed!r}")
    if loop and gap <= 0:
        raise ValueError(f"the pause between passes of a loop must be positive, got {gap!r}")
    return _frames(rec, speed, loop, gap)


def _frames(rec: Recording, speed: float, loop: bool, gap: float) -> Iterator[Frame]:
    offset = 0.0
    while True:
        for i, (t, view) in enumerate(rec.views()):
            yield Frame(offset + t / speed, marked(view), first=i == 0)
        if not loop:
            return
        offset += rec.duration / speed + gap


class Player:
    """Shows a recording's frames at their due times through ``show(view, first)``."""

    def __init__(
        self,
        rec: Recording,
        speed: float = 1.0,
        loop: bool = False,
        gap: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.frames = schedule(rec, speed, loop, gap)  # validates speed and gap now, not when played
        self._clock = clock
        self._sleep = sleep

    async def play(self, show: Callable[[View, bool], None]) -> None:
        """Returns after the last frame (never, when looping). A late frame is shown at once:
        a slow machine plays a recording late, it does not skip it."""
        start = self._clock()
        for frame in self.frames:
            wait = start + frame.at - self._clock()
            if wait > 0:
                await self._sleep(wait)
            show(frame.view, frame.first)
