"""dnsmasq's log read from the systemd journal.

On the appliance dnsmasq runs as ``dnsmasq.service`` and logs to journald; reading the journal
instead of a file needs no syslog daemon and survives rotation and vacuuming by construction. The
reader matches ``SYSLOG_IDENTIFIER=dnsmasq`` and ``dnsmasq-dhcp`` (not ``_SYSTEMD_UNIT``: a dnsmasq
started by hand, as in the lab, has none), replays a window of history so that a restart does not
forget which device asked for which name, then follows new entries.

Following uses the journal's own change notification: ``Reader.fileno()`` is an inotify descriptor
watched with ``loop.add_reader``; ``process()`` then says whether entries were appended or files were
added/removed (rotation, vacuum), and the reader adjusts its file set itself. A slow timer polls as
well, because notification is not available for every way of opening a journal (explicit files).

systemd-python is imported lazily so the rest of apviz works without it. Each event's ``ts`` is the
entry's ``__REALTIME_TIMESTAMP`` (when journald received it), in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from apviz.events import Event, SourceError
from apviz.sources.dnsmasq_log import DHCP_IDENT, DNS_IDENT, DnsmasqLogParser

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "reading the journal needs systemd-python: `pip install systemd-python` "
    "(or `pip install apviz[journal]`); it builds from source and needs libsystemd-dev, pkg-config "
    "and a C compiler (Debian: apt install libsystemd-dev pkg-config gcc python3-dev)"
)


class JournalUnavailable(RuntimeError):
    """systemd-python is missing; the message says how to install it."""


def _journal_module() -> Any:
    try:
        from systemd import journal
    except ImportError as exc:
        raise JournalUnavailable(INSTALL_HINT) from exc
    return journal


class DnsmasqJournalSource:
    """Async iterator of dnsmasq events from the journal: history first, then live entries.

    Open the local system journal (default), a directory (``path=``, e.g. a
    :class:`~apviz.lab.journald.PrivateJournald`'s ``journal_dir``) or explicit ``files=``.
    ``since_seconds`` of history are replayed at start (0: only entries that arrive from now on).
    """

    def __init__(
        self,
        parser: DnsmasqLogParser | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        files: Sequence[str | os.PathLike[str]] | None = None,
        since_seconds: float = 300.0,
        identifiers: Sequence[str] = (DNS_IDENT, DHCP_IDENT),
        poll_interval: float = 1.0,
        retry_interval: float = 5.0,
        batch: int = 256,
    ) -> None:
        if path is not None and files is not None:
            raise ValueError("give path= or files=, not both")
        if since_seconds < 0:
            raise ValueError(f"since_seconds must be >= 0, got {since_seconds!r}")
        if not identifiers:
            raise ValueError("identifiers must name at least one SYSLOG_IDENTIFIER")
        self._journal = _journal_module()  # fail early, at construction, with the install hint
        self.parser = parser if parser is not None else DnsmasqLogParser()
        self.path = os.fspath(path) if path is not None else None
        self.files = [os.fspath(f) for f in files] if files is not None else None
        self.since_seconds = since_seconds
        self.identifiers = tuple(identifiers)
        self.poll_interval = poll_interval
        self.retry_interval = retry_interval
        self.batch = batch
        self.entries = 0
        self.invalidations = 0

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    # -- opening ---------------------------------------------------------------------------------

    def _open(self) -> Any:
        journal = self._journal
        if self.path is not None:
            reader = journal.Reader(path=self.path)
        elif self.files is not None:
            reader = journal.Reader(files=self.files)
        else:
            reader = journal.Reader(flags=journal.SYSTEM_ONLY | journal.LOCAL_ONLY)
        for ident in self.identifiers:  # same field: the matches are OR-ed
            reader.add_match(SYSLOG_IDENTIFIER=ident)
        if self.since_seconds > 0:
            reader.seek_realtime(time.time() - self.since_seconds)
        else:
            # After seek_tail the cursor sits past the end; stepping back once anchors it on the
            # last entry so that the next _next() returns the first new one.
            reader.seek_tail()
            reader._previous()
        return reader

    # -- reading ---------------------------------------------------------------------------------

    async def _events(self) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        where = self.path or (",".join(self.files) if self.files else "system journal")
        while True:
            try:
                reader = self._open()
            except (OSError, ValueError) as exc:  # sd_journal_open* failed: path missing, EPERM
                yield SourceError("dnsmasq-journal", f"cannot open {where}: {exc}", self.parser.counts())
                await asyncio.sleep(self.retry_interval)
                continue
            break
        wake = asyncio.Event()
        fd = -1
        try:
            with contextlib.suppress(OSError, ValueError):
                fd = reader.fileno()
                loop.add_reader(fd, wake.set)
            while True:
                count = 0
                while reader._next():
                    event = self._entry(reader)
                    if event is not None:
                        yield event
                    count += 1
                    if count % self.batch == 0:
                        await asyncio.sleep(0)  # a long history must not starve the loop
                with contextlib.suppress(TimeoutError):
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
                    # races the wake-up, and the consumer's cancel then never ends this loop.
                    async with asyncio.timeout(self.poll_interval):
                        await wake.wait()
                wake.clear()
                if reader.process() == self._journal.INVALIDATE:
                    self.invalidations += 1  # files rotated or vacuumed: the reader re-scanned
        finally:
            if fd >= 0:
                loop.remove_reader(fd)
            reader.close()

    def _entry(self, reader: Any) -> Event | None:
        """Only the three fields we need, read raw: converting every field costs ~10x more."""
        self.entries += 1
        try:
            raw_message = reader._get("MESSAGE")
            raw_ident = reader._get("SYSLOG_IDENTIFIER")
            usec = reader._get_realtime()
        except (KeyError, OSError):
            self.parser.unparsed += 1
            return None
        message = _text(raw_message)
        ident = _text(raw_ident)
        return self.parser.parse(message, usec / 1e6, ident)


def _text(value: bytes | str) -> str:
    """MESSAGE is bytes when it is not valid UTF-8 (a visitor's hostname can make it so)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value
