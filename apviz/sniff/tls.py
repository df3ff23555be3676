"""The server name, ALPN and Encrypted Client Hello flag of a TLS ClientHello.

Two entry points share one parser: the TCP stream from its first byte (record layer; a hello may
be split over several records and any number of segments, which the caller reassembles) and the
raw handshake bytes a QUIC CRYPTO stream carries. Only the ClientHello's outer structure and three
extensions are read (RFC 8446 4.1.2, RFC 6066 3, RFC 7301 3.1); anything that does not parse as
the RFCs lay it out is ``TlsError``, which the caller counts and skips. Hand-written because no
maintained library parses a lone ClientHello without a TLS engine behind it, and the structure
is a few nested length prefixes; every length is checked against its enclosing block.
"""

from __future__ import annotations

from dataclasses import dataclass

from apviz.sniff.names import safe_name, safe_token

MAX_HELLO = 16 * 1024
# The record layer adds 5 bytes per record: a caller reassembling a TCP stream for
# hello_from_records needs a little more room than MAX_HELLO (16 KiB in 1-byte records never fits).
MAX_RECORD_STREAM = MAX_HELLO + 5 * 64
MAX_RECORD = 2**14 + 2048  # TLSPlaintext is at most 2^14; leave room for sloppy stacks, no more
MAX_ALPN = 16  # protocol ids kept (the list itself is parsed whole)

_HANDSHAKE = 0x16
_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0x0000
_EXT_ALPN = 0x0010
_EXT_ECH = 0xFE0D


class TlsError(ValueError):
    """Not TLS, or a malformed ClientHello: the caller counts and skips."""


class HelloTooLarge(TlsError):
    """The ClientHello declares more than MAX_HELLO bytes."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What the first flight says about where it goes.

    ``server_name`` is the first host_name of the server_name extension as safe text (see
    :mod:`apviz.sniff.names`: lower-case ASCII, anything else escaped as ``\\xNN``, capped), None
    without the extension. With ``ech`` the name is the provider's public front, not the site.
    """

    server_name: str | None
    ech: bool
    alpn: tuple[str, ...] = ()


def looks_like_tls(first: bytes) -> bool:
    """A cheap test of a TCP payload's first bytes: a handshake record of TLS 1.0 to 1.3 (or SSL 3)."""
    return len(first) >= 3 and first[0] == _HANDSHAKE and first[1] == 3 and first[2] <= 4


def hello_from_records(data: bytes) -> ClientHello | None:
    """TCP payload from the start of the stream (TLS record layer, hello possibly split over several
    records and segments). None: need more bytes. Raises TlsError / HelloTooLarge."""
    handshake = bytearray()
    pos = 0
    need = 4  # handshake bytes wanted: the header first, then the whole hello
    while len(handshake) < need:
        if len(data) - pos < 5:
            if len(data) > pos and not _record_prefix_ok(data[pos:]):
                raise TlsError("not a TLS handshake record")
            return None
        if data[pos] != _HANDSHAKE or data[pos + 1] != 3 or data[pos + 2] > 4:
            raise TlsError(f"not a TLS handshake record (bytes {data[pos : pos + 3].hex()})")
        length = int.from_bytes(data[pos + 3 : pos + 5])
        if length == 0 or length > MAX_RECORD:
            raise TlsError(f"handshake record of {length} bytes")
        fragment = data[pos + 5 : pos + 5 + length]
        handshake += fragment
        if len(handshake) >= 4 and need == 4:
            need = 4 + _hello_length(handshake)
        if len(fragment) < length:  # the record itself is still incomplete
            return None if len(handshake) < need else _parse_hello(bytes(handshake[4:need]))
        pos += 5 + length
    return _parse_hello(bytes(handshake[4:need]))


def _record_prefix_ok(head: bytes) -> bool:
    """The first 1 to 4 bytes of a record header are consistent with a handshake record."""
    return head[0] == _HANDSHAKE and (len(head) < 2 or head[1] == 3) and (len(head) < 3 or head[2] <= 4)


