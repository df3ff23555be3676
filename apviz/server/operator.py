"""The operator console: ``/operator`` and ``/api/operator/...``, for the museum's or teacher's staff.

It is reachable from the visitor LAN (the operator walks around with a tablet), so it must be useless
without the password:

- the password is configured only as a salted scrypt hash (``apviz operator hash-password``); with
  no hash configured the console is off and every route answers 404;
- a login sets a random session token in a cookie that scripts cannot read (HttpOnly) and that the
  browser sends on same-site requests only (SameSite=Strict); sessions live in memory, bounded;
- every POST must come from this origin and carry the session's CSRF token in ``X-CSRF-Token``;
- logins are limited per address (5 per minute, then 429), and a failed attempt costs a full scrypt
  whether or not the password was close, so guessing is slow from every side.

Actions: switch the mode, switch the kiosk's language, choose the views (both side by side, the
sankey or the map alone, or one at a time in turn every N seconds), pause (freeze) the screen, reset
(forget everyone), and hide one device from the public screen. The console itself speaks the
operator's language (``Accept-Language``), not the kiosk's. Downloads: the session summary
(:mod:`apviz.live.summary`) as CSV and as an SVG picture, for the lesson afterwards; they are GETs
(nothing changes, so no CSRF token), still refused without a session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from apviz.live.privacy import LAYOUTS, Mode, check_language, check_layout
from apviz.live.summary import SessionSummary
from apviz.server.block import blocking_status, set_blocking
from apviz.server.forget import forget_device
from apviz.server.guard import RateLimit, same_origin
from apviz.server.lang import page_in_language
from apviz.server.me import client_address
from apviz.server.static import default_web_dir
from apviz.server.summary_export import filename, to_csv, to_svg
from apviz.service import Service

COOKIE = "apviz_operator"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MAX_SESSIONS = 32
LOGIN_LIMIT, LOGIN_WINDOW = 5, 60.0


# ------------------------------------------------------------------------------ passwords


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64): what ``operator.password_hash`` holds."""
    if not password:
        raise ValueError("the operator password must not be empty")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a :func:`hash_password` string."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(want)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


# ------------------------------------------------------------------------------ sessions


@dataclass(slots=True)
class Session:
    csrf: str
    expires: float


