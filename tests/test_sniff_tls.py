"""TLS ClientHello decoding: real hellos from Python's ssl (OpenSSL), split over segments and
records, hand-built ones for Encrypted Client Hello and hostile names, and broken ones.

The builders here (``ssl_hello``, ``build_hello``, ``rerecord``) are also the seeds of
bench/fuzz_sniff.py and the samples of bench/decoders.py.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apviz.sniff.names import MAX_NAME, safe_name
from apviz.sniff.reassembly import Reassembly
from apviz.sniff.tls import (
    MAX_HELLO,
    ClientHello,
    HelloTooLarge,
    TlsError,
    hello_from_handshake,
    hello_from_records,
    looks_like_tls,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ssl_hello(server_name: str | None = "example.com", alpn: list[str] | None = None) -> bytes:
    """The first flight of a real OpenSSL client: TLS records carrying its ClientHello."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if server_name is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def ext(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body)) + body


def sni_ext(*names: bytes, kind: int = 0) -> bytes:
    entries = b"".join(struct.pack("!BH", kind, len(n)) + n for n in names)
    return ext(0, struct.pack("!H", len(entries)) + entries)


def alpn_ext(*ids: bytes) -> bytes:
    entries = b"".join(bytes([len(i)]) + i for i in ids)
    return ext(16, struct.pack("!H", len(entries)) + entries)


def build_hello(*extensions: bytes, with_extensions: bool = True) -> bytes:
    """A hand-built ClientHello handshake message (type, 3-byte length, body) with these extensions."""
    body = b"\x03\x03" + os.urandom(32) + b"\x20" + os.urandom(32)
    body += struct.pack("!H", 4) + b"\x13\x01\x13\x02" + b"\x01\x00"
    if with_extensions:
        exts = b"".join(extensions)
        body += struct.pack("!H", len(exts)) + exts
    return b"\x01" + len(body).to_bytes(3) + body


def rerecord(handshake: bytes, size: int) -> bytes:
    """The handshake bytes cut into TLS handshake records of at most ``size`` bytes each."""
    out = b""
    for i in range(0, len(handshake), size):
        frag = handshake[i : i + size]
        out += b"\x16\x03\x01" + struct.pack("!H", len(frag)) + frag
    return out


def handshake_of(records: bytes) -> bytes:
    """The handshake bytes inside a run of records."""
    out, pos = b"", 0
    while pos < len(records):
        n = struct.unpack_from("!H", records, pos + 3)[0]
        out += records[pos + 5 : pos + 5 + n]
        pos += 5 + n
    return out


def samples() -> list[bytes]:
    """Real first flights (records) to seed the fuzzer and the benchmark."""
    return [
        ssl_hello("example.com"),
        ssl_hello(None),
        ssl_hello("www.lab.test", ["h2", "http/1.1"]),
        rerecord(build_hello(sni_ext(b"front.example"), ext(0xFE0D, os.urandom(40))), 100),
    ]


# --------------------------------------------------------------------------------------------------
# real hellos


def test_real_hello_with_sni() -> None:
    data = ssl_hello("www.Example.com")
    assert looks_like_tls(data)
    assert hello_from_records(data) == ClientHello(server_name="www.example.com", ech=False, alpn=())


def test_real_hello_without_sni() -> None:
    assert hello_from_records(ssl_hello(None)) == ClientHello(server_name=None, ech=False)


def test_real_hello_with_alpn() -> None:
    hello = hello_from_records(ssl_hello("lab.test", ["h2", "http/1.1"]))
    assert hello == ClientHello(server_name="lab.test", ech=False, alpn=("h2", "http/1.1"))


def test_handshake_entry_reads_the_same_hello() -> None:
    data = ssl_hello("quic.lab.test", ["h3"])
    assert hello_from_handshake(handshake_of(data)) == hello_from_records(data)


def test_every_prefix_needs_more_and_every_two_way_split_reassembles() -> None:
    data = ssl_hello("split.example.org", ["h2"])
    want = hello_from_records(data)
    for k in range(len(data)):
        assert hello_from_records(data[:k]) is None
        stream = Reassembly()
        stream.add(k, data[k:])  # the second segment first: out of order
        assert hello_from_records(stream.prefix) is None or k == 0
        stream.add(0, data[:k])
        assert hello_from_records(stream.prefix) == want


def test_handshake_every_prefix_needs_more() -> None:
    hs = handshake_of(ssl_hello("a.example"))
    for k in range(len(hs)):
        assert hello_from_handshake(hs[:k]) is None
    assert hello_from_handshake(hs).server_name == "a.example"
    assert hello_from_handshake(hs + b"trailing").server_name == "a.example"


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 64, 250])
def test_hello_over_many_records_and_segments(size: int) -> None:
    hs = handshake_of(ssl_hello("records.example", ["h2", "http/1.1"]))
    data = rerecord(hs, size)
    assert data.count(b"\x16\x03\x01") >= len(hs) // size
    for k in range(0, len(data), 3):
        assert hello_from_records(data[:k]) is None
    stream = Reassembly(limit=64 * 1024)
    for off in reversed(range(0, len(data), 13)):  # 13-byte segments, last first
        stream.add(off, data[off : off + 13])
    assert hello_from_records(stream.prefix) == ClientHello("records.example", False, ("h2", "http/1.1"))


