"""The static front-end: three pages, the project's own css/js/i18n, and an allow-list of vendored files.

Only the files the pages need leave ``web/node_modules``: the rest of a package (its sources, its
README, a fixture that happens to be HTML) is not reachable at all, so a package update cannot
quietly put new files on the kiosk's server. Every response, the API's and the event stream's
included, carries a strict Content-Security-Policy: the pages load nothing from another host and
run no inline script or style, so a hostile device name that ever slipped into markup would still
not execute. The pages' words live in ``web/i18n/<lang>.json`` (``/static/i18n/``), fetched from
this same origin (``connect-src 'self'``) and only ever put on screen as text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apviz.server.lang import page_in_language

#: The only inline styles allowed, by their exact SHA-256: the three small stylesheets globe.gl's UMD
#: file puts in ``<style>`` elements when it loads (a pointer cursor, its tooltip, its navigation
#: hint), and the empty element it appends before filling each in. Style attributes stay forbidden
#: (a hash never allows them). tests/test_globe.py recomputes the hashes from the vendored file, so a
#: globe.gl update that changes them fails there instead of quietly logging CSP errors on the kiosk.
GLOBE_STYLE_HASHES = (
    "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",  # the empty <style> before its text goes in
    "GRFgt45UbKYCV14/Fqy6H9EB3zlAwSnH4xbsYt03Q6M=",  # .scene-container .clickable
    "9xjtvxMT1ApHlgn9ohbh2FNfvK5Tqtzy94BjfXBeMSY=",  # .float-tooltip-kap
    "yfc2FhpkFR0EAy3T+zDsaAFGXSP9B3ELNvaJKDzNhkk=",  # .scene-nav-info
)
_STYLE_SRC = " ".join(["'self'", *(f"'sha256-{h}'" for h in GLOBE_STYLE_HASHES)])
CSP = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    f"style-src {_STYLE_SRC}; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}

PAGES = {"/": "index.html", "/me": "me.html", "/status": "status.html"}
#: Pages in their reader's language from the first byte (the kiosk follows the operator, /me asks
#: the server through /api/me).
STAFF_PAGES = {"status.html"}

# URL name under /vendor/ -> path inside web/node_modules. Keep in step with web/package.json.
VENDOR = {
    "d3.min.js": "d3/dist/d3.min.js",
    "d3-sankey.min.js": "d3-sankey/dist/d3-sankey.min.js",
    "topojson-client.min.js": "topojson-client/dist/topojson-client.min.js",
    "countries-110m.json": "world-atlas/countries-110m.json",
    # The globe: three's ES module build (two files, relative imports only, so no import map) and
    # globe.gl's UMD file, which uses the page's ``window.THREE`` (web/js/three-global.js) instead
    # of the copy bundled inside it, so the three that draws is the pinned one.
    "three.module.js": "three/build/three.module.js",
    "three.core.js": "three/build/three.core.js",
    "globe.gl.min.js": "globe.gl/dist/globe.gl.min.js",
}


def default_web_dir() -> Path:
    """The repository's ``web/`` beside the package (an editable install or a source checkout)."""
    return Path(__file__).resolve().parents[2] / "web"


def static_routes(web_dir: Path | str | None = None) -> list[BaseRoute]:
    """Routes for the pages, ``/static/{js,css,i18n}/...`` and the allow-listed ``/vendor/...`` files."""
    web = Path(web_dir) if web_dir is not None else default_web_dir()

    def page(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            path = web / name
            if not path.is_file():
                return PlainTextResponse(f"apviz: {name} is missing from {web}", status_code=404)
            if name in STAFF_PAGES:
                return page_in_language(path, request)
            return FileResponse(path, headers={"Cache-Control": "no-cache"})

        return endpoint

    async def vendor(request: Request) -> Response:
        rel = VENDOR.get(request.path_params["name"])
        if rel is None:
            return PlainTextResponse("not found", status_code=404)
        path = web / "node_modules" / rel
        if not path.is_file():
            return PlainTextResponse(
                f"apviz: {rel} is not installed; run `npm ci --prefix web`", status_code=404
            )
        return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})

    routes: list[BaseRoute] = [Route(url, page(name), methods=["GET", "HEAD"]) for url, name in PAGES.items()]
    routes += [
        Mount(f"/static/{sub}", StaticFiles(directory=web / sub, check_dir=False), name=f"static-{sub}")
        for sub in ("js", "css", "i18n")
    ]
    routes.append(Route("/vendor/{name}", vendor, methods=["GET", "HEAD"]))
    return routes


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every HTTP response that lacks them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    if key not in headers:
                        headers[key] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
