"""The session summary downloads of the operator console, on a real uvicorn on loopback: operator
only, counted from the traffic fed to the service, reset with the operator's reset, and in headless
Chromium downloaded with the console's buttons and rendered (screenshot: artifacts/summary.png)."""

from __future__ import annotations

import asyncio
import csv
import io
import socket
import xml.etree.ElementTree as ET

import httpx
import pytest

from apviz.events import Flow, FlowEvent, FlowEventKind, FlowTuple
from tests.test_exhibit_server import HOST, MAC, PASSWORD, phone, push, running, until
from tests.test_web import ARTIFACTS, needs_browser

OTHER_MAC = "02:a5:00:00:00:07"
SVG = "{http://www.w3.org/2000/svg}"


def update(fid: int, ip: str, dst: str, up: int, down: int) -> FlowEvent:
    flow = Flow(
        fid,
        socket.AF_INET,
        FlowTuple(6, ip, dst, 40000 + fid, 443),
        FlowTuple(6, dst, "10.99.255.2", 443, 40000 + fid),
        orig_bytes=up,
        reply_bytes=down,
        orig_packets=5,
    )
    return FlowEvent(FlowEventKind.UPDATE, flow)


async def feed_traffic(feed, service) -> None:
    """A phone that looked up a domain of its own (and grows), and one that reads Wikipedia."""
    await push(feed, phone())  # 127.0.0.1, "rude-hostname", RUDE, 1000 bytes
    await push(feed, phone(ip="10.99.1.7", mac=OTHER_MAC, fid=2, name="wikipedia.org", dst="198.18.0.20"))
    await push(feed, [update(1, "127.0.0.1", "198.18.0.10", 4000, 6000)])
    await until(lambda: sum(r.bytes for r in service.state.flows.values()) == 11000)


def table(text: str) -> dict[tuple[str, str], dict[str, str]]:
    assert text.startswith("\ufeff")
    return {(r["section"], r["name"]): r for r in csv.DictReader(io.StringIO(text[1:]))}


def check_csv(text: str) -> None:
    t = table(text)
    figures = {k: (r["connections"], r["bytes"], r["companies"]) for k, r in t.items() if k[0] != "session"}
    assert figures == {
        ("company", "Example Hosting"): ("1", "10000", ""),
        ("company", "wikipedia.org"): ("1", "1000", ""),
        ("country", "FR"): ("2", "11000", ""),
        ("device", "Device 1"): ("1", "10000", "1"),
        ("device", "Device 2"): ("1", "1000", "1"),
    }
    (session,) = [r for k, r in t.items() if k[0] == "session"]
    assert (session["connections"], session["bytes"], session["detail"]) == ("2", "11000", "exhibit mode")


def check_svg(text: str) -> list[str]:
    root = ET.fromstring(text.encode("utf-8"))
    texts = [el.text or "" for el in root.iter(SVG + "text")]
    for want in ("Example Hosting", "wikipedia.org", "FR", "Device 1", "Device 2"):
        assert want in texts, want
    assert "1 connection, 1 company, 0 to trackers" in texts
    return texts


def no_identities(text: str) -> None:
    for secret in ("rude-word", "1234.example", HOST, MAC, OTHER_MAC, "127.0.0.1", "10.99.1.7"):
        assert secret not in text, secret


async def login(http) -> str:
    resp = await http.post("/api/operator/login", json={"password": PASSWORD})
    assert resp.status_code == 200
    return resp.json()["csrf"]


