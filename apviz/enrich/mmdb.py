"""MaxMind DB files that stay in use while an update replaces them on disk.

The geo and the ASN databases are both ``.mmdb`` files that a monthly update (``geoipupdate``, a cron
job, ``apviz`` data scripts) replaces while the kiosk runs for weeks. :class:`MmdbFiles` holds the
open readers of such files and :meth:`MmdbFiles.reload_if_changed` looks at each file's identity
(device, inode, size, mtime) at most every ``reload_interval`` seconds. A changed file is opened
beside the old one and searched once; only a file that opens and answers replaces the old reader, so
a half-copied or corrupt update keeps the old data (with one warning, counted in
``reload_failures``), and a file that vanished keeps its data until a new one appears.

Replace files by renaming a complete copy over them (``mv``, ``install``, what ``geoipupdate``
does): the readers map the file, and rewriting a mapped file in place is what no reader survives.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apviz.enrich._common import EnrichOptionError, readable_file

try:  # the dependency is declared, but a kiosk without it should still start
    import maxminddb
    from maxminddb.errors import InvalidDatabaseError
except ImportError:  # pragma: no cover - exercised only on a broken install
    maxminddb = None  # type: ignore[assignment]
    InvalidDatabaseError = ValueError  # type: ignore[assignment,misc]

#: Seconds between two looks at the files' identities: a replaced database is in use this soon.
RELOAD_INTERVAL = 2.0

Identity = tuple[int, int, int, int]


def file_identity(path: Path) -> Identity | None:
    """(device, inode, size, mtime) of ``path``, None when it is missing: what "replaced" means."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class Opened:
    """A reader in use: what a lookup asks, the IP version its tree holds, and its name for logs."""

    reader: Any
    ip_version: int
    label: str


@dataclass(slots=True)
class _File:
    """One configured file: the reader in use (None until one opened) and the identity last seen."""

    path: Path
    opened: Opened | None = None
    seen: Identity | None = None


