"""Faults on a running gateway, each on a lab with the whole service running: afterwards the screen
must still tell the truth.

Every test runs ``apviz serve`` in-process on a lab (real dnsmasq, conntrack, leases, the lab mmdb),
follows ``/events`` the way a browser does, breaks one thing, and then asserts that a *new* connection
made after the fault reaches the live view named with its domain and its device, that nothing
crashed, and, where the fault says something, that the counters and the state say it too. The time
from the end of the fault to that new connection on screen is printed as the fault's recovery time.

Faults covered elsewhere, not repeated here: a burst that overflows the conntrack event buffer
(``test_burst_lab.py``), log-file rotation at the source level (``test_logfile.py``,
``test_attribution_lab.py``), journal rotation and vacuum at the source level (``test_journal.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn

from apviz.lab.topology import LabError
from tests.browser.fakefeed import free_port
from tests.sseview import ViewFollower
from tests.test_web import needs_browser, wait_js

if TYPE_CHECKING:
    from apviz.enrich.enricher import Enricher
    from apviz.lab.lab import Lab
    from apviz.service import Service

pytestmark = pytest.mark.lab

SHOW_WITHIN = 10.0  # seconds a new connection may take to reach the view on a loaded 2-core machine


# ------------------------------------------------------------------------------------------ helpers


@dataclasses.dataclass
class Served:
    service: Service
    url: str
    view: ViewFollower

    async def healthy(self) -> None:
        """The service task still runs and /healthz says ok: the fault crashed nothing."""
        task = self.service.task
        assert task is not None and not task.done(), task and task.exception()
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            response = await http.get("/healthz")
        assert response.status_code == 200 and response.json()["status"] == "ok", response.text


async def until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def server_on(
    lab: Lab, port: int, enricher: Enricher | None = None, **sections: Any
) -> AsyncIterator[Any]:
    """``apviz serve`` with the lab's configuration on 127.0.0.1:``port``, in this event loop."""
    from apviz.app import build_service
    from apviz.lab.serve import lab_config
    from apviz.server.app import create_app

    service = build_service(lab_config(lab, port, **sections), enricher)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started or task.done(), 15, "the server to listen")
        listening = time.monotonic()
        if task.done():
            task.result()
        await asyncio.wait_for(service.pipeline.ready.wait(), 15)
        yield service, listening
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def served(lab: Lab, enricher: Enricher | None = None, **sections: Any) -> AsyncIterator[Served]:
    """The service on a free port and an SSE client following its view."""
    port = free_port()
    async with server_on(lab, port, enricher, **sections) as (service, _):
        url = f"http://127.0.0.1:{port}"
        follower = ViewFollower()
        async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10, read=None)) as http:
            async with http.stream("GET", "/events") as response:
                assert response.status_code == 200
                follow = asyncio.create_task(follower.follow(response))
                try:
                    await follower.until(lambda v: v.get("totals") is not None, 10, "a first snapshot")
                    yield Served(service, url, follower)
                finally:
                    follow.cancel()
                    with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                        await follow


def node(view: dict[str, Any], kind: str, **want: Any) -> dict[str, Any] | None:
    for item in view.get("nodes", {}).values():
        if item["kind"] == kind and all(item.get(k) == v for k, v in want.items()):
            return item
    return None


def shows(view: dict[str, Any], device: str, org: str, domain: str, country: str | None = None) -> bool:
    """The view links the device to the company, credited with the domain (and to the country)."""
    dev, comp = node(view, "device", label=device), node(view, "org", label=org)
    if not (dev and comp and domain in comp.get("domains", [])):
        return False
    links = view.get("links", {})
    if f"{dev['id']}>{comp['id']}" not in links:
        return False
    return country is None or f"{comp['id']}>c:{country}" in links


async def connect(lab: Lab, phone: str, name: str, hold: float = 0.0, nbytes: int = 20_000) -> None:
    result = await asyncio.to_thread(lab.phone_connect, phone, name, nbytes, hold=hold)
    assert result.received == nbytes, result


