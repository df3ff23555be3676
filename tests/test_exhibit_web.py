"""The exhibit's pages in headless Chromium: the kiosk's join card shows QR codes a phone camera can
read (decoded from a screenshot with zbarimg), and the operator console logs in and acts, with its
session cookie out of the page's reach."""

import asyncio
import shutil
import subprocess

import pytest

from apviz.server.join import wifi_payload
from tests.browser import chromium
from tests.test_exhibit_server import PASSWORD, phone, push, running, until
from tests.test_web import wait_js

_why = chromium.available()
needs_browser = pytest.mark.skipif(_why is not None, reason=_why or "")


async def open_page(p, url):
    browser = await chromium.launch(p)
    page = await browser.new_page(viewport={"width": 1920, "height": 1080})
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    await page.goto(url)
    return browser, page


@needs_browser
@pytest.mark.skipif(shutil.which("zbarimg") is None, reason="zbarimg (Debian zbar-tools) is not installed")
def test_kiosk_join_card_shows_readable_codes(tmp_path):
    from playwright.async_api import async_playwright

    ssid, password, url = "Museum Wi-Fi", "visit;the:museum", "http://apviz.lan/me"

    async def main():
        async with running(ssid=ssid, wifi_password=password, phone_url=url) as (_, _s, http):
            async with async_playwright() as p:
                browser, page = await open_page(p, str(http.base_url) + "/")
                try:
                    await page.wait_for_selector("#join-wifi img", state="visible", timeout=10000)
                    await page.wait_for_function(
                        "[...document.querySelectorAll('#join img')].every((i) => i.naturalWidth)"
                    )
                    assert await page.text_content("#join-ssid") == ssid
                    assert await page.text_content("#join-url") == url
                    await page.locator("#join-wifi img").screenshot(path=str(tmp_path / "wifi.png"))
                    await page.locator("#join-phone img").screenshot(path=str(tmp_path / "phone.png"))
                    assert page.errors == []
                finally:
                    await browser.close()

    asyncio.run(main())
    for name, want in (("wifi", wifi_payload(ssid, password)), ("phone", url)):
        out = subprocess.run(
            ["zbarimg", "-q", "--raw", "--nodbus", str(tmp_path / f"{name}.png")],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.rstrip("\n") == want


@needs_browser
@pytest.mark.parametrize(
    ("lang", "screen"),
    [
        ("en", (1920, 1080)),
        ("de", (1920, 1080)),
        ("fr", (1920, 1080)),
        ("fr", (1280, 720)),
        ("de", (2560, 1440)),
    ],
)
def test_join_card_covers_no_panel_in_either_layout(lang, screen):
    """The card has a place of its own in the grid: it overlaps no chart, counter or legend, and the
    legend beside it still fits its words (French ones are the longest). A screen of another size
    shows the same picture scaled: everything inside it, nothing overflowing."""
    from playwright.async_api import async_playwright

    panels = [".sankey-panel", ".counters", ".map-panel", ".legend"]

    async def main():
        async with running(
            ssid="Museum Wi-Fi", wifi_password="visit the museum", phone_url="http://apviz.lan/me"
        ) as (
            feed,
            service,
            http,
        ):
            service.builder.privacy.set_language(lang)
            await push(feed, phone(ip="10.99.1.7", mac="02:a5:00:00:00:07"))
            await until(lambda: len(service.hub.view.get("devices", {})) == 1)
            async with async_playwright() as p:
                for layout in ("side", "rotate"):
                    browser, page = await open_page(p, "about:blank")
                    try:
                        await page.set_viewport_size({"width": screen[0], "height": screen[1]})
                        await page.goto(str(http.base_url) + f"/?layout={layout}")
                        await page.wait_for_selector("#join-phone img", state="visible", timeout=10000)
                        await wait_js(page, f"document.documentElement.lang === '{lang}'")
                        await page.wait_for_timeout(300)
                        boxes = await page.evaluate(
                            """(sels) => sels.map((s) => {
                                const e = document.querySelector(s);
                                if (getComputedStyle(e).visibility === 'hidden') return null;
                                const r = e.getBoundingClientRect();
                                return [s, r.left, r.top, r.right, r.bottom];
                            }).filter(Boolean)""",
                            ["#join", *panels],
                        )
                        (_, *card), others = boxes[0], boxes[1:]
                        for name, *box in [("#join", *card), *others]:
                            inside = (
                                box[0] >= 0 and box[1] >= 0 and box[2] <= screen[0] and box[3] <= screen[1]
                            )
                            assert inside, (layout, name, box, screen)
                        for name, *box in others:
                            apart = (
                                card[2] <= box[0]
                                or box[2] <= card[0]
                                or card[3] <= box[1]
                                or box[3] <= card[1]
                            )
                            assert apart, (layout, name, box, card)
                        overflow = await page.evaluate(
                            "(() => { const e = document.querySelector('.legend');"
                            " return [e.scrollWidth - e.clientWidth, e.scrollHeight - e.clientHeight]; })()"
                        )
                        assert overflow[0] <= 1 and overflow[1] <= 1, (layout, overflow)
                        assert page.errors == []
                    finally:
                        await browser.close()

    asyncio.run(main())


@needs_browser
def test_operator_console_logs_in_pauses_and_hides():
    from playwright.async_api import async_playwright

    async def main():
        async with running() as (feed, service, http):
            await push(feed, phone(ip="10.99.1.7", mac="02:a5:00:00:00:07"))
            await until(lambda: len(service.hub.view.get("devices", {})) == 1)
            async with async_playwright() as p:
                browser, page = await open_page(p, str(http.base_url) + "/operator")
                try:
                    await page.fill("#password", PASSWORD)
                    await page.click("#login button")
                    await page.wait_for_selector("#console", state="visible", timeout=10000)
                    assert await page.evaluate("document.cookie") == ""  # HttpOnly: not the page's
                    await page.click("#pause")
                    await until(lambda: service.builder.privacy.paused)
                    await page.wait_for_selector("#devices li button")
                    await page.click("#devices li button")
                    await until(lambda: service.hub.view["devices"] == {})
                    await page.select_option("#mode", "home")
                    await until(lambda: service.builder.privacy.mode.value == "home")
                    assert page.errors == []
                finally:
                    await browser.close()

    asyncio.run(main())


@needs_browser
def test_operator_chooses_the_kiosks_views_and_rotation():
    """The console's "Views" choice reaches the kiosk live: one view alone, then both in turn every
    5 s; bad choices are refused and leave the screen as it was."""
    from playwright.async_api import async_playwright

    async def main():
        async with running() as (feed, service, http):
            await push(feed, phone(ip="10.99.1.7", mac="02:a5:00:00:00:07"))
            await until(lambda: len(service.hub.view.get("devices", {})) == 1)
            csrf = {
                "X-CSRF-Token": (await http.post("/api/operator/login", json={"password": PASSWORD})).json()[
                    "csrf"
                ]
            }
            async with async_playwright() as p:
                browser, page = await open_page(p, str(http.base_url) + "/?layout=rotate&every=600")
                try:
                    # A panel fading in is still "hidden" in the first frame of its transition: wait for it.
                    visible = "sel => getComputedStyle(document.querySelector(sel)).visibility !== 'hidden'"
                    hidden = (
                        "getComputedStyle(document.querySelector('.sankey-panel')).visibility === 'hidden'"
                    )
                    await wait_js(page, "document.body.dataset.layout === 'rotate'")
                    assert "layout" not in service.hub.view["screen"]  # the URL rules until a choice

                    for bad in ({"layout": "carousel"}, {"layout": "rotate", "every": 1}, {"every": 20}):
                        resp = await http.post("/api/operator/layout", json=bad, headers=csrf)
                        assert resp.status_code == 400, bad
                    resp = await http.post("/api/operator/layout", json={"layout": "map"}, headers=csrf)
                    assert resp.status_code == 200 and resp.json()["layout"] == "map"
                    await wait_js(page, "document.body.dataset.layout === 'map'", timeout=2000)
                    await wait_js(page, f"({visible})('.map-panel')", timeout=2000)
                    await wait_js(page, hidden, timeout=3000)  # after its 1 s fade

                    resp = await http.post(
                        "/api/operator/layout", json={"layout": "rotate", "every": 5}, headers=csrf
                    )
                    assert service.hub.view["screen"]["rotate_every"] == 5
                    await wait_js(page, "document.getElementById('stage').dataset.active === 'sankey'")
                    await wait_js(
                        page, "document.getElementById('stage').dataset.active === 'map'", timeout=8000
                    )
                    await http.post("/api/operator/layout", json={"layout": "side"}, headers=csrf)
                    await wait_js(page, "document.body.classList.contains('layout-side')")
                    await wait_js(page, f"({visible})('.map-panel')", timeout=2000)
                    await wait_js(page, f"({visible})('.sankey-panel')", timeout=2000)
                    assert page.errors == []
                finally:
                    await browser.close()

    asyncio.run(main())
