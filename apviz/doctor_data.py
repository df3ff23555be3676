"""``apviz doctor``'s report on ``apviz data update``: per source, the last result and the file's age.

An operator who leaves the box for a year needs one place that says "the tracker lists were last
refreshed 3 days ago" or "the place database has failed to update for 5 weeks: HTTP 404", and
what to do about it. The facts come from the updater's state file and the files themselves; a
gateway that never ran the updater (no internet) is told so once, not warned about each source.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from apviz.config import Config
from apviz.dataupdate import state as state_mod
from apviz.dataupdate.sources import SOURCES, configured_sources
from apviz.doctor import Check

#: An update not even tried for this long means the timer is off (it runs weekly).
STALE_CHECK_DAYS = 21
FIX_TIMER = "turn the weekly update on: sudo systemctl enable --now apviz-data-update.timer (docs/data.md)"


def _days(seconds: float) -> str:
    days = seconds / 86400
    return "today" if days < 1 else f"{days:.0f} day{'s' if round(days) != 1 else ''} ago"


def file_age_days(path: Path, now: float) -> float | None:
    """Age of the data in ``path``: an mmdb's build date, else the file's time (the upstream's date)."""
    if path.suffix == ".mmdb":
        with contextlib.suppress(Exception):
            import maxminddb

            with maxminddb.open_database(str(path)) as db:
                return (now - float(db.metadata().build_epoch)) / 86400
    with contextlib.suppress(OSError):
        return (now - path.stat().st_mtime) / 86400
    return None


def update_checks(cfg: Config, now: float | None = None) -> list[Check]:
    """One line per configured source once the updater has run; one line in all before that."""
    now = time.time() if now is None else now
    data_dir = Path(cfg.data.dir)
    records = state_mod.load(data_dir)
    if not records:
        return [
            Check(
                "data-update",
                "skip",
                f"`apviz data update` has not run here ({data_dir}): the installed data is in use",
                "with internet: sudo systemctl start apviz-data-update; weekly: "
                + FIX_TIMER.split(": ", 1)[1],
            )
        ]
    out = []
    for source in configured_sources(cfg.data):
        name = f"update-{source.name}"
        record = records.get(source.name)
        if record is None or not isinstance(record.get("checked"), int | float):
            out.append(Check(name, "skip", f"{source.what}: not fetched yet", FIX_TIMER))
            continue
        checked = float(record["checked"])
        age = file_age_days(data_dir / source.file, now)
        shown = f"; the file in use is {age:.0f} days old" if age is not None else "; no file yet"
        result, message = record.get("result"), str(record.get("message", ""))
        if result == "failed":
            key = SOURCES[source.name][0]
            fix = (
                f"see why again: apviz data update --source {source.name}; check data.{key} and this "
                "gateway's internet access (the old data stays in use meanwhile)"
            )
            out.append(Check(name, "warn", f"{source.what}: the last update failed {_days(now - checked)}: "
                             f"{message}{shown}", fix))  # fmt: skip
        elif now - checked > STALE_CHECK_DAYS * 86400:
            out.append(
                Check(name, "warn", f"{source.what}: last checked {_days(now - checked)}{shown}", FIX_TIMER)
            )
        else:
            out.append(Check(name, "ok", f"{source.what}: {result} {_days(now - checked)}{shown}"))
    return out
