"""How long the kiosk takes to apply one update and redraw, with 60 phones and 200 destinations.

The real service and app run on loopback, fed by the fake world (tests/browser/fakefeed.py);
headless Chromium opens the kiosk with ``?debug=1`` and the page itself times, with
performance.now(), the parse + apply of each delta plus the synchronous render of the sankey,
the map and the counters it triggers. Updates are published about ten times a second, each one
growing the byte counts of a tenth of the flows and now and then adding a connection, so most
sections change every time. Prints one JSON line; ``pass`` is p95 <= 50 ms.

``frame_*`` is the wider figure: from the message's arrival to the next animation frame after
the render (what a visitor waits for; includes waiting for the frame).

The 3D globe is timed the same way in a second pass with ``?layout=globe``, fed the same updates
by a world built from the same seed: ``globe_p95_ms`` is the parse + apply plus the globe's own
update (arcs, country shades, rings; the WebGL drawing itself happens in globe.gl's animation
loop, not in the update), beside the flat views' ``p95_ms``; ``globe_pass`` is its p95 <= 50 ms.
``globe_frame_*`` is that pass's wait until the next frame, which with SwiftShader (WebGL drawn
on the CPU) includes drawing the whole globe, so it says more about this machine than a kiosk.
``--no-globe`` skips that pass.

``--soak SECONDS`` runs tests/browser/globesoak.py instead (the globe under steady updates and
phone churn, sampling DOM elements, JS heap and three.js geometries); its JSON line has
``bounded``, the warm and final samples and their maxima. ``--soak 600`` is the ten-minute run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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


async def measure(
    devices: int, destinations: int, per_device: int, updates: int, every: float, layout: str = "side"
) -> dict:
    """One pass: the kiosk in ``layout`` fed ``updates`` updates; the page's own timings."""
    from playwright.async_api import async_playwright

    world = FakeWorld(destinations=destinations, seed=11)
    async with running(world) as run, async_playwright() as p:
        run.feed.push(world.populate(devices, per_device))
        await run.settle(timeout=30)
        browser = await chromium.launch(p)
        page = await browser.new_page(viewport={"width": 1920, "height": 1080})
        await page.goto(run.url + f"/?debug=1&layout={layout}")
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
        timed = "window.apviz.globeTimings()" if layout == "globe" else "window.apviz.timings()"
        work = await page.evaluate(timed)
        frames = await page.evaluate("window.apviz.frames()")
        globe = await page.evaluate("window.apviz.globe && window.apviz.globe.stats()")
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
        "globe_arcs": globe["arcs"] if globe else None,
    }


async def both(args: argparse.Namespace) -> dict:
    """The flat views' pass, then (unless --no-globe) the globe's, at the same load."""
    load = (args.devices, args.destinations, args.per_device, args.updates, args.every)
    result = await measure(*load)
    result.pop("globe_arcs")
    if args.no_globe:
        return result
    globe = await measure(*load, layout="globe")
    result.update(
        {
            "globe_updates": globe["updates"],
            "globe_arcs": globe["globe_arcs"],
            "globe_p50_ms": globe["p50_ms"],
            "globe_p95_ms": globe["p95_ms"],
            "globe_max_ms": globe["max_ms"],
            "globe_frame_p50_ms": globe["frame_p50_ms"],
            "globe_frame_p95_ms": globe["frame_p95_ms"],
            "globe_pass": globe["pass"],
        }
    )
    result["pass"] = result["pass"] and globe["pass"]
    return result


async def soak_run(seconds: float, every: float) -> dict:
    from tests.browser.globesoak import soak

    result = await soak(seconds, every=every, sample_every=max(5.0, seconds / 60))
    samples = result.pop("samples")
    return {
        "bench": "render-globe-soak",
        **result,
        "heap_mb_over_time": [s["heap_mb"] for s in samples],
        "elements_over_time": [s["elements"] for s in samples],
        "geometries_over_time": [s["geometries"] for s in samples],
        "pass": result["bounded"],
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
    parser.add_argument("--no-globe", action="store_true", help="time the flat views only")
    parser.add_argument(
        "--soak", type=float, metavar="SECONDS", help="run the globe this long, DOM and memory bounded"
    )
    args = parser.parse_args()
    why = chromium.available()
    if why is not None:
        print(json.dumps({"bench": "render", "error": why, "pass": False}))
        return 1
    run = soak_run(args.soak, args.every) if args.soak else both(args)
    result = asyncio.run(run)
    # Timings on a shared machine mean little without how busy it was.
    result["loadavg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
