"""What the updater remembers between runs, in one small JSON file beside the data.

Per source: the URL and validators (``ETag``, ``Last-Modified``) of the copy we have, so the next
request can be conditional, and the last result (``updated`` / ``unchanged`` / ``failed`` with its
reason, and when), which ``apviz doctor`` reports. Written atomically (a temporary file renamed
over), read leniently: a missing or damaged state file only costs one full download per source.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

STATE_FILE = "update-state.json"
VERSION = 1


def load(data_dir: Path) -> dict[str, dict[str, Any]]:
    """source name -> its record; empty when there is no (readable) state yet."""
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((data_dir / STATE_FILE).read_text(encoding="utf-8"))
        if (
            isinstance(data, dict)
            and data.get("version") == VERSION
            and isinstance(data.get("sources"), dict)
        ):
            return {k: v for k, v in data["sources"].items() if isinstance(k, str) and isinstance(v, dict)}
    return {}


def save(data_dir: Path, sources: dict[str, dict[str, Any]]) -> None:
    text = json.dumps({"version": VERSION, "sources": sources}, indent=1, sort_keys=True)
    fd, name = tempfile.mkstemp(dir=data_dir, prefix=".state-", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(name, 0o644)
        os.replace(name, data_dir / STATE_FILE)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
