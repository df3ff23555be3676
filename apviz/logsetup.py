"""Where apviz's log lines go: the journal (with structured fields) under systemd, else stderr.

Under systemd, stderr already reaches the journal, but as flat text with the service's priority.
Sending records through :class:`systemd.journal.JournalHandler` keeps each record's level as the
journal PRIORITY (so ``journalctl -p warning -u apviz`` works) and adds LOGGER, CODE_FILE/LINE/FUNC
and any ``extra={"APVIZ_...": ...}`` fields, which ``journalctl -o verbose`` shows and can match on.
systemd sets ``INVOCATION_ID`` for every unit it runs and ``JOURNAL_STREAM`` when stderr is the
journal; either marks "running under systemd". Without systemd-python (it has no wheel and is an
optional extra) apviz falls back to stderr, which the journal also captures.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

STDERR_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def under_systemd(env: Mapping[str, str] | None = None) -> bool:
    """True when systemd started this process (and so the journal is listening)."""
    env = os.environ if env is None else env
    return bool(env.get("INVOCATION_ID") or env.get("JOURNAL_STREAM"))


def journal_handler() -> logging.Handler | None:
    """A JournalHandler tagged ``SYSLOG_IDENTIFIER=apviz``, or None without systemd-python."""
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    handler = JournalHandler(SYSLOG_IDENTIFIER="apviz")
    handler.setFormatter(logging.Formatter("%(message)s"))  # the journal stamps time and level itself
    return handler


def setup_logging(level: str | int = "WARNING", env: Mapping[str, str] | None = None) -> logging.Handler:
    """Configure the root logger once for the ``apviz`` command; returns the handler in use."""
    handler = journal_handler() if under_systemd(env) else None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(STDERR_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
