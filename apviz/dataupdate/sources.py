"""What ``apviz data update`` fetches: one :class:`Source` per file, its URL from ``[data]``.

The file names are the enrichment's (:data:`apviz.enrich.enricher.UPDATED_FILES`): the updater
writes what the enrichment looks for, and nothing else needs to know the layout. The defaults are
the upstreams of the installed data: ip-location-db (its GitHub release for the city files, where
the project moved after deprecating the npm packages; jsDelivr's copy of the npm ``asn-mmdb``
for the ASN data), easylist.to and publicsuffix.org.
"""

from __future__ import annotations

from dataclasses import dataclass

from apviz.config import DataConfig
from apviz.enrich.enricher import UPDATED_FILES

KINDS = ("mmdb-city", "mmdb-asn", "blocklist", "psl")


@dataclass(frozen=True, slots=True)
class Source:
    """One file to keep fresh: its name on the command line, where it comes from, where it goes,
    and what a valid copy must hold (``kind``; ``min_rules`` for lists)."""

    name: str
    url: str
    file: str
    kind: str
    what: str
    min_rules: int = 0


#: name -> (config key with its URL, kind, what it is, least rules a valid copy has).
#: The minimums are about a tenth of today's counts (EasyList gives apviz 43,892 whole-domain rules,
#: EasyPrivacy 45,820, the PSL about 10,400): a list that shrank below is broken, not curated.
SOURCES: dict[str, tuple[str, str, str, int]] = {
    "city-ipv4": ("city_ipv4_url", "mmdb-city", "DB-IP Lite city, IPv4", 0),
    "city-ipv6": ("city_ipv6_url", "mmdb-city", "DB-IP Lite city, IPv6", 0),
    "asn": ("asn_url", "mmdb-asn", "network owners (ASN)", 0),
    "easylist": ("easylist_url", "blocklist", "EasyList", 4000),
    "easyprivacy": ("easyprivacy_url", "blocklist", "EasyPrivacy", 4000),
    "psl": ("psl_url", "psl", "Public Suffix List", 1000),
}


def configured_sources(cfg: DataConfig, names: list[str] | None = None) -> list[Source]:
    """The sources with a URL, in a fixed order; ``names`` picks some (unknown names: ValueError)."""
    if names:
        unknown = [n for n in names if n not in SOURCES]
        if unknown:
            raise ValueError(f"unknown data source {', '.join(unknown)} (known: {', '.join(SOURCES)})")
    out = []
    for name, (key, kind, what, minimum) in SOURCES.items():
        if names and name not in names:
            continue
        url = getattr(cfg, key)
        if url:
            out.append(Source(name, url, UPDATED_FILES[name], kind, what, minimum))
    return out
