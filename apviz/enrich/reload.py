"""Blocklists and the Public Suffix List that stay in use while an update replaces them on disk.

The ``.mmdb`` files have their watch in :mod:`apviz.enrich.mmdb`; this is the same promise for the
text data: ``apviz data update`` renames a fresh EasyList, EasyPrivacy or PSL over the old copy
and the running service takes it into use within ``reload_interval`` seconds, no restart. A file
that changed but does not parse (an empty list, a PSL that does not know ``co.uk``) keeps the old
data, with a warning and a count in ``reload_failures``.

Parsing a full list takes about half a second, too long for the event loop that serves the kiosk,
so :meth:`TextDataReload.watch` parses on a worker thread and only swaps the finished tables in on
the loop, where the lookups run: a lookup never sees half a table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from apviz.enrich.domains import DomainParser
from apviz.enrich.mmdb import RELOAD_INTERVAL
from apviz.enrich.trackers import TrackerClassifier

log = logging.getLogger("apviz.enrich.reload")


class TextDataReload:
    """Watches the blocklists of ``trackers`` and the PSL of ``domains``; offers the same reload
    controls as the mmdb lookups (``watched``, ``watch``, ``on_reload``, ``reload_if_changed``)
    so the service runs it the same way."""

    def __init__(
        self, trackers: TrackerClassifier, domains: DomainParser, *, reload_interval: float = RELOAD_INTERVAL
    ) -> None:
        self.trackers = trackers
        self.domains = domains
        self.reload_interval = float(reload_interval)
        self.on_reload: list[Callable[[], None]] = []
        self._next_check = 0.0

    @property
    def reloads(self) -> int:
        return self.trackers.reloads + self.domains.reloads

    @property
    def reload_failures(self) -> int:
        return self.trackers.reload_failures + self.domains.reload_failures

    @property
    def watched(self) -> bool:
        """True when there is a file to watch and rechecking is on."""
        has_files = bool(self.trackers.specs) or self.domains.psl_path is not None
        return has_files and self.reload_interval > 0

    def _prepare(self) -> list[Callable[[], bool]]:
        out = []
        for part in (self.trackers, self.domains):
            try:
                commit = part.prepare_reload()
            except Exception:  # a bug in a parser must not end the watch: the old data stays
                log.exception("reload: reading the replaced %s failed", type(part).__name__)
                continue
            if commit is not None:
                out.append(commit)
        return out

    def _commit(self, commits: list[Callable[[], bool]]) -> bool:
        changed = False
        for commit in commits:
            changed = commit() or changed
        if changed:
            for callback in self.on_reload:
                try:
                    callback()
                except Exception:
                    log.exception("reload: a reload listener failed")
        return changed

    def reload_if_changed(self, *, force: bool = False) -> bool:
        """Parse and take changed files into use now, on this thread; True when one was."""
        now = time.monotonic()
        if not force and now < self._next_check:
            return False
        self._next_check = now + self.reload_interval
        return self._commit(self._prepare())

    async def watch(self) -> AsyncIterator[Any]:
        """Look every ``reload_interval`` seconds, forever; parse on a thread, swap on the loop.
        Yields nothing: a pipeline source only so that it lives and dies with the service."""
        while True:
            await asyncio.sleep(self.reload_interval)
            self._commit(await asyncio.to_thread(self._prepare))
        yield  # pragma: no cover - makes this an async generator
