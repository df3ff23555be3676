"""The kiosk's join card: the visitors' Wi-Fi name and two QR codes, rendered once, served as PNG.

One code joins the Wi-Fi (the ``WIFI:`` format that phone cameras understand), the other opens the
phone page. They are drawn on the server with segno so the kiosk needs no QR library and no inline
image data, and the PNGs are made once at start (the configuration does not change while running).
The password is deliberately on the public screen: that is what the card is for. It is never in the
JSON, though, so it does not end up in logs of API clients.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable

import segno
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from apviz.config import ExhibitConfig
from apviz.service import Service


def _escape(text: str) -> str:
    """Backslash-escape the characters the WIFI: format reserves (``\\ ; , : "``)."""
    for ch in '\\;,:"':
        text = text.replace(ch, "\\" + ch)
    return text


def wifi_payload(ssid: str, password: str = "") -> str:
    """``WIFI:T:WPA;S:<ssid>;P:<password>;;``, or ``T:nopass`` for an open network."""
    if not password:
        return f"WIFI:T:nopass;S:{_escape(ssid)};;"
    return f"WIFI:T:WPA;S:{_escape(ssid)};P:{_escape(password)};;"


def qr_png(data: str) -> bytes:
    """A PNG of ``data``: medium error correction, big modules, a quiet zone (camera-friendly)."""
    out = io.BytesIO()
    segno.make(data, error="m", micro=False).save(out, kind="png", scale=8, border=4)
    return out.getvalue()


def join_routes(service: Service) -> list[BaseRoute]:
    """``/api/join`` (what the card says) and ``/join/wifi.png``, ``/join/phone.png``."""
    ex = service.config.exhibit if service.config is not None else ExhibitConfig()
    images: dict[str, bytes] = {}
    if ex.ssid:
        images["wifi"] = qr_png(wifi_payload(ex.ssid, ex.wifi_password))
    if ex.phone_url:
        images["phone"] = qr_png(ex.phone_url)

    async def card(request: Request) -> Response:
        return JSONResponse(
            {
                "ssid": ex.ssid or None,
                "open": not ex.wifi_password,
                "phone_url": ex.phone_url or None,
                "wifi_qr": "/join/wifi.png" if "wifi" in images else None,
                "phone_qr": "/join/phone.png" if "phone" in images else None,
            },
            headers={"Cache-Control": "no-cache"},
        )

    def image(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            png = images.get(name)
            if png is None:
                return JSONResponse({"error": f"no {name} code configured"}, status_code=404)
            return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

        return endpoint

    return [
        Route("/api/join", card),
        Route("/join/wifi.png", image("wifi"), methods=["GET", "HEAD"]),
        Route("/join/phone.png", image("phone"), methods=["GET", "HEAD"]),
    ]