def test_summary_downloads_are_operator_only_and_reset_with_the_session():
    async def main():
        async with running() as (feed, service, http):
            await feed_traffic(feed, service)
            for path in ("/api/operator/summary.csv", "/api/operator/summary.svg"):
                resp = await http.get(path)
                assert resp.status_code == 401 and resp.json() == {"error": "log in first"}
                assert "attachment" not in resp.headers.get("content-disposition", "")
                async with httpx.AsyncClient(
                    base_url=http.base_url, cookies={"apviz_operator": "x"}
                ) as forged:
                    assert (await forged.get(path)).status_code == 401
            csrf = await login(http)

            resp = await http.get("/api/operator/summary.csv")
            assert resp.status_code == 200
            assert resp.headers["content-type"] == "text/csv; charset=utf-8"
            assert resp.headers["cache-control"] == "no-store"
            disposition = resp.headers["content-disposition"]
            assert disposition.startswith('attachment; filename="apviz-session-') and disposition.endswith(
                '.csv"'
            )
            check_csv(resp.text)
            no_identities(resp.text)

            resp = await http.get("/api/operator/summary.svg")
            assert resp.status_code == 200 and resp.headers["content-type"] == "image/svg+xml"
            assert resp.headers["content-disposition"].endswith('.svg"')
            check_svg(resp.text)
            no_identities(resp.text)

            # The operator's reset starts a new session: the summary is empty again.
            resp = await http.post("/api/operator/reset", json={}, headers={"X-CSRF-Token": csrf})
            assert resp.status_code == 200
            rows = table((await http.get("/api/operator/summary.csv")).text)
            assert [k for k in rows if k[0] != "session"] == []
            await push(feed, phone(ip="10.99.1.7", mac=OTHER_MAC, fid=3, name="wikipedia.org"))
            await until(lambda: len(service.state.flows) == 1)
            rows = table((await http.get("/api/operator/summary.csv")).text)
            assert rows[("device", "Device 1")]["connections"] == "1" and ("device", "Device 2") not in rows

            # A logged-out session cannot download any more.
            await http.post("/api/operator/logout", headers={"X-CSRF-Token": csrf})
            assert (await http.get("/api/operator/summary.svg")).status_code == 401

    asyncio.run(main())


@pytest.mark.browser
@needs_browser
def test_console_buttons_download_the_summary_and_the_picture_renders(tmp_path):
    from playwright.async_api import async_playwright

    from tests.browser import chromium

    async def main():
        async with running() as (feed, service, http):
            await feed_traffic(feed, service)
            async with async_playwright() as p:
                browser = await chromium.launch(p)
                try:
                    context = await browser.new_context(accept_downloads=True)
                    page = await context.new_page()
                    errors: list[str] = []
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    await page.goto(str(http.base_url) + "/operator")
                    await page.fill("#password", PASSWORD)
                    await page.click("#login button")
                    await page.wait_for_selector("#summary-csv", state="visible", timeout=10000)
                    assert "Session summary" in await page.text_content("#console")

                    files = {}
                    for button, ext in (("#summary-csv", "csv"), ("#summary-svg", "svg")):
                        async with page.expect_download(timeout=10000) as info:
                            await page.click(button)
                        download = await info.value
                        assert download.suggested_filename.startswith("apviz-session-")
                        assert download.suggested_filename.endswith("." + ext)
                        files[ext] = tmp_path / download.suggested_filename
                        await download.save_as(files[ext])
                    csv_text = files["csv"].read_text(encoding="utf-8")
                    svg_text = files["svg"].read_text(encoding="utf-8")
                    check_csv(csv_text)
                    check_svg(svg_text)
                    no_identities(csv_text + svg_text)
                    assert errors == []

                    # The picture as a browser draws it, opened from the saved file.
                    view = await context.new_page()
                    await view.goto(files["svg"].as_uri())
                    drawn = await view.evaluate(
                        """() => [...document.querySelectorAll('text')]
                                  .filter((t) => t.getBBox().width > 0).map((t) => t.textContent)"""
                    )
                    assert "Device 2" in drawn and "Example Hosting" in drawn
                    bars = await view.evaluate(
                        "() => [...document.querySelectorAll('rect')]"
                        ".filter((r) => r.getBBox().width > 0).length"
                    )
                    assert bars == 6  # background, 2 companies, 1 country, 2 devices (no trackers)
                    # Chromium cannot take a full-page shot of a bare SVG document: size the window to it.
                    size = await view.evaluate(
                        "() => [document.documentElement.width.baseVal.value,"
                        " document.documentElement.height.baseVal.value]"
                    )
                    await view.set_viewport_size({"width": int(size[0]), "height": int(size[1])})
                    ARTIFACTS.mkdir(exist_ok=True)
                    await view.screenshot(path=str(ARTIFACTS / "summary.png"))
                finally:
                    await browser.close()

    asyncio.run(main())