def test_bytes_after_the_hello_are_ignored() -> None:
    data = ssl_hello("x.example") + b"\x17\x03\x03\x00\x05hello"
    assert hello_from_records(data).server_name == "x.example"


# --------------------------------------------------------------------------------------------------
# Encrypted Client Hello and hand-built extensions


def test_ech_extension_detected() -> None:
    hs = build_hello(sni_ext(b"cloudflare-ech.com"), ext(0xFE0D, b"\x00" + os.urandom(60)), alpn_ext(b"h2"))
    hello = hello_from_handshake(hs)
    assert hello == ClientHello(server_name="cloudflare-ech.com", ech=True, alpn=("h2",))
    assert hello_from_records(rerecord(hs, 50)) == hello


def test_no_ech_without_the_extension() -> None:
    assert not hello_from_handshake(build_hello(sni_ext(b"a.b"), ext(0xFE0E, b""))).ech


def test_hello_without_extensions() -> None:
    assert hello_from_handshake(build_hello(with_extensions=False)) == ClientHello(None, False)


def test_non_host_name_entries_are_skipped() -> None:
    assert hello_from_handshake(build_hello(sni_ext(b"opaque", kind=7))).server_name is None


# --------------------------------------------------------------------------------------------------
# hostile names


def is_safe(text: str) -> bool:
    return (
        text.isascii() and text.isprintable() and not set(text) & set("<>&\"' ") and len(text) <= 4 * 255 + 3
    )


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (
            b"<script>alert(1)</script>",
            "\\x3cscript\\x3ealert\\x281\\x29\\x3c/script\\x3e".replace("/", "\\x2f"),
        ),
        (b"a\x00b\x1b[31m\x7f.example", "a\\x00b\\x1b\\x5b31m\\x7f.example"),
        ("bücher.de".encode(), "b\\xc3\\xbccher.de"),
        (b"back\\slash\"quote'", "back\\x5cslash\\x22quote\\x27"),
        (b"xn--bcher-kva.DE", "xn--bcher-kva.de"),
        (b"under_score.example", "under_score.example"),
    ],
)
def test_hostile_server_names_become_safe_text(raw: bytes, want: str) -> None:
    name = hello_from_handshake(build_hello(sni_ext(raw))).server_name
    assert name == want
    assert is_safe(name)


def test_over_long_server_name_is_capped() -> None:
    raw = b"a" * 63 + b"." + b"b" * 400
    name = hello_from_handshake(build_hello(sni_ext(raw))).server_name
    assert name == raw[:MAX_NAME].decode() + "..." and is_safe(name)
    hostile = hello_from_handshake(build_hello(sni_ext(b"\xff" * 1000))).server_name
    assert hostile == "\\xff" * MAX_NAME + "..." and is_safe(hostile)


def test_hostile_alpn_is_safe_text() -> None:
    hello = hello_from_handshake(build_hello(alpn_ext(b"h2", b"<b>", b"\x00\xff", b"HTTP/1.1")))
    assert hello.alpn == ("h2", "\\x3cb\\x3e", "\\x00\\xff", "HTTP/1.1")


# --------------------------------------------------------------------------------------------------
# broken and oversized


def test_oversized_hello_is_refused_before_its_bytes_arrive() -> None:
    header = b"\x01" + (MAX_HELLO + 1).to_bytes(3)
    with pytest.raises(HelloTooLarge):
        hello_from_handshake(header)
    with pytest.raises(HelloTooLarge):
        hello_from_records(b"\x16\x03\x01\x00\x04" + header)
    ok = b"\x01" + MAX_HELLO.to_bytes(3)
    assert hello_from_handshake(ok) is None  # exactly the limit: wait for the bytes
    assert issubclass(HelloTooLarge, TlsError)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x17\x03\x03\x00\x10" + b"x" * 16,  # application data
        b"\x15\x03\x03\x00\x02\x02\x28",  # an alert
        b"\x16\x02\x00\x00\x04\x01\x00\x00\x00",  # SSL 2 version
        b"\x16\x03\x01\x00\x00",  # empty record
        b"\x16\x03\x01\x50\x00",  # record longer than TLS allows
        b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",  # ServerHello, not ClientHello
        b"\x16",  # a first byte that fits, then
        b"\x16\x04",  # a version that does not
    ],
)
def test_not_a_client_hello(data: bytes) -> None:
    if len(data) > 2:
        assert not looks_like_tls(data) or data[0] == 0x16
    try:
        result = hello_from_records(data)
    except TlsError:
        return
    assert result is None and data == b"\x16"


