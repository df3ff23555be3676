"""The phone page's API: a device sees its own flows, and only its own.

Which device is asking is decided by the address the request came from, as the listening socket
on the gateway's LAN sees it, looked up in the live state (lease, then neighbour table). Nothing the
browser sends (an id in the URL, a cookie, a header) can name another device: the public view's
device ids are visible to every kiosk on purpose (the screen needs them for colours), so an id alone
must never unlock a device's detail.

``/api/me/events`` is the same detail as a stream. It takes a slot in the hub like the kiosk's
stream (so the per-address limit and the bounded queue apply), but uses the hub's deltas only as
a wake-up: each time the public view changes it rebuilds this one device's detail and sends it if
it differs from what this browser last got. Because the message is per device, it is encoded per
client, never shared.

The detail is :meth:`ViewBuilder.device_detail`'s: each destination says where its name came from
(``name_sources``: the connection's server name, the device's own lookup at dnsmasq or another
resolver, an ECH front, another device's lookup) and what it hides (``hidden``: private DNS, a VPN,
Apple's relay), and ``private_dns_refused`` tells the page that the network refused the phone's
strict private DNS. The page words these in its language; nothing here is translated.

Every answer carries ``lang``: the language the page should speak, negotiated here from the
browser's ``Accept-Language`` (:mod:`apviz.server.lang`). The device's ``label`` (its pseudonym)
stays in the kiosk's language on purpose: the visitor must find exactly these words on the big
screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from apviz.server.hub import Client, TooManyStreams, encode
from apviz.server.lang import negotiate
from apviz.service import Service

REFRESH_SECONDS = 5.0  # at most this long between checks, even when the public view is quiet

NOT_A_DEVICE = (
    "We can't see this phone on the exhibit's Wi-Fi yet. Join the exhibit's Wi-Fi, open an app or a "
    "website, and this page fills in."
)
NOT_YOURS = "You can only look at your own phone here. Open /me on it."
GONE = "We can't see this phone any more: it may have left the Wi-Fi."


def client_address(request: Request) -> str | None:
    """The peer address of the request's socket, IPv4-mapped IPv6 written as plain IPv4."""
    host = request.client.host if request.client else None
    if not host:
        return None
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def requesting_device(service: Service, address: str | None) -> str | None:
    """The state's key of the device at ``address``, or None when no known device holds it now.

    The address must be one of the device's current addresses, not just a stale mapping: after a
    lease moves to another device, the old holder's key must not answer for the new one.
    """
    if address is None:
        return None
    state = service.state
    key = state.device_key_for(address)
    dev = state.devices.get(key)
    if dev is None or address not in dev.ips:
        return None
    return key


def _detail(service: Service, key: str) -> dict[str, Any] | None:
    return service.builder.device_detail(service.state, service.builder.device_id(key))


_HEADERS = {"Cache-Control": "no-store", "Vary": "Accept-Language"}


def page_language(request: Request) -> str:
    """The language of the phone page for this request (``en`` unless the browser prefers another)."""
    return negotiate(request.headers.get("accept-language"))


def _error(status: int, message: str, lang: str | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if lang is not None:
        body["lang"] = lang
    return JSONResponse(body, status_code=status, headers=_HEADERS)


def _json(body: dict[str, Any], lang: str | None = None) -> Response:
    return JSONResponse(body if lang is None else {**body, "lang": lang}, headers=_HEADERS)


async def device_stream(
    service: Service, client: Client, address: str, key: str, lang: str = "en"
) -> AsyncIterator[bytes]:
    """Detail messages for the device ``key`` while ``address`` still belongs to it.

    The hub offers this client every delta; the queue only says "the view changed". A full queue
    makes the hub drop the backlog and mark the client for a resync, which here just means "look
    again": nothing is buffered beyond the hub's bounded queue.
    """
    hub, builder = service.hub, service.builder
    last_body: str | None = None
    last_summary: Any = None
    last_built = 0.0
    sent = 0
    try:
        while True:
            if requesting_device(service, address) != key:
                yield encode("gone", f"{hub.epoch}.{sent}", {"error": GONE, "lang": lang})
                return
            public_id = builder.device_id(key)
            summary = service.live_view.get("devices", {}).get(public_id)  # not a recording
            now = time.monotonic()
            if last_body is None or summary != last_summary or now - last_built >= REFRESH_SECONDS:
                last_summary, last_built = summary, now
                detail = _detail(service, key)
                if detail is None:
                    yield encode("gone", f"{hub.epoch}.{sent}", {"error": GONE, "lang": lang})
                    return
                detail["lang"] = lang
                body = json.dumps(detail, sort_keys=True, ensure_ascii=False)
                if body != last_body:
                    last_body = body
                    sent += 1
                    yield encode("detail", f"{hub.epoch}.{sent}", detail)
            client.resync = False  # the next delta is a wake-up again
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_SECONDS):
                    await client.queue.get()
            while not client.queue.empty():
                client.queue.get_nowait()
    finally:
        hub.disconnect(client)


def me_routes(service: Service, heartbeat: float = 15.0) -> list[BaseRoute]:
    """``/api/me``, ``/api/me/events`` and the owner-only ``/api/devices/{device_id}``."""

    async def me(request: Request) -> Response:
        lang = page_language(request)
        key = requesting_device(service, client_address(request))
        detail = _detail(service, key) if key is not None else None
        if detail is None:
            return _error(404, NOT_A_DEVICE, lang)
        return _json(detail, lang)

    async def me_events(request: Request) -> Response:
        # Imported here: the app module imports this one, and its stream response releases the
        # hub slot however the response ends.
        from apviz.server.app import _Stream

        address = client_address(request)
        key = requesting_device(service, address)
        lang = page_language(request)
        if address is None or key is None:
            return _error(404, NOT_A_DEVICE, lang)
        try:
            client = service.hub.connect(address, None)
        except TooManyStreams:
            return _error(429, "too many event streams from this address; close other tabs", lang)
        return _Stream(
            device_stream(service, client, address, key, lang),
            on_close=lambda: service.hub.disconnect(client),
            ping=heartbeat,
            send_timeout=30.0,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def device(request: Request) -> Response:
        # Only the device itself: anyone else gets the same 403 whether or not the id exists, so
        # the answer does not even tell who is still here.
        lang = page_language(request)
        key = requesting_device(service, client_address(request))
        if key is None or service.builder.device_id(key) != request.path_params["device_id"]:
            return _error(403, NOT_YOURS, lang)
        detail = _detail(service, key)
        if detail is None:
            return _error(404, GONE, lang)
        return _json(detail, lang)

    return [
        Route("/api/me", me),
        Route("/api/me/events", me_events),
        Route("/api/devices/{device_id}", device),
    ]
