"""Is a downloaded file what its source promises? Checked before it replaces anything.

A file that passes here is one the enrichment can use: the checks ask the same libraries the
enrichment asks (maxminddb, apviz's own blocklist parser, publicsuffixlist), so "valid" means "the
running service will take it", not just "the bytes arrived".

* an mmdb opens, its tree answers a search, and a well-known address has a record of the right
  kind (a country for a city database, an AS number for an ASN database);
* a blocklist gives at least ``min_rules`` whole-domain rules (an empty or HTML page gives none);
* the Public Suffix List parses, has at least ``min_rules`` rules and knows ``co.uk``;
* an mmdb built before the one in use is refused (a stale CDN copy), unless forced.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from apviz.dataupdate.sources import Source

#: Addresses every real database knows (Google's public resolver, both families).
PROBE_V4 = "8.8.8.8"
PROBE_V6 = "2001:4860:4860::8888"


class CheckError(Exception):
    """The file is not usable; the message says what is wrong with it."""


def check(source: Source, path: Path) -> str:
    """Check ``path`` as ``source`` promises; a short summary (for the output line) or CheckError."""
    if source.kind.startswith("mmdb"):
        return check_mmdb(path, source.kind, v6_probe="ipv6" in source.file)
    if source.kind == "blocklist":
        return check_blocklist(path, source.min_rules)
    if source.kind == "psl":
        return check_psl(path, source.min_rules)
    raise CheckError(f"unknown kind {source.kind!r}")  # pragma: no cover - SOURCES holds the kinds


def check_mmdb(path: Path, kind: str, *, v6_probe: bool = False) -> str:
    """``v6_probe``: ask an IPv6 address (an IPv6-only file, whose IPv4 part is empty)."""
    import maxminddb
    from maxminddb.errors import InvalidDatabaseError

    try:
        with maxminddb.open_database(str(path)) as db:
            meta = db.metadata()
            probe = PROBE_V6 if int(meta.ip_version) == 6 and v6_probe else PROBE_V4
            record = db.get(probe)
    except (OSError, InvalidDatabaseError, ValueError, RuntimeError) as exc:
        raise CheckError(f"not a usable MaxMind DB ({exc})") from None
    if not isinstance(record, Mapping):
        raise CheckError(f"the database has no record for {probe}")
    if kind == "mmdb-city" and not _country(record):
        raise CheckError(f"the record for {probe} names no country: not a city/country database")
    if kind == "mmdb-asn":
        asn = record.get("autonomous_system_number")
        if not isinstance(asn, int) or isinstance(asn, bool) or asn <= 0:
            raise CheckError(f"the record for {probe} has no AS number: not an ASN database")
        # apviz shows the organisation: a database of bare numbers would hide the CSV's names.
        org = record.get("autonomous_system_organization")
        if not isinstance(org, str) or not org.strip():
            raise CheckError(f"the record for {probe} names no organisation (AS{asn} only)")
    return f"{meta.database_type}, IPv{meta.ip_version}, built {_day(int(meta.build_epoch))}"


def _country(record: Mapping[str, Any]) -> str | None:
    code = record.get("country_code")
    if isinstance(code, str) and code:
        return code
    country = record.get("country")
    if isinstance(country, Mapping) and isinstance(country.get("iso_code"), str):
        return str(country["iso_code"])
    return None


def check_blocklist(path: Path, min_rules: int) -> str:
    from apviz.enrich.trackers import BlocklistSpec, TrackerClassifier

    classifier = TrackerClassifier([BlocklistSpec(path, "other", path.stem)])
    count = len(classifier)
    if count < min_rules:
        raise CheckError(
            f"only {count} domain rules (at least {min_rules} expected): an empty or broken list"
        )
    return f"{count} domain rules"


def check_psl(path: Path, min_rules: int) -> str:
    from publicsuffixlist import PublicSuffixList

    try:
        with path.open("rb") as fh:
            psl = PublicSuffixList(fh)
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckError(f"cannot be read as the Public Suffix List ({exc})") from None
    rules = sum(1 for line in text.splitlines() if line.strip() and not line.startswith("//"))
    if rules < min_rules:
        raise CheckError(f"only {rules} rules (at least {min_rules} expected)")
    if psl.publicsuffix("example.co.uk") != "co.uk":
        raise CheckError("it does not know co.uk: not the Public Suffix List")
    return f"{rules} rules"


def build_epoch(path: Path) -> int | None:
    """When an mmdb was built (its metadata), None when it does not open."""
    import maxminddb

    try:
        with maxminddb.open_database(str(path)) as db:
            return int(db.metadata().build_epoch)
    except Exception:  # a missing or broken old file: nothing to compare with
        return None


def check_not_older(source: Source, new: Path, current: Path) -> None:
    """An mmdb built before the one in use is refused: a stale CDN copy must not roll the data back."""
    if not source.kind.startswith("mmdb"):
        return
    new_epoch, old_epoch = build_epoch(new), build_epoch(current)
    if new_epoch is not None and old_epoch is not None and new_epoch < old_epoch:
        raise CheckError(
            f"the new file was built {_day(new_epoch)}, before the one in use ({_day(old_epoch)}); "
            "--force takes it anyway"
        )


def _day(epoch: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))
