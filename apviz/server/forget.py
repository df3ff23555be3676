"""``POST /api/me/forget``: a visitor removes their own phone from the exhibit, now.

Which device is decided exactly as for ``/api/me`` (:mod:`apviz.server.me`): by the address the
request came from, never by anything the browser sends. The device, its flows and its DNS names leave
the live state at once, the view is rebuilt and published before the response is sent (so the kiosk
drops it within one stream message), and the device stays off the public screen while it remains on
the Wi-Fi (a phone keeps talking; without that it would be back a second later under a new name).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from apviz.server.guard import RateLimit, same_origin
from apviz.server.me import NOT_A_DEVICE, client_address, requesting_device
from apviz.service import Service


def forget_device(service: Service, key: str) -> bool:
    """Hide ``key`` (and the provisional keys of its addresses) from the public view, drop it from
    the state and publish the result. False when no such device is present."""
    dev = service.state.devices.get(key)
    if dev is None:
        return False
    privacy = service.builder.privacy
    privacy.hide(key)
    for ip in dev.ips:  # after the forget the next flow arrives as "ip:ADDR" until the lease is re-read
        privacy.hide(f"ip:{ip}")
    service.state.forget_device(key)
    service.builder.refreeze()
    service.publish_now()
    return True


def _answer(body: dict[str, object], status: int) -> Response:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def forget_routes(service: Service) -> list[BaseRoute]:
    limit = RateLimit(10, 60.0)

    async def forget(request: Request) -> Response:
        if not same_origin(request):
            return _answer({"error": "use the button on the phone page"}, 403)
        address = client_address(request)
        if not limit.hit(address or "unknown"):
            return _answer({"error": "too many requests; wait a minute"}, 429)
        key = requesting_device(service, address)
        if key is None or not forget_device(service, key):
            return _answer({"error": NOT_A_DEVICE}, 404)
        return _answer({"forgotten": True}, 200)

    return [Route("/api/me/forget", forget, methods=["POST"])]
