"""The exhibit's routes on a real uvicorn on loopback: nothing a visitor chose reaches the public stream,
"forget me" clears a phone off the kiosk within 2 s, the operator console needs a session and a CSRF
token and limits logins, and the join card's QR codes decode to the configured network and URL."""

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import time

import httpx
import pytest
import uvicorn

from apviz.config import from_dict
from apviz.events import (
    DnsAnswer,
    DnsAnswerKind,
    DnsQuery,
    Flow,
    FlowEvent,
    FlowEventKind,
    FlowTuple,
    Lease,
    LeaseSnapshot,
)
from apviz.live.destinations import Destination
from apviz.live.pipeline import NamedSource
from apviz.live.privacy import Privacy
from apviz.live.publicview import ViewBuilder
from apviz.live.state import LiveState, StateConfig, networks
from apviz.server.app import create_app
from apviz.server.hub import Hub
from apviz.server.join import wifi_payload
from apviz.server.operator import hash_password, verify_password
from apviz.service import Service

RUDE = "rude-word-1234.example"
HOST = "rude-hostname"
MAC = "02:a5:00:00:00:01"
PASSWORD = "correct horse battery"
HASH = hash_password(PASSWORD)


class Feed:
    def __init__(self):
        self.queue = asyncio.Queue()

    async def __aiter__(self):
        while True:
            yield await self.queue.get()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def describe(name, address, proto=0, dport=0):
    if name:
        dom = ".".join(name.split(".")[-2:])
        return Destination(org=dom, org_source="domain", domain=dom, asn_org="Example Hosting", country="FR")
    return Destination(org="Example Hosting", org_source="asn", asn_org="Example Hosting", country="FR")


@contextlib.asynccontextmanager
async def running(**exhibit):
    feed = Feed()
    # 127.0.0.1 is a phone here, so the test client is "the device" for /api/me/forget.
    state = LiveState(StateConfig(lan=networks(["10.99.1.0/24", "127.0.0.1/32"])))
    cfg = from_dict({"exhibit": exhibit, "operator": {"password_hash": HASH}}, env={})
    builder = ViewBuilder(describe=describe, privacy=Privacy(cfg.exhibit.mode))
    service = Service(state, [NamedSource("feed", lambda: feed)], builder, Hub())
    service.config = cfg
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10, headers={"Origin": base}) as http:
            yield feed, service, http
    finally:
        server.should_exit = True
        await task


def phone(ip="127.0.0.1", mac=MAC, host=HOST, name=RUDE, fid=1, dst="198.18.0.10"):
    f = Flow(
        fid,
        socket.AF_INET,
        FlowTuple(6, ip, dst, 40000 + fid, 443),
        FlowTuple(6, dst, "10.99.255.2", 443, 40000 + fid),
        orig_bytes=100,
        reply_bytes=900,
        orig_packets=2,
    )
    return [
        LeaseSnapshot((Lease(0, mac, ip, host, "01:" + mac),)),
        DnsQuery(time.time(), fid, ip, "A", name),
        DnsAnswer(time.time(), fid, ip, DnsAnswerKind.REPLY, name, dst),
        FlowEvent(FlowEventKind.NEW, f),
    ]


async def push(feed, events):
    for ev in events:
        await feed.queue.put(ev)


async def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def raw_stream(http, out, ready):
    async with http.stream("GET", "/events") as resp:
        ready.set()
        async for line in resp.aiter_lines():
            out.append(line)


# ------------------------------------------------------------------------------ privacy on the wire


def test_a_visitors_lookup_and_hostname_never_reach_state_or_events():
    async def main():
        async with running() as (feed, service, http):
            lines, ready = [], asyncio.Event()
            reader = asyncio.create_task(raw_stream(http, lines, ready))
            await ready.wait()
            await push(
                feed, phone() + phone(ip="10.99.1.7", mac="02:a5:00:00:00:07", fid=2, name="wikipedia.org")
            )
            await until(lambda: len(service.hub.view.get("devices", {})) == 2)
            await until(lambda: any("wikipedia.org" in line for line in lines))
            state = (await http.get("/api/state")).text
            reader.cancel()
            text = state + "\n".join(lines)
            for secret in ("rude-word", "1234.example", HOST, MAC, "127.0.0.1", "10.99.1.7"):
                assert secret not in text, secret
            orgs = {n["label"] for n in json.loads(state)["view"]["nodes"].values() if n["kind"] == "org"}
            assert orgs == {"Example Hosting", "wikipedia.org"}

    asyncio.run(main())


# ------------------------------------------------------------------------------ forget me