def hello_from_handshake(data: bytes) -> ClientHello | None:
    """Raw handshake bytes (a QUIC CRYPTO stream from offset 0). None: need more bytes."""
    if len(data) < 4:
        if data and data[0] != _CLIENT_HELLO:
            raise TlsError(f"handshake message type {data[0]}, not a ClientHello")
        return None
    need = 4 + _hello_length(data)
    if len(data) < need:
        return None
    return _parse_hello(bytes(data[4:need]))


def _hello_length(header: bytes | bytearray) -> int:
    if header[0] != _CLIENT_HELLO:
        raise TlsError(f"handshake message type {header[0]}, not a ClientHello")
    length = int.from_bytes(header[1:4])
    if length > MAX_HELLO:
        raise HelloTooLarge(f"ClientHello declares {length} bytes (limit {MAX_HELLO})")
    return length


class _Reader:
    """A cursor over one length-delimited block; every read is checked against the block's end."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def take(self, n: int, what: str) -> int:
        """Skip ``n`` bytes and return where they start."""
        start = self.pos
        if n > self.end - start:
            raise TlsError(f"{what}: {n} bytes declared, {self.end - start} left")
        self.pos = start + n
        return start

    def uint(self, n: int, what: str) -> int:
        start = self.take(n, what)
        return int.from_bytes(self.buf[start : start + n])

    def block(self, prefix: int, what: str) -> _Reader:
        """A reader over the next ``prefix``-byte length-prefixed block."""
        length = self.uint(prefix, what)
        start = self.take(length, what)
        return _Reader(self.buf, start, start + length)

    def rest(self) -> int:
        return self.end - self.pos


def _parse_hello(body: bytes) -> ClientHello:
    r = _Reader(body)
    r.take(2 + 32, "version and random")
    if r.block(1, "session id").rest() > 32:
        raise TlsError("session id over 32 bytes")
    suites = r.block(2, "cipher suites").rest()
    if suites < 2 or suites % 2:
        raise TlsError(f"cipher suites list of {suites} bytes")
    if r.block(1, "compression methods").rest() < 1:
        raise TlsError("no compression method")
    if not r.rest():
        return ClientHello(server_name=None, ech=False)  # TLS 1.2 and older may omit extensions
    exts = r.block(2, "extensions")
    if r.rest():
        raise TlsError(f"{r.rest()} bytes after the extensions")
    seen: set[int] = set()
    name: str | None = None
    alpn: tuple[str, ...] = ()
    while exts.rest():
        kind = exts.uint(2, "extension type")
        ext = exts.block(2, f"extension {kind:#06x}")
        if kind in seen:  # RFC 8446 4.2: at most one of each; a second name is an evasion attempt
            raise TlsError(f"extension {kind:#06x} repeated")
        seen.add(kind)
        if kind == _EXT_SERVER_NAME:
            name = _server_name(ext)
        elif kind == _EXT_ALPN:
            alpn = _alpn(ext)
    return ClientHello(server_name=name, ech=_EXT_ECH in seen, alpn=alpn)


def _server_name(ext: _Reader) -> str | None:
    names = ext.block(2, "server name list")
    if ext.rest() or not names.rest():
        raise TlsError("server_name extension malformed")
    found: str | None = None
    while names.rest():
        kind = names.uint(1, "server name type")
        entry = names.block(2, "server name")
        if not entry.rest():
            raise TlsError("empty server name")
        if kind == 0 and found is None:  # host_name; other types are unknown and skipped
            found = safe_name(entry.buf[entry.pos : entry.end])
        elif kind == 0:
            raise TlsError("two host names")  # RFC 6066 3: MUST NOT contain more than one
    return found


def _alpn(ext: _Reader) -> tuple[str, ...]:
    ids = ext.block(2, "ALPN list")
    if ext.rest() or not ids.rest():
        raise TlsError("ALPN extension malformed")
    out: list[str] = []
    while ids.rest():
        entry = ids.block(1, "ALPN protocol")
        if not entry.rest():
            raise TlsError("empty ALPN protocol")
        if len(out) < MAX_ALPN:
            out.append(safe_token(entry.buf[entry.pos : entry.end]))
    return tuple(out)
