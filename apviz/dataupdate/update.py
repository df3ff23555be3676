"""The update run: for each source, fetch, check, rename over; one line per source on ``out``.

Order of events for one source, and why the old file survives every failure: the download goes
to a temporary file in the data directory (same filesystem, so the final rename is atomic), is
checked (:mod:`.checks`), made readable, and only then renamed over the old file. Any failure
before the rename deletes the temporary file and nothing else. A reader that has the old file open
keeps it (the rename does not touch its inode), and the running service's watch takes the new one.

Two runs at once (the timer and an operator) would race on the state file: a lock file in the
data directory makes the second one say so and stop.
"""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import httpx

from apviz.config import DataConfig
from apviz.dataupdate import state as state_mod
from apviz.dataupdate.checks import CheckError, check, check_not_older
from apviz.dataupdate.fetch import Fetched, FetchError, Progress, client, fetch
from apviz.dataupdate.sources import SOURCES, Source, configured_sources

#: The whole of one file's download must end within this many seconds (a server trickling a byte
#: every few seconds never trips the no-progress timeout). 100 MB at 1 Mbit/s takes about 15 min.
DOWNLOAD_DEADLINE = 1800.0
#: Seconds between two progress lines on stderr during a long download.
PROGRESS_EVERY = 5.0
LOCK_FILE = ".update.lock"


class UpdateBusy(Exception):
    """Another ``apviz data update`` holds the lock on this data directory."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One source's result: ``updated``, ``unchanged`` or ``failed``, and the line shown for it."""

    name: str
    result: str
    message: str
    seconds: float = 0.0

    @property
    def line(self) -> str:
        detail = f": {self.message}" if self.result == "failed" else f" ({self.message})"
        return f"{self.name}: {self.result}{detail}"


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpdateBusy(f"another `apviz data update` is running on {data_dir}") from None
        yield
    finally:
        os.close(fd)


def run_update(
    cfg: DataConfig,
    names: list[str] | None = None,
    *,
    force: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> list[Outcome]:
    """Update the configured sources (or those named) in ``cfg.dir``; print a line per source.

    ``force`` ignores the validators and downloads again. Raises :class:`UpdateBusy` when another
    run holds the lock, ValueError for an unknown source name; every other failure is an Outcome.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    data_dir = Path(cfg.dir)
    sources = configured_sources(cfg, names)
    outcomes = []
    for name in names or []:
        if name not in {s.name for s in sources}:
            outcome = Outcome(name, "failed", f"no URL configured (data.{SOURCES[name][0]} is empty)")
            outcomes.append(outcome)
            print(outcome.line, file=out, flush=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    with _locked(data_dir):
        _remove_leftovers(data_dir)
        records = state_mod.load(data_dir)
        with client(cfg.timeout) as http:
            for source in sources:
                outcome = _update_one(http, source, cfg, data_dir, records, force, err)
                outcomes.append(outcome)
                print(outcome.line, file=out, flush=True)
                state_mod.save(data_dir, records)  # after each source: a killed run keeps what it did
    return outcomes


def _update_one(
    http: httpx.Client,
    source: Source,
    cfg: DataConfig,
    data_dir: Path,
    records: dict[str, dict[str, object]],
    force: bool,
    err: TextIO,
) -> Outcome:
    target = data_dir / source.file
    record = records.setdefault(source.name, {})
    have = target.is_file() and record.get("url") == source.url and not force
    started = time.time()
    record["checked"] = started
    t0 = time.monotonic()
    fetched: Fetched | None = None
    try:
        fetched = fetch(
            http,
            source.url,
            data_dir,
            etag=str(record["etag"]) if have and record.get("etag") else None,
            last_modified=str(record["last_modified"]) if have and record.get("last_modified") else None,
            max_bytes=cfg.max_bytes,
            deadline=t0 + DOWNLOAD_DEADLINE,
            progress=_progress(source.name, err),
        )
        if fetched.path is None:
            message = f"not modified since {record.get('last_modified') or 'the last download'}"
            return _done(record, Outcome(source.name, "unchanged", message, time.monotonic() - t0))
        summary = check(source, fetched.path)
        if not force:
            check_not_older(source, fetched.path, target)
        os.chmod(fetched.path, 0o644)
        stamp = _http_time(fetched.last_modified)
        if stamp is not None:  # the file's age is the upstream's, so doctor reports the data's age
            os.utime(fetched.path, (stamp, stamp))
        os.replace(fetched.path, target)
        _sync_dir(data_dir)
        fetched.path = None
    except (FetchError, CheckError, OSError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        kept = _kept(target)
        return _done(record, Outcome(source.name, "failed", f"{why}; {kept}", time.monotonic() - t0))
    finally:
        if fetched is not None and fetched.path is not None:
            fetched.path.unlink(missing_ok=True)
    record.update(
        url=source.url, etag=fetched.etag, last_modified=fetched.last_modified, updated=started,
        bytes=fetched.size,
    )  # fmt: skip
    seconds = time.monotonic() - t0
    size = f"{fetched.size / 1e6:.1f} MB" if fetched.size >= 100_000 else f"{fetched.size / 1e3:.0f} kB"
    gz = ", gunzipped" if fetched.gzip else ""
    return _done(
        record, Outcome(source.name, "updated", f"{size} in {seconds:.1f} s{gz}; {summary}", seconds)
    )


def _remove_leftovers(data_dir: Path) -> None:
    """Temporary files of a run that was killed (power cut, SIGKILL): under the lock, none is in use."""
    for pattern in (".download-*.part", ".state-*.part"):
        for path in data_dir.glob(pattern):
            with contextlib.suppress(OSError):
                path.unlink()


def _done(record: dict[str, object], outcome: Outcome) -> Outcome:
    record["result"] = outcome.result
    record["message"] = outcome.message
    return outcome


def _kept(target: Path) -> str:
    try:
        mtime = target.stat().st_mtime
    except OSError:
        return "nothing replaced (the installed data stays in use)"
    return f"kept the file from {time.strftime('%Y-%m-%d', time.gmtime(mtime))}"


def _http_time(value: str | None) -> float | None:
    if not value:
        return None
    with contextlib.suppress(TypeError, ValueError, IndexError):
        stamp = email.utils.parsedate_to_datetime(value).timestamp()
        return stamp if 0 < stamp <= time.time() + 86400 else None
    return None


def _sync_dir(path: Path) -> None:
    """Make the rename itself durable: a power cut right after must not bring the old name back."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _progress(name: str, err: TextIO) -> Progress:
    """A progress callback that writes a line to ``err`` at most every few seconds."""
    start = time.monotonic()
    last = [start]

    def report(received: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY:
            return
        last[0] = now
        of = f" of {total / 1e6:.1f} MB ({100 * received / total:.0f}%)" if total else " MB"
        print(f"{name}: {received / 1e6:.1f}{of} after {now - start:.0f} s", file=err, flush=True)

    return report
