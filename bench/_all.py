"""Run every benchmark, one after another, show every figure, and fail if any of them failed.

``make bench`` runs this. A bench fails when it exits non-zero, prints no JSON line, or says
``"pass": false``; the others still run, so one missed target does not hide the rest of the
figures. The exit status is 1 when any failed. Names on the command line run only those benches
(``bench/_all.py steady soak``). Its name starts with an underscore so it is not a bench itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def run_one(path: Path) -> tuple[str, dict[str, object] | None]:
    """Run one bench (its progress streams to our stderr); its verdict and its JSON line."""
    print(f">> {path.relative_to(BENCH.parent)}", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, str(path)], cwd=BENCH.parent, stdout=subprocess.PIPE, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    try:
        figures = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        figures = None
    if figures is not None:
        print(json.dumps(figures), flush=True)
    return verdict(proc.returncode, figures), figures


def verdict(returncode: int, figures: dict[str, object] | None) -> str:
    """ "pass", "fail" or "figures" (a bench with no target, that ran)."""
    if returncode != 0 or figures is None or figures.get("pass") is False:
        return "fail"
    return "pass" if figures.get("pass") is True else "figures"


def main(names: list[str]) -> int:
    paths = sorted(p for p in BENCH.glob("[!_]*.py"))
    if names:
        paths = [p for p in paths if p.stem in names]
    results = [(path.stem, *run_one(path)) for path in paths]
    print("\nbench            verdict", file=sys.stderr)
    for name, result, figures in results:
        failed = (figures or {}).get("failed_checks") or ""
        print(f"{name:16} {result:8} {failed}", file=sys.stderr)
    failed = [name for name, result, _ in results if result == "fail"]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
