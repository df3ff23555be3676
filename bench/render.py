"""How long the kiosk takes to apply one update and redraw, with 60 phones and 200 destinations.

The real service and app run on loopback, fed by the fake world (tests/browser/fakefeed.py);
headless Chromium opens the kiosk with ``?debug=1`` and the page itself times, with
performance.now(), the parse + apply of each delta plus the synchronous render of the sankey,
the map and the counters it triggers. Updates are published about ten times a second, each one
growing the byte counts of a tenth of the flows and now and then adding a connection, so most
sections change every time. Prints one JSON line; ``pass`` is p95 <= 50 ms.

``frame_*`` is the wider figure: from the message's arrival to the next animation frame after
the render (what a visitor waits for; includes waiting for the frame).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.browser import chromium
from tests.browser.fakefeed import FakeWorld, running

TARGET_MS = 50.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def measure(devices: int, destinations: int, per_device: int, updates: int, every: float) -> dict:
    from playwright.async_api import async_playwright

    world = FakeWorld(destinations=destinations, seed=11)
    async with running(world) as run, async_playwright() as p:
        run.feed.push(world.populate(devices, per_device))
        await run.settle(timeout=30)
        browser = await chromium.launch(p)
        page = await browser.new_page(viewport={"width": 1920, "height": 1080})
        await page.goto(run.url + "/?debug=1")
        for _ in range(200):
            if await page.evaluate("document.getElementById('status').dataset.state === 'live'"):
                break
            await asyncio.sleep(0.05)
        await page.wait_for_timeout(1500)
        await page.evaluate("window.apviz.clearTimings()")
        sizes = []
        for i in range(updates):
            events = world.grow(0.1)
            if i % 5 == 0:
                phone = world.rng.choice(world.phones)
                events += world.connect(phone, world.rng.choice(world.places))
            run.feed.push(events)
            await run.settle(timeout=30)
            sizes.append(len(events))
            await asyncio.sleep(every)
        await page.wait_for_timeout(500)
        work = await page.evaluate("window.apviz.timings()")
        frames = await page.evaluate("window.apviz.frames()")
        view = run.service.hub.view
        shape = {k: len(view[k]) for k in ("nodes", "links", "points", "arcs", "countries")}
        await browser.close()
    p95 = percentile(work, 95)
    return {
        "bench": "render",
        "devices": devices,
        "destinations": destinations,
        "flows": sum(len(ph.flows) for ph in world.phones),
        "updates": len(work),
        "view": shape,
        "p50_ms": round(percentile(work, 50), 2),
        "p95_ms": round(p95, 2),
        "max_ms": round(max(work), 2) if work else None,
        "mean_ms": round(statistics.fmean(work), 2) if work else None,
        "frame_p50_ms": round(percentile(frames, 50), 2),
        "frame_p95_ms": round(percentile(frames, 95), 2),
        "target_ms": TARGET_MS,
        "pass": bool(work) and p95 <= TARGET_MS,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=60)
    parser.add_argument("--destinations", type=int, default=200)
    parser.add_argument("--per-device", type=int, default=40, help="connections each phone opens")
    parser.add_argument("--updates", type=int, default=150)
    parser.add_argument("--every", type=float, default=0.1, help="seconds between published updates")
    args = parser.parse_args()
    why = chromium.available()
    if why is not None:
        print(json.dumps({"bench": "render", "error": why, "pass": False}))
        return 1
    result = asyncio.run(measure(args.devices, args.destinations, args.per_device, args.updates, args.every))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
