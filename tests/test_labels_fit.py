"""No label leaves its panel: in real Chromium, at 1280x720, 1920x1080 and 2560x1440, in English,
German and French, with both views side by side and each alone, every sankey and map label's bounding
box lies inside its panel, map labels do not cover each other or the exhibit's own mark (whose label
is shown), and the phones on screen have distinct colours."""

from __future__ import annotations

import asyncio

import pytest

from apviz.live.privacy import Mode
from tests.browser.fakefeed import FakeWorld, running
from tests.test_cards import SIZES, set_language
from tests.test_web import ARTIFACTS, browser_page, needs_browser, open_kiosk, wait_devices, wait_js

LANGS = ("en", "de", "fr")

# Every visible label against its panel's box; map labels against each other and the exhibit's mark.
MEASURE = """() => {
  const inside = (r, p) =>
    r.left >= p.left - 1 && r.right <= p.right + 1 && r.top >= p.top - 1 && r.bottom <= p.bottom + 1;
  const meet = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  const box = (r) => [r.left, r.right, r.top, r.bottom].map(Math.round);
  const out = [];
  const shown = (el) => getComputedStyle(el.closest('.panel')).visibility !== 'hidden';
  const sankey = document.querySelector('.sankey-panel');
  const map = document.querySelector('.map-panel');
  let n = 0;
  if (shown(sankey)) {
    const p = sankey.getBoundingClientRect();
    const sel = '#sankey-svg text.label:not(.hidden):not(.exiting), #sankey-svg .sankey-heads text';
    for (const t of document.querySelectorAll(sel)) {
      n += 1;
      const r = t.getBoundingClientRect();
      if (!inside(r, p)) out.push(['sankey', t.textContent, box(r), box(p)]);
    }
  }
  if (shown(map)) {
    const p = map.getBoundingClientRect();
    const labels = [...document.querySelectorAll('#map-svg .map-labels text')];
    const halo = document.querySelector('#map-svg .gateway .halo');
    if (!document.querySelector('#map-svg text.home-label')) out.push(['the exhibit has no label']);
    const mark = halo ? halo.getBoundingClientRect() : null;
    labels.forEach((t, i) => {
      n += 1;
      const r = t.getBoundingClientRect();
      if (!inside(r, p)) out.push(['map', t.textContent, box(r), box(p)]);
      const home = t.classList.contains('home-label');
      if (mark && !home && meet(r, mark)) out.push(['over the mark', t.textContent]);
      for (const u of labels.slice(i + 1)) {
        if (meet(r, u.getBoundingClientRect())) out.push(['overlap', t.textContent, u.textContent]);
      }
    });
  }
  return {n, out};
}"""


def busy_world() -> tuple[FakeWorld, list]:
    """Every catalogue company and country, ten phones (long German pseudonyms among them)."""
    world = FakeWorld(destinations=46)
    events = world.populate(10, 12)
    return world, events


@pytest.mark.browser
@needs_browser
def test_no_label_leaves_its_panel_at_three_sizes_in_three_languages():
    async def main():
        world, events = busy_world()
        failures = []
        async with running(world, mode=Mode.EXHIBIT) as run, browser_page() as page:
            run.feed.push(events)
            await run.settle()
            for layout in ("side", "sankey", "map"):
                await open_kiosk(page, run.url, f"?debug=1&layout={layout}")
                await wait_js(page, "document.querySelectorAll('#sankey-svg rect.node.device').length > 0")
                for lang in LANGS:
                    await set_language(run, page, lang)
                    for width, height in SIZES:
                        await page.set_viewport_size({"width": width, "height": height})
                        await page.wait_for_timeout(1200)  # the resize redraw and its label tween
                        result = await page.evaluate(MEASURE)
                        assert result["n"] > 5, (layout, lang, width, result)
                        failures += [(layout, lang, width, *f) for f in result["out"]]
                        if (layout, width) == ("side", 1920):
                            ARTIFACTS.mkdir(exist_ok=True)
                            await page.screenshot(path=str(ARTIFACTS / f"labels-{lang}.png"))
            assert failures == [], "\n".join(map(str, failures))
            assert page.errors == []

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_phones_on_screen_have_distinct_colours():
    async def main():
        world = FakeWorld(destinations=20)
        events = world.populate(6, 4)
        async with running(world, mode=Mode.EXHIBIT) as run, browser_page() as page:
            run.feed.push(events)
            await run.settle()
            await open_kiosk(page, run.url)
            await wait_devices(page, 6)
            classes = await page.eval_on_selector_all(
                "#sankey-svg rect.node.device",
                "els => els.map(e => [...e.classList].find(c => c.startsWith('dev-c')))",
            )
            assert len(classes) == 6 and len(set(classes)) == 6, classes
            view = run.service.hub.view
            words = {d["label"].split()[0] for d in view["devices"].values()}
            assert len(words) == 6, words  # and so six different colour words
            assert page.errors == []

    asyncio.run(main())