async def recovers(
    run: Served, lab: Lab, fault: str, since: float, phone: str, name: str, org: str, domain: str, **kw: Any
) -> float:
    """Make a new connection and wait for the view to show it; returns seconds since ``since``."""
    await connect(lab, phone, name, **kw)
    _, at = await run.view.until(lambda v: shows(v, phone, org, domain), SHOW_WITHIN, f"{phone} -> {org}")
    took = at - since
    print(f"\n[fault] {fault}: new connection on screen {took:.2f} s after the fault ended")
    return took


# ------------------------------------------------------------------------------------------ faults


@pytest.mark.parametrize("log", ["file", "journal"])
def test_dnsmasq_restarted_mid_session(lab_factory, log):
    """The new dnsmasq process's queries keep naming connections (its file is appended to, its
    journal entries come from a new PID), and the flows named before stay named."""
    lab = lab_factory(phones=1, log=log)

    async def main():
        async with served(lab) as run:
            await connect(lab, "phone-1", "www.google.com", hold=30)
            await run.view.until(lambda v: shows(v, "phone-1", "Google", "google.com"), SHOW_WITHIN, "google")
            await asyncio.to_thread(lab.restart_dnsmasq)
            since = time.monotonic()
            await recovers(
                run, lab, f"dnsmasq restart ({log})", since, "phone-1", "mc.yandex.ru", "Yandex", "yandex.ru"
            )
            await recovers(
                run,
                lab,
                f"dnsmasq restart ({log}), a second name",
                time.monotonic(),
                "phone-1",
                "netflix.com",
                "Netflix",
                "netflix.com",
            )
            assert shows(run.view.view, "phone-1", "Google", "google.com")
            assert run.service.state.counts["source_errors"] == 0
            await run.healthy()

    asyncio.run(main())


def test_journal_rotated_and_vacuumed_under_the_service(lab_factory):
    lab = lab_factory(phones=1, log="journal")
    journald = lab.journald

    async def main():
        async with served(lab) as run:
            await connect(lab, "phone-1", "www.google.com")
            await run.view.until(lambda v: shows(v, "phone-1", "Google", "google.com"), SHOW_WITHIN, "google")
            for round_, (name, org, domain) in enumerate(
                [("mc.yandex.ru", "Yandex", "yandex.ru"), ("netflix.com", "Netflix", "netflix.com")]
            ):
                archived = set(journald.journal_dir.glob("system@*.journal"))
                journald.rotate()
                await until(
                    lambda archived=archived: set(journald.journal_dir.glob("system@*.journal")) - archived,
                    10,
                    "an archived file",
                )
                # journald opens the new active file at the next message, and --vacuum-files counts the
                # active file too: without one, the archive is "the one file to keep". Traffic goes on.
                await asyncio.to_thread(lab.phone_resolve, "phone-1", "www.google.com")
                active = journald.journal_dir / "system.journal"
                await until(active.exists, 10, "a new active journal file")
                vacuum = await asyncio.to_thread(
                    lambda: subprocess.run(
                        ["journalctl", f"--directory={journald.journal_dir}", "--vacuum-files=1"],
                        capture_output=True,
                        text=True,
                    )
                )
                assert vacuum.returncode == 0, vacuum.stderr
                assert not list(journald.journal_dir.glob("system@*.journal")), "archives not vacuumed"
                since = time.monotonic()
                await recovers(
                    run, lab, f"journal rotate+vacuum #{round_ + 1}", since, "phone-1", name, org, domain
                )
            assert run.service.state.counts["source_errors"] == 0
            await run.healthy()

    asyncio.run(main())


