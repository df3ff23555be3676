"""The pages' languages: complete catalogues, the phone page's language negotiated from
Accept-Language, French pseudonyms, and in real Chromium a kiosk that follows the operator's language
live, a phone page in the phone's language, and the paused / recording banners."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path

import pytest

from apviz.live.privacy import UNKNOWN_SITE
from apviz.live.pseudonyms import ANIMALS, COLOURS, LANGUAGES, render
from apviz.live.publicview import ViewOptions
from apviz.server.lang import negotiate
from tests.browser import chromium
from tests.test_exhibit_server import MAC, PASSWORD, phone, push, running, until
from tests.test_web import needs_browser, wait_js

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"
I18N = WEB / "i18n"


def catalogue(lang: str) -> dict[str, str]:
    return json.loads((I18N / f"{lang}.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------ catalogues


def test_every_catalogue_has_exactly_the_english_keys_and_no_empty_text():
    english = catalogue("en")
    files = sorted(p.stem for p in I18N.glob("*.json"))
    assert files == sorted(LANGUAGES), "one catalogue per language of apviz.live.pseudonyms.LANGUAGES"
    for lang in files:
        table = catalogue(lang)
        assert set(table) == set(english), (lang, set(table) ^ set(english))
        for key, text in table.items():
            assert isinstance(text, str) and text.strip(), (lang, key)
            # Placeholders must match, or a translation would show "{n}" or drop the number.
            assert set(re.findall(r"\{\w+\}", text)) == set(re.findall(r"\{\w+\}", english[key])), (lang, key)
            assert "<" not in text and ">" not in text, (lang, key)  # text, not markup


def test_every_key_the_pages_use_is_in_the_catalogue():
    english = catalogue("en")
    used = set()
    for page in WEB.glob("*.html"):
        used |= set(re.findall(r'data-i18n(?:-label|-alt)?="([^"]+)"', page.read_text(encoding="utf-8")))
    for script in (WEB / "js").glob("*.js"):
        text = script.read_text(encoding="utf-8")
        used |= set(re.findall(r'\bt\("([\w.]+)"', text))
        used |= set(re.findall(r'"((?:kiosk|sankey|me|join|map|place|operator|status)\.[\w.]+)"', text))
    used = {k for k in used if "${" not in k}
    assert used, "no catalogue keys found in the pages"
    assert used <= set(english), sorted(used - set(english))
    # The status pill builds its key from the stream's state.
    assert {f"kiosk.status.{s}" for s in ("connecting", "live", "reconnecting")} <= set(english)


def test_the_browser_and_the_server_know_the_same_languages():
    text = (WEB / "js" / "i18n.js").read_text(encoding="utf-8")
    listed = re.search(r"export const LANGUAGES = \[([^\]]*)\]", text)
    assert listed and re.findall(r'"(\w+)"', listed.group(1)) == list(LANGUAGES)
    assert set(UNKNOWN_SITE) == set(LANGUAGES)
    options = re.findall(r'<option value="(\w+)"', (WEB / "operator.html").read_text(encoding="utf-8"))
    assert set(LANGUAGES) <= set(options), "the operator console must offer every language"


# ------------------------------------------------------------------------------------ negotiation


@pytest.mark.parametrize(
    ("header", "want"),
    [
        ("de-CH,de;q=0.9,en;q=0.5", "de"),
        ("fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7", "fr"),
        ("en-GB,en;q=0.9,de;q=0.8", "en"),
        ("xx", "en"),
        ("xx-YY,zz;q=0.9", "en"),
        ("", "en"),
        (None, "en"),
        ("de;q=0.2, fr;q=0.8", "fr"),  # q-values, not the order, decide
        ("de;q=0.5, fr;q=0.5", "de"),  # a tie keeps the header's order
        ("it, de;q=0.1", "de"),  # an unknown language is skipped, not an end
        ("*", "en"),
        ("en;q=0, *", "de"),  # q=0 rules English out; "*" then takes the next we have
        ("DE-at", "de"),  # tags are case-insensitive
        ("de;q=abc, fr;q=0.3", "fr"),  # a malformed q skips that range only
        ("de;q=2, fr;q=0.3", "fr"),  # q above 1 is malformed
        (" fr ; q = 0.7 , de ; q = 0.6", "fr"),
        ("x" * 5000 + ",de", "en"),  # an oversized header is cut, not parsed whole
        ("<script>,de", "de"),
    ],
)
def test_accept_language_negotiation(header, want):
    assert negotiate(header) == want


def test_negotiation_offers_only_the_available_languages():
    assert negotiate("fr,de;q=0.5", available=("en", "de")) == "de"
    assert negotiate("fr", available=("en", "de"), default="de") == "de"


# ------------------------------------------------------------------------------------ French names


def test_french_pseudonyms_agree_with_the_animals_gender():
    purple = next(i for i, c in enumerate(COLOURS) if c.en == "Purple")
    fox = next(i for i, a in enumerate(ANIMALS) if a.en == "Fox")
    turtle = next(i for i, a in enumerate(ANIMALS) if a.en == "Turtle")
    otter = next(i for i, a in enumerate(ANIMALS) if a.en == "Otter")
    assert render(purple, fox, "fr") == "Renard violet"
    assert render(purple, turtle, "fr") == "Tortue violette"
    assert render(purple, otter, "fr") == "Loutre violette"  # feminine in French, masculine in German
    assert render(purple, otter, "de") == "Violetter Otter"
    assert render(purple, fox, "en") == "Purple Fox"
    for a in ANIMALS:
        assert a.fr_gender in ("m", "f"), a
    for lang in LANGUAGES:
        for c in range(len(COLOURS)):
            names = [render(c, a, lang) for a in range(len(ANIMALS))]
            assert len(set(names)) == len(ANIMALS), (lang, c)  # unique per colour, as on screen


# ------------------------------------------------------------------------------------ HTTP


def test_api_me_says_which_language_the_page_speaks_and_catalogues_are_served():
    async def main():
        async with running() as (feed, service, http):
            r = await http.get("/api/me", headers={"Accept-Language": "de-CH,de;q=0.9,en;q=0.5"})
            assert r.status_code == 404 and r.json()["lang"] == "de"
            assert "accept-language" in r.headers["vary"].lower()
            await push(feed, phone())
            await until(lambda: len(service.hub.view.get("devices", {})) == 1)
            r = await http.get("/api/me", headers={"Accept-Language": "fr"})
            assert r.status_code == 200 and r.json()["lang"] == "fr"
            assert (await http.get("/api/me", headers={"Accept-Language": "xx"})).json()["lang"] == "en"
            assert (await http.get("/api/me")).json()["lang"] == "en"
            async with http.stream("GET", "/api/me/events", headers={"Accept-Language": "de"}) as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("data:"):
                        assert json.loads(line[5:])["lang"] == "de"
                        break
            for lang in LANGUAGES:
                r = await http.get(f"/static/i18n/{lang}.json")
                assert r.status_code == 200 and r.json() == catalogue(lang)
                assert "connect-src 'self'" in r.headers["content-security-policy"]
            for bad in ("xx.json", "%2e%2e/index.html", "%2e%2e%2fjs/me.js"):
                bad = "/static/i18n/" + bad
                assert (await http.get(bad)).status_code == 404, bad

    asyncio.run(main())


# ------------------------------------------------------------------------------------ in Chromium


@contextlib.asynccontextmanager
async def chromium_pages():
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await chromium.launch(p)
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser, **context):
    ctx = await browser.new_context(viewport={"width": 1920, "height": 1080}, **context)
    page = await ctx.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    return page


async def operator(http):
    """Log in to the operator API the way the console does; returns a function that POSTs actions."""
    r = await http.post("/api/operator/login", json={"password": PASSWORD})
    assert r.status_code == 200, r.text
    csrf = r.json()["csrf"]

    async def act(path, body):
        resp = await http.post(f"/api/operator/{path}", json=body, headers={"X-CSRF-Token": csrf})
        assert resp.status_code == 200, resp.text

    return act


async def text(page, selector):
    return await page.evaluate(f"document.querySelector({json.dumps(selector)}).textContent")


async def kiosk_speaks(page, lang, table, timeout=10000):
    await wait_js(page, f"document.documentElement.lang === {json.dumps(lang)}", timeout)
    await wait_js(
        page,
        f"[...document.querySelectorAll('#sankey-svg text.head')].some(e => e.textContent === "
        f"{json.dumps(table['sankey.column.companies'])})",
        timeout,
    )


@pytest.mark.browser
@needs_browser
def test_kiosk_follows_the_operators_language_live():
    async def main():
        async with running() as (feed, service, http), chromium_pages() as browser:
            service.builder.options = ViewOptions(gateway_lat=48.14, gateway_lon=11.58)  # no label
            await push(feed, phone())
            await until(lambda: len(service.hub.view.get("devices", {})) == 1)
            mine = service.builder.device_id(MAC)
            page = await new_page(browser)
            await page.goto(str(http.base_url) + "/")
            await kiosk_speaks(page, "en", catalogue("en"))
            act = await operator(http)
            for lang in ("de", "fr", "en"):
                table = catalogue(lang)
                await act("language", {"lang": lang})
                await kiosk_speaks(page, lang, table)
                assert await text(page, "h1") == table["kiosk.title"]
                assert (
                    await text(page, ".legend li span[data-i18n='kiosk.legend.device']")
                    == table["kiosk.legend.device"]
                )
                assert await text(page, "#metric-text") in {
                    table["kiosk.width.bytes"],
                    table["kiosk.width.connectionsFallback"],
                }
                assert await text(page, "#status-text") == table["kiosk.status.live"]
                assert await page.evaluate("document.title") == table["kiosk.pageTitle"]
                # The map calls the exhibit in the kiosk's words (no gateway_label configured).
                home = json.dumps(table["map.home"])
                await wait_js(
                    page, f"document.querySelector('#map-svg text.home-label')?.textContent === {home}"
                )
                # The pseudonym on screen is the server's, in the same language.
                label = service.hub.view["devices"][mine]["label"]
                colour, animal = service.builder.privacy.pseudonyms.pick(MAC, mine)
                assert label == render(colour, animal, lang)
                await wait_js(
                    page,
                    "[...document.querySelectorAll('#sankey-svg text.label.device .name')]"
                    f".some(e => e.textContent === {json.dumps(label)})",
                )
            assert page.errors == []

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_phone_page_speaks_the_phones_language_and_shows_the_kiosks_pseudonym():
    async def main():
        async with running() as (feed, service, http), chromium_pages() as browser:
            service.builder.privacy.set_language("de")  # the kiosk speaks German
            await push(feed, phone())
            await until(lambda: len(service.hub.view.get("devices", {})) == 1)
            label = service.hub.view["devices"][service.builder.device_id(MAC)]["label"]
            for header, lang in (("de-CH,de;q=0.9,en;q=0.5", "de"), ("fr-FR,fr;q=0.9", "fr"), ("xx", "en")):
                table = catalogue(lang)
                page = await new_page(browser, extra_http_headers={"Accept-Language": header})
                await page.goto(str(http.base_url) + "/me")
                await wait_js(page, "!document.getElementById('summary').hidden")
                await wait_js(page, f"document.documentElement.lang === {json.dumps(lang)}")
                assert await text(page, "h1") == table["me.title"]
                assert await text(page, "#forget-button") == table["me.forget.button"]
                assert await text(page, ".you-lead") == table["me.youLead"]
                live = json.dumps(table["me.live"])
                await wait_js(page, f"document.getElementById('live').textContent === {live}")
                # Whatever the page speaks, the name is the kiosk's (German) words.
                assert await text(page, "#device-label") == label
                assert page.errors == []
                await page.context.close()

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_paused_and_recording_banners_follow_the_screen_flags():
    async def main():
        async with running() as (feed, service, http), chromium_pages() as browser:
            privacy = service.builder.privacy
            recording = {"on": False}
            # The attract mode sets view.screen.recording; here the flag is set directly.
            screen = privacy.screen
            privacy.screen = lambda: {**screen(), "recording": recording["on"]}
            await push(feed, phone())
            await until(lambda: len(service.hub.view.get("devices", {})) == 1)
            page = await new_page(browser)
            await page.goto(str(http.base_url) + "/")
            await kiosk_speaks(page, "en", catalogue("en"))

            async def banners():
                return await page.evaluate(
                    "['banner-paused', 'banner-recording'].map(id => "
                    "getComputedStyle(document.getElementById(id)).display !== 'none')"
                )

            assert await banners() == [False, False]
            act = await operator(http)
            await act("pause", {"paused": True})
            await wait_js(page, "!document.getElementById('banner-paused').hidden")
            assert await banners() == [True, False]
            assert await text(page, "#banner-paused") == catalogue("en")["kiosk.banner.paused"]
            await act("language", {"lang": "fr"})
            await wait_js(
                page,
                "document.getElementById('banner-paused').textContent === "
                + json.dumps(catalogue("fr")["kiosk.banner.paused"]),
            )
            await act("pause", {"paused": False})
            await wait_js(page, "document.getElementById('banner-paused').hidden")

            recording["on"] = True
            service.publish_now()
            await wait_js(page, "!document.getElementById('banner-recording').hidden")
            assert await banners() == [False, True]
            assert await text(page, "#banner-recording") == catalogue("fr")["kiosk.banner.recording"]
            box = await page.locator("#banner-recording").bounding_box()
            assert box and box["y"] >= 0 and box["y"] + box["height"] <= 1080 and box["height"] >= 40
            recording["on"] = False
            service.publish_now()
            await wait_js(page, "document.getElementById('banner-recording').hidden")
            assert await banners() == [False, False]
            assert page.errors == []

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_catalogue_text_is_never_markup():
    """A catalogue whose every entry is markup (a broken or tampered file) still shows as text."""
    hostile = '<img src="/x" id="pwned"><b>{n}</b>'

    async def main():
        async with running() as (feed, service, http), chromium_pages() as browser:
            await push(feed, phone())
            await until(lambda: len(service.hub.view.get("devices", {})) == 1)
            body = json.dumps({key: hostile for key in catalogue("fr")})
            for path in ("/me", "/"):
                page = await new_page(browser, extra_http_headers={"Accept-Language": "fr"})
                await page.route(
                    "**/static/i18n/fr.json",
                    lambda route: route.fulfill(status=200, content_type="application/json", body=body),
                )
                await page.goto(str(http.base_url) + path)
                if path == "/":
                    service.builder.privacy.set_language("fr")
                    service.publish_now()
                await wait_js(page, "document.documentElement.lang === 'fr'")
                await wait_js(page, f"document.querySelector('h1').textContent === {json.dumps(hostile)}")
                assert await page.evaluate("document.querySelectorAll('#pwned, h1 b, h1 img').length") == 0
                assert await page.evaluate("document.title") == hostile
                assert page.errors == []
                await page.context.close()

    asyncio.run(main())


# ------------------------------------------------------------------------------------ the console


def test_the_operator_page_is_served_in_the_operators_language():
    async def main():
        async with running() as (_feed, _service, http):
            for header, lang in (("de-AT,de;q=0.9", "de"), ("fr", "fr"), ("xx", "en"), (None, "en")):
                headers = {"Accept-Language": header} if header else {}
                r = await http.get("/operator", headers=headers)
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
                assert f'<html lang="{lang}">' in r.text, (header, r.text[:80])
                assert r.headers["vary"] == "Accept-Language"
                assert r.headers["cache-control"] == "no-store"
            r = await http.get("/operator", headers={"Accept-Language": '"><script>alert(1)</script>'})
            assert '<html lang="en">' in r.text and "alert(1)" not in r.text

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_operator_console_speaks_the_operators_language_not_the_kiosks():
    """A German operator's tablet gets a German console, while the kiosk it runs speaks French; no
    catalogue key is ever left on screen in place of its text."""

    async def main():
        async with running() as (feed, service, http), chromium_pages() as browser:
            service.builder.privacy.set_language("fr")
            await push(feed, phone())
            await until(lambda: len(service.hub.view.get("devices", {})) == 1)
            label = service.hub.view["devices"][service.builder.device_id(MAC)]["label"]
            de = catalogue("de")
            page = await new_page(browser, extra_http_headers={"Accept-Language": "de-DE,de;q=0.9"})
            await page.goto(str(http.base_url) + "/operator")
            await wait_js(page, f"document.title === {json.dumps(de['operator.pageTitle'])}")
            assert await text(page, "label[for=password]") == de["operator.password"]
            assert await text(page, "#login button") == de["operator.login"]

            await page.fill("#password", "not the password")
            await page.click("#login button")
            await wait_js(
                page,
                "document.getElementById('message').textContent === "
                + json.dumps(de["operator.wrongPassword"]),
            )

            await page.fill("#password", PASSWORD)
            await page.click("#login button")
            await page.wait_for_selector("#console", state="visible", timeout=10000)
            assert await page.evaluate("document.getElementById('lang').value") == "fr"  # the kiosk's
            assert await text(page, "#pause") == de["operator.pause"]
            assert await text(page, "#devices li span") == de["operator.device"].format(label=label, n=1)
            assert await text(page, "#devices li button") == de["operator.hide"]
            assert await text(page, "#summary-csv") == de["operator.summary.csv"]
            assert await text(page, "#layout option[value=rotate]") == de["operator.layout.rotate"]

            await page.click("#pause")
            await until(lambda: service.builder.privacy.paused)
            await wait_js(
                page, f"document.getElementById('pause').textContent === {json.dumps(de['operator.resume'])}"
            )
            assert await text(page, "#message") == de["operator.paused"]

            shown = await page.evaluate("document.body.innerText")
            keys = [key for key in catalogue("en") if key.startswith("operator.") and key in shown]
            assert keys == [], keys
            # The 401 before the login and the 403 of the wrong password are answers, not faults.
            assert [e for e in page.errors if "Failed to load resource" not in e] == []

    asyncio.run(main())


# ------------------------------------------------------------------------------------ long names


@pytest.mark.browser
@needs_browser
@pytest.mark.parametrize("layout", ["side", "sankey"])
def test_the_longest_pseudonym_is_shown_whole_and_on_screen(layout):
    """ "Silberner Schmetterling" (23 letters, the longest German name) stands whole on the kiosk,
    inside the chart and clear of its column: the visitor must find exactly the words of /me."""
    from apviz.live.pseudonyms import ANIMALS, COLOURS

    longest = max(
        ((c, a) for c in range(len(COLOURS)) for a in range(len(ANIMALS))),
        key=lambda ca: len(render(*ca, "de")),
    )
    name = render(*longest, "de")
    assert len(name) >= 23

    async def main():
        async with running() as (feed, service, http), chromium_pages() as browser:
            privacy = service.builder.privacy
            privacy.set_language("de")
            privacy.pseudonyms._animals[MAC] = longest  # this phone gets the longest name
            await push(feed, phone())
            await until(lambda: len(service.hub.view.get("devices", {})) == 1)
            assert service.hub.view["devices"][service.builder.device_id(MAC)]["label"] == name
            page = await new_page(browser)
            await page.goto(str(http.base_url) + f"/?layout={layout}")
            label = "#sankey-svg text.label.device"
            shown = f"[...document.querySelectorAll('{label} .name')].map(e => e.textContent)"
            await wait_js(page, f"{shown}.includes({json.dumps(name)})")
            await page.wait_for_timeout(1000)  # the labels' move ends
            box, node, svg = await page.evaluate(
                f"""() => {{
                    const r = (e) => {{ const b = e.getBoundingClientRect(); return [b.left, b.right]; }};
                    return [r(document.querySelector('{label}')),
                            r(document.querySelector('#sankey-svg rect.node.device')),
                            r(document.getElementById('sankey-svg'))];
                }}"""
            )
            assert box[0] >= svg[0], (box, svg)  # not cut off at the chart's left edge
            assert box[1] <= node[0], (box, node)  # and clear of the phone's bar
            assert page.errors == []

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_status_page_speaks_its_readers_language():
    async def main():
        async with running() as (feed, service, http), chromium_pages() as browser:
            await push(feed, phone())
            await until(lambda: len(service.hub.view.get("devices", {})) == 1)
            r = await http.get("/status", headers={"Accept-Language": "fr-CA,fr;q=0.9"})
            assert '<html lang="fr">' in r.text and r.headers["vary"] == "Accept-Language"
            de = catalogue("de")
            page = await new_page(browser, extra_http_headers={"Accept-Language": "de"})
            await page.goto(str(http.base_url) + "/status")
            await wait_js(page, "document.getElementById('health').dataset.state === 'ok'")
            await wait_js(
                page,
                f"document.getElementById('health').textContent === {json.dumps(de['status.health.ok'])}",
            )
            assert await page.evaluate("document.title") == de["status.pageTitle"]
            assert await text(page, "caption") == de["status.now"]
            rows = await page.evaluate(
                "[...document.querySelectorAll('#totals tr')]"
                ".map(r => [r.cells[0].textContent, r.cells[1].textContent])"
            )
            assert rows[0] == [de["status.row.devices"], "1"]
            assert [label for label, _ in rows][-1] == de["status.row.seq"]
            assert (await text(page, "#uptime")).startswith("läuft seit")
            shown = await page.evaluate("document.body.innerText")
            assert [key for key in catalogue("en") if key.startswith("status.") and key in shown] == []
            assert page.errors == []

    asyncio.run(main())
