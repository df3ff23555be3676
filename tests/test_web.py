"""The web pages in a real headless Chromium, against the real service fed by a fake world.

Each test runs the service and app on uvicorn (loopback only) and drives Debian's Chromium through
Playwright: the kiosk draws the sankey and the map from the stream, new data appears within two
seconds, hostile names stay text, nothing is fetched from another host, the stream comes back
after a server restart, and hours of updates do not grow the page.

Set-up: ``apt-get install chromium``, ``.venv/bin/pip install playwright`` (no ``playwright
install``), ``npm ci --prefix web``. Screenshots go to ``artifacts/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import socket
import time
from pathlib import Path

import httpx
import pytest

from apviz.events import (
    Flow,
    FlowEvent,
    FlowEventKind,
    FlowTuple,
    PrivateDnsRefused,
    ServerName,
    ServerNameVia,
)
from apviz.live.diff import apply, diff
from apviz.server.static import VENDOR
from tests.browser import chromium
from tests.browser.fakefeed import (
    HOSTILE_IMG,
    HOSTILE_SCRIPT,
    LOOPBACK_PHONE,
    FakeWorld,
    free_port,
    running,
)

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"
ARTIFACTS = ROOT / "artifacts"
VENDORED = (WEB / "node_modules" / "d3" / "dist" / "d3.min.js").is_file()

_why = chromium.available() or (None if VENDORED else "web/node_modules missing (npm ci --prefix web)")
if _why and os.environ.get("CI"):
    raise RuntimeError(f"CI must run the browser tests (make test installs everything), but: {_why}")
needs_browser = pytest.mark.skipif(_why is not None, reason=_why or "")


@contextlib.asynccontextmanager
async def browser_page(viewport=(1920, 1080)):
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await chromium.launch(p)
        try:
            page = await browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.errors = []
            page.requests = []
            page.on("pageerror", lambda e: page.errors.append(str(e)))
            page.on(
                "console",
                lambda m: page.errors.append(m.text) if m.type == "error" else None,
            )
            page.on("request", lambda r: page.requests.append(r.url))
            yield page
        finally:
            await browser.close()


async def wait_js(page, expression, timeout=10000):
    """Poll a JavaScript expression until truthy. Playwright's wait_for_function evaluates its
    predicate with eval() inside the page, which the pages' CSP (rightly) forbids; evaluate() runs
    through the DevTools protocol and is not subject to it."""
    deadline = time.monotonic() + timeout / 1000
    while True:
        value = await page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true within {timeout} ms: {expression}")
        await asyncio.sleep(0.03)


async def open_kiosk(page, url, query="?debug=1"):
    await page.goto(url + "/" + query)
    await wait_js(page, "document.getElementById('status').dataset.state === 'live'", timeout=10000)


async def wait_devices(page, n):
    await wait_js(page, f"document.querySelectorAll('#sankey-svg rect.node.device').length === {n}")


async def texts(page, selector):
    return await page.eval_on_selector_all(selector, "els => els.map(e => e.textContent)")


def populated_world(devices=5, per_device=6, destinations=30):
    world = FakeWorld(destinations=destinations)
    return world, world.populate(devices, per_device)


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.browser
@needs_browser
def test_kiosk_renders_sankey_map_and_counters():
    async def main():
        world, events = populated_world()
        async with running(world) as run, browser_page() as page:
            run.feed.push(events)
            await run.settle()
            await open_kiosk(page, run.url)
            await wait_devices(page, 5)
            names = " ".join(await texts(page, "#sankey-svg text.label .name"))
            for phone in world.phones:
                assert phone.hostname in names
            view = run.service.hub.view
            orgs = [n["label"] for n in view["nodes"].values() if n["kind"] == "org" and not n.get("other")]
            assert orgs and all(org in names for org in orgs)
            assert await page.text_content("#count-devices") == "5"
            assert await page.text_content("#count-companies") == str(view["totals"]["companies"])
            assert "DB-IP.com" in await page.text_content("#attribution")
            assert await page.locator("#sankey-svg path.link.tracker").count() > 0
            await page.wait_for_timeout(900)  # let the first tween settle for the picture
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "kiosk.png"))
            assert page.errors == []

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_new_device_and_flow_appear_within_two_seconds():
    async def main():
        world, events = populated_world(devices=3)
        async with running(world) as run, browser_page() as page:
            run.feed.push(events)
            await run.settle()
            await open_kiosk(page, run.url)
            phone, evs = world.add_phone("new-tablet")
            place = world.places[16]  # Criteo, France: a tracker
            start = time.monotonic()
            run.feed.push(evs + world.connect(phone, place))
            await wait_js(
                page,
                """() => [...document.querySelectorAll('#sankey-svg text.label .name')]
                     .some(e => e.textContent === 'new-tablet')""",
                timeout=2000,
            )
            elapsed = time.monotonic() - start
            assert elapsed < 2.0
            # The new link pulses (it is marked fresh) and the counter moved.
            assert await page.locator("#sankey-svg path.link.fresh").count() >= 1
            await wait_js(page, "document.getElementById('count-devices').textContent === '4'")

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_map_draws_points_arcs_and_countries():
    async def main():
        world, events = populated_world(devices=4, per_device=8, destinations=44)
        async with running(world) as run, browser_page() as page:
            run.feed.push(events)
            await run.settle()
            await open_kiosk(page, run.url)
            view = run.service.hub.view
            await wait_js(
                page, f"document.querySelectorAll('#map-svg g.point').length === {len(view['points'])}"
            )
            assert await page.locator("#map-svg path.arc").count() == len(view["arcs"])
            trackers = sum(1 for p in view["points"].values() if p["trackers"] > 0)
            assert await page.locator("#map-svg g.point.tracker").count() == trackers > 0
            assert await page.locator("#map-svg g.gateway").count() == 1
            codes = "sel => d3.selectAll(sel).data().map(f => f.alpha2)"
            shaded = set(await page.evaluate(codes, "#map-svg path.country.visited"))
            in_atlas = set(await page.evaluate(codes, "#map-svg path.country"))
            assert shaded == set(view["countries"]) & in_atlas
            assert {"US", "DE", "IE"} <= shaded
            # Labels: at most the top 8 countries plus "You are here", and none overlap.
            boxes = await page.eval_on_selector_all(
                "#map-svg text.map-label",
                "els => els.map(e => e.getBBox()).map(b => [b.x, b.y, b.x + b.width, b.y + b.height])",
            )
            assert 2 <= len(boxes) <= 9
            for i, a in enumerate(boxes):
                for b in boxes[i + 1 :]:
                    assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
            labels = await texts(page, "#map-svg text.map-label")
            assert "You are here" in labels and "United States" in labels

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_hostile_names_are_shown_as_text():
    async def main():
        world = FakeWorld(destinations=10)
        phone, events = world.add_phone(HOSTILE_IMG, ip=LOOPBACK_PHONE)  # the browser is this phone
        events += world.connect(phone, world.places[0], name=HOSTILE_SCRIPT)
        events += world.connect(phone, world.places[1], name=HOSTILE_IMG)
        other, evs = world.add_phone(HOSTILE_SCRIPT)
        events += evs + world.connect(other, world.places[2])
        async with running(world) as run, browser_page() as page:
            run.feed.push(events)
            await run.settle()
            await open_kiosk(page, run.url)
            await wait_devices(page, 2)
            await page.wait_for_timeout(500)
            names = await texts(page, "#sankey-svg text.label .name")
            assert any(n.startswith("<img src=x") for n in names), names
            assert any(n.startswith("<script>") for n in names), names
            assert await page.evaluate("document.querySelectorAll('img').length") == 0
            assert await page.evaluate("document.querySelectorAll('script').length") == 4  # ours only
            assert await page.evaluate("typeof window.__pwned") == "undefined"

            # The phone page shows the same names, whole, as text.
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.goto(f"{run.url}/me")
            await wait_js(page, "!document.getElementById('summary').hidden")
            assert await page.text_content("#device-label") == HOSTILE_IMG
            rows = " ".join(await texts(page, "#companies .name"))
            assert HOSTILE_SCRIPT in rows and HOSTILE_IMG in rows
            assert await page.evaluate("document.querySelectorAll('img').length") == 0
            await page.wait_for_timeout(300)
            assert await page.evaluate("typeof window.__pwned") == "undefined"
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "me-hostile.png"), full_page=False)
            assert page.errors == []

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_pages_make_no_request_to_another_host():
    async def main():
        world = FakeWorld(destinations=30)
        _, events = world.add_phone(ip=LOOPBACK_PHONE)  # the browser is this phone for /me
        events += world.populate(4, 6)
        async with running(world) as run, browser_page() as page:
            run.feed.push(events)
            await run.settle()
            await open_kiosk(page, run.url, query="?layout=rotate&every=5")
            await page.wait_for_timeout(1500)
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.goto(f"{run.url}/me")
            await wait_js(page, "!document.getElementById('summary').hidden")
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "me.png"))
            await page.goto(f"{run.url}/status")
            await wait_js(page, "document.getElementById('health').dataset.state === 'ok'")
            assert await page.text_content("#totals td[data-key=devices]") == "5"
            assert page.requests, "no request seen at all"
            foreign = [u for u in page.requests if not (u.startswith(run.url + "/") or u.startswith("data:"))]
            assert foreign == []
            # No Content-Security-Policy violation either (an inline style or script would be one).
            assert page.errors == []

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_event_stream_reconnects_after_server_restart():
    async def main():
        port = free_port()
        world, events = populated_world(devices=2)
        async with browser_page() as page:
            async with running(world, port=port) as run:
                run.feed.push(events)
                await run.settle()
                for _ in range(12):  # a seq well above what the new server will have
                    run.feed.push(world.grow(1.0))
                    await run.settle()
                await open_kiosk(page, run.url)
                await wait_devices(page, 2)
            await wait_js(
                page, "document.getElementById('status').dataset.state === 'reconnecting'", timeout=5000
            )
            assert await page.text_content("#status-text") == "reconnecting…"
            assert "offline" in (await page.get_attribute("body", "class"))
            await page.wait_for_timeout(500)
            fresh = FakeWorld(destinations=10, seed=3)
            phone, evs = fresh.add_phone("after-restart")
            async with running(fresh, port=port) as run2:
                run2.feed.push(evs + fresh.connect(phone, fresh.places[3]))
                await run2.settle()
                await wait_js(
                    page, "document.getElementById('status').dataset.state === 'live'", timeout=15000
                )
                await wait_js(
                    page,
                    """() => [...document.querySelectorAll('#sankey-svg text.label.device:not(.exiting)')]
                         .map(e => e.querySelector('.name').textContent).join('|') === 'after-restart'""",
                    timeout=5000,
                )
                assert "offline" not in (await page.get_attribute("body", "class"))

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_dom_and_listeners_stay_bounded_over_200_updates():
    async def main():
        world, events = populated_world(devices=6, per_device=8, destinations=40)
        async with running(world) as run, browser_page() as page:
            run.feed.push(events)
            await run.settle()
            await open_kiosk(page, run.url)
            cdp = await page.context.new_cdp_session(page)
            await cdp.send("Performance.enable")

            async def measure():
                got = await cdp.send("Performance.getMetrics")
                metrics = {m["name"]: m["value"] for m in got["metrics"]}
                elements = await page.evaluate("document.getElementsByTagName('*').length")
                return elements, metrics["JSEventListeners"]

            rng = random.Random(1)
            warm = None
            for i in range(200):
                run.feed.push(world.grow(0.3))
                if i % 10 == 5:  # a phone leaves, another joins: items exit and enter
                    gone = world.phones.pop(0)
                    run.service.state.forget_device(gone.mac)
                    phone, evs = world.add_phone()
                    for _ in range(6):
                        evs += world.connect(phone, rng.choice(world.places))
                    run.feed.push(evs)
                await run.settle()
                await asyncio.sleep(0.03)
                if i == 19:
                    await page.wait_for_timeout(1500)
                    warm = await measure()
            await page.wait_for_timeout(1500)  # exit fades finish
            final = await measure()
            assert final[0] <= warm[0] * 1.1 + 40, (warm, final)
            assert final[1] <= warm[1] + 5, (warm, final)
            # Every drawn item is one the current view holds: nothing left over from the churn.
            counts = await page.evaluate(
                """() => {
                    const v = window.apviz.view();
                    const n = (sel) => document.querySelectorAll(sel).length;
                    return {
                        links: [n('#sankey-svg path.link'), Object.keys(v.links).length],
                        nodes: [n('#sankey-svg rect.node'), Object.keys(v.nodes).length],
                        points: [n('#map-svg g.point'), Object.keys(v.points).length],
                        arcs: [n('#map-svg path.arc'), Object.keys(v.arcs).length],
                    };
                }"""
            )
            for key, (drawn, held) in counts.items():
                assert drawn == held, (key, drawn, held)
            server_view = run.service.hub.view
            page_view = json.loads(await page.evaluate("JSON.stringify(window.apviz.view())"))
            # "time" alone changing is not sent (it would wake every browser for nothing).
            page_view.pop("time"), server_view.pop("time")
            assert page_view == json.loads(json.dumps(server_view))
            assert page.errors == []

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_javascript_apply_matches_python_apply():
    """stream.js's applyDelta gives exactly what apviz.live.diff.apply gives, on random views."""

    def random_view(rng):
        view = {"time": rng.random(), "totals": {"devices": rng.randint(0, 5)}}
        for section in ("nodes", "links", "__proto__", "constructor"):
            if rng.random() < 0.9:
                ids = rng.sample(["a", "b", "c", "d", "e", "__proto__", "toString"], rng.randint(0, 5))
                view[section] = {i: {"id": i, "bytes": rng.randint(0, 3)} for i in ids}
        if rng.random() < 0.3:
            view["gateway"] = {"lat": rng.random(), "lon": None}
        return view

    async def main():
        rng = random.Random(5)
        cases = []
        for _ in range(300):
            old, new = random_view(rng), random_view(rng)
            cases.append((old, diff(old, new), apply(old, diff(old, new))))
        async with running(FakeWorld(destinations=3)) as run, browser_page() as page:
            await page.goto(run.url + "/status")
            got = await page.evaluate(
                """async (text) => {
                    const { applyDelta, fromSnapshot } = await import('/static/js/stream.js');
                    return JSON.parse(text).map(([old, delta]) => {
                        const view = fromSnapshot(JSON.parse(JSON.stringify(old)));
                        applyDelta(view, JSON.parse(JSON.stringify(delta)));
                        return JSON.stringify(view);
                    });
                }""",
                json.dumps([[c[0], c[1]] for c in cases]),
            )
        for (old, delta, expected), result in zip(cases, got, strict=True):
            assert json.loads(result) == expected, (old, delta)

    asyncio.run(main())


