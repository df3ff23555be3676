"""The Enricher facade over real data: special ranges win, the lab's soft range is located by the
lab database, names get company + tracker category, and nothing breaks when data is missing."""

from __future__ import annotations

import logging

import pytest

from apviz.enrich import BlocklistSpec, EnrichConfig, Enricher, EnrichOptionError
from apviz.enrich.labdb import build_lab_db, read_blocks
from tests.enrich_data import ASN_CSV, ASN_TEST, BLOCKLISTS, CITY_TEST, DATA, needs_asn_csv, needs_dbip

LAB_SAMPLE = {
    "block": [
        {"cidr": "198.18.1.0/24", "org": "Meta Platforms, Inc.", "asn": 32934, "city": "Menlo Park",
         "country": "US", "lat": 37.453, "lon": -122.1817},
    ]
}  # fmt: skip


@pytest.fixture(scope="module")
def enricher(tmp_path_factory):
    lab = build_lab_db(read_blocks(LAB_SAMPLE), tmp_path_factory.mktemp("lab") / "lab.mmdb")
    return Enricher(
        EnrichConfig(
            geo_paths=(lab, CITY_TEST),
            asn_mmdb=(lab, ASN_TEST),
            asn_csv=(ASN_CSV / "asn-ipv4-num.csv", ASN_CSV / "asn-ipv6-num.csv"),
            asn_cache_dir=tmp_path_factory.mktemp("asncache"),
            blocklists=(
                BlocklistSpec(BLOCKLISTS / "easyprivacy-excerpt.txt", "tracker", "EasyPrivacy"),
                BlocklistSpec(BLOCKLISTS / "easylist-excerpt.txt", "ads", "EasyList"),
            ),
            gateway=("10.99.0.1",),
        )
    )


def test_public_address(enricher):
    info = enricher.describe_address("81.2.69.142")
    assert info.special is None and info.on_map
    assert info.geo.city == "London"
    assert enricher.describe_address("8.8.8.8").asn.org == "Google LLC"  # from the CSV


def test_private_and_gateway_addresses_are_never_placed(enricher):
    for ip, kind in [("10.99.0.1", "gateway"), ("192.168.1.5", "private"), ("fe80::1", "link-local")]:
        info = enricher.describe_address(ip)
        assert info.special.kind == kind and info.geo is None and info.asn is None


def test_lab_range_located_by_lab_db_else_labelled(enricher):
    lab = enricher.describe_address("198.18.1.10")
    assert lab.special is None and lab.geo.city == "Menlo Park" and lab.asn.asn == 32934
    unknown = enricher.describe_address("198.18.200.1")
    assert unknown.special.kind == "benchmarking" and unknown.geo is None


def test_invalid_address(enricher):
    info = enricher.describe_address("<script>")
    assert not info.valid and info.geo is None


def test_names(enricher):
    sr = enricher.describe_name("sb.scorecardresearch.com")
    assert sr.registrable == "scorecardresearch.com"
    assert sr.company.name.startswith("Comscore") and sr.tracker.list_name == "EasyPrivacy"
    assert sr.tracker_category == "tracker"
    ga = enricher.describe_name("www.google-analytics.com")  # not a pure rule in EasyPrivacy: overlay
    assert ga.tracker is None and ga.tracker_category == "tracker" and ga.company.name == "Google"
    ads = enricher.describe_name("securepubads.g.doubleclick.net")
    assert ads.tracker_category == "ads"
    wiki = enricher.describe_name("en.wikipedia.org")
    assert wiki.tracker_category is None and wiki.company.category == "learning"
    local = enricher.describe_name("printer.local")
    assert local.local and local.company is None
    assert not enricher.describe_name("bad name!").valid


def test_macs(enricher):
    assert enricher.describe_mac("3c:22:fb:00:00:01").vendor == "Apple"
    assert enricher.describe_mac("da:a1:19:00:00:01").private


def test_caches_are_bounded():
    small = Enricher(EnrichConfig(cache_size=8, companies_path=None))
    for i in range(100):
        small.describe_address(f"10.0.0.{i}")
        small.describe_name(f"host{i}.example.com")
    assert small.describe_address.cache_info().currsize == 8
    assert small.describe_name.cache_info().currsize == 8


def test_nothing_configured_degrades(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="apviz.enrich"):
        bare = Enricher(EnrichConfig.installed(tmp_path, blocklists=()))
    status = bare.status()
    assert status["geo"] is False and status["asn"] is False and status["companies"] is False
    info = bare.describe_address("8.8.8.8")
    assert info.valid and info.geo is None and info.asn is None and info.special is None
    name = bare.describe_name("www.google.com")
    assert name.registrable == "google.com" and name.company is None
    assert "not found" in caplog.text


def test_config_validation_names_bad_values():
    with pytest.raises(EnrichOptionError, match=r"'a\.mmdb'"):
        EnrichConfig(geo_paths="a.mmdb")
    with pytest.raises(EnrichOptionError, match="0"):
        EnrichConfig(cache_size=0)


@needs_dbip
@needs_asn_csv
def test_installed_data_set():
    full = Enricher(EnrichConfig.installed(DATA, gateway=("10.99.0.1",)))
    assert all(v for k, v in full.status().items() if k != "trackerdb")
    google = full.describe_address("8.8.8.8")
    assert google.geo.country_code == "US" and google.asn.asn == 15169
    fb6 = full.describe_address("2a03:2880:f003:c07:face:b00c::2")
    assert fb6.asn.asn == 32934 and fb6.geo is not None


def test_hostile_keys_are_not_cached(enricher):
    before = enricher.describe_name.cache_info().currsize
    huge = "a." * 50_000 + "com"
    assert not enricher.describe_name(huge).valid
    assert not enricher.describe_address("1" * 5000).valid
    assert not enricher.describe_name(["not", "hashable"]).valid
    assert enricher.describe_name.cache_info().currsize == before
