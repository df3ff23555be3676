"""The README's demos: `apviz lab` shows live rows for every lab phone within 5 s of its start, and
`make demo` serves the kiosk on the lab and prints the address that shows its phones."""

from __future__ import annotations

import os
import re
import signal
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


def demo_command(target: str) -> list[str]:
    """The command a Makefile target runs, with ``$(BIN)/apviz`` as this interpreter's apviz."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    port = re.search(r"^DEMO_PORT \?= (\d+)$", text, flags=re.M)
    recipe = re.search(rf"^{re.escape(target)}: setup\n\t(.+)$", text, flags=re.M)
    assert port and recipe, f"no {target} target in the Makefile"
    line = recipe.group(1).replace("$(DEMO_PORT)", port.group(1))
    words = line.split()
    assert words[0] == "$(BIN)/apviz", line
    return [sys.executable, "-m", "apviz.cli", *words[1:]]


def test_make_demo_serves_the_kiosk_and_prints_its_address():
    """`make demo` is the kiosk: the lab, the web service, and an address that shows the phones."""
    import socket

    import httpx

    command = demo_command("demo")
    assert "--view" in command and command[command.index("--view") + 1] == "serve"
    assert demo_command("demo-top")[3:] == ["lab", "--phones", "4"]  # the terminal view, still there
    with socket.socket() as s:  # the Makefile's port may be taken on a test machine: same command, free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command[command.index("--port") + 1] = str(port)
    proc = subprocess.Popen(
        [*command, "--duration", "25"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        url = None
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            found = re.search(r"kiosk:\s+(http://127\.0\.0\.1:\d+/)", line)
            url = found.group(1) if found else None
        assert url == f"http://127.0.0.1:{port}/", "the demo must print the kiosk's address"
        page = ""
        devices = 0
        while time.monotonic() < deadline and (not page or devices < 4):
            try:
                page = page or httpx.get(url, timeout=2).text
                view = httpx.get(url + "api/state", timeout=2).json()["view"]
                devices = len(view.get("devices", {}))
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert 'id="sankey-svg"' in page and 'id="caption"' in page
        assert devices == 4, devices
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C, as a visitor ends the demo: the lab is removed
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert "everything removed" in out, out[-2000:]
