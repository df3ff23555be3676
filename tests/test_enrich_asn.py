"""AsnLookup: GeoLite2-ASN test mmdb, real excerpts of the ip-location-db CSV (numeric and dotted),
the binary cache, the installed full CSV when present, and the degraded paths."""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import time
import tracemalloc

from apviz.enrich import AsnInfo, AsnLookup
from apviz.enrich.asn import CACHE_SUFFIX, AsnTable, csv_cache_key, iter_default_csvs
from apviz.enrich.labdb import LabBlock, build_lab_db
from tests.enrich_data import ASN_CSV, ASN_DIR, ASN_TEST, needs_asn_csv


def test_geolite2_asn_mmdb():
    asn = AsnLookup(ASN_TEST)
    assert asn.lookup("1.128.0.1") == AsnInfo(1221, "Telstra Pty Ltd")
    assert asn.lookup("12.81.96.1") == AsnInfo(7018, None)  # a record without an organisation
    assert asn.lookup("127.0.0.1") is None


def _copy_csvs(tmp_path, names):
    for name in names:
        shutil.copy(ASN_CSV / name, tmp_path / name)
    return [tmp_path / n for n in names]


def test_numeric_csv_ipv4_and_ipv6(tmp_path):
    paths = _copy_csvs(tmp_path, ["asn-ipv4-num.csv", "asn-ipv6-num.csv"])
    asn = AsnLookup(csv_paths=paths)
    assert asn.lookup("1.1.1.1") == AsnInfo(13335, "Cloudflare, Inc.")
    assert asn.lookup("8.8.8.8") == AsnInfo(15169, "Google LLC")
    assert asn.lookup("17.253.144.10") == AsnInfo(714, "Apple Inc.")
    assert asn.lookup("2001:4860:4801::8888") == AsnInfo(15169, "Google LLC")
    assert asn.lookup("2a03:2880:f003:c07:face:b00c::2") == AsnInfo(32934, "Facebook, Inc.")
    # Between ranges, before the first and after the last: no answer.
    assert asn.lookup("1.0.1.0") is None
    assert asn.lookup("0.0.0.1") is None
    assert asn.lookup("223.255.255.255") is None
    assert asn.lookup("::1") is None


def test_dotted_csv_gives_the_same_answers(tmp_path):
    paths = _copy_csvs(tmp_path, ["asn-ipv4.csv", "asn-ipv6.csv"])
    asn = AsnLookup(csv_paths=paths)
    assert asn.lookup("1.1.1.1") == AsnInfo(13335, "Cloudflare, Inc.")
    assert asn.lookup("2606:4700::1111") == AsnInfo(13335, "Cloudflare, Inc.")


