"""Bounds on what one HTTP client can make the server hold: connections, time and request bodies.

The kiosk's server listens on the visitors' Wi-Fi, so any visitor can open sockets to it. uvicorn
alone bounds neither how long a client may take to send a request (a "slowloris" that sends its
headers a byte at a time holds its connection forever: uvicorn's keep-alive timer only runs between
requests and stops at the first byte) nor how many connections one address holds; with
``limit_concurrency`` a single phone could then take every slot and the server would answer 503
to everyone else. Two guards close that:

- :func:`guarded_h11` makes the HTTP protocol class uvicorn runs: at most ``max_per_address`` open
  connections per peer address (more are answered 429 and closed at once), and every request, head
  and body, must arrive within ``request_timeout`` seconds of the connection being ready for it, or
  the connection is closed. Long responses (the event stream) are not limited: the deadline stops
  once the request is complete.
- :class:`RequestLimits` is ASGI middleware that refuses request heads over ``max_head`` bytes with
  431 and bodies over ``max_body`` bytes with 413, before the application sees any of them (a
  declared ``Content-Length`` is refused at once, a chunked body as soon as it passes the limit;
  what follows is discarded, not kept). No route of apviz takes more than a few hundred bytes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import ClassVar

import h11
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_BODY = 64 * 1024
MAX_HEAD = 16 * 1024  # request line and headers; browsers send 1-2 KiB
_TOO_MANY = b"too many connections from this address; close some tabs and try again\n"
_REFUSAL = (
    b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_TOO_MANY), _TOO_MANY)
)
_WAITING = (h11.IDLE, h11.SEND_BODY)  # the client still owes us (part of) a request


def guarded_h11(request_timeout: float, max_per_address: int) -> type[H11Protocol]:
    """A new H11Protocol subclass (one per server: it holds that server's per-address counts)."""
    if request_timeout <= 0 or max_per_address < 1:
        raise ValueError("request_timeout must be positive and max_per_address at least 1")

    class GuardedH11Protocol(H11Protocol):
        open_per_address: ClassVar[Counter[str]] = Counter()  # open connections by peer address
        _peer: str | None = None
        _deadline: asyncio.TimerHandle | None = None
        _seen: object = None  # h11's their_state at the last look

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = self.client[0] if self.client else None
            if peer is not None:
                self._peer = peer
                self.open_per_address[peer] += 1
                if self.open_per_address[peer] > max_per_address:
                    transport.write(_REFUSAL)
                    transport.close()
                    return
            self._watch()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel()
            if self._peer is not None:
                counts = self.open_per_address
                counts[self._peer] -= 1
                if counts[self._peer] <= 0:
                    del counts[self._peer]
                self._peer = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch()

        # the request deadline ----------------------------------------------------------------

        def _watch(self) -> None:
            """Arm the deadline when a request is owed, restart it when a new one is, drop it once
            the request is complete (the response may then take as long as it needs)."""
            state = self.conn.their_state
            if state in _WAITING:
                if state is h11.IDLE and self._seen is not h11.IDLE:
                    self._cancel()  # a new request cycle: a fresh allowance
                if self._deadline is None and not self.transport.is_closing():
                    self._deadline = self.loop.call_later(request_timeout, self._expired)
            else:
                self._cancel()
            self._seen = state

        def _cancel(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.conn.their_state in _WAITING and not self.transport.is_closing():
                self.transport.close()  # the client took too long to send its request

    return GuardedH11Protocol


class RequestLimits:
    """ASGI middleware: heads over ``max_head`` bytes get 431, bodies over ``max_body`` bytes 413.

    uvicorn's ``h11_max_incomplete_event_size`` only bounds a head that is still incomplete: one
    that arrives whole in a single read (up to 256 KiB) is parsed whatever its size, so the size
    is checked again here, once it is parsed.

    The connection is not closed with the answer: closing a socket with unread input makes the
    kernel send a reset, which can destroy the 413 before the client reads it. uvicorn discards
    the rest of the body as it arrives (nothing is buffered), and the request deadline of
    :func:`guarded_h11` closes the connection if the body keeps coming.
    """

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY, max_head: int = MAX_HEAD) -> None:
        self.app = app
        self.max_body = max_body
        self.max_head = max_head

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _head_size(scope) > self.max_head:
            await self._refuse(
                scope, receive, send, 431, f"request headers too large (at most {self.max_head} bytes)"
            )
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await self._refuse(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD") and not declared:
            await self.app(scope, receive, send)  # the event streams: receive stays untouched
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, status: int = 413, error: str = ""
    ) -> None:
        error = error or f"request body too large (at most {self.max_body} bytes)"
        response = JSONResponse({"error": error}, status_code=status, headers={"Cache-Control": "no-store"})
        await response(scope, receive, send)


def _head_size(scope: Scope) -> int:
    """Bytes of the request line and headers, about as they came on the wire."""
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    return size + sum(len(name) + len(value) + 4 for name, value in scope["headers"])


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # h11 refuses malformed lengths before the app sees them
    return None
