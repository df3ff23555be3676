"""The README's demo: `apviz lab` shows live rows for every lab phone within 5 s of its start."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[1]


def test_demo_shows_every_phone_with_named_traffic_within_5_s():
    started = time.time()
    env = {**os.environ, "COLUMNS": "220", "LINES": "200"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "apviz.cli",
            "lab",
            "--phones",
            "3",
            "--plain",
            "--refresh",
            "0.5",
            "--duration",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    frames = re.split(r"^--- frame t=([0-9.]+)$", out.stdout, flags=re.M)[1:]
    assert frames, out.stdout[-2000:]
    first_seen: dict[str, float] = {}
    for stamp, frame in zip(frames[::2], frames[1::2], strict=True):
        for line in frame.splitlines():
            cells = [c.strip() for c in line.split("│")]
            # device | name | addresses | conns | up | down: a phone's first row names a domain
            if len(cells) >= 7 and cells[1].startswith("phone-") and "." in cells[2]:
                first_seen.setdefault(cells[1], float(stamp))
    assert set(first_seen) == {"phone-1", "phone-2", "phone-3"}, out.stdout[-3000:]
    late = {phone: round(t - started, 2) for phone, t in first_seen.items() if t - started > 5.0}
    assert not late, f"rows appeared after more than 5 s: {late}"
    print({phone: round(t - started, 2) for phone, t in first_seen.items()})