def test_leases_file_deleted_and_recreated(lab_factory, caplog):
    """Deleted: the last leases stay (a warning, a source error counted), devices keep their names,
    a phone joining meanwhile is named from dnsmasq's DHCP log. Recreated (dnsmasq restarted, the
    phones renew): every lease is back in the file and in the state, no device duplicated."""
    lab = lab_factory(phones=1)

    async def main():
        async with served(lab) as run:
            state = run.service.state
            await connect(lab, "phone-1", "www.google.com", hold=30)
            await run.view.until(lambda v: shows(v, "phone-1", "Google", "google.com"), SHOW_WITHIN, "google")
            errors = state.counts["source_errors"]

            caplog.set_level(logging.WARNING)
            lab.leases_file.unlink()
            since = time.monotonic()
            await until(lambda: state.counts["source_errors"] > errors, 5, "the missing file to be noticed")
            # The warning docs/reliability.md promises, from the leases source, once.
            missing = f"leases file {lab.leases_file} is missing; keeping the last known leases"
            warned = [r for r in caplog.records if r.name == "apviz.sources.leases"]
            assert [(r.levelno, r.getMessage()) for r in warned] == [(logging.WARNING, missing)]
            await recovers(
                run, lab, "leases deleted", since, "phone-1", "mc.yandex.ru", "Yandex", "yandex.ru"
            )
            # dnsmasq keeps writing to the file it holds open (now unlinked): the path stays missing.
            late = await asyncio.to_thread(lab.add_phone, "late-joiner", None, False)
            assert not lab.leases_file.exists()
            await recovers(
                run,
                lab,
                "leases deleted, a phone joined since",
                time.monotonic(),
                "late-joiner",
                "netflix.com",
                "Netflix",
                "netflix.com",
            )
            # Still the one warning, seconds of polling the missing path later: no log flood.
            warned = [r for r in caplog.records if r.name == "apviz.sources.leases"]
            assert len(warned) == 1, [r.getMessage() for r in warned]

            # Recreate: a restarted dnsmasq writes a new (empty) file; the phones' renewals fill it.
            await asyncio.to_thread(lab.restart_dnsmasq)
            for phone in ("phone-1", "late-joiner"):
                lab.renew_lease(phone)
            since = time.monotonic()
            macs = {lab.phone("phone-1").mac, late.mac}
            await until(
                lambda: lab.leases_file.exists() and all(m in lab.leases_file.read_text() for m in macs),
                10,
                "both leases in the recreated file",
            )
            await until(
                lambda: all(state.devices[m].lease_expiry is not None for m in macs),
                5,
                "the leases in the state",
            )
            await recovers(
                run,
                lab,
                "leases recreated",
                since,
                "phone-1",
                "spclient.wg.spotify.com",
                "Spotify",
                "spotify.com",
            )
            await recovers(
                run,
                lab,
                "leases recreated, the other phone",
                time.monotonic(),
                "late-joiner",
                "weixin.qq.com",
                "Tencent",
                "qq.com",
            )
            labels = sorted(d["label"] for d in run.view.view["devices"].values())
            assert labels == ["late-joiner", "phone-1"], labels
            assert {state.devices[m].hostname for m in macs} == {"phone-1", "late-joiner"}
            await run.healthy()

    asyncio.run(main())


def test_conntrack_table_flushed(lab_factory):
    """``conntrack -F``: the kernel reports every entry destroyed, the open flows close and leave the
    view after the hold, the state matches the (empty) table, and new connections show again."""
    lab = lab_factory(phones=1)
    phone_ip = lab.phones[0].ip

    async def main():
        async with served(lab, state={"flow_hold": 1.0}) as run:
            state = run.service.state
            await connect(lab, "phone-1", "www.google.com", hold=60)
            await connect(lab, "phone-1", "mc.yandex.ru", hold=60)
            await run.view.until(
                lambda v: (
                    shows(v, "phone-1", "Google", "google.com") and shows(v, "phone-1", "Yandex", "yandex.ru")
                ),
                SHOW_WITHIN,
                "two open flows",
            )
            assert sum(1 for r in state.flows.values() if r.open and r.client == phone_ip) >= 2

            await asyncio.to_thread(lab.flush_conntrack)
            since = time.monotonic()
            _, at = await run.view.until(
                lambda v: node(v, "org", label="Google") is None and node(v, "org", label="Yandex") is None,
                SHOW_WITHIN,
                "the flushed flows to leave the view",
            )
            print(f"\n[fault] conntrack flush: flows gone from the view {at - since:.2f} s after the flush")
            assert not [r for r in state.flows.values() if r.open and r.client == phone_ip]
            await recovers(
                run, lab, "conntrack flush", since, "phone-1", "netflix.com", "Netflix", "netflix.com", hold=5
            )
            await run.healthy()

    asyncio.run(main())


