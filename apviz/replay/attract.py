"""Attract mode: when no visitor has been active for a while, the kiosk plays a recorded session.

The service keeps building the live view underneath and hands each one to :meth:`Attract.on_live`,
which says whether the hub should show it. After ``idle_after`` seconds without an active visitor
device (one with an open connection, or one that just appeared), the recording plays in a loop,
every view marked ``screen.recording``; the first live view with an active device takes the
screen back at once, as a fresh snapshot to every browser (nothing of the recording is animated
into the live picture). ``apviz replay`` is the same thing with no live sources and no wait.

A recording that is missing or damaged never stops the kiosk: attract mode reports itself
``unavailable`` (log, ``/healthz``) and the screen stays live. The file is tried again later,
so an operator can put it in place without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apviz.live.diff import View, diff
from apviz.replay.player import Player
from apviz.replay.recording import Recording, RecordingError, read_recording
from apviz.server.hub import Hub

log = logging.getLogger(__name__)


class Screen(enum.Enum):
    """What the hub should do with a new live view."""

    LIVE = "live"  # publish it as usual
    RESUMED = "resumed"  # a visitor is back: replace the recording with it (a fresh snapshot)
    RECORDING = "recording"  # the recording holds the screen: keep the live view off it


def busy(view: View) -> bool:
    """A device with an open connection, or a screen the operator paused (their picture stays)."""
    if (view.get("screen") or {}).get("paused"):
        return True
    return any(d.get("open") for d in (view.get("devices") or {}).values())


class Attract:
    def __init__(
        self,
        hub: Hub,
        source: Path | Recording,
        idle_after: float,
        loop: bool = True,
        speed: float = 1.0,
        gap: float = 3.0,
        retry_load: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if idle_after < 0:
            raise ValueError(f"attract mode's idle time must not be negative, got {idle_after!r}")
        self.hub = hub
        self.path = source if isinstance(source, Path) else source.path
        self.recording = source if isinstance(source, Recording) else None
        self.idle_after = idle_after
        self.loop = loop
        self.speed = speed
        self.gap = gap
        self.retry_load = retry_load
        self._clock = clock
        self.state = "waiting"  # waiting (live on screen), playing, unavailable (no usable recording)
        self.error: str | None = None
        self.playing = False
        self.plays = 0
        self._last_active = clock()
        self._known: set[str] = set()
        self._live: View = {}
        self._wake = asyncio.Event()
        self._halted = asyncio.Event()

    # ------------------------------------------------------------------------ the service's hook

    def on_live(self, view: View) -> Screen:
        """Called with every new live view; decides whether it goes on screen."""
        self._live = view
        devices = set(view.get("devices") or {})
        arrived = devices - self._known
        self._known = devices
        if arrived or busy(view):
            self._last_active = self._clock()
            if self.playing:
                self.playing = False
                self.state = "waiting"
                self._halted.set()
                return Screen.RESUMED
            return Screen.LIVE
        if self.playing or self._due():
            self._wake.set()
            return Screen.RECORDING
        return Screen.LIVE

    def _due(self) -> bool:
        return self.recording is not None and self._clock() - self._last_active >= self.idle_after

    def status(self) -> dict[str, Any]:
        """For ``/healthz``: is the recording playing, waiting for quiet, or unusable (and why)."""
        return {
            "state": self.state,
            "idle_after": self.idle_after,
            "recording": str(self.path) if self.path is not None else None,
            "error": self.error,
        }

    # ------------------------------------------------------------------------ the task

    async def run(self) -> None:
        """Runs beside the service; never raises (a failing recording leaves the kiosk live)."""
        try:
            if self.recording is None:
                self._load()
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("attract mode failed; the kiosk stays live")
            self.state, self.error = "unavailable", f"attract mode failed: {exc}"
            if self.playing:
                self.playing = False
                self.hub.replace(self._live)

    async def _run(self) -> None:
        while True:
            left = self._last_active + self.idle_after - self._clock()
            if left > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await self._wake.wait()
                continue
            if busy(self._live):  # open connections that have not changed for a while
                self._last_active = self._clock()
                continue
            if self.recording is None and not self._load():
                self._last_active = self._clock() - self.idle_after + self.retry_load
                continue
            await self._play()

    def _load(self) -> bool:
        assert self.path is not None
        try:
            self.recording = read_recording(self.path)
        except (RecordingError, OSError) as exc:
            message = f"attract recording unusable, the kiosk stays live: {exc}"
            if message != self.error:
                log.warning("%s", message)
            self.state, self.error = "unavailable", message
            return False
        self.state = "waiting"
        self.error = "; ".join(self.recording.warnings) or None
        return True

    async def _play(self) -> None:
        assert self.recording is not None
        player = Player(self.recording, self.speed, self.loop, self.gap)
        self.playing, self.state = True, "playing"
        self.plays += 1
        self._halted.clear()
        task = asyncio.create_task(player.play(self._show), name="apviz-attract-player")
        try:
            halted = asyncio.create_task(self._halted.wait())
            try:
                await asyncio.wait({task, halted}, return_when=asyncio.FIRST_COMPLETED)
                if task.done():
                    task.result()  # a failure of the player surfaces here
                    await halted  # played once (no loop): hold the last view until a visitor comes
            finally:
                halted.cancel()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _show(self, view: View, first: bool) -> None:
        if not self.playing:
            return  # a visitor took the screen back while this frame was due
        if first or not (self.hub.view.get("screen") or {}).get("recording"):
            self.hub.replace(view)
        else:
            self.hub.publish(view, diff(self.hub.view, view))
