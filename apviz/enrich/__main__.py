"""``python -m apviz.enrich``: look things up by hand, and the build steps the set-up runs.

python -m apviz.enrich lookup 8.8.8.8 ads.doubleclick.net 3c:22:fb:00:00:01
python -m apviz.enrich build-asn-cache data/node_modules/@ip-location-db/asn
python -m apviz.enrich build-lab-db data/lab/world.toml data/lab/build/lab.mmdb
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from apviz.enrich.asn import AsnLookup, iter_default_csvs
from apviz.enrich.enricher import EnrichConfig, Enricher
from apviz.enrich.labdb import build_lab_db, read_blocks
from apviz.enrich.macvendor import normalise_mac

DATA_DIR = Path(__file__).resolve().parents[2] / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apviz.enrich", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each lookup loaded")
    sub = parser.add_subparsers(dest="command", required=True)
    look = sub.add_parser("lookup", help="describe addresses, names or MACs (one JSON line each)")
    look.add_argument("items", nargs="+")
    look.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="the installed data (default: %(default)s)"
    )
    look.add_argument("--geo", type=Path, action="append", default=None, help="mmdb file(s) instead of DB-IP")
    look.add_argument("--asn-mmdb", type=Path, default=None, help="an ASN mmdb, asked before the CSV")
    asn = sub.add_parser("build-asn-cache", help="parse the ASN CSVs once and write their binary cache")
    asn.add_argument("asn_dir", type=Path)
    lab = sub.add_parser("build-lab-db", help="build the lab mmdb from a world catalogue")
    lab.add_argument("world", type=Path)
    lab.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")

    if args.command == "build-asn-cache":
        lookup = AsnLookup(csv_paths=list(iter_default_csvs(args.asn_dir)))
        if lookup.table is None:
            print(f"no ASN CSV found in {args.asn_dir}", file=sys.stderr)
            return 1
        print(json.dumps({"ranges": len(lookup.table), "seconds": round(lookup.load_seconds, 3)}))
        return 0
    if args.command == "build-lab-db":
        out = build_lab_db(read_blocks(args.world), args.out)
        print(out)
        return 0

    overrides: dict[str, object] = {}
    if args.geo:
        overrides["geo_paths"] = tuple(args.geo)
    if args.asn_mmdb:
        overrides["asn_mmdb"] = (args.asn_mmdb,)
    enricher = Enricher(EnrichConfig.installed(args.data_dir, **overrides))
    for item in args.items:
        if enricher.describe_address(item).valid:
            result: object = enricher.describe_address(item)
        elif normalise_mac(item) is not None:
            result = enricher.describe_mac(item)
        else:
            result = enricher.describe_name(item)
        print(json.dumps({"query": item, **dataclasses.asdict(result)}, ensure_ascii=False))  # type: ignore[call-overload]
    return 0


if __name__ == "__main__":
    sys.exit(main())
