"""The lab mmdb: built with mmdb-writer from the lab catalogue, read back by GeoLookup/AsnLookup."""

from __future__ import annotations

import time

import maxminddb
import pytest

from apviz.enrich import AsnInfo, AsnLookup, EnrichOptionError, GeoLookup
from apviz.enrich.labdb import DATABASE_TYPE, build_lab_db, ensure_lab_db, read_blocks
from tests.enrich_data import WORLD, needs_world

SAMPLE = {
    "block": [
        {"cidr": "198.18.2.0/24", "org": "Google LLC", "asn": 15169, "city": "Mountain View", "country": "US",
         "lat": 37.3861, "lon": -122.0839},
        {"cidr": "2001:2:0:2::/64", "org": "Google LLC", "asn": 15169, "city": "Frankfurt am Main",
         "country": "DE", "lat": 50.1109, "lon": 8.6821},
    ]
}  # fmt: skip


def test_build_and_read_back(tmp_path):
    out = build_lab_db(read_blocks(SAMPLE), tmp_path / "lab.mmdb")
    assert maxminddb.open_database(str(out)).metadata().database_type == DATABASE_TYPE
    geo = GeoLookup(out)
    mv = geo.lookup("198.18.2.77")
    assert (mv.city, mv.country_code, mv.country, mv.latitude, mv.longitude) == (
        "Mountain View", "US", "United States", 37.3861, -122.0839,
    )  # fmt: skip
    assert geo.lookup("2001:2:0:2::5").city == "Frankfurt am Main"
    assert geo.lookup("198.18.3.1") is None
    assert AsnLookup(out).lookup("198.18.2.1") == AsnInfo(15169, "Google LLC")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cidr": "198.18.2.1/24"}, "'198.18.2.1/24'"),
        ({"country": "UK"}, "'UK'"),
        ({"asn": 0}, "asn must be"),
        ({"lat": 91.0}, "lat must be"),
        ({"org": ""}, "org must be"),
    ],
)
def test_bad_blocks_are_named(change, message):
    block = {**SAMPLE["block"][0], **change}
    with pytest.raises(EnrichOptionError, match=message):
        read_blocks({"block": [block]})


def test_overlap_is_refused():
    block = SAMPLE["block"][0]
    with pytest.raises(EnrichOptionError, match="overlap"):
        read_blocks({"block": [block, {**block, "cidr": "198.18.2.128/25"}]})


@needs_world
def test_real_lab_world(tmp_path):
    out = ensure_lab_db(WORLD, tmp_path / "lab.mmdb")
    blocks = read_blocks(WORLD)
    assert blocks
    geo, asn = GeoLookup(out), AsnLookup(out)
    for block in blocks:
        ip = block.network[1]
        place = geo.lookup(str(ip))
        assert (place.city, place.country_code) == (block.city, block.country)
        assert asn.lookup(str(ip)) == AsnInfo(block.asn, block.org)
    # Up to date: not rebuilt.
    mtime = out.stat().st_mtime_ns
    time.sleep(0.01)
    assert ensure_lab_db(WORLD, out) == out and out.stat().st_mtime_ns == mtime
