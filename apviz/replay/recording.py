"""The recording file: JSON Lines, optionally gzip-compressed.

::

    {"apviz_recording": 1, "started": "2025-05-01T10:00:00Z", "mode": "exhibit", "source": "..."}
    {"t": 0.0, "snapshot": {...the public view...}}
    {"t": 0.25, "changes": {...a delta, as /events sends it...}}
    ...

``t`` is seconds since the recording started. Deltas are applied with :func:`apviz.live.diff.apply`.
Each line is written with one ``write`` and flushed (a gzip stream is sync-flushed per line), so a
recording killed at any moment is readable up to its last complete line; the reader skips a
truncated last line with a warning instead of refusing the whole file.
"""

from __future__ import annotations

import datetime
import gzip
import json
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from apviz.live.diff import View, apply

log = logging.getLogger(__name__)

FORMAT = 1
GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_READ_BYTES = 512 * 1024 * 1024  # uncompressed; a recording bigger than this is not one apviz wrote


class RecordingError(ValueError):
    """A file is not a recording apviz can play; the message names the file and what to do."""


class RecordingFull(Exception):
    """The recording reached its size or time limit; what was written stays readable."""


@dataclass(slots=True)
class Recording:
    """A whole recording in memory: the first view and the deltas after it."""

    header: dict[str, Any]
    snapshot: View
    start: float = 0.0  # the snapshot's t
    frames: list[tuple[float, View]] = field(default_factory=list)  # (t, changes), t never decreasing
    skipped: int = 0  # damaged lines at the end that were left out
    warnings: list[str] = field(default_factory=list)
    path: Path | None = None  # where it was read from

    @property
    def duration(self) -> float:
        """Seconds from the first view to the last change."""
        return (self.frames[-1][0] if self.frames else self.start) - self.start

    def views(self) -> Iterator[tuple[float, View]]:
        """(seconds after the first view, whole view) for the snapshot and after every delta."""
        view = self.snapshot
        yield 0.0, view
        for t, changes in self.frames:
            view = apply(view, changes)
            yield t - self.start, view


# ------------------------------------------------------------------------------------------ writing


