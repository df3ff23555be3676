"""The web pages in real headless Chromium against the real service on the lab.

What the fake feed of ``test_web.py`` cannot show: real phones (network namespaces with a DHCP lease
from a real dnsmasq) make real connections that the kernel's conntrack reports, dnsmasq's query log
names them, the lab mmdb places them, and the pages draw what came out of that whole chain. The
service runs in this process (uvicorn on the lab's two sockets: host loopback for the kiosk, the
gateway's LAN address for the phones), so a test drives phones and reads the service's own view.

The phone page is opened by a Chromium started *inside* a phone's namespace: Playwright launches a
small wrapper that runs ``ip netns exec NS chromium``; Playwright talks to the browser over a pipe,
which the namespace switch keeps. The server then sees the phone's LAN address, exactly as on a real
gateway, and that address is all ``/me`` goes by.

Screenshots: ``artifacts/kiosk-lab.png`` (1920x1080) and ``artifacts/me-lab.png`` (390x844).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn

from tests.browser import chromium
from tests.browser.fakefeed import free_port
from tests.test_web import ARTIFACTS, needs_browser, texts, wait_js

if TYPE_CHECKING:
    from apviz.lab.lab import Lab
    from apviz.lab.phone import Phone
    from apviz.service import Service

pytestmark = [pytest.mark.lab, pytest.mark.browser, needs_browser]

# Chromium itself, not Debian's wrapper script (it would re-read /etc and add its own flags).
CHROMIUM_BINARY = (
    "/usr/lib/chromium/chromium" if os.path.exists("/usr/lib/chromium/chromium") else chromium.CHROMIUM
)

# What each phone does: (name asked for, company the screens show, country of its lab block).
# The countries are checked against data/lab/world.toml below, so this table cannot drift from it.
PLAN: dict[str, list[tuple[str, str, str]]] = {
    "phone-1": [
        ("www.google.com", "Google", "US"),
        ("static.criteo.net", "Criteo", "FR"),
        ("rr1---sn-4g5ednse.googlevideo.com", "Google", "DE"),
    ],
    "phone-2": [
        ("mc.yandex.ru", "Yandex", "RU"),
        ("spclient.wg.spotify.com", "Spotify", "SE"),
    ],
    "phone-3": [
        ("netflix.com", "Netflix", "US"),
        ("ipv4-c001-lhr001-ix.1.oca.nflxvideo.net", "Netflix", "GB"),
    ],
}
TRACKERS = {"Criteo", "Yandex"}


# ------------------------------------------------------------------------------------------ helpers


@contextlib.asynccontextmanager
async def lab_service(lab: Lab, **sections: dict[str, object]) -> AsyncIterator[tuple[Service, int]]:
    """``apviz serve`` on the lab, in this event loop: the kiosk on 127.0.0.1:PORT, the phones on
    the gateway's LAN address (10.99.1.1:PORT) inside the gateway namespace. ``sections`` override
    the lab's configuration (``exhibit={"mode": "exhibit"}``)."""
    from apviz.app import build_service
    from apviz.lab.serve import lab_config, lab_sockets
    from apviz.server.app import create_app

    port = free_port()
    service = build_service(lab_config(lab, port, **sections))
    sockets = lab_sockets(lab, port)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service),
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.create_task(server.serve(sockets=sockets))
    try:
        await until(lambda: server.started and service.pipeline.ready.is_set(), 15, "the service to start")
        yield service, port
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        for sock in sockets:
            sock.close()


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        await asyncio.sleep(0.05)


async def connect(lab: Lab, phone: str, name: str, nbytes: int = 40_000) -> None:
    """One real connection from the phone (the lab's helper blocks, so not on the event loop); it is
    held open for a minute so the flow stays on screen for the whole test."""
    result = await asyncio.to_thread(lab.phone_connect, phone, name, nbytes, hold=60.0)
    assert result.received == nbytes, result


