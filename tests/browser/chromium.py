"""Headless Debian Chromium for the browser tests and the render benchmark (Playwright drives it).

Playwright's own browser download is not used (and not reachable): the Debian package is. The
flags keep the browser quiet and local: no background services, no component updates, and a
host resolver that resolves nothing but loopback, so a page that tried to reach another host
would fail (and the tests also watch every request the pages make).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

CHROMIUM = os.environ.get("APVIZ_CHROMIUM", "/usr/bin/chromium")

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


def available() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"{CHROMIUM} not found (apt-get install chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "python playwright not installed (.venv/bin/pip install playwright)"
    return None


async def launch(playwright: Any) -> Any:
    return await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