class RecordingWriter:
    """Appends one recording to a new file, within a size and a time limit.

    The file must not exist yet: a recording never overwrites anything. ``max_bytes`` counts the
    uncompressed lines, so a gzip file stays well below it.
    """

    def __init__(
        self,
        path: Path,
        header: dict[str, Any],
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes < 1024:
            raise ValueError(f"a recording's size limit must be at least 1024 bytes, got {max_bytes!r}")
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError(f"a recording's time limit must be positive, got {max_seconds!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self._clock = clock
        self._t0 = clock()
        self.written = 0
        self.lines = 0
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise FileExistsError(
                f"{self.path} already exists; a recording never overwrites a file: choose another name"
            ) from None
        self._raw: IO[bytes] = os.fdopen(fd, "wb")
        self._gz: gzip.GzipFile | None = None
        if self.path.suffix == ".gz":
            self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", filename="")
        started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        self._line({"apviz_recording": FORMAT, "started": started, **header}, check=False)

    def elapsed(self) -> float:
        return self._clock() - self._t0

    def snapshot(self, view: View) -> None:
        """The first view (exactly once, before any changes)."""
        if self.lines != 1:
            raise RuntimeError("a recording holds one snapshot, right after its header")
        self._line({"t": round(self.elapsed(), 3), "snapshot": view})

    def changes(self, delta: View) -> None:
        if self.lines < 2:
            raise RuntimeError("a recording's changes follow its snapshot")
        self._line({"t": round(self.elapsed(), 3), "changes": delta})

    def _line(self, obj: dict[str, Any], check: bool = True) -> None:
        data = (json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n").encode()
        if check:
            if self.max_seconds is not None and self.elapsed() > self.max_seconds:
                raise RecordingFull(f"{self.path} reached its time limit ({self.max_seconds:g} s)")
            if self.written + len(data) > self.max_bytes:
                raise RecordingFull(f"{self.path} reached its size limit ({self.max_bytes} bytes)")
        if self._gz is not None:
            self._gz.write(data)
            self._gz.flush(zlib.Z_SYNC_FLUSH)  # a killed recording stays decodable up to here
        else:
            self._raw.write(data)
            self._raw.flush()
        self.written += len(data)
        self.lines += 1

    def close(self) -> None:
        if self._raw.closed:
            return
        if self._gz is not None:
            self._gz.close()
        self._raw.close()


# ------------------------------------------------------------------------------------------ reading


def _chunks(path: Path) -> Iterator[bytes]:
    """The file's bytes, decompressed when it is gzip. A gzip stream cut off by a kill simply ends:
    everything decodable before the cut is returned, so the complete lines in it are kept."""
    with open(path, "rb") as raw:
        first = raw.read(2)
        raw.seek(0)
        inflate = zlib.decompressobj(wbits=31) if first == GZIP_MAGIC else None
        while block := raw.read(1 << 16):
            if inflate is None:
                yield block
                continue
            try:
                yield inflate.decompress(block)
            except zlib.error:
                return
            if inflate.eof:
                return


def _lines(path: Path) -> Iterator[bytes]:
    """The file's lines; a last line without its newline is returned as it is (if it was cut in
    the middle it fails to parse as JSON, which is how the caller spots it)."""
    total = 0
    rest = b""
    for chunk in _chunks(path):
        total += len(chunk)
        if total > MAX_READ_BYTES:
            raise RecordingError(
                f"{path} is larger than {MAX_READ_BYTES} bytes; record shorter sessions "
                "(apviz record --minutes / --max-bytes)"
            )
        *lines, rest = (rest + chunk).split(b"\n")
        yield from (line for line in lines if line.strip())
    if rest.strip():
        yield rest


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_recording(path: Path | str) -> Recording:
    """Load a recording, checking it line by line. Raises :class:`RecordingError` (saying what is
    wrong and what to do) for anything but a damaged last line, which is skipped with a warning."""
    path = Path(path)
    try:
        items = list(_lines(path))
    except FileNotFoundError:
        raise RecordingError(f"{path} does not exist; make one with `apviz record`") from None
    except IsADirectoryError:
        raise RecordingError(f"{path} is a directory, not a recording") from None
    parsed: list[dict[str, Any]] = []
    skipped = 0
    for number, line in enumerate(items, 1):
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not an object")
        except ValueError:
            if number == 1:
                raise RecordingError(
                    f"{path} is not an apviz recording (its first line is not a JSON header); "
                    "make one with `apviz record`"
                ) from None
            if number == len(items):
                skipped = 1
                break
            raise RecordingError(
                f"{path}, line {number}: not a JSON object; the file is damaged before its end and "
                "cannot be played (record the session again)"
            ) from None
        parsed.append(obj)
    if not parsed:
        raise RecordingError(f"{path} is empty; it is not an apviz recording")
    header = parsed[0]
    version = header.get("apviz_recording")
    if version is None:
        raise RecordingError(
            f'{path} is not an apviz recording (its first line has no "apviz_recording" header); '
            "make one with `apviz record`"
        )
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RecordingError(
            f"{path}: unknown recording format {version!r}; this apviz reads format {FORMAT}"
        )
    if version > FORMAT:
        raise RecordingError(
            f"{path} was written by a newer apviz (recording format {version}); this apviz reads "
            f"format {FORMAT}: update apviz to play it"
        )
    if len(parsed) < 2 or not isinstance(parsed[1].get("snapshot"), dict) or not _number(parsed[1].get("t")):
        raise RecordingError(
            f"{path} holds no view after its header (the recording stopped before the first one, or the "
            "file is damaged); record the session again"
        )
    rec = Recording(header=header, snapshot=parsed[1]["snapshot"], start=float(parsed[1]["t"]), path=path)
    last = rec.start
    for number, obj in enumerate(parsed[2:], 3):
        if not _valid_frame(obj):
            raise RecordingError(
                f'{path}, line {number}: expected {{"t": seconds, "changes": {{...}}}}; the file is '
                "damaged or was not written by apviz"
            )
        t = float(obj["t"])
        if t < last:
            raise RecordingError(f"{path}, line {number}: time goes backwards ({t} after {last})")
        last = t
        rec.frames.append((t, obj["changes"]))
    if skipped:
        rec.skipped = skipped
        rec.warnings.append(
            f"{path}: the last line is incomplete or damaged (the recording was cut off); "
            f"it was skipped and the {len(rec.frames) + 1} views before it are played"
        )
    for warning in rec.warnings:
        log.warning("%s", warning)
    return rec


def _valid_frame(obj: dict[str, Any]) -> bool:
    return _number(obj.get("t")) and isinstance(obj.get("changes"), dict)