async def run_plan(lab: Lab, service: Service, plan: dict[str, list[tuple[str, str, str]]]) -> None:
    """Every phone's connections, then wait until the view credits each company to its phone."""
    await asyncio.gather(*(connect(lab, phone, name) for phone, rows in plan.items() for name, _, _ in rows))
    wanted = {(phone, org) for phone, rows in plan.items() for _, org, _ in rows}
    await until(lambda: wanted <= device_orgs(service), 10, f"the view to hold {sorted(wanted)}")


def device_orgs(service: Service) -> set[tuple[str, str]]:
    """(device label, company) pairs of the sankey's device -> company links."""
    nodes = service.hub.view.get("nodes", {})
    out = set()
    for link in service.hub.view.get("links", {}).values():
        src, dst = nodes.get(link["source"]), nodes.get(link["target"])
        if src and dst and src["kind"] == "device" and dst["kind"] == "org":
            out.add((src["label"], dst["label"]))
    return out


def device_id(service: Service, label: str) -> str:
    return next(d["id"] for d in service.hub.view["devices"].values() if d["label"] == label)


def check_plan_against_world(lab: Lab) -> None:
    for rows in PLAN.values():
        for name, _, country in rows:
            resolution = lab.world.resolve(name)
            assert resolution is not None, name
            block = lab.world.block_for(resolution.addresses[0])
            assert block is not None and block.country == country, (name, block)


@contextlib.asynccontextmanager
async def kiosk_page(playwright: Any, port: int) -> AsyncIterator[Any]:
    browser = await chromium.launch(playwright)
    try:
        page = await watched(await browser.new_page(viewport={"width": 1920, "height": 1080}))
        await page.goto(f"http://127.0.0.1:{port}/?debug=1")
        await wait_js(page, "document.getElementById('status').dataset.state === 'live'")
        yield page
    finally:
        await browser.close()


@contextlib.asynccontextmanager
async def phone_page(playwright: Any, lab: Lab, phone: Phone, tmp: Path) -> AsyncIterator[Any]:
    """A 390x844 page of a Chromium running inside ``phone``'s network namespace."""
    wrapper = tmp / f"chromium-in-{phone.ns}"
    wrapper.write_text(
        f'#!/bin/sh\nexec ip netns exec {shlex.quote(phone.ns)} {shlex.quote(CHROMIUM_BINARY)} "$@"\n'
    )
    wrapper.chmod(0o755)
    # The only host this browser may reach is the gateway; every name resolves to nothing.
    args = [a for a in chromium.ARGS if not a.startswith("--host-resolver-rules")]
    args.append(f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {lab.gateway_ip}")
    browser = await playwright.chromium.launch(executable_path=str(wrapper), headless=True, args=args)
    try:
        page = await watched(
            await browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        )
        yield page
    finally:
        await browser.close()


async def watched(page: Any) -> Any:
    page.errors = []
    page.requests = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: page.requests.append(r.url))
    return page


def foreign(page: Any, base: str) -> list[str]:
    assert page.requests, "no request seen at all"
    return [u for u in page.requests if not (u.startswith(base + "/") or u.startswith("data:"))]


async def body_text(page: Any) -> str:
    return await page.evaluate("document.body.innerText")


# ------------------------------------------------------------------------------------------ tests


