"""Company cards: every company of the overlay has one in every language, within the caption's
limits, with its sources listed; the API sends them; and in real Chromium the kiosk's caption fits its
box at three screen sizes in both layouts and every language, follows what is on screen, shows no
card for a company without one, and ``/me`` opens a card in the visitor's language when tapped."""

from __future__ import annotations

import asyncio
import re
import tomllib
from pathlib import Path

import httpx
import pytest

from apviz.enrich.cards import LANGUAGES, LIMITS, MAX_TOTAL, Cards, problems_of
from apviz.enrich.companies import CompanyMap
from apviz.live.privacy import Mode
from tests.browser.fakefeed import COMPANY_IDS, LOOPBACK_PHONE, FakeWorld, running
from tests.test_web import ARTIFACTS, browser_page, needs_browser, open_kiosk, wait_devices, wait_js

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "data" / "cards"
SIZES = [(1280, 720), (1920, 1080), (2560, 1440)]


def shipped() -> Cards:
    return Cards(strict=True)  # the shipped files must load without one problem


# ------------------------------------------------------------------------------------ the data


def test_every_overlay_company_has_a_card_in_every_language():
    cards = shipped()
    overlay = set(CompanyMap(strict=True).companies)
    assert len(overlay) >= 100
    for lang in LANGUAGES:
        missing = overlay - cards.keys(lang)
        assert not missing, (lang, sorted(missing))
        # Cards are keyed by the overlay's ids: a card for an unknown id could never be shown.
        assert cards.keys(lang) <= overlay, (lang, sorted(cards.keys(lang) - overlay))
    assert cards.keys("en") == cards.keys("de") == cards.keys("fr")


def test_every_card_fits_the_caption_limits_and_is_text():
    cards = shipped()
    for lang in LANGUAGES:
        for key, card in cards.language(lang).items():
            for field, limit in LIMITS.items():
                assert 0 < len(card[field]) <= limit, (lang, key, field, len(card[field]))
            assert sum(len(card[f]) for f in LIMITS) <= MAX_TOTAL, (lang, key)
            for text in card.values():
                assert "<" not in text and ">" not in text, (lang, key)  # words, not markup
                assert text == text.strip() and "\n" not in text, (lang, key)


def test_the_languages_are_translations_not_copies():
    cards = shipped()
    en, de, fr = (cards.language(lang) for lang in LANGUAGES)
    same = [k for k in en if en[k]["does"] == de[k]["does"] or en[k]["does"] == fr[k]["does"]]
    assert not same, same


def test_every_card_names_its_sources():
    text = (CARDS / "SOURCES.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([a-z0-9]+)` \|", text, flags=re.M))
    assert listed == shipped().keys("en"), sorted(listed ^ shipped().keys("en"))
    for line in text.splitlines():
        if line.startswith("| `"):
            assert "wikipedia.org" in line, line  # at least one public reference per company


def test_a_bad_card_is_skipped_or_refused(tmp_path):
    (tmp_path / "en.toml").write_text(
        '[good]\ndoes = "a"\ndata = "b"\nbased = "c"\nowner = "d"\n'
        f'[long]\ndoes = "{"x" * (LIMITS["does"] + 1)}"\ndata = "b"\nbased = "c"\nowner = "d"\n'
        '[short]\ndoes = "a"\n'
        '[odd]\ndoes = "a"\ndata = "b"\nbased = "c"\nowner = "d"\nextra = "e"\n',
        encoding="utf-8",
    )
    (tmp_path / "de.toml").write_text("not [ toml", encoding="utf-8")
    cards = Cards(tmp_path)  # fr.toml missing: no cards in French, no crash
    assert cards.keys("en") == {"good"}
    assert cards.get("good", "de") is None and cards.get(None, "en") is None
    assert cards.get("good", "xx") is None
    assert len(cards.errors) >= 5
    with pytest.raises(Exception, match="long"):
        Cards(tmp_path, strict=True)
    assert problems_of("k", "not a table") == ["card 'k' is not a table"]


def test_the_cards_are_sent_per_language():
    async def main():
        async with running(FakeWorld(destinations=3)) as run, httpx.AsyncClient(base_url=run.url) as http:
            r = await http.get("/api/cards/de")
            assert r.status_code == 200
            body = r.json()
            assert body["lang"] == "de"
            assert body["cards"]["criteo"]["based"] == "Paris, Frankreich"
            assert set(body["cards"]) == shipped().keys("de")
            assert "content-security-policy" in r.headers
            assert (await http.get("/api/cards/xx")).status_code == 404
            assert (await http.get("/api/cards/..%2Fen")).status_code == 404

    asyncio.run(main())


def test_the_view_carries_the_company_id():
    async def main():
        world = FakeWorld(destinations=20)
        events = world.populate(3, 8)
        async with running(world) as run:
            run.feed.push(events)
            await run.settle()
            nodes = run.service.hub.view["nodes"].values()
            orgs = [n for n in nodes if n["kind"] == "org" and not n.get("other")]
            assert orgs
            for node in orgs:
                assert node["company"] == COMPANY_IDS.get(node["label"]), node

    asyncio.run(main())


# ------------------------------------------------------------------------------------ in Chromium