class Sessions:
    """Logged-in operators, in memory only (a restart logs everyone out, which is fine)."""

    def __init__(self, lifetime: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime = lifetime
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = self._sessions[token] = Session(secrets.token_urlsafe(32), self.clock() + self.lifetime)
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        if session.expires <= self.clock():
            del self._sessions[token]
            return None
        return session

    def drop(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)


# ------------------------------------------------------------------------------ routes


def _json(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def operator_routes(service: Service, web_dir: Path | str | None = None) -> list[BaseRoute]:
    """The console page and its API. Without ``operator.password_hash`` all of it is off (404)."""
    cfg = service.config.operator if service.config is not None else None
    stored = cfg.password_hash if cfg is not None else ""
    sessions = Sessions((cfg.session_minutes if cfg else 480.0) * 60)
    logins = RateLimit(LOGIN_LIMIT, LOGIN_WINDOW)
    web = Path(web_dir) if web_dir is not None else default_web_dir()
    builder, state = service.builder, service.state
    privacy = builder.privacy
    # Counted from now (the service starts with the app) until the operator's reset; only while the
    # console is on, so an exhibit without an operator pays nothing for it.
    summary = SessionSummary(state, builder.describe, privacy, started=service.started)
    if stored:
        state.observers.append(summary.observe)

    def off() -> Response:
        return _json({"error": "the operator console is off: set operator.password_hash"}, 404)

    async def page(request: Request) -> Response:
        path = web / "operator.html"
        if not stored:
            return PlainTextResponse("the operator console is off: set operator.password_hash", 404)
        if not path.is_file():
            return PlainTextResponse(f"apviz: operator.html is missing from {web}", 404)
        return page_in_language(path, request, cache="no-store")  # the operator's language

    async def login(request: Request) -> Response:
        if not stored:
            return off()
        if not same_origin(request):
            return _json({"error": "cross-site request refused"}, 403)
        address = client_address(request) or "unknown"
        if not logins.hit(address):
            return JSONResponse(
                {"error": "too many attempts; wait a minute"},
                status_code=429,
                headers={"Retry-After": str(logins.retry_after(address)), "Cache-Control": "no-store"},
            )
        try:
            body = await request.json()
            password = body["password"]
            if not isinstance(password, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return _json({"error": 'send {"password": ...} as JSON'}, 400)
        if not verify_password(password, stored):
            return _json({"error": "wrong password"}, 403)
        token, session = sessions.create()
        resp = _json({"csrf": session.csrf})
        resp.set_cookie(
            COOKIE, token, max_age=int(sessions.lifetime), path="/", httponly=True, samesite="strict"
        )
        return resp

    def status() -> dict[str, Any]:
        devices = [
            {"id": d["id"], "label": d["label"], "connections": d["connections"], "bytes": d["bytes"]}
            for d in service.live_view.get("devices", {}).values()  # the live devices, even in attract mode
        ]
        devices.sort(key=lambda d: d["label"])
        return {
            **privacy.screen(),
            "modes": [m.value for m in Mode],
            "layouts": list(LAYOUTS),
            "layout": privacy.layout[0] if privacy.layout else None,
            "rotate_every": privacy.layout[1] if privacy.layout else 20,
            "hidden": privacy.hidden_count,
            "devices": devices,
            "blocking": blocking_status(service),
        }

    Action = Callable[[dict[str, Any]], dict[str, Any] | None]

    def refused(request: Request) -> Response | Session:
        """The request's session, or the answer for a request without one."""
        if not stored:
            return off()
        session = sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return _json({"error": "log in first"}, 401)
        return session

    def guarded(action: Action) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = refused(request)
            if isinstance(session, Response):
                return session
            if request.method == "GET":
                return _json({**status(), "csrf": session.csrf})
            if not same_origin(request):
                return _json({"error": "cross-site request refused"}, 403)
            token = request.headers.get("x-csrf-token", "")
            if not hmac.compare_digest(token.encode(), session.csrf.encode()):
                return _json({"error": "missing or wrong CSRF token; reload the page"}, 403)
            try:
                body = json.loads(await request.body() or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("not an object")
                error = action(body)
            except (ValueError, KeyError, TypeError) as exc:
                return _json({"error": str(exc)}, 400)
            if error is not None:
                return _json(error, 404)
            builder.refreeze()
            service.publish_now()  # the kiosk sees the change within one stream message
            return _json({**status(), "csrf": session.csrf})

        return endpoint

    def set_mode(body: dict[str, Any]) -> None:
        privacy.set_mode(str(body["mode"]))

    def set_language(body: dict[str, Any]) -> None:
        privacy.set_language(check_language(str(body["lang"])))

    def set_layout(body: dict[str, Any]) -> None:
        privacy.layout = check_layout(str(body["layout"]), float(body.get("every", 20)))

    def blocking(body: dict[str, Any]) -> None:
        set_blocking(service, bool(body.get("allow", False)), bool(body.get("everyone", False)))

    def pause(body: dict[str, Any]) -> None:
        privacy.paused = bool(body.get("paused", True))

    def reset(body: dict[str, Any]) -> None:
        for key in list(state.devices):
            state.forget_device(key)
        privacy.forget_all()
        summary.reset()  # after the forgets: the flows they drop must not land in the new session

    def hide(body: dict[str, Any]) -> dict[str, Any] | None:
        public_id = str(body["device"])
        key = next((k for k in state.devices if builder.device_id(k) == public_id), None)
        if key is None or not forget_device(service, key):
            return {"error": "no such device (it may have left)"}
        return None

    def download(
        ext: str, media_type: str, render: Callable[[Any], str]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = refused(request)
            if isinstance(session, Response):
                return session
            current = summary.summary()
            return Response(
                render(current).encode("utf-8"),
                media_type=media_type,
                headers={
                    "Cache-Control": "no-store",
                    "Content-Disposition": f'attachment; filename="{filename(current, ext)}"',
                },
            )

        return endpoint

    async def logout(request: Request) -> Response:
        sessions.drop(request.cookies.get(COOKIE))
        resp = _json({"logged_out": True})
        resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return resp

    return [
        Route("/operator", page, methods=["GET", "HEAD"]),
        Route("/api/operator/login", login, methods=["POST"]),
        Route("/api/operator/logout", logout, methods=["POST"]),
        Route("/api/operator/state", guarded(lambda body: None), methods=["GET"]),
        Route("/api/operator/mode", guarded(set_mode), methods=["POST"]),
        Route("/api/operator/language", guarded(set_language), methods=["POST"]),
        Route("/api/operator/pause", guarded(pause), methods=["POST"]),
        Route("/api/operator/blocking", guarded(blocking), methods=["POST"]),
        Route("/api/operator/layout", guarded(set_layout), methods=["POST"]),
        Route("/api/operator/reset", guarded(reset), methods=["POST"]),
        Route("/api/operator/hide", guarded(hide), methods=["POST"]),
        Route(
            "/api/operator/summary.csv", download("csv", "text/csv; charset=utf-8", to_csv), methods=["GET"]
        ),
        Route("/api/operator/summary.svg", download("svg", "image/svg+xml", to_svg), methods=["GET"]),
    ]
