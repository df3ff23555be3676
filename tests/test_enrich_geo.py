"""GeoLookup on MaxMind's real test database (nested schema), a DB-IP-style fixture (flat schema),
the installed DB-IP Lite files when present, and the degraded paths."""

from __future__ import annotations

import logging

import pytest

from apviz.enrich import EnrichOptionError, GeoInfo, GeoLookup
from tests.enrich_data import BROKEN_MMDB, CITY_TEST, DBIP_V4, DBIP_V6, needs_dbip, write_dbip_like


def test_nested_geoip2_schema_ipv4_and_ipv6():
    geo = GeoLookup(CITY_TEST)
    assert geo.available
    london = geo.lookup("81.2.69.142")
    assert london == GeoInfo("GB", "United Kingdom", "London", "England", 51.5142, -0.0931, 10)
    japan = geo.lookup("2001:218::1")
    assert japan is not None and japan.country_code == "JP" and japan.city is None
    assert japan.country == "Japan" and japan.has_point


def test_ipv4_mapped_ipv6_is_looked_up_as_ipv4():
    geo = GeoLookup(CITY_TEST)
    assert geo.lookup("::ffff:81.2.69.142") == geo.lookup("81.2.69.142")


def test_record_without_place_is_no_answer():
    # 2.3.3.0/24 in the test database carries only a continent: never a made-up location.
    geo = GeoLookup(CITY_TEST)
    assert geo.lookup("2.3.3.1") is None
    assert geo.lookup("10.0.0.1") is None


@pytest.mark.parametrize("bad", ["", "not-an-ip", "1.2.3.4.5", "<script>", "x" * 10_000, None, 42])
def test_hostile_input_gives_none(bad):
    assert GeoLookup(CITY_TEST).lookup(bad) is None


def test_flat_dbip_schema_two_files(tmp_path):
    p4, p6 = write_dbip_like(tmp_path)
    geo = GeoLookup([p4, p6])
    mv = geo.lookup("8.8.8.8")
    assert mv == GeoInfo("US", "United States", "Mountain View", "California", 37.422, -122.085)
    # The IPv4-only file refuses IPv6 queries; the IPv6 file answers them.
    fra = geo.lookup("2a00:1450:4001:80b::200e")
    assert fra is not None and (fra.city, fra.country, fra.region) == (
        "Frankfurt am Main",
        "Germany",
        "Hesse",
    )
    assert geo.lookup("9.9.9.9") is None


def test_first_database_that_answers_wins(tmp_path):
    p4, p6 = write_dbip_like(tmp_path)
    geo = GeoLookup([CITY_TEST, p4, p6])
    assert geo.lookup("81.2.69.142").city == "London"  # from the GeoIP2 test file
    assert geo.lookup("1.1.1.1").city == "Sydney"  # only the DB-IP fixture knows it


def test_missing_file_warns_and_degrades(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="apviz.enrich"):
        geo = GeoLookup([tmp_path / "nope.mmdb"])
    assert not geo.available
    assert geo.lookup("8.8.8.8") is None
    assert "nope.mmdb not found" in caplog.text


def test_corrupt_file_warns_and_is_skipped(caplog):
    with caplog.at_level(logging.WARNING, logger="apviz.enrich.geo"):
        geo = GeoLookup([BROKEN_MMDB, CITY_TEST])
    assert "not a usable MaxMind DB" in caplog.text
    assert geo.sources == ["GeoIP2-City-Test.mmdb (GeoIP2-City)"]
    assert geo.lookup("81.2.69.142").city == "London"


def test_cache_is_bounded():
    geo = GeoLookup(CITY_TEST, cache_size=4)
    for i in range(20):
        geo.lookup(f"81.2.69.{i}")
    assert geo.lookup.cache_info().currsize == 4


@pytest.mark.parametrize("size", [0, -1, "10", 1.5, True])
def test_bad_cache_size_is_named(size):
    with pytest.raises(EnrichOptionError, match=repr(size).replace("(", r"\(").replace(".", r"\.")):
        GeoLookup(CITY_TEST, cache_size=size)


@needs_dbip
def test_installed_dbip_lite():
    geo = GeoLookup([DBIP_V4, DBIP_V6])
    assert geo.lookup("8.8.8.8").country_code == "US"
    assert geo.lookup("1.1.1.1").country == "Australia"
    assert geo.lookup("2001:4860:4860::8888").country_code is not None
    assert geo.lookup("192.168.1.1") is None
