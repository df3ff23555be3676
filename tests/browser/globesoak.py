"""A long run of the kiosk's globe view under steady updates, measuring what must stay bounded.

The real service and app on loopback, fed by the fake world; headless Chromium draws the globe
through SwiftShader (WebGL on the CPU). Ten times a second the byte counts grow, now and then a
phone opens a connection, and every few seconds a phone leaves and another joins, so arcs come and
go (there are more destinations than the globe's arc cap). Every ``sample_every`` seconds, after a
forced garbage collection: DOM elements, the JS heap, event listeners, and the globe's own figures
(three.js geometries and textures alive, objects in the scene, arcs drawn).

``bounded`` compares the last sample with one taken once the page has warmed up: a leak of one
object per update would be thousands after ten minutes, far past the slack allowed here.
Used by tests/test_globe.py (under a minute) and ``bench/render.py --soak`` (ten minutes).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.browser import chromium
from tests.browser.fakefeed import FakeWorld, running

#: Slack allowed between the warm sample and the last one.
HEAP_SLACK = 1.3  # times the warm heap, plus HEAP_FLOOR
HEAP_FLOOR = 4 * 2**20
DOM_SLACK = 40  # elements (the flat views keep drawing in the background; items enter and leave)
GEOMETRY_SLACK = 40  # three.js geometries: arcs in flight, rings


async def _wait(page: Any, expression: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true within {timeout} s: {expression}")
        await asyncio.sleep(0.05)


async def soak(
    seconds: float,
    *,
    devices: int = 24,
    per_device: int = 12,
    destinations: int = 200,
    every: float = 0.1,
    sample_every: float = 5.0,
    churn_every: int = 30,
    warm_after: float | None = None,
) -> dict[str, Any]:
    """Run the globe for ``seconds`` under updates; return the samples and whether they stayed bounded."""
    from playwright.async_api import async_playwright

    world = FakeWorld(destinations=destinations, seed=14)
    warm_after = warm_after if warm_after is not None else min(20.0, seconds / 4)
    async with running(world) as run, async_playwright() as p:
        run.feed.push(world.populate(devices, per_device))
        await run.settle(timeout=30)
        browser = await chromium.launch(p)
        try:
            page = await browser.new_page(viewport={"width": 1920, "height": 1080})
            errors: list[str] = []
            requests: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("request", lambda r: requests.append(r.url))
            await page.goto(run.url + "/?debug=1&layout=globe")
            await _wait(page, "document.getElementById('status').dataset.state === 'live'")
            await _wait(page, "window.apviz.globe && window.apviz.globe.stats().arcs > 0")
            cdp = await page.context.new_cdp_session(page)
            await cdp.send("Performance.enable")

            async def sample(at: float) -> dict[str, Any]:
                await cdp.send("HeapProfiler.collectGarbage")
                got = await cdp.send("Performance.getMetrics")
                metrics = {m["name"]: m["value"] for m in got["metrics"]}
                globe = await page.evaluate("window.apviz.globe.stats()")
                return {
                    "t": round(at, 1),
                    "elements": await page.evaluate("document.getElementsByTagName('*').length"),
                    "heap_mb": round(metrics["JSHeapUsedSize"] / 2**20, 2),
                    "listeners": int(metrics["JSEventListeners"]),
                    "geometries": globe["geometries"],
                    "textures": globe["textures"],
                    "scene_objects": globe["sceneObjects"],
                    "arcs": globe["arcs"],
                }

            await page.evaluate("window.apviz.clearTimings()")
            samples = [await sample(0.0)]
            warm: dict[str, Any] | None = None
            churned = 0
            updates = 0
            start = time.monotonic()
            next_sample = sample_every
            i = 0
            while (elapsed := time.monotonic() - start) < seconds:
                events = world.grow(0.2)
                if i % 5 == 0 and world.phones:
                    events += world.connect(world.rng.choice(world.phones), world.rng.choice(world.places))
                if i % churn_every == churn_every - 1:
                    gone = world.phones.pop(0)
                    run.service.state.forget_device(gone.mac)
                    churned += 1
                    phone, _ = world.add_phone()
                    # A fresh MAC and address each time (add_phone numbers by how many are present).
                    phone.mac = f"02:b7:00:00:{(churned >> 8) & 0xFF:02x}:{churned & 0xFF:02x}"
                    phone.ip = f"10.99.{200 + (churned // 240) % 50}.{10 + churned % 240}"
                    events.append(world.leases())
                    for _ in range(per_device):
                        events += world.connect(phone, world.rng.choice(world.places))
                run.feed.push(events)
                await run.settle(timeout=30)
                updates += 1
                i += 1
                await asyncio.sleep(every)
                if warm is None and elapsed >= warm_after:
                    await page.wait_for_timeout(1500)
                    warm = await sample(elapsed)
                    samples.append(warm)
                    next_sample = elapsed + sample_every
                elif elapsed >= next_sample:
                    samples.append(await sample(elapsed))
                    next_sample += sample_every
            await page.wait_for_timeout(1500)  # exit fades and fresh arcs settle
            final = await sample(time.monotonic() - start)
            samples.append(final)
            timings = await page.evaluate("window.apviz.globeTimings()")
            view = run.service.hub.view
            stats = await page.evaluate("window.apviz.globe.stats()")
            cap = await page.evaluate("import('/static/js/globe.js').then((m) => m.MAX_ARCS)")
            arcs_expected = min(cap, len(view["arcs"]))
        finally:
            await browser.close()
    warm = warm or samples[0]
    checks = {
        "elements": final["elements"] <= warm["elements"] * 1.1 + DOM_SLACK,
        "heap": final["heap_mb"] * 2**20 <= warm["heap_mb"] * 2**20 * HEAP_SLACK + HEAP_FLOOR,
        "listeners": final["listeners"] <= warm["listeners"] + 5,
        "geometries": final["geometries"] <= warm["geometries"] * 1.1 + GEOMETRY_SLACK,
        "textures": final["textures"] <= warm["textures"] + 2,
        "scene_objects": final["scene_objects"] <= warm["scene_objects"] * 1.1 + GEOMETRY_SLACK,
        "arcs_match_view": stats["arcs"] == arcs_expected,
    }
    foreign = [u for u in requests if not (u.startswith(run.url + "/") or u.startswith("data:"))]
    return {
        "seconds": round(seconds),
        "updates": updates,
        "phones_churned": churned,
        "globe_updates_timed": len(timings),
        "warm": warm,
        "final": final,
        "max_heap_mb": max(s["heap_mb"] for s in samples),
        "max_elements": max(s["elements"] for s in samples),
        "samples": samples,
        "checks": checks,
        "errors": errors[:10],
        "foreign_requests": foreign[:10],
        "bounded": all(checks.values()) and not errors and not foreign,
    }
