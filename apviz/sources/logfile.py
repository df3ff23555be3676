"""Follow a growing log file like ``tail -F``, and the dnsmasq source built on it.

dnsmasq can write its log straight to a file (``log-facility=/var/log/dnsmasq.log``) or syslog can
put it in one; either way logrotate will rename or truncate that file under us. The follower polls
with ``os.stat`` (portable, no inotify needed, 0.1 s by default, cheap on a Raspberry Pi) and:

* starts at the end of the file, or at its start with ``from_start=True``;
* yields complete lines only; a partial last line waits for its newline (a line longer than
  ``max_line_bytes`` is cut there, counted in ``overlong``);
* on rename-rotation keeps reading the old file descriptor: until the new file appears, then to its
  end, then for ``rotate_grace`` seconds more (a writer that has not yet reopened its log still
  writes there), so nothing written before or just after the rename is lost;
* on deletion does the same, then waits for the path to come back;
* on truncation (``copytruncate``) starts again at offset 0. A truncation followed by more writes
  than had been read before, all within one poll interval, cannot be told from growth: inherent to
  copytruncate, which loses lines anyway;
* decodes UTF-8 with ``errors="replace"``: the log holds visitor-chosen bytes.

Like every follower that polls a path, it never sees a file that is created and rotated away again
within one poll interval; logrotate's rhythm (hours, days) is far from that.

Holding the old descriptor open also makes "is it still the same file?" reliable: its inode number
cannot be reused for a new file while we hold it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from apviz.events import Event, SourceError
from apviz.sources.dnsmasq_log import DnsmasqLogParser

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class FollowProblem:
    """The file cannot be read right now (missing, no permission); ``None`` message = recovered."""

    message: str | None


class _Open:
    """One open generation of the file: descriptor, identity, unread partial line."""

    __slots__ = ("buffer", "deadline", "fd", "ident", "skipping")

    def __init__(self, fd: int, ident: tuple[int, int]) -> None:
        self.fd = fd
        self.ident = ident
        self.buffer = b""
        self.skipping = False  # inside an overlong line: drop bytes until the next newline
        self.deadline: float | None = None  # set once rotated away: stop reading after this


class LogFollower:
    """Async iterator over the complete lines appended to ``path`` (newline stripped)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        from_start: bool = False,
        backlog_bytes: int = 0,
        poll_interval: float = 0.1,
        rotate_grace: float = 1.0,
        max_line_bytes: int = 64 * 1024,
    ) -> None:
        if backlog_bytes < 0:
            raise ValueError(f"backlog_bytes must be >= 0, got {backlog_bytes!r}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval!r}")
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be >= 1, got {max_line_bytes!r}")
        self.path = Path(path)
        self.from_start = from_start
        self.backlog_bytes = backlog_bytes
        self.poll_interval = poll_interval
        self.rotate_grace = rotate_grace
        self.max_line_bytes = max_line_bytes
        self.rotations = 0
        self.truncations = 0
        self.overlong = 0
        self.lines = 0
        self._current: _Open | None = None
        self._draining: list[_Open] = []
        self._problem: str | None = None
        self._pending: list[str] = []  # lines produced outside a read (flushed by a truncation)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        async for item in self.items():
            if isinstance(item, str):
                yield item

    async def items(self) -> AsyncIterator[str | FollowProblem]:
        """Lines, interleaved with a :class:`FollowProblem` whenever readability changes."""
        first = True
        try:
            while True:
                if self._current is None:
                    problem = self._open(seek_end=first and not self.from_start)
                    first = False
                    if problem != self._problem:
                        self._problem = problem
                        yield FollowProblem(problem)
                for line in self._drain_rotated():
                    yield line
                while self._pending:
                    yield self._pending.pop(0)
                if self._current is not None:
                    for line in self._read(self._current):
                        yield line
                    self._check_identity(self._current)
                    if self._current is not None and self._unread(self._current):
                        await asyncio.sleep(0)  # more arrived while we yielded: go on at once
                        continue
                await asyncio.sleep(self.poll_interval)
        finally:
            self.close()

    def close(self) -> None:
        """Release every descriptor (called when the iteration ends or is abandoned)."""
        for generation in [*self._draining, *([self._current] if self._current else [])]:
            with contextlib.suppress(OSError):
                os.close(generation.fd)
        self._draining.clear()
        self._current = None

    # -- internals -------------------------------------------------------------------------------

    def _open(self, *, seek_end: bool) -> str | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return f"waiting for {self.path} to appear"
        except OSError as exc:
            return f"cannot open {self.path}: {os.strerror(exc.errno or errno.EIO)}"
        st = os.fstat(fd)
        self._current = _Open(fd, (st.st_dev, st.st_ino))
        if seek_end:
            # Start near the end, but read back up to ``backlog_bytes`` so that queries made just
            # before apviz started can still be credited; the first, cut line is skipped.
            start = max(0, st.st_size - self.backlog_bytes)
            os.lseek(fd, start, os.SEEK_SET)
            if start > 0:
                os.lseek(fd, start - 1, os.SEEK_SET)  # a cut exactly at a line start skips nothing
                self._current.skipping = True
        return None

    def _read(self, generation: _Open) -> list[str]:
        """Everything readable now, split into complete lines."""
        lines: list[str] = []
        while True:
            try:
                chunk = os.read(generation.fd, _CHUNK)
            except OSError as exc:
                log.warning("reading %s: %s", self.path, exc)
                break
            if not chunk:
                break
            lines.extend(self._split(generation, chunk))
            if len(chunk) < _CHUNK:
                break
        return lines

    def _split(self, generation: _Open, chunk: bytes) -> list[str]:
        data = generation.buffer + chunk
        parts = data.split(b"\n")
        generation.buffer = parts.pop()
        lines: list[str] = []
        for part in parts:
            if generation.skipping:  # the tail of a line already cut and emitted
                generation.skipping = False
                continue
            lines.append(self._decode(part[: self.max_line_bytes], overlong=len(part) > self.max_line_bytes))
        if len(generation.buffer) > self.max_line_bytes:
            if not generation.skipping:
                lines.append(self._decode(generation.buffer[: self.max_line_bytes], overlong=True))
            generation.skipping = True
            generation.buffer = b""
        return lines

    def _decode(self, raw: bytes, *, overlong: bool) -> str:
        if overlong:
            self.overlong += 1
        self.lines += 1
        return raw.decode("utf-8", errors="replace").rstrip("\r")

    def _flush_partial(self, generation: _Open) -> list[str]:
        """A file we leave for good: its unterminated last line is still a line."""
        if generation.buffer and not generation.skipping:
            line = self._decode(generation.buffer, overlong=False)
            generation.buffer = b""
            return [line]
        generation.buffer = b""
        return []

    def _unread(self, generation: _Open) -> bool:
        try:
            return os.fstat(generation.fd).st_size > os.lseek(generation.fd, 0, os.SEEK_CUR)
        except OSError:
            return False

    def _check_identity(self, current: _Open) -> None:
        """Rotation, deletion or truncation? Decide after reading everything the fd had."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return  # renamed or deleted, no successor yet: keep reading the old fd meanwhile
        except OSError:
            return
        if (st.st_dev, st.st_ino) != current.ident:
            self.rotations += 1
            current.deadline = time.monotonic() + self.rotate_grace
            self._draining.append(current)
            self._current = None
            if self._open(seek_end=False) is None:
                self._problem = None
            return
        position = os.lseek(current.fd, 0, os.SEEK_CUR)
        if st.st_size < position:
            # copytruncate: what we had of an unterminated line is flushed with the next read, as
            # the writer's next bytes land at offset 0 and can no longer complete it.
            self.truncations += 1
            os.lseek(current.fd, 0, os.SEEK_SET)
            self._pending.extend(self._flush_partial(current))
            current.skipping = False

    def _drain_rotated(self) -> list[str]:
        """Read the files rotated away; close each one, last line included, once its grace ends."""
        lines: list[str] = []
        now = time.monotonic()
        keep: list[_Open] = []
        for generation in self._draining:
            lines.extend(self._read(generation))
            if generation.deadline is not None and now < generation.deadline:
                keep.append(generation)
                continue
            lines.extend(self._flush_partial(generation))
            with contextlib.suppress(OSError):
                os.close(generation.fd)
        self._draining = keep
        return lines


class DnsmasqFileSource:
    """Events from a dnsmasq log file (``log-facility=`` or a syslog file), followed live.

    Each event's ``ts`` is the wall-clock time its line was read (see the parser's module doc for
    why the syslog stamp is not used). When the file cannot be read (missing, no permission) a
    :class:`~apviz.events.SourceError` is yielded once per change of problem; recovery sends
    nothing, the next event is the sign of life.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        parser: DnsmasqLogParser | None = None,
        *,
        from_start: bool = False,
        backlog_bytes: int = 256 * 1024,
        poll_interval: float = 0.1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.parser = parser if parser is not None else DnsmasqLogParser()
        self.follower = LogFollower(
            path, from_start=from_start, backlog_bytes=backlog_bytes, poll_interval=poll_interval
        )
        self._clock = clock

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        parse = self.parser.parse
        async for item in self.follower.items():
            if isinstance(item, str):
                event = parse(item, self._clock())
                if event is not None:
                    yield event
            elif item.message is not None:
                yield SourceError("dnsmasq-log", item.message, self.parser.counts())