def test_kiosk_shows_lab_phones_companies_and_countries(lab_factory):
    """Sankey: the three phones and their companies; map: arcs to the countries of the lab blocks."""
    from playwright.async_api import async_playwright

    lab = lab_factory(phones=3)
    check_plan_against_world(lab)

    async def main():
        async with lab_service(lab) as (service, port), async_playwright() as p:
            await run_plan(lab, service, PLAN)
            async with kiosk_page(p, port) as page:
                await wait_js(page, "document.querySelectorAll('#sankey-svg rect.node.device').length === 3")
                companies = {org for rows in PLAN.values() for _, org, _ in rows}
                await wait_js(
                    page,
                    f"""() => {{
                        const names = [...document.querySelectorAll('#sankey-svg text.label .name')]
                            .map(e => e.textContent.replace('⚠ ', ''));
                        return {sorted(PLAN)!r}.concat({sorted(companies)!r}).every(n => names.includes(n));
                    }}""",
                )
                tracker_labels = await texts(page, "#sankey-svg text.label.org.tracker .name")
                assert {t.removeprefix("⚠ ") for t in tracker_labels} == TRACKERS
                assert await page.locator("#sankey-svg path.link.tracker").count() >= 2
                assert await page.text_content("#count-devices") == "3"
                assert await page.text_content("#count-companies") == str(len(companies))

                # Each phone has its own colour class (chosen by the server, distinct while one is free).
                classes = await page.eval_on_selector_all(
                    "#sankey-svg rect.node.device",
                    "els => els.map(e => [d3.select(e).datum().device, e.getAttribute('class')])",
                )
                for dev, cls in classes:
                    assert dev in service.hub.view["devices"] and " dev-c" in cls, (dev, cls)

                # The map: one point and one arc per place, countries shaded, arcs end at the blocks.
                countries = {c for rows in PLAN.values() for _, _, c in rows}
                view = service.hub.view
                await wait_js(
                    page, f"document.querySelectorAll('#map-svg path.arc').length === {len(view['arcs'])}"
                )
                assert await page.locator("#map-svg g.point").count() == len(view["points"])
                codes = "sel => d3.selectAll(sel).data().map(f => f.alpha2)"
                assert set(await page.evaluate(codes, "#map-svg path.country.visited")) == countries
                ends = await page.evaluate(
                    "() => d3.selectAll('#map-svg path.arc').data().map(a => [a.lat, a.lon, a.tracker])"
                )
                blocks = {(b.lat, b.lon): b.country for b in lab.world.blocks}
                assert {blocks[(lat, lon)] for lat, lon, _ in ends} == countries
                assert {blocks[(lat, lon)] for lat, lon, tracker in ends if tracker} == {"FR", "RU"}
                assert await page.locator("#map-svg path.arc.tracker").count() == 2
                labels = await texts(page, "#map-svg text.map-label")
                assert "United States" in labels and "The lab" in labels

                await page.wait_for_timeout(1200)  # let the tweens settle for the picture
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "kiosk-lab.png"))
                assert foreign(page, f"http://127.0.0.1:{port}") == []
                assert page.errors == []

    asyncio.run(main())


def test_new_lab_phone_and_connection_appear_within_two_seconds(lab_factory):
    """A phone joins and connects: the kiosk shows it, its company and country, within 2 s of the
    connection (the lease itself is older: the device appears with its first flow)."""
    from playwright.async_api import async_playwright

    lab = lab_factory(phones=2)

    async def main():
        async with lab_service(lab) as (service, port), async_playwright() as p:
            plan = {k: PLAN[k] for k in ("phone-1", "phone-2")}
            await run_plan(lab, service, plan)
            async with kiosk_page(p, port) as page:
                await wait_js(page, "document.querySelectorAll('#sankey-svg rect.node.device').length === 2")
                await asyncio.to_thread(lab.add_phone, "new-tablet", None, False)
                await until(
                    lambda: any(d.hostname == "new-tablet" for d in service.state.devices.values()),
                    5,
                    "the new lease",
                )
                start = time.monotonic()
                task = asyncio.create_task(connect(lab, "new-tablet", "weixin.qq.com"))
                await wait_js(
                    page,
                    """() => {
                        const sel = '#sankey-svg text.label:not(.exiting) .name';
                        const names = [...document.querySelectorAll(sel)].map(e => e.textContent);
                        return ['new-tablet', 'Tencent', 'China'].every(n => names.includes(n));
                    }""",
                    timeout=2000,
                )
                elapsed = time.monotonic() - start
                await task
                assert elapsed < 2.0, elapsed
                await wait_js(page, "document.getElementById('count-devices').textContent === '3'", 2000)
                assert await page.locator("#map-svg path.country.visited").count() >= 5
                assert page.errors == []

    asyncio.run(main())