# ------------------------------------------------------------------------------- no browser needed


def test_static_routes_and_security_headers():
    async def main():
        async with running(FakeWorld(destinations=3)) as run, httpx.AsyncClient(base_url=run.url) as http:
            for path in ("/", "/me", "/status"):
                r = await http.get(path)
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
                assert "default-src 'self'" in r.headers["content-security-policy"]
                assert "script-src 'self'" in r.headers["content-security-policy"]
                assert r.headers["x-content-type-options"] == "nosniff"
                assert r.headers["referrer-policy"] == "no-referrer"
                # No inline script or style in the pages (the CSP would block them anyway).
                assert not re.search(r"<script(?![^>]*\bsrc=)", r.text)
                assert "<style" not in r.text and " style=" not in r.text
            r = await http.get("/static/js/kiosk.js")
            assert r.status_code == 200 and "javascript" in r.headers["content-type"]
            assert (await http.get("/static/css/kiosk.css")).status_code == 200
            api = await http.get("/api/state")
            assert "content-security-policy" in api.headers
            for bad in (
                "/vendor/package.json",
                "/vendor/..%2Fpackage.json",
                "/static/package.json",
                "/static/node_modules/d3/package.json",
                "/static/js/../../package.json",
                "/static/js/%2e%2e/%2e%2e/package-lock.json",
                "/node_modules/d3/dist/d3.min.js",
            ):
                assert (await http.get(bad)).status_code == 404, bad
            if VENDORED:
                for name in VENDOR:
                    r = await http.get(f"/vendor/{name}")
                    assert r.status_code == 200, name
                    assert "nosniff" in r.headers["x-content-type-options"]

    asyncio.run(main())


