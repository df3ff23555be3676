"""``/api/me/block``: a visitor switches tracker blocking on or off for their own phone.

Which device: by the address the request came from, exactly as ``/api/me`` and ``/api/me/forget``
(:mod:`apviz.server.forget`), never by anything the browser sends; and the request must come from the
phone page itself (same origin). The button only works while the operator allows it
(:func:`set_blocking`, the console's switch, off at every start): an exhibit decides when visitors
may change their own network, not the visitor. The operator can also switch it on for everyone
(a classroom moment) and off again; the visitor's own choice is kept beneath that.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from apviz.server.guard import RateLimit, same_origin
from apviz.server.me import NOT_A_DEVICE, client_address, requesting_device
from apviz.service import Service


def blocking_status(service: Service) -> dict[str, Any]:
    """For the operator console: configured, allowed, on for everyone, devices on, attempts."""
    decider = service.state.blocking
    if decider is None or service.blocker is None:
        return {"available": False, "allowed": False, "everyone": False, "devices": 0, "attempts": 0}
    return {
        "available": True,
        "allowed": decider.allowed,
        "everyone": decider.everyone,
        "devices": len(decider.enabled),
        "attempts": sum(decider.attempts.values()),
    }


def set_blocking(service: Service, allow: bool, everyone: bool) -> None:
    """The operator's switch. Disallowing turns every device's blocking off (and the table empties)."""
    decider = service.state.blocking
    if decider is None or service.blocker is None:
        raise ValueError("tracker blocking is not configured: set [exhibit] blocking = true")
    decider.allowed = allow
    decider.set_everyone(allow and everyone)
    if not allow:
        for device in list(decider.enabled):
            decider.disable(device)


def _answer(body: dict[str, object], status: int) -> Response:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def block_routes(service: Service) -> list[BaseRoute]:
    limit = RateLimit(20, 60.0)

    def mine(key: str) -> dict[str, Any]:
        return service.builder.device_blocking(service.state, key)

    async def block(request: Request) -> Response:
        address = client_address(request)
        key = requesting_device(service, address)
        if request.method == "GET":
            if key is None:
                return _answer({"error": NOT_A_DEVICE}, 404)
            return _answer(mine(key), 200)
        if not same_origin(request):
            return _answer({"error": "use the button on the phone page"}, 403)
        if not limit.hit(address or "unknown"):
            return _answer({"error": "too many requests; wait a minute"}, 429)
        if key is None:
            return _answer({"error": NOT_A_DEVICE}, 404)
        decider = service.state.blocking
        if decider is None or not decider.allowed:
            return _answer({"error": "blocking is switched off at this exhibit"}, 403)
        try:
            on = bool((await request.json()).get("on", True))
        except (ValueError, AttributeError):
            return _answer({"error": 'send {"on": true} or {"on": false}'}, 400)
        for ip in service.state.devices[key].ips:
            if on:
                decider.enable(ip)
            else:
                decider.disable(ip)
        service.publish_now()
        return _answer(mine(key), 200)

    return [Route("/api/me/block", block, methods=["GET", "POST"])]
