"""``apviz data update``: the command line of :mod:`apviz.dataupdate` (and of its systemd timer).

Exit status: 0 when every source was updated or unchanged, 1 when one failed (its line says why;
its old file stays in use), 2 for a usage error or another run holding the lock.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from apviz.dataupdate.sources import SOURCES


def cmd_data_update(args: argparse.Namespace) -> int:
    from apviz import config as config_mod
    from apviz.dataupdate.update import UpdateBusy, run_update

    cfg = config_mod.load(args.config)
    if args.data_dir is not None:
        cfg.data.dir = str(args.data_dir)
    cfg.check()
    try:
        outcomes = run_update(cfg.data, args.source or None, force=args.force)
    except UpdateBusy as exc:
        print(f"apviz: {exc}", file=sys.stderr)
        return 2
    return 1 if any(o.result == "failed" for o in outcomes) else 0


def add_data_parser(sub: Any) -> None:
    """Register ``apviz data update``."""
    from apviz import config as config_mod

    data = sub.add_parser("data", help="keep the enrichment data fresh: apviz data update")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    p = data_sub.add_parser(
        "update",
        help="download the newest place, network and tracker data (what the weekly timer runs)",
        description="Download the newest upstream copies of the data apviz uses into [data] dir, check "
        "each file and rename it over the old one; the running service takes it into use within seconds. "
        "One line per source: updated, unchanged or failed (why). A failure keeps the old file.",
    )
    p.add_argument(
        "--config", type=Path, metavar="FILE", help=f"configuration file (default: {config_mod.DEFAULT_PATH})"
    )
    p.add_argument(
        "--source",
        action="append",
        choices=list(SOURCES),
        metavar="NAME",
        help=f"update only this source (repeatable): {', '.join(SOURCES)}",
    )
    p.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="where to keep the data (default: [data] dir)"
    )
    p.add_argument("--force", action="store_true", help="download even when the server says nothing changed")
    p.set_defaults(func=cmd_data_update)