def test_wan_link_down_and_up(lab_factory):
    """While the uplink is down phones' connections fail (the lab says so) and the service stays up;
    once it is back, new connections show again."""
    lab = lab_factory(phones=1)

    async def main():
        async with served(lab) as run:
            await connect(lab, "phone-1", "www.google.com")
            await run.view.until(lambda v: shows(v, "phone-1", "Google", "google.com"), SHOW_WITHIN, "google")

            await asyncio.to_thread(lab.set_wan, False)
            try:
                failed = time.monotonic()
                with pytest.raises(LabError) as refused:
                    await connect(lab, "phone-1", "mc.yandex.ru")
                print(
                    f"\n[fault] WAN down: connect failed after {time.monotonic() - failed:.2f} s "
                    f"({refused.value})"
                )
                # An address the phone already knows fails too: the packets have nowhere to go.
                with pytest.raises(LabError) as unreachable:
                    await asyncio.to_thread(lab.phone_connect, "phone-1", None, 1000, address="198.18.13.11")
                print(f"[fault] WAN down: direct connect failed ({unreachable.value})")
                await run.healthy()
                assert shows(run.view.view, "phone-1", "Google", "google.com")
                assert node(run.view.view, "org", label="Yandex") is None
            finally:
                await asyncio.to_thread(lab.set_wan, True)
            since = time.monotonic()
            await recovers(run, lab, "WAN down/up", since, "phone-1", "netflix.com", "Netflix", "netflix.com")
            await run.healthy()

    asyncio.run(main())


def _write_geo_db(path: Path, country: str | None) -> None:
    """The lab mmdb, with Criteo's block (static.criteo.net) moved to ``country`` when given."""
    from apviz.enrich.labdb import DEFAULT_WORLD, build_lab_db, read_blocks

    tokyo = {"country": "JP", "city": "Tokyo", "lat": 35.6762, "lon": 139.6503}
    blocks = [
        dataclasses.replace(b, **tokyo) if country == "JP" and str(b.network) == "198.18.14.0/24" else b
        for b in read_blocks(DEFAULT_WORLD)
    ]
    build_lab_db(blocks, path)


def test_geo_database_replaced_on_disk(lab_factory, tmp_path, caplog):
    """A new mmdb renamed over the configured one is taken into use within a few seconds: the same
    name at the same address now shows the new country. A corrupt replacement keeps the old data,
    with a warning and a counter."""
    from apviz.app import build_enricher
    from apviz.lab.serve import lab_config

    lab = lab_factory(phones=1)
    geo_db = tmp_path / "geo.mmdb"
    _write_geo_db(geo_db, None)
    section = {"geo_db": str(geo_db)}
    cfg = lab_config(lab, 8080, enrich=section)  # only its [enrich] and [state] are used here
    enricher = build_enricher(cfg.enrich, tuple(cfg.state.local_addresses))
    geo = enricher.geo

    async def main():
        async with served(lab, enricher, enrich=section) as run:
            await connect(lab, "phone-1", "static.criteo.net", hold=30)
            await run.view.until(
                lambda v: shows(v, "phone-1", "Criteo", "criteo.net", "FR"), SHOW_WITHIN, "Criteo in France"
            )
            # Replace it as an update would: write a complete copy beside it, rename it over.
            _write_geo_db(tmp_path / "geo.mmdb.new", "JP")
            os.replace(tmp_path / "geo.mmdb.new", geo_db)
            since = time.monotonic()
            await connect(lab, "phone-1", "static.criteo.net", hold=30)
            _, at = await run.view.until(
                lambda v: (
                    shows(v, "phone-1", "Criteo", "criteo.net", "JP")
                    and node(v, "country", country="FR") is None
                ),
                SHOW_WITHIN,
                "Criteo in Japan, France gone",
            )
            print(f"\n[fault] geo db replaced: new country on screen {at - since:.2f} s after the rename")
            assert (geo.reloads, geo.reload_failures) == (1, 0)

            # A corrupt file renamed over it: the old (Japan) data stays, a warning says why.
            bad = tmp_path / "geo.mmdb.bad"
            bad.write_bytes(b"\x00not a maxmind database\xff" * 1000)
            with caplog.at_level(logging.WARNING, logger="apviz.enrich.geo"):
                os.replace(bad, geo_db)
                await until(lambda: geo.reload_failures == 1, SHOW_WITHIN, "the corrupt file to be refused")
            assert "not a usable MaxMind DB" in caplog.text and "keeping the previous data" in caplog.text
            since = time.monotonic()
            await recovers(
                run, lab, "corrupt geo db", since, "phone-1", "www.google.com", "Google", "google.com"
            )
            await run.view.until(
                lambda v: (
                    shows(v, "phone-1", "Criteo", "criteo.net", "JP")
                    and shows(v, "phone-1", "Google", "google.com", "US")
                ),
                SHOW_WITHIN,
                "old data still in use",
            )
            assert geo.reloads == 1
            await run.healthy()

    asyncio.run(main())