# Put every card of the page's language into the caption in turn and report the ones that do not
# fit its box (text taller or wider than the box, or the box outside the window).
MEASURE = """() => {
  const c = window.apviz.caption;
  const box = document.getElementById('caption');
  const lang = window.apviz.language();
  const ids = window.__cards;
  const bad = [];
  const saved = c.view;
  for (const id of ids) {
    c.view = {nodes: {'o:x': {id: 'o:x', kind: 'org', company: id, label: id, bytes: 1}}};
    c.show('o:x');
    if (box.hidden) { bad.push([id, 'hidden']); continue; }
    const r = box.getBoundingClientRect();
    if (box.scrollHeight > box.clientHeight + 1 || box.scrollWidth > box.clientWidth + 1) {
      bad.push([id, box.scrollHeight, box.clientHeight]);
    }
    if (r.bottom > innerHeight + 1 || r.right > innerWidth + 1 || r.top < 0 || r.left < 0) {
      bad.push([id, 'outside', r.top, r.bottom, innerHeight]);
    }
  }
  c.view = saved;
  c.current = null;
  c.next(false);
  return {lang, n: ids.length, bad};
}"""


async def set_language(run, page, lang):
    run.service.builder.privacy.set_language(lang)
    run.service.publish_now()
    await wait_js(page, f"window.apviz.language() === '{lang}'")


@pytest.mark.browser
@needs_browser
def test_every_card_fits_the_kiosk_caption_at_every_size_layout_and_language():
    async def main():
        world = FakeWorld(destinations=30)
        events = world.populate(4, 8)
        keys = sorted(shipped().keys("en"))
        async with running(world) as run, browser_page() as page:
            run.feed.push(events)
            await run.settle()
            for layout in ("side", "rotate"):
                await open_kiosk(page, run.url, f"?debug=1&layout={layout}")
                await page.evaluate(f"window.__cards = {keys!r}")
                for lang in LANGUAGES:
                    await set_language(run, page, lang)
                    await wait_js(page, "!document.getElementById('caption').hidden")
                    for width, height in SIZES:
                        await page.set_viewport_size({"width": width, "height": height})
                        await page.wait_for_timeout(150)
                        result = await page.evaluate(MEASURE)
                        assert result["lang"] == lang and result["n"] == len(keys)
                        assert result["bad"] == [], (layout, lang, width, result["bad"][:5])
                await set_language(run, page, "en")
            assert page.errors == []

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_the_caption_follows_the_screen_and_invents_nothing():
    """Only companies on screen with a card are captioned; a new one comes first; German follows."""

    async def main():
        world = FakeWorld(destinations=46)
        phone, events = world.add_phone()
        # Only companies without a card at first: Mercado Libre, Shopify, IBM, Mapbox.
        nocard = [p for p in world.places if p.dest.company is None and p.dest.org_source == "company"]
        assert {p.dest.org for p in nocard} >= {"Shopify", "Mapbox"}
        for place in nocard:
            events += world.connect(phone, place)
        async with running(world) as run, browser_page() as page:
            run.feed.push(events)
            await run.settle()
            await open_kiosk(page, run.url, "?debug=1&cardEvery=3")
            await wait_devices(page, 1)
            await page.wait_for_timeout(3500)  # a whole turn: still nothing to say
            assert await page.evaluate("document.getElementById('caption').hidden") is True
            criteo = next(p for p in world.places if p.dest.org == "Criteo")
            run.feed.push(world.connect(phone, criteo))
            await run.settle()
            shown = "document.getElementById('caption').dataset.company"
            await wait_js(page, f"{shown} === 'criteo'", timeout=3000)
            text = await page.inner_text("#caption")
            assert "Criteo" in text and "Paris, France" in text, text
            await set_language(run, page, "de")
            await wait_js(page, "document.getElementById('caption').innerText.includes('Paris, Frankreich')")
            # Turns go only through companies with cards on screen.
            seen = set()
            for _ in range(8):
                seen.add(await page.evaluate("document.getElementById('caption').dataset.company || ''"))
                await page.wait_for_timeout(400)
            assert seen == {"criteo"}, seen
            # The page's own six elements, the card's words in them as text.
            assert await page.evaluate("document.querySelectorAll('#caption *').length") == 6
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "kiosk-caption.png"))
            assert page.errors == []

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_a_tap_on_a_company_opens_its_card_in_the_visitors_language():
    async def main():
        world = FakeWorld(destinations=46)
        phone, events = world.add_phone(ip=LOOPBACK_PHONE)  # the browser is this phone
        criteo = next(p for p in world.places if p.dest.org == "Criteo")
        shopify = next(p for p in world.places if p.dest.org == "Shopify")
        events += world.connect(phone, criteo) + world.connect(phone, shopify)
        async with running(world, mode=Mode.EXHIBIT) as run, browser_page((390, 844)) as page:
            await page.set_extra_http_headers({"Accept-Language": "fr-FR,fr;q=0.9"})
            run.feed.push(events)
            await run.settle()
            await page.goto(f"{run.url}/me")
            await wait_js(page, "document.querySelectorAll('#companies .card-toggle').length === 1")
            rows = await page.inner_text("#companies")
            assert "Shopify" in rows
            button = page.locator("#companies .card-toggle")
            assert await button.get_attribute("data-company") == "criteo"
            assert await button.inner_text() == "C'est quoi, cette entreprise ?"
            await button.click()
            await wait_js(page, "document.querySelector('#companies .card') !== null")
            card = await page.inner_text("#companies .card")
            for words in ("Criteo", "Paris, France", "Cotée en bourse à New York.", "Propriétaire :"):
                assert words in card, card
            # Stays open through the next update of the page.
            run.feed.push(world.grow(1.0))
            await run.settle()
            await page.wait_for_timeout(600)
            assert await page.locator("#companies .card").count() == 1
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "me-card.png"), full_page=True)
            assert page.errors == []

    asyncio.run(main())


def test_sources_file_is_our_own_list():
    """SOURCES.md and the TOML files are plain data: parseable, and SOURCES covers the overlay."""
    for lang in LANGUAGES:
        with (CARDS / f"{lang}.toml").open("rb") as fh:
            assert tomllib.load(fh)
