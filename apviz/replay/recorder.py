"""Turning a sequence of public views into a recording, and refusing what must not reach the disk.

The recorder sees whole views, wherever they come from (the service's live view inside ``apviz
serve --record``, or a stream read by ``apviz record``), and writes the first one as the snapshot
and every later one as its delta from the one before. Two kinds of view are never written:

- views in ``home`` mode, which show real device names and every domain, unless the operator
  said every device on the network is theirs (``allow_home``);
- views that are themselves a recording on screen (attract mode): recording them again would
  only copy an old session under a new date.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apviz.live.diff import View, diff
from apviz.replay.recording import DEFAULT_MAX_BYTES, RecordingFull, RecordingWriter

log = logging.getLogger(__name__)

HOME_REFUSED = (
    "the screen is in home mode (real device names and every domain); recording it would write them "
    "to disk. Switch it to exhibit or classroom mode, or pass --allow-home if every device on this "
    "network is yours"
)


class RecordingStopped(Exception):
    """Why a recording ended before it was asked to (its file stays readable)."""


class HomeModeRefused(RecordingStopped):
    """The view shows real names (home mode) and recording them was not allowed."""


class Recorder:
    """Writes the views it is given to ``path`` (created at the first view that may be recorded)."""

    def __init__(
        self,
        path: Path,
        source: str,
        allow_home: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.source = source
        self.allow_home = allow_home
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self._clock = clock
        self.writer: RecordingWriter | None = None
        self.view: View | None = None
        self.views = 0
        self.stopped: str | None = None  # why the recording ended early, if it did

    def feed(self, view: View) -> None:
        """Record the next whole view. Raises :class:`RecordingStopped` once it may not go on."""
        if self.stopped is not None:
            raise RecordingStopped(self.stopped)
        screen: dict[str, Any] = view.get("screen") or {}
        if screen.get("recording"):
            return
        if screen.get("mode") == "home" and not self.allow_home:
            self._stop(HOME_REFUSED, HomeModeRefused)
        try:
            if self.writer is None:
                self.writer = RecordingWriter(
                    self.path,
                    {"mode": screen.get("mode"), "source": self.source},
                    max_bytes=self.max_bytes,
                    max_seconds=self.max_seconds,
                    clock=self._clock,
                )
                self.writer.snapshot(view)
            else:
                changes = diff(self.view or {}, view)
                if set(changes) <= {"time"}:
                    return  # the clock alone moving is not a change worth a line
                self.writer.changes(changes)
        except RecordingFull as exc:
            self._stop(str(exc), RecordingStopped)
        self.view = view
        self.views += 1

    def _stop(self, reason: str, kind: type[RecordingStopped]) -> None:
        self.stopped = reason
        self.close()
        raise kind(reason)

    # The service's tap interface (``apviz serve --record``): never let the recording stop the kiosk.

    def live(self, view: View, delta: View) -> None:
        if self.stopped is not None:
            return
        try:
            self.feed(view)
        except RecordingStopped as exc:
            log.warning("recording to %s stopped: %s", self.path, exc)
        except OSError as exc:  # a full disk or a vanished directory ends the recording, not the kiosk
            self.stopped = f"cannot write: {exc}"
            self.close()
            log.warning("recording to %s stopped: %s", self.path, self.stopped)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
