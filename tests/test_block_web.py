"""Tracker blocking end to end: the lab, ``apviz serve``, the operator's switch, the phone's button in
a Chromium inside the phone's namespace, the kernel's reject and the kiosk in another Chromium.

Issue 14's acceptance: a phone blocks, its tracker connections fail within 100 ms and show as blocked
on the kiosk within 1 s while its other connections work; nothing outlives apviz (the table is gone
once the service stops); the button only appears while the operator allows it, and "on for
everyone" and off again work from the console.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx
import pytest

from apviz.block.table import element_counters, status
from tests.test_block_lab import CONNECT, SEARCH, TRACKER, TRACKER_IP
from tests.test_exhibit_lab import operator_session
from tests.test_exhibit_server import HASH
from tests.test_i18n import catalogue
from tests.test_web import needs_browser, wait_js
from tests.test_web_lab import kiosk_page, lab_service, phone_page, until

pytestmark = [pytest.mark.lab, pytest.mark.browser, needs_browser]

BLOCKED_TEXT = (
    "[...document.querySelectorAll('#sankey-svg .sankey-blocked text.blocked-count')].map(e => e.textContent)"
)
DASHED = "document.querySelectorAll('#sankey-svg .sankey-blocked path.blocked-link').length"


def test_a_phone_blocks_trackers_from_its_page_and_the_kiosk_shows_it(lab_factory, tmp_path):
    from playwright.async_api import async_playwright

    lab = lab_factory(phones=1)
    ph = lab.phones[0]
    en = catalogue("en")

    def connect(host: str, port: int = 80) -> dict[str, float | bool | str]:
        proc = lab.exec_in(ph.ns, [sys.executable, "-c", CONNECT, host, str(port)])
        return json.loads(proc.stdout)

    async def main() -> dict[str, float]:
        sections = {"exhibit": {"mode": "exhibit", "blocking": True}, "operator": {"password_hash": HASH}}
        async with lab_service(lab, **sections) as (service, port), async_playwright() as p:
            await until(lambda: service.blocker is not None and service.blocker.ready, 10, "the block table")
            # The phone talks to the tracker before blocking: the kiosk has the company to draw to.
            first = await asyncio.to_thread(lab.phone_connect, ph, TRACKER, 500, port=80, hold=60.0)
            assert first.received == 500
            await until(lambda: service.hub.view.get("links"), 10, "the tracker's link")
            async with (
                kiosk_page(p, port) as kiosk,
                phone_page(p, lab, ph, tmp_path) as me,
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}",
                    timeout=10,
                    headers={"Origin": f"http://127.0.0.1:{port}"},
                ) as http,
            ):
                await me.goto(f"http://{lab.gateway_ip}:{port}/me")
                await wait_js(me, "!document.getElementById('summary').hidden")
                assert await me.evaluate("document.getElementById('block').hidden"), "shown before allowed"

                csrf = await operator_session(http)
                resp = await http.post("/api/operator/blocking", json={"allow": True}, headers=csrf)
                assert resp.status_code == 200 and resp.json()["blocking"]["allowed"] is True, resp.text
                await wait_js(me, "!document.getElementById('block').hidden", timeout=8000)
                assert await me.text_content("#block-button") == en["me.block.button"]
                await me.click("#block-button")
                await until(lambda: (ph.ip, TRACKER_IP) in element_counters(lab.gateway_ns), 5, "the element")
                assert await me.text_content("#block-button") == en["me.block.stop"]

                t0 = time.monotonic()
                blocked = await asyncio.to_thread(connect, TRACKER_IP)
                assert blocked["ok"] is False and blocked["error"] == "ConnectionRefusedError", blocked
                assert blocked["elapsed"] < 0.1, blocked
                await wait_js(kiosk, f"{DASHED} === 1", timeout=1000)
                await wait_js(kiosk, f"{BLOCKED_TEXT}.join() === 'blocked: 1'", timeout=1000)
                shown = time.monotonic() - t0
                assert shown < 1.0, shown
                # Its other connections work.
                other = await asyncio.to_thread(lab.phone_connect, ph, SEARCH, 3000, port=80)
                assert other.received == 3000
                # The phone page counts it: "1 attempt to 1 tracker blocked".
                want = en["me.block.countOne"]
                await wait_js(
                    me, f"document.getElementById('block-count').textContent === {json.dumps(want)}"
                )

                # The operator's "for everyone" and off again: off empties the kernel set.
                resp = await http.post(
                    "/api/operator/blocking", json={"allow": True, "everyone": True}, headers=csrf
                )
                assert resp.json()["blocking"]["everyone"] is True
                resp = await http.post("/api/operator/blocking", json={"allow": False}, headers=csrf)
                assert resp.json()["blocking"] == {
                    "available": True,
                    "allowed": False,
                    "everyone": False,
                    "devices": 0,
                    "attempts": 1,
                }
                await until(lambda: not element_counters(lab.gateway_ns), 2, "the set emptied")
                assert (await asyncio.to_thread(connect, TRACKER_IP))["ok"] is True
                # A phone cannot switch it on while the operator does not allow it.
                refused = await me.evaluate(
                    "fetch('/api/me/block', {method: 'POST', body: '{\"on\": true}'}).then(r => r.status)"
                )
                assert refused == 403
                assert kiosk.errors == [] and [e for e in me.errors if "403" not in e] == []
                figures = {"fail_ms": round(blocked["elapsed"] * 1000, 2), "shown_s": round(shown, 3)}
        assert status(lab.gateway_ns) is None, "the table must be gone when apviz stops"
        return figures

    print(json.dumps(asyncio.run(main())))