def test_me_in_a_phone_namespace_shows_that_phone_only(lab_factory, tmp_path):
    """/me from inside phone-1 shows phone-1, its companies and countries, in the kiosk's colour, and
    nothing of phone-2 or phone-3; it updates by itself; no one else's detail can be asked for."""
    from playwright.async_api import async_playwright

    lab = lab_factory(phones=3)

    async def main():
        async with lab_service(lab) as (service, port), async_playwright() as p:
            await run_plan(lab, service, PLAN)
            ids = {label: device_id(service, label) for label in PLAN}
            base = f"http://{lab.gateway_ip}:{port}"

            # From the host (loopback) nobody is a device: no detail for anyone.
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                assert (await http.get("/api/me")).status_code == 404
                for dev in ids.values():
                    assert (await http.get(f"/api/devices/{dev}")).status_code == 403

            async with kiosk_page(p, port) as kiosk:
                await wait_js(kiosk, "document.querySelectorAll('#sankey-svg rect.node.device').length === 3")
                kiosk_colour = await kiosk.evaluate(
                    """id => getComputedStyle([...document.querySelectorAll('#sankey-svg rect.node.device')]
                        .find(e => d3.select(e).datum().device === id)).fill""",
                    ids["phone-1"],
                )

            seen: dict[str, str] = {}
            for label in ("phone-1", "phone-2"):
                phone = lab.phone(label)
                async with phone_page(p, lab, phone, tmp_path) as page:
                    await page.goto(f"{base}/me")
                    await wait_js(page, "!document.getElementById('summary').hidden")
                    assert await page.text_content("#device-label") == label
                    rows = PLAN[label]
                    expected = [n for n, _, _ in rows] + [o for _, o, _ in rows]
                    await wait_js(page, f"{expected!r}.every(s => document.body.innerText.includes(s))")
                    text = await body_text(page)
                    assert "This is you:" in text
                    others = [k for k in PLAN if k != label]
                    mine = {o for _, o, _ in rows}
                    for other in others:
                        assert other not in text, other
                        for name, org, _ in PLAN[other]:
                            assert name not in text, name
                            if org not in mine:
                                assert org not in text, org
                    trackers = await texts(page, "#companies li.is-tracker .org")
                    assert set(trackers) == mine & TRACKERS
                    if label == "phone-1":
                        assert await page.text_content("#fig-countries") == "3"
                        swatch = await page.evaluate(
                            "getComputedStyle(document.querySelector('#you .swatch')).backgroundColor"
                        )
                        assert swatch == kiosk_colour, (swatch, kiosk_colour)

                        # Only the device itself may read its detail by id.
                        fetch = "url => fetch(url).then(r => r.status)"
                        assert await page.evaluate(fetch, f"/api/devices/{ids['phone-1']}") == 200
                        assert await page.evaluate(fetch, f"/api/devices/{ids['phone-2']}") == 403

                        # A new connection shows up without a reload (the per-device stream).
                        await wait_js(page, "document.getElementById('live').dataset.state === 'live'")
                        await connect(lab, label, "amazon.com")
                        await wait_js(page, "document.body.innerText.includes('Amazon')", timeout=5000)
                        await page.wait_for_timeout(300)
                        ARTIFACTS.mkdir(exist_ok=True)
                        await page.screenshot(path=str(ARTIFACTS / "me-lab.png"))
                    seen[label] = await body_text(page)
                    assert foreign(page, base) == []
                    # The one error the console may show is the refused fetch of phone-2's detail above.
                    refused = [e for e in page.errors if "status of 403" in e]
                    assert len(refused) == (label == "phone-1") and len(page.errors) == len(refused), (
                        page.errors
                    )
            assert "Amazon" not in seen["phone-2"]

    asyncio.run(main())
