"""The acceptance test of recordings: a replayed recording drives the kiosk to the same nodes as the
live run it recorded.

The live run is the real thing: the lab's phones (network namespaces with real DHCP leases) make
real connections that the kernel's conntrack reports and the real dnsmasq names, served in
exhibit mode (pseudonyms, known domains only). ``apviz record`` runs as its own process and reads
the service's /events like any kiosk browser. Real Chromium shows the live kiosk; then the
recording is replayed (``apviz replay``'s service, in this process, on another port) to a fresh
Chromium, whose sankey must reach the same nodes, with the view marked ``screen.recording``.

Screenshot: ``artifacts/kiosk-replay.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import uvicorn

from apviz.replay.recording import RecordingError, read_recording
from tests.browser.fakefeed import free_port
from tests.test_web import ARTIFACTS, needs_browser, wait_js
from tests.test_web_lab import PLAN, check_plan_against_world, connect, kiosk_page, until

if TYPE_CHECKING:
    from apviz.lab.lab import Lab
    from apviz.service import Service

pytestmark = [pytest.mark.lab, pytest.mark.browser, needs_browser]

APVIZ = str(Path(sys.executable).parent / "apviz")
SPEED = 4.0

# The sankey's nodes as the page drew them (not those fading out): id and the label's text.
DOM_NODES = """() => {
    const ids = [...document.querySelectorAll('#sankey-svg rect.node:not(.exiting)')]
        .map(e => d3.select(e).datum().id);
    const names = [...document.querySelectorAll('#sankey-svg text.label:not(.exiting) .name')]
        .map(e => e.textContent);
    return {ids: ids.sort(), names: names.sort()};
}"""


@contextlib.asynccontextmanager
async def served(service: Service) -> AsyncIterator[int]:
    """A service's app on a free loopback port, in this event loop."""
    from apviz.server.app import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started or task.done(), 15, "the server to start")
        if task.done():
            task.result()
        await asyncio.wait_for(service.pipeline.ready.wait(), 15)
        yield port
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


def exhibit_service(lab: Lab) -> Service:
    from apviz.app import build_service
    from apviz.lab.serve import lab_config

    # The port is a placeholder: `served` binds a free one.
    return build_service(lab_config(lab, 8080, exhibit={"mode": "exhibit"}))


def device_nodes(service: Service) -> list[dict[str, Any]]:
    return [n for n in service.hub.view.get("nodes", {}).values() if n["kind"] == "device"]


def recorded_nodes(path: Path) -> set[str] | None:
    """Node ids of the recording's last view so far (None while it holds no view yet)."""
    try:
        rec = read_recording(path)
    except RecordingError:
        return None
    last: dict[str, Any] = {}
    for _, view in rec.views():
        last = view
    return set(last.get("nodes", {}))


async def dom_nodes(page: Any) -> dict[str, list[str]]:
    return await page.evaluate(DOM_NODES)


async def settled_on(page: Any, ids: set[str], timeout: float) -> dict[str, list[str]]:
    """Wait until the page's sankey shows exactly ``ids`` (and no node is still fading in or out)."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = await dom_nodes(page)
        if set(nodes["ids"]) == ids and len(nodes["ids"]) == len(nodes["names"]):
            return nodes
        if time.monotonic() > deadline:
            raise AssertionError(f"the kiosk shows {nodes}, not the nodes {sorted(ids)}")
        await asyncio.sleep(0.1)


def test_replayed_recording_drives_the_kiosk_to_the_same_nodes_as_the_live_run(lab_factory, tmp_path):
    from playwright.async_api import async_playwright

    from apviz.replay.serve import replay_service

    lab = lab_factory(phones=3)
    check_plan_against_world(lab)
    out = tmp_path / "lab-session.jsonl.gz"

    async def main() -> None:
        service = exhibit_service(lab)
        async with served(service) as port, async_playwright() as p:
            recorder = subprocess.Popen(
                [APVIZ, "record", str(out), "--url", f"http://127.0.0.1:{port}", "--minutes", "5"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                await until(
                    lambda: recorded_nodes(out) is not None or recorder.poll() is not None, 20, "recording"
                )
                assert recorder.poll() is None, recorder.communicate()

                # The live run: phone after phone (so the recording holds the screen growing, not
                # one jump), until the view credits every company.
                for n, (phone, rows) in enumerate(PLAN.items(), 1):
                    await asyncio.gather(*(connect(lab, phone, name) for name, _, _ in rows))
                    await until(lambda n=n: len(device_nodes(service)) == n, 15, f"{n} phones in the sankey")
                    await asyncio.sleep(0.5)  # pacing only: a visible step in the recording
                companies = {org for rows in PLAN.values() for _, org, _ in rows}

                def complete() -> bool:
                    labels = {n["label"] for n in service.hub.view.get("nodes", {}).values()}
                    return len(device_nodes(service)) == len(PLAN) and companies <= labels

                await until(complete, 15, f"the live view to hold {len(PLAN)} phones and {sorted(companies)}")
                # Exhibit mode: pseudonyms, never the phones' hostnames.
                labels = {d["label"] for d in service.hub.view["devices"].values()}
                assert not labels & set(PLAN), labels

                async with kiosk_page(p, port) as page:
                    live = await settled_on(page, set(service.hub.view["nodes"]), 20)
                    assert not (await page.evaluate("window.apviz.view().screen.recording"))
                live_ids = set(live["ids"])
                await until(lambda: recorded_nodes(out) == live_ids, 20, "the recording to reach the end")
            finally:
                if recorder.poll() is None:
                    os.kill(recorder.pid, signal.SIGINT)
                stdout, stderr = await asyncio.to_thread(recorder.communicate, timeout=20)
            assert recorder.returncode == 0, stderr
            assert "recorded" in stdout and str(out) in stdout, stdout

        rec = read_recording(out)
        assert rec.header["mode"] == "exhibit" and rec.skipped == 0
        text = str(rec.snapshot) + str(rec.frames)
        for host in PLAN:  # no phone's DHCP hostname reached the disk
            assert host not in text

        # The replay: a fresh browser on `apviz replay`'s service, at SPEED times the live pace.
        async with served(replay_service(rec, speed=SPEED)) as port, async_playwright() as p:
            async with kiosk_page(p, port) as page:
                replayed = await settled_on(page, live_ids, 30 + rec.duration / SPEED)
                assert replayed == live, (replayed, live)
                view = await page.evaluate("window.apviz.view()")
                assert view["screen"]["recording"] is True and view["screen"]["mode"] == "exhibit"
                # The kiosk's own "Recording — not live" label, where the page has one.
                await wait_js(
                    page, "(b => b === null || !b.hidden)(document.getElementById('banner-recording'))"
                )
                await page.wait_for_timeout(1000)  # let the tweens settle for the picture
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "kiosk-replay.png"))
                assert page.errors == []
        print(
            f"\nlive kiosk: {len(live['ids'])} nodes; replayed kiosk: {len(replayed['ids'])} nodes "
            f"({len(rec.frames) + 1} views over {rec.duration:.1f} s, {out.stat().st_size} bytes gzip)"
        )

    asyncio.run(main())