def good_body() -> bytes:
    return build_hello(sni_ext(b"ok.example"), alpn_ext(b"h2"))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: h[:4] + h[4:38] + b"\x21" + h[39:],  # session id of 33 bytes
        lambda h: h[:4] + h[4:71] + b"\x00\x03" + h[73:],  # odd cipher suites length
        lambda h: h[:4] + h[4:71] + b"\x00\x00" + h[73:],  # no cipher suites
        lambda h: h + b"\x00",  # declared length shorter than the extensions' block: bytes after it
    ],
)
def test_malformed_structure(mutate) -> None:
    hs = mutate(good_body())
    body_len = len(hs) - 4
    hs = hs[:1] + body_len.to_bytes(3) + hs[4:]
    with pytest.raises(TlsError):
        hello_from_handshake(hs)


def test_lying_lengths() -> None:
    hs = good_body()
    for pos in range(4, len(hs)):
        for value in (0x00, 0xFF):
            broken = hs[:pos] + bytes([value]) + hs[pos + 1 :]
            try:
                result = hello_from_handshake(broken)
            except TlsError:
                continue
            assert result is None or isinstance(result, ClientHello)


def test_repeated_extensions_and_two_host_names_are_refused() -> None:
    with pytest.raises(TlsError):
        hello_from_handshake(build_hello(sni_ext(b"a.example"), sni_ext(b"b.example")))
    with pytest.raises(TlsError):
        hello_from_handshake(build_hello(sni_ext(b"a.example", b"b.example")))
    with pytest.raises(TlsError):
        hello_from_handshake(build_hello(sni_ext(b"")))
    with pytest.raises(TlsError):
        hello_from_handshake(build_hello(alpn_ext(b"")))


def test_looks_like_tls() -> None:
    assert looks_like_tls(ssl_hello("a.b"))
    assert looks_like_tls(b"\x16\x03\x00")
    assert not looks_like_tls(b"\x16\x03")
    assert not looks_like_tls(b"SSH-2.0-OpenSSH")
    assert not looks_like_tls(b"\x16\x03\x05")


# --------------------------------------------------------------------------------------------------
# property tests: only the documented outcomes, whatever the bytes


def check_records(data: bytes) -> None:
    try:
        result = hello_from_records(data)
    except TlsError:
        return
    assert result is None or isinstance(result, ClientHello)
    if result is not None and result.server_name is not None:
        assert is_safe(result.server_name)


def check_handshake(data: bytes) -> None:
    try:
        result = hello_from_handshake(data)
    except TlsError:
        return
    if result is not None and result.server_name is not None:
        assert is_safe(result.server_name)
        assert all(is_safe(a) or "/" in a for a in result.alpn)


@FAST
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    check_records(data)
    check_handshake(data)
    check_records(b"\x16\x03\x01" + data)
    check_handshake(b"\x01" + data)


REAL = [ssl_hello("fuzz.example", ["h2"]), rerecord(good_body(), 40)]


@FAST
@given(
    st.sampled_from(REAL),
    st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 700),
)
def test_mutated_real_hellos(base: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(base)
    for pos, value in flips:
        data[pos % len(data)] = value
    check_records(bytes(data))
    check_records(bytes(data[:cut]))
    hs = handshake_of(base)
    mutated = bytearray(hs)
    for pos, value in flips:
        mutated[pos % len(mutated)] = value
    check_handshake(bytes(mutated))


@FAST
@given(st.binary(max_size=600))
def test_any_server_name_bytes_give_safe_text(raw: bytes) -> None:
    name = safe_name(raw)
    assert is_safe(name)
    if raw:
        try:
            got = hello_from_handshake(build_hello(sni_ext(raw)))
        except TlsError:
            pytest.fail("a non-empty host name must parse")
        assert got.server_name == name


# --------------------------------------------------------------------------------------------------
# over a real TCP connection


def test_hello_read_from_a_real_tcp_connection() -> None:
    """An OpenSSL client connects over loopback; the listener reads the raw segments as they come
    (in whatever pieces the kernel delivers) until the hello decodes."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    port = listener.getsockname()[1]

    def client() -> None:
        ctx = ssl.create_default_context()
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with contextlib.suppress(OSError), ctx.wrap_socket(sock, server_hostname="tcp.lab.test"):
                pass  # the handshake fails when the listener closes: only the hello matters

    thread = threading.Thread(target=client)
    thread.start()
    try:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            stream = Reassembly()
            hello = None
            while hello is None:
                piece = conn.recv(100)  # small reads: the hello arrives in several pieces
                assert piece, "the client closed before its hello was complete"
                stream.add(stream.nbytes, piece)
                hello = hello_from_records(stream.prefix)
        assert stream.pieces > 1
        assert hello == ClientHello(server_name="tcp.lab.test", ech=False, alpn=("h2", "http/1.1"))
    finally:
        listener.close()
        thread.join(timeout=10)