def test_binary_cache_written_reused_and_invalidated(tmp_path):
    paths = _copy_csvs(tmp_path, ["asn-ipv4-num.csv", "asn-ipv6-num.csv"])
    AsnLookup(csv_paths=paths)
    cache = tmp_path / ("asn-ipv4-num" + CACHE_SUFFIX)
    assert cache.is_file()
    loaded = AsnTable.load(cache, csv_cache_key(paths))
    assert loaded is not None and len(loaded) == 8 + 6
    # Changing a CSV changes the key: the stale cache is refused and rebuilt.
    with paths[0].open("a") as fh:
        fh.write("3758096384,3758096639,64500,Example Org\n")
    os.utime(paths[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    assert AsnTable.load(cache, csv_cache_key(paths)) is None
    asn = AsnLookup(csv_paths=paths)
    assert asn.lookup("224.0.0.1") == AsnInfo(64500, "Example Org")


def test_damaged_cache_is_ignored(tmp_path):
    paths = _copy_csvs(tmp_path, ["asn-ipv4-num.csv", "asn-ipv6-num.csv"])
    AsnLookup(csv_paths=paths)
    cache = tmp_path / ("asn-ipv4-num" + CACHE_SUFFIX)
    cache.write_bytes(cache.read_bytes()[:-7])
    assert AsnLookup(csv_paths=paths).lookup("8.8.8.8") == AsnInfo(15169, "Google LLC")


def test_unwritable_cache_dir_still_loads(tmp_path, caplog):
    paths = _copy_csvs(tmp_path, ["asn-ipv4-num.csv"])
    with caplog.at_level(logging.INFO, logger="apviz.enrich.asn"):
        asn = AsnLookup(csv_paths=paths, cache_dir=tmp_path / "does" / "not" / "exist")
    assert asn.lookup("8.8.8.8").asn == 15169
    assert "cannot write" in caplog.text


def test_garbage_rows_are_skipped(tmp_path):
    bad = tmp_path / "asn-ipv4.csv"
    bad.write_text('1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc."\nnot,a,row\n\n2.0.0.0,1.0.0.0,5,backwards\n')
    asn = AsnLookup(csv_paths=[bad])
    assert asn.table.skipped == 3  # "not,a,row", the blank line, the backwards range
    assert asn.lookup("1.0.0.7") == AsnInfo(13335, "Cloudflare, Inc.")


def test_mmdb_first_then_csv(tmp_path):
    paths = _copy_csvs(tmp_path, ["asn-ipv4-num.csv"])
    asn = AsnLookup(ASN_TEST, paths)
    assert asn.lookup("1.128.0.1").asn == 1221  # mmdb
    assert asn.lookup("8.8.8.8").asn == 15169  # not in the test mmdb: CSV


def test_missing_everything_warns_and_degrades(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="apviz.enrich"):
        asn = AsnLookup(tmp_path / "none.mmdb", [tmp_path / "none.csv"])
    assert not asn.available
    assert asn.lookup("8.8.8.8") is None
    assert "none.mmdb not found" in caplog.text and "lookups are disabled" in caplog.text


@needs_asn_csv
def test_installed_full_csv_loads_fast_and_small(tmp_path):
    """The cache is what makes a start cheap: loading it is far faster than parsing the CSV, timed
    in the same run (no absolute time: this machine is shared), and the table stays small."""
    paths = list(iter_default_csvs(ASN_DIR))
    t0 = time.perf_counter()
    table = AsnTable.from_csv(paths)
    parse_seconds = time.perf_counter() - t0
    assert len(table) > 400_000
    table.save(tmp_path / "t.cache", b"k")
    t0 = time.perf_counter()
    loaded = AsnTable.load(tmp_path / "t.cache", b"k")
    load_seconds = time.perf_counter() - t0
    assert loaded is not None and len(loaded) == len(table)
    assert load_seconds * 5 < parse_seconds, (load_seconds, parse_seconds)
    tracemalloc.start()  # measured apart: tracemalloc slows every allocation
    loaded = AsnTable.load(tmp_path / "t.cache", b"k")
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert current < 40_000_000, f"ASN table uses {current / 1e6:.1f} MB"
    assert loaded.lookup(__import__("ipaddress").ip_address("8.8.8.8")).org == "Google LLC"


TELSTRA = "1.128.0.1"  # in the GeoLite2-ASN test database


def _lab_asn_db(path, org, asn):
    """A GeoLite2-ASN-style file that puts ``TELSTRA``'s network under another organisation."""
    block = LabBlock(ipaddress.ip_network("1.128.0.0/11"), org, asn, "Berlin", "DE", 52.52, 13.405)
    return build_lab_db([block], path)


def _rename_over(src, dst):
    """What an update does: a complete copy beside the file, renamed over it."""
    tmp = dst.with_name(dst.name + ".new")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def test_replaced_mmdb_is_taken_into_use_and_a_broken_one_keeps_the_old(tmp_path, caplog):
    db = tmp_path / "asn.mmdb"
    shutil.copyfile(ASN_TEST, db)
    asn = AsnLookup(db, reload_interval=0)
    seen = []
    asn.on_reload.append(lambda: seen.append(asn.lookup(TELSTRA)))
    assert asn.lookup(TELSTRA) == AsnInfo(1221, "Telstra Pty Ltd")
    assert asn.reload_if_changed() is False  # nothing changed: nothing reopened

    _rename_over(_lab_asn_db(tmp_path / "lab.mmdb", "Lab Networks", 64500), db)
    assert asn.reload_if_changed() is True
    # The listeners run after the lookup's own cache was emptied: they see the new answer.
    assert seen == [AsnInfo(64500, "Lab Networks")] and asn.lookup(TELSTRA) == seen[0]
    assert asn.sources == ["asn.mmdb (apviz-Lab-City-ASN)"]

    (tmp_path / "bad").write_bytes(b"\x00not a maxmind database\xff" * 100)
    with caplog.at_level(logging.WARNING, logger="apviz.enrich.asn"):
        _rename_over(tmp_path / "bad", db)
        assert asn.reload_if_changed() is False
        assert asn.reload_if_changed() is False  # the same bad file is not tried (or logged) again
    assert caplog.text.count("keeping the previous data") == 1
    assert asn.lookup(TELSTRA) == AsnInfo(64500, "Lab Networks")
    assert (asn.reloads, asn.reload_failures) == (1, 1)


def test_the_service_watches_the_asn_database_and_forgets_what_it_described(tmp_path):
    """``apviz serve`` rechecks the ASN file like the geo file; a replacement reaches the addresses
    the enricher already described (their cached answers are dropped)."""
    from apviz.app import build_enricher, build_service
    from apviz.config import from_dict

    db = tmp_path / "asn.mmdb"
    shutil.copyfile(ASN_TEST, db)
    cfg = from_dict({"enrich": {"asn_db": str(db)}})
    enricher = build_enricher(cfg.enrich, ())
    service = build_service(cfg, enricher)
    assert "asn-reload" in [source.name for source in service.pipeline.sources]
    assert enricher.describe_address(TELSTRA).asn == AsnInfo(1221, "Telstra Pty Ltd")
    _rename_over(_lab_asn_db(tmp_path / "lab.mmdb", "Lab Networks", 64500), db)
    assert enricher.asn.reload_if_changed(force=True)
    assert enricher.describe_address(TELSTRA).asn == AsnInfo(64500, "Lab Networks")