class MmdbFiles:
    """The configured ``.mmdb`` files of one kind (``"geo"``, ``"asn"``), in the configured order.

    A missing or unusable file is logged and skipped at start but still watched: it is taken into
    use when it appears. ``on_reload`` holds callables run after a replaced file was taken into
    use, in order, so whoever caches answers derived from these files can drop them.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        kind: str,
        *,
        reload_interval: float = RELOAD_INTERVAL,
        optional: Collection[Path] = (),
    ) -> None:
        if not isinstance(reload_interval, int | float) or reload_interval < 0:
            raise EnrichOptionError(f"reload_interval must be >= 0 seconds, got {reload_interval!r}")
        self.kind = kind
        self.log = logging.getLogger(f"apviz.enrich.{kind}")
        self.reload_interval = float(reload_interval)
        self.reloads = 0  # replaced files taken into use
        self.reload_failures = 0  # replaced files that did not open: the old data stayed
        self.on_reload: list[Callable[[], None]] = []
        self._next_check = 0.0
        self._files = [_File(Path(path)) for path in paths]
        for file in self._files:
            file.seen = file_identity(file.path)
            if file.seen is None and file.path in optional:
                # A file `apviz data update` has not fetched yet: no warning, it is used once it appears.
                self.log.info("%s: %s is not there (yet); used when it appears", kind, file.path)
            elif readable_file(file.path, kind) is not None:
                self._take(file, "using")
        self.in_use = self._in_use()

    def _in_use(self) -> list[Opened]:
        return [file.opened for file in self._files if file.opened is not None]

    def _take(self, file: _File, verb: str) -> bool:
        """Open ``file.path``; on success it replaces the file's reader. False (and a warning) if not."""
        if maxminddb is None:
            self.log.warning("%s: the maxminddb package is missing; %s is not used", self.kind, file.path)
            return False
        try:
            reader = maxminddb.open_database(str(file.path))
            meta = reader.metadata()
            # Opening reads only the metadata at the end of the file: a truncated or corrupt copy
            # shows itself on the first search of the tree, so make one before trusting the file.
            reader.get("0.0.0.0" if int(meta.ip_version) == 4 else "::")
        except (OSError, InvalidDatabaseError, ValueError, RuntimeError) as exc:
            keep = "keeping the previous data" if file.opened is not None else "skipped"
            self.log.warning("%s: %s is not a usable MaxMind DB (%s); %s", self.kind, file.path, exc, keep)
            return False
        file.opened = Opened(reader, int(meta.ip_version), f"{file.path.name} ({meta.database_type})")
        self.log.info("%s: %s %s, %s, IPv%d", self.kind, verb, file.path, meta.database_type, meta.ip_version)
        return True

    def reload_if_changed(self, *, force: bool = False) -> bool:
        """Take replaced files into use; True when one was. Cheap: at most one ``stat`` per file
        every ``reload_interval`` seconds (``force`` looks now). A bad replacement is not tried (or
        logged) again until it changes. Old readers are dropped, not closed: a lookup on another
        thread may still hold one."""
        now = time.monotonic()
        if not force and now < self._next_check:
            return False
        self._next_check = now + self.reload_interval
        changed = False
        for file in self._files:
            ident = file_identity(file.path)
            if ident == file.seen:
                continue
            file.seen = ident
            if ident is None:
                self.log.warning(
                    "%s: %s disappeared; its data stays in use until a new file appears", self.kind, file.path
                )
            elif self._take(file, "replaced: using"):
                changed = True
            else:
                self.reload_failures += 1
        if not changed:
            return False
        self.in_use = self._in_use()
        self.reloads += 1
        for callback in self.on_reload:
            try:
                callback()
            except Exception:
                self.log.exception("%s: a reload listener failed", self.kind)
        return True

    @property
    def watched(self) -> bool:
        """True when files are configured and rechecking is on (``reload_interval`` > 0)."""
        return bool(self._files) and self.reload_interval > 0

    async def watch(self) -> AsyncIterator[Any]:
        """Run :meth:`reload_if_changed` every ``reload_interval`` seconds, forever, on the event
        loop that also asks the lookups (so a swap never races a lookup). Yields nothing: it is a
        pipeline source only so that it lives and dies with the service's other sources."""
        while True:
            await asyncio.sleep(self.reload_interval)
            self.reload_if_changed()
        yield  # pragma: no cover - makes this an async generator

    @property
    def labels(self) -> list[str]:
        return [opened.label for opened in self.in_use]

    def close(self) -> None:
        for file in self._files:
            if file.opened is not None:
                file.opened.reader.close()
                file.opened = None
        self.in_use = []


class ReloadingLookup:
    """What a lookup answering from :class:`MmdbFiles` offers the service: the files' reload
    controls, under the lookup's own name (``geo.reload_if_changed()``, ``asn.on_reload``...)."""

    files: MmdbFiles
    lookup: Callable[..., Any]

    def watch_files(self, files: MmdbFiles) -> MmdbFiles:
        """Use ``files``; answers cached from an old file go first, before any other listener runs."""
        files.on_reload.insert(0, self.lookup.cache_clear)  # type: ignore[attr-defined]
        return files

    @property
    def on_reload(self) -> list[Callable[[], None]]:
        """Callables run after a replaced file was taken into use (this lookup's cache is cleared)."""
        return self.files.on_reload

    @property
    def reloads(self) -> int:
        return self.files.reloads

    @property
    def reload_failures(self) -> int:
        return self.files.reload_failures

    @property
    def reload_interval(self) -> float:
        return self.files.reload_interval

    def reload_if_changed(self, *, force: bool = False) -> bool:
        """See :meth:`MmdbFiles.reload_if_changed`."""
        return self.files.reload_if_changed(force=force)

    @property
    def watched(self) -> bool:
        return self.files.watched

    def watch(self) -> AsyncIterator[Any]:
        return self.files.watch()