def test_forget_me_clears_the_phone_from_the_kiosk_within_two_seconds():
    async def main():
        async with running() as (feed, service, http):
            await push(feed, phone() + phone(ip="10.99.1.7", mac="02:a5:00:00:00:07", fid=2))
            await until(lambda: len(service.hub.view.get("devices", {})) == 2)
            mine = service.builder.device_id(MAC)
            seen = []
            ready = asyncio.Event()
            reader = asyncio.create_task(raw_stream(http, seen, ready))
            await ready.wait()
            await until(lambda: any(line.startswith("data:") for line in seen))  # the snapshot

            # Only a same-origin POST counts: another site's page cannot make the phone forget itself.
            assert (
                await http.post("/api/me/forget", headers={"Origin": "http://evil.example"})
            ).status_code == 403
            bare = httpx.AsyncClient(base_url=str(http.base_url))
            assert (await bare.post("/api/me/forget")).status_code == 403
            await bare.aclose()
            assert (await http.get("/api/me/forget")).status_code == 405

            t0 = time.monotonic()
            resp = await http.post("/api/me/forget")
            assert resp.status_code == 200 and resp.json() == {"forgotten": True}
            await until(lambda: any(mine in line and '"remove"' in line for line in seen), timeout=2.0)
            assert time.monotonic() - t0 < 2.0
            reader.cancel()
            view = (await http.get("/api/state")).json()["view"]
            assert mine not in view["devices"] and len(view["devices"]) == 1
            assert MAC not in service.state.devices

            # The phone keeps talking (a new connection, then a lease renewal): still off the kiosk.
            await push(feed, phone(fid=3)[1:])
            await until(lambda: MAC in service.state.devices)  # the address is still known to be its
            await push(feed, phone(fid=4))
            await until(lambda: len(service.state.device_flows(MAC)) == 2)
            service.publish_now()
            assert len(service.hub.view["devices"]) == 1
            assert (await http.post("/api/me/forget")).status_code == 200  # still its own to forget

    asyncio.run(main())


# ------------------------------------------------------------------------------ operator console


async def login(http, password=PASSWORD):
    return await http.post("/api/operator/login", json={"password": password})


def test_password_hash_round_trip():
    assert verify_password(PASSWORD, HASH)
    assert not verify_password("wrong", HASH) and not verify_password(PASSWORD, "nonsense")
    assert HASH.startswith("scrypt$") and PASSWORD not in HASH and hash_password(PASSWORD) != HASH


def test_operator_refuses_without_session_or_with_bad_csrf():
    async def main():
        async with running() as (_feed, service, http):
            assert (await http.get("/api/operator/state")).status_code == 401
            for action in ("mode", "pause", "reset", "hide", "language"):
                assert (await http.post(f"/api/operator/{action}", json={})).status_code == 401
            assert (await login(http, "wrong")).status_code == 403
            resp = await login(http)
            assert resp.status_code == 200
            cookie = resp.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
            csrf = resp.json()["csrf"]
            assert (await http.post("/api/operator/pause", json={})).status_code == 403  # no token
            bad = {"X-CSRF-Token": ("y" if csrf[0] == "x" else "x") + csrf[1:]}  # one character off
            assert (await http.post("/api/operator/pause", json={}, headers=bad)).status_code == 403
            cross = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
            assert (await http.post("/api/operator/pause", json={}, headers=cross)).status_code == 403
            assert not service.builder.privacy.paused
            ok = await http.post("/api/operator/pause", json={"paused": True}, headers={"X-CSRF-Token": csrf})
            assert ok.status_code == 200 and ok.json()["paused"] and service.hub.view["screen"]["paused"]
            assert (await http.post("/api/operator/logout")).status_code == 200
            assert (await http.get("/api/operator/state")).status_code == 401

    asyncio.run(main())


def test_operator_login_is_rate_limited_per_address():
    async def main():
        async with running() as (_, _service, http):
            for _ in range(5):
                assert (await login(http, "guess")).status_code == 403
            resp = await login(http)  # even the right password waits now
            assert resp.status_code == 429 and int(resp.headers["retry-after"]) >= 1

    asyncio.run(main())


