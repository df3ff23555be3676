"""Helpers the benchmarks share: progress output, ports, percentiles, /proc readings, /metrics.

Its name starts with an underscore so ``make bench`` (which runs every other ``bench/*.py``) does
not take it for a benchmark.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(message: str) -> None:
    """Progress goes to stderr: stdout carries only the final JSON line."""
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the value at least ``q`` of the samples do not exceed."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (fields 14 and 15 of /proc/PID/stat, after the command name)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Figures(dict[str, float]):
    """/metrics as a dict that refuses a name it does not have.

    A misspelt metric (``apviz_resyncs`` for ``apviz_resyncs_total``) read with ``.get(name, 0)``
    is a figure that is always 0 and can never fail; here it raises instead.
    """

    def __missing__(self, key: str) -> float:
        raise KeyError(f"apviz has no metric {key!r}; it has: {', '.join(sorted(self))}")

    def get(self, key: str, default: object = None) -> float:  # type: ignore[override]
        raise TypeError(f"read {key!r} with figures[{key!r}]: a default would hide a wrong name")


def parse_metrics(text: str) -> Figures:
    """The ``apviz_*`` samples of a Prometheus text page (no labels: apviz's metrics have none)."""
    out = Figures()
    for line in text.splitlines():
        if line.startswith("apviz_") and " " in line:
            key, _, value = line.partition(" ")
            out[key] = float(value)
    return out


def metrics(port: int) -> Figures:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return parse_metrics(resp.read().decode())


def serve_logging() -> None:
    """Log as ``apviz serve`` does (:func:`apviz.logsetup.setup_logging`, WARNING and up).

    Without it a served bench process has no handler, and Python's last-resort handler prints a
    record's bare message: an ERROR would reach stderr without the word ERROR that the benches'
    error scan (``bench/soak.py``) looks for.
    """
    from apviz.logsetup import setup_logging

    setup_logging("WARNING", env={})  # stderr, as the conductor reads it, even under systemd
