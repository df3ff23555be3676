"""A real HTTP server on loopback that plays the data upstreams for ``apviz data update`` tests.

Each path maps to a :class:`Reply` (a file with its ETag and Last-Modified, served conditionally
as a CDN does), or to a misbehaviour: a body cut short of its Content-Length, a connection that
never answers, a redirect. Every request is logged with its conditional headers, so a test can
check what the updater asked.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LAST_MODIFIED = "Tue, 01 Dec 2020 06:00:00 GMT"


@dataclass
class Reply:
    """What a path serves. ``behaviour``: "file", "truncate" (Content-Length says more than is sent),
    "hang" (never answers), "trickle" (a byte every 0.1 s), "redirect" (to ``location``), "status"
    (``status`` with an empty body)."""

    body: bytes = b""
    behaviour: str = "file"
    location: str = ""
    status: int = 200
    gzip_encoding: bool = False  # send the body with Content-Encoding: gzip
    etag: str = ""

    def __post_init__(self) -> None:
        if not self.etag:
            self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'


class _QuietServer(ThreadingHTTPServer):
    """A client that gives up (the timeout and redirect-loop tests) resets its connection: that is
    the test working, not an error worth a traceback in the suite's output."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@dataclass
class Upstream:
    """The server; ``routes`` may be changed while it runs (a new release upstream)."""

    routes: dict[str, Reply] = field(default_factory=dict)
    log: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Upstream:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                upstream.log.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                reply = upstream.routes.get(self.path)
                if reply is None:
                    self._empty(404)
                elif reply.behaviour == "hang":
                    upstream.release.wait(60)
                    self.close_connection = True
                elif reply.behaviour == "redirect":
                    self.send_response(302)
                    self.send_header("Location", reply.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif reply.behaviour == "status":
                    self._empty(reply.status)
                elif self.headers.get("If-None-Match") == reply.etag:
                    self.send_response(304)
                    self.send_header("ETag", reply.etag)
                    self.end_headers()
                else:
                    body = gzip.compress(reply.body) if reply.gzip_encoding else reply.body
                    self.send_response(200)
                    self.send_header("ETag", reply.etag)
                    self.send_header("Last-Modified", LAST_MODIFIED)
                    if reply.gzip_encoding:
                        self.send_header("Content-Encoding", "gzip")
                    if reply.behaviour == "truncate":
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body[: len(body) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if reply.behaviour == "trickle":
                        for i in range(len(body)):
                            if upstream.release.wait(0.1):
                                return
                            self.wfile.write(body[i : i + 1])
                            self.wfile.flush()
                        return
                    self.wfile.write(body)

            def _empty(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def requests(self, path: str) -> list[dict[str, str]]:
        return [headers for p, headers in self.log if p == path]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