# ------------------------------------------------------------------------------------------ restart

KIOSK_NAMES = ["phone-1", "phone-2", "Google", "Yandex"]


async def kiosk_shows(page: Any, names: list[str], epoch: str | None, timeout_ms: int) -> None:
    """Live, on a snapshot of a server other than the one of ``epoch``, drawing all ``names``."""
    await wait_js(
        page,
        f"""() => {{
            if (document.getElementById('status').dataset.state !== 'live') return false;
            if (window.apviz.stream.epoch === {json.dumps(epoch)}) return false;
            const sel = '#sankey-svg text.label:not(.exiting) .name';
            const shown = [...document.querySelectorAll(sel)].map(e => e.textContent.replace('⚠ ', ''));
            return {json.dumps(names)}.every(n => shown.includes(n));
        }}""",
        timeout=timeout_ms,
    )


@pytest.mark.browser
@needs_browser
def test_apviz_restarted_kiosk_shows_everything_again_within_5_s(lab_factory):
    """Stop the service and start it again on the same port, twice: after a short outage (the
    browser's own retry finds it) and after a longer one (stream.js's steady retry does). Each time
    the kiosk's stream reconnects by itself and shows the same phones, their destinations and the
    flows still open within 5 s of the server listening again."""
    from playwright.async_api import async_playwright

    from tests.browser import chromium
    from tests.test_web_lab import watched

    lab = lab_factory(phones=2)
    port = free_port()

    async def main():
        async with async_playwright() as p:
            browser = await chromium.launch(p)
            try:
                page = await watched(await browser.new_page(viewport={"width": 1920, "height": 1080}))
                async with server_on(lab, port) as (service, _):
                    await connect(lab, "phone-1", "www.google.com", hold=90)
                    await connect(lab, "phone-2", "mc.yandex.ru", hold=90)
                    await page.goto(f"http://127.0.0.1:{port}/?debug=1")
                    await kiosk_shows(page, KIOSK_NAMES, None, 10_000)
                    before = service.hub.view["totals"]["flows_open"]
                    assert before >= 2
                for outage in ("short", "long"):
                    epoch = await page.evaluate("window.apviz.stream.epoch")
                    reconnecting = "document.getElementById('status').dataset.state === 'reconnecting'"
                    await wait_js(page, reconnecting, 10_000)
                    if outage == "short":
                        await asyncio.sleep(1.0)
                    else:  # down until the browser's own retry failed and stream.js retries instead
                        await wait_js(page, "window.apviz.stream.failedRetries >= 3", 15_000)
                    async with server_on(lab, port) as (service, back):
                        await kiosk_shows(page, KIOSK_NAMES, epoch, 15_000)
                        took = time.monotonic() - back
                        print(
                            f"\n[fault] apviz restart ({outage} outage): kiosk shows the full picture "
                            f"{took:.2f} s after the server listens again"
                        )
                        assert service.hub.view["totals"]["flows_open"] == before
                        assert await page.text_content("#count-devices") == "2"
                        assert took < 5.0, f"the kiosk took {took:.2f} s to show everything again"
                assert not [e for e in page.errors if "EventSource" not in e and "ERR_" not in e], page.errors
            finally:
                await browser.close()

    asyncio.run(main())