def test_static_routes_follow_web_dir(tmp_path):
    (tmp_path / "js").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>other</title>")

    async def main():
        async with (
            running(FakeWorld(destinations=3), web_dir=tmp_path) as run,
            httpx.AsyncClient(base_url=run.url) as http,
        ):
            assert "other" in (await http.get("/")).text
            assert (await http.get("/me")).status_code == 404
            r = await http.get("/vendor/d3.min.js")
            assert r.status_code == 404 and "npm ci" in r.text

    asyncio.run(main())


def test_iso_table_matches_the_iso_list():
    iso = Path("/usr/share/iso-codes/json/iso_3166-1.json")
    assert iso.is_file(), "Debian iso-codes is missing (make setup installs it)"
    ref = {c["alpha_2"]: c["numeric"] for c in json.loads(iso.read_text())["3166-1"]}
    source = (WEB / "js" / "iso3166.js").read_text()
    table = source.split("const TABLE =", 1)[1].split(";", 1)[0]
    mine = dict(re.findall(r"\b([A-Z]{2})(\d{3})\b", table))
    assert mine == ref


def test_api_me_shows_the_asking_device_only():
    """/api/me and /api/devices/{id} answer by the request's address: loopback is one fake phone."""

    async def sse(response):
        fields = {}
        async for line in response.aiter_lines():
            if line == "":
                if "data" in fields:
                    yield fields["event"], json.loads(fields["data"])
                fields = {}
            elif not line.startswith(":"):
                k, _, v = line.partition(": ")
                fields[k] = v

    async def main():
        world = FakeWorld(destinations=12)
        async with running(world) as run, httpx.AsyncClient(base_url=run.url, timeout=10) as http:
            r = await http.get("/api/me")
            assert r.status_code == 404 and "Wi-Fi" in r.json()["error"]
            assert (await http.get("/api/me/events")).status_code == 404
            me, events = world.add_phone("my-phone", ip=LOOPBACK_PHONE)
            other, evs = world.add_phone("their-phone")
            events += evs + world.connect(me, world.places[0]) + world.connect(other, world.places[5])
            run.feed.push(events)
            await run.settle()
            devices = {d["label"]: d["id"] for d in run.service.hub.view["devices"].values()}
            mine = (await http.get("/api/me")).json()
            assert mine["id"] == devices["my-phone"] and mine["label"] == "my-phone"
            assert [d["name"] for d in mine["destinations"]] == [world.places[0].name]
            assert (await http.get(f"/api/devices/{devices['my-phone']}")).json() == mine
            for other_id in (devices["their-phone"], "nope"):
                r = await http.get(f"/api/devices/{other_id}")
                assert r.status_code == 403 and "own phone" in r.json()["error"]
                assert "their-phone" not in r.text and world.places[5].name not in r.text

            async with http.stream("GET", "/api/me/events") as resp:
                assert resp.headers["content-type"].startswith("text/event-stream")
                stream = sse(resp)
                kind, first = await anext(stream)
                assert kind == "detail" and first["label"] == "my-phone" and first["connections"] == 1
                run.feed.push(world.connect(other, world.places[6]) + world.connect(me, world.places[1]))
                await run.settle()
                kind, second = await anext(stream)
                assert kind == "detail" and second["connections"] == 2
                assert "their-phone" not in json.dumps(second)
                assert world.places[6].name not in json.dumps(second)
                run.service.state.forget_device(me.mac)
                await run.settle()
                kind, gone = await anext(stream)
                assert kind == "gone" and "left" in gone["error"]
            assert (await http.get("/api/me")).status_code == 404

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_phone_page_says_where_names_came_from_and_what_hides_them():
    """/me words each name's source and explains hidden DNS; the kiosk shows private DNS as such."""

    async def main():
        world = FakeWorld(destinations=10)
        phone, events = world.add_phone(ip=LOOPBACK_PHONE)  # the browser is this phone
        other, evs = world.add_phone()
        events += evs
        events += world.connect(phone, world.places[0])  # looked up
        events += world.connect(phone, world.places[1])  # looked up, then its server name read
        (flow,) = [f for f in phone.flows.values() if f.orig.dst == world.places[1].address]
        o = flow.orig
        events.append(
            ServerName(
                time.time(), o.src, o.sport, o.dst, o.dport, o.proto, "api.example.org", ServerNameVia.TLS
            )
        )
        events += world.connect(phone, world.places[2], name="dns.google")  # DNS over HTTPS
        events.append(PrivateDnsRefused(time.time(), LOOPBACK_PHONE, "198.18.53.53", 6))
        events += world.connect(other, world.places[3])  # only the other phone asked for this one
        o3, me = world.places[3].address, LOOPBACK_PHONE
        orig, reply = FlowTuple(6, me, o3, 55555, 443), FlowTuple(6, o3, me, 443, 55555)
        events.append(FlowEvent(FlowEventKind.NEW, Flow(9999, socket.AF_INET, orig, reply, orig_bytes=10)))
        async with running(world) as run, browser_page() as page:
            run.feed.push(events)
            await run.settle()
            await open_kiosk(page, run.url)
            await wait_devices(page, 2)
            names = await texts(page, "#sankey-svg text.label .name")
            assert any(n.startswith("private DNS") for n in names), names
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.goto(f"{run.url}/me")
            # The shared name shows only after name_wait (1 s): wait for it on the page.
            await wait_js(
                page, "document.getElementById('companies').innerText.includes(\"another device's lookup\")"
            )
            rows = await page.inner_text("#companies")
            for words in ("seen in the connection", "looked up", "another device's lookup"):
                assert words in rows, rows
            assert "private DNS: names hidden" in rows
            notes = await page.inner_text("#notes")
            assert "hides its DNS lookups with private DNS" in notes, notes
            assert "insists on private DNS, which this network refuses" in notes, notes
            assert await page.evaluate("document.querySelectorAll('#notes *').length") == 2  # text, no markup
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "me-sources.png"), full_page=True)
            assert page.errors == []

    asyncio.run(main())
