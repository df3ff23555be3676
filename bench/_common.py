"""Helpers the benchmarks share: progress output, ports, percentiles, /proc readings.

Its name starts with an underscore so ``make bench`` (which runs every other ``bench/*.py``) does
not take it for a benchmark.
"""

from __future__ import annotations

import os
import socket
import sys
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
