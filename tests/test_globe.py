"""The kiosk's 3D globe in real headless Chromium (WebGL through SwiftShader), fed by the fake world.

It draws (pixels read back from the WebGL canvas: a lit sphere, many colours, red tracker arcs),
with the pinned three.js; its arcs follow the data (one per destination up to the cap, gone when
the phone leaves) and it turns towards a new one; the operator chooses it in the console and the
rotation shows it; a run under steady updates keeps the DOM, the JS heap and three.js' geometries
bounded; nothing is requested from another host and no CSP error is logged. The CSP's style
hashes are checked against the vendored globe.gl file.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
from pathlib import Path

import pytest

from apviz.server.static import GLOBE_STYLE_HASHES, VENDOR
from tests.browser.fakefeed import FakeWorld, running
from tests.browser.globesoak import soak
from tests.test_exhibit_server import PASSWORD, phone, push, until
from tests.test_exhibit_server import running as running_with_operator
from tests.test_web import ARTIFACTS, browser_page, needs_browser, open_kiosk, wait_js

ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = ROOT / "web" / "node_modules"


def pinned(package: str) -> str:
    return json.loads((ROOT / "web" / "package.json").read_text())["dependencies"][package]


def midpoint(lat1: float, lon1: float, lat2: float, lon2: float) -> tuple[float, float]:
    r = math.pi / 180
    p1, l1, p2, l2 = lat1 * r, lon1 * r, lat2 * r, lon2 * r
    x = math.cos(p1) * math.cos(l1) + math.cos(p2) * math.cos(l2)
    y = math.cos(p1) * math.sin(l1) + math.cos(p2) * math.sin(l2)
    z = math.sin(p1) + math.sin(p2)
    return math.atan2(z, math.hypot(x, y)) / r, math.atan2(y, x) / r


STATS = "window.apviz.globe.stats()"


@pytest.mark.browser
@needs_browser
def test_globe_draws_and_its_arcs_follow_the_data():
    async def main():
        world = FakeWorld(destinations=30)
        events = world.populate(4, 6)
        async with running(world) as run, browser_page() as page:
            run.feed.push(events)
            await run.settle()
            await open_kiosk(page, run.url, "?debug=1&layout=globe")
            n = len(run.service.hub.view["arcs"])
            assert 5 < n < 120
            await wait_js(page, f"window.apviz.globe && window.apviz.globe.stats().arcs === {n}")
            await wait_js(page, "window.apviz.globe.stats().countries > 150")  # the atlas is in
            stats = await page.evaluate(STATS)
            assert stats["visible"] and stats["textures"] == 0
            assert stats["revision"] == pinned("three").split(".")[1]  # the pinned three draws
            assert await page.evaluate("document.getElementById('stage').dataset.active") == "globe"
            assert await page.evaluate(
                "getComputedStyle(document.querySelector('.globe-panel')).visibility"
            ) == ("visible")
            await page.wait_for_timeout(1200)  # the panel's fade-in
            px = await page.evaluate("window.apviz.globe.pixels()")
            # A sphere filling much of the canvas, countries, arcs: lit pixels in many colours,
            # and red among them (the fake world's trackers).
            assert px["lit"] > 0.15 * px["width"] * px["height"], px
            assert px["colours"] >= 12, px
            assert px["vermillion"] > 50, px
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "globe.png"))

            # A new phone talks to a new place: one more arc, it flows and rings, the globe turns to it.
            phone_, evs = world.add_phone("globe-tablet")
            drawn = {(a["lat"], a["lon"]) for a in run.service.hub.view["arcs"].values()}
            place = next(pl for pl in world.places if (pl.dest.lat, pl.dest.lon) not in drawn)
            run.feed.push(evs + world.connect(phone_, place))
            await run.settle()
            await wait_js(page, f"window.apviz.globe.stats().arcs === {n + 1}", timeout=3000)
            assert (await page.evaluate(STATS))["rings"] >= 1
            want = midpoint(52.52, 13.40, place.dest.lat, place.dest.lon)
            await page.wait_for_timeout(3200)  # the 2.5 s turn
            pov = await page.evaluate("window.apviz.globe.globe.pointOfView()")
            assert abs(pov["lat"] - want[0]) < 3 and abs((pov["lng"] - want[1] + 180) % 360 - 180) < 3, (
                pov,
                want,
            )

            # The phone leaves: its arc goes (its place had no other visitor).
            run.service.state.forget_device(phone_.mac)
            await run.settle()
            await wait_js(page, f"window.apviz.globe.stats().arcs === {n}", timeout=3000)
            assert (await page.evaluate(STATS))["tracked"] == n
            foreign = [u for u in page.requests if not (u.startswith(run.url + "/") or u.startswith("data:"))]
            assert foreign == []
            assert page.errors == []

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_operator_chooses_the_globe_and_the_rotation_shows_it():
    from playwright.async_api import async_playwright

    from tests.browser import chromium

    async def main():
        async with running_with_operator() as (feed, service, http):
            await push(feed, phone(ip="10.99.1.7", mac="02:a5:00:00:00:07"))
            await until(lambda: len(service.hub.view.get("devices", {})) == 1)
            base = str(http.base_url)
            async with async_playwright() as p:
                browser = await chromium.launch(p)
                try:
                    kiosk = await browser.new_page(viewport={"width": 1920, "height": 1080})
                    errors: list[str] = []
                    kiosk.on("pageerror", lambda e: errors.append(str(e)))
                    kiosk.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                    await kiosk.goto(base + "/?debug=1")
                    await wait_js(kiosk, "document.body.dataset.layout === 'side'")
                    # Never shown yet: not even loaded (no WebGL context, no frame tickers).
                    assert await kiosk.evaluate("window.apviz.globe") is None
                    assert await kiosk.evaluate("typeof window.Globe") == "undefined"

                    console = await browser.new_page()
                    await console.goto(base + "/operator")
                    await console.fill("#password", PASSWORD)
                    await console.click("#login button[type=submit]")
                    await wait_js(console, "!document.getElementById('console').hidden")
                    labels = await console.eval_on_selector_all(
                        "#layout option", "os => os.map(o => o.value)"
                    )
                    assert "globe" in labels
                    await console.select_option("#layout", "globe")
                    await wait_js(kiosk, "document.body.dataset.layout === 'globe'", timeout=3000)
                    assert service.hub.view["screen"]["layout"] == "globe"
                    await wait_js(kiosk, "window.apviz.globe && window.apviz.globe.visible === true")
                    seen = "sel => getComputedStyle(document.querySelector(sel)).visibility"
                    await wait_js(kiosk, f"({seen})('.globe-panel') === 'visible'", timeout=3000)
                    await wait_js(kiosk, f"({seen})('.sankey-panel') === 'hidden'", timeout=3000)
                    assert (await kiosk.evaluate("window.apviz.globe.pixels()"))["lit"] > 10000

                    # One at a time, every 5 s: sankey, map, then the globe's turn (and it pauses after).
                    await console.fill("#every", "5")
                    await console.select_option("#layout", "rotate")
                    await wait_js(kiosk, "document.getElementById('stage').dataset.active === 'sankey'")
                    assert await kiosk.evaluate("window.apviz.globe.visible") is False
                    await wait_js(
                        kiosk, "document.getElementById('stage').dataset.active === 'map'", timeout=8000
                    )
                    await wait_js(
                        kiosk, "document.getElementById('stage').dataset.active === 'globe'", timeout=8000
                    )
                    assert await kiosk.evaluate("window.apviz.globe.visible") is True
                    await wait_js(
                        kiosk, "document.getElementById('stage').dataset.active === 'sankey'", timeout=8000
                    )
                    assert await kiosk.evaluate("window.apviz.globe.visible") is False
                    assert errors == []
                finally:
                    await browser.close()

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_globe_stays_bounded_under_half_a_minute_of_updates():
    """The short version of ``bench/render.py --soak`` (ten minutes): same code, same limits."""
    result = asyncio.run(soak(24, sample_every=6, churn_every=8))
    assert result["updates"] > 80 and result["phones_churned"] >= 2, result
    assert result["final"]["arcs"] == 120  # more destinations than the cap: the cap holds
    assert result["bounded"], {
        k: result[k] for k in ("checks", "warm", "final", "errors", "foreign_requests")
    }


# ------------------------------------------------------------------------------- no browser needed


def test_vendored_globe_files_are_allow_listed_and_pinned():
    assert VENDOR["globe.gl.min.js"] == "globe.gl/dist/globe.gl.min.js"
    assert {"three.module.js", "three.core.js"} <= set(VENDOR)
    for package in ("globe.gl", "three"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", pinned(package)), "pinned exactly, no range"


@pytest.mark.skipif(not (NODE_MODULES / "globe.gl").is_dir(), reason="web/node_modules missing")
def test_csp_style_hashes_are_the_vendored_globe_gl_stylesheets():
    """globe.gl's UMD file injects three fixed stylesheets; the CSP allows exactly those (and the
    empty element it appends first). A globe.gl update that changes them fails here."""
    text = (NODE_MODULES / "globe.gl" / "dist" / "globe.gl.min.js").read_text(encoding="utf-8")
    sheets = re.findall(r'createTextNode\(e\)\)\}\}\(("(?:[^"\\]|\\.)*")\)', text)
    assert len(sheets) == 3
    digest = [
        base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() for s in ["", *map(json.loads, sheets)]
    ]
    assert sorted(digest) == sorted(GLOBE_STYLE_HASHES)
    for package in ("globe.gl", "three"):
        installed = json.loads((NODE_MODULES / package / "package.json").read_text())["version"]
        assert installed == pinned(package), (package, installed)