def test_operator_reset_mode_and_hide():
    async def main():
        async with running() as (feed, service, http):
            await push(feed, phone() + phone(ip="10.99.1.7", mac="02:a5:00:00:00:07", host="second", fid=2))
            await until(lambda: len(service.hub.view.get("devices", {})) == 2)
            csrf = (await login(http)).json()["csrf"]
            h = {"X-CSRF-Token": csrf}
            status = (await http.get("/api/operator/state")).json()
            assert status["mode"] == "exhibit" and len(status["devices"]) == 2
            assert HOST not in json.dumps(status)  # the operator sees what the screen shows, no more

            resp = await http.post("/api/operator/mode", json={"mode": "home"}, headers=h)
            assert resp.status_code == 200
            assert {d["label"] for d in service.hub.view["devices"].values()} == {HOST, "second"}
            assert (
                await http.post("/api/operator/mode", json={"mode": "party"}, headers=h)
            ).status_code == 400
            await http.post("/api/operator/mode", json={"mode": "classroom"}, headers=h)
            resp = await http.post("/api/operator/language", json={"lang": "de"}, headers=h)
            assert resp.json()["lang"] == "de" and service.hub.view["screen"]["lang"] == "de"

            other = service.builder.device_id("02:a5:00:00:00:07")
            assert (
                await http.post("/api/operator/hide", json={"device": other}, headers=h)
            ).status_code == 200
            assert list(service.hub.view["devices"]) == [service.builder.device_id(MAC)]
            assert (
                await http.post("/api/operator/hide", json={"device": "dnope"}, headers=h)
            ).status_code == 404

            resp = await http.post("/api/operator/reset", json={}, headers=h)
            assert resp.status_code == 200
            assert service.state.devices == {} and service.state.flows == {}
            view = (await http.get("/api/state")).json()["view"]
            assert view["devices"] == {} and view["nodes"] == {} and view["totals"]["devices"] == 0

    asyncio.run(main())


def test_operator_console_is_off_without_a_password_hash():
    async def main():
        feed = Feed()
        svc = Service(LiveState(), [NamedSource("feed", lambda: feed)], ViewBuilder(), Hub())
        svc.config = from_dict({}, env={})
        transport = httpx.ASGITransport(app=create_app(svc, manage_service=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            assert (await http.get("/operator")).status_code == 404
            resp = await http.post(
                "/api/operator/login", json={"password": "x"}, headers={"Origin": "http://t"}
            )
            assert resp.status_code == 404

    asyncio.run(main())


# ------------------------------------------------------------------------------ join card


def test_wifi_payload_escapes_reserved_characters():
    assert wifi_payload("Museum", "secret123") == "WIFI:T:WPA;S:Museum;P:secret123;;"
    assert (
        wifi_payload('a;b,c:d\\e"f', 'p;w,:\\"')
        == 'WIFI:T:WPA;S:a\\;b\\,c\\:d\\\\e\\"f;P:p\\;w\\,\\:\\\\\\";;'
    )
    assert wifi_payload("Open Museum") == "WIFI:T:nopass;S:Open Museum;;"


@pytest.mark.skipif(shutil.which("zbarimg") is None, reason="zbarimg (Debian zbar-tools) is not installed")
def test_join_qr_codes_decode_to_the_configured_network_and_url(tmp_path):
    ssid, password, url = 'Museum; "Wi-Fi":1', "pass,word\\ok", "http://apviz.lan/me"

    async def main():
        async with running(ssid=ssid, wifi_password=password, phone_url=url) as (_, _service, http):
            card = (await http.get("/api/join")).json()
            assert card == {
                "ssid": ssid,
                "open": False,
                "phone_url": url,
                "wifi_qr": "/join/wifi.png",
                "phone_qr": "/join/phone.png",
            }
            assert password not in json.dumps(card)
            for name in ("wifi", "phone"):
                resp = await http.get(f"/join/{name}.png")
                assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
                (tmp_path / f"{name}.png").write_bytes(resp.content)

    asyncio.run(main())

    def decode(name):
        out = subprocess.run(
            ["zbarimg", "-q", "--raw", "--nodbus", str(tmp_path / f"{name}.png")],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.rstrip("\n")

    assert decode("wifi") == wifi_payload(ssid, password)
    assert decode("phone") == url


def test_join_card_without_configuration_shows_nothing():
    async def main():
        async with running() as (_, _service, http):
            card = (await http.get("/api/join")).json()
            assert card["ssid"] is None and card["wifi_qr"] is None and card["phone_qr"] is None
            assert (await http.get("/join/wifi.png")).status_code == 404

    asyncio.run(main())


def test_mode_from_config_reaches_the_view():
    async def main():
        async with running(mode="home") as (feed, service, _http):
            await push(feed, phone())
            await until(lambda: len(service.hub.view.get("devices", {})) == 1)
            assert next(iter(service.hub.view["devices"].values()))["label"] == HOST

    asyncio.run(main())
