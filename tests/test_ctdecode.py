"""The ctnetlink decoder against the real kernel (``conntrack -L`` is the reference) and garbage."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apviz.events import Flow, FlowEventKind
from apviz.sources.conntrack import open_socket
from apviz.sources.ctdecode import (
    CT_DELETE_TYPE,
    CT_NEW_TYPE,
    GROUP_DESTROY,
    GROUP_NEW,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLMSG_DONE,
    CtDecoder,
    dump_request,
)
from tests.ctlab import CtLine, CtNamespace, CtTuple

# --------------------------------------------------------------------------------------------------
# traffic generators, run inside the namespace

TRAFFIC = r"""
import socket, struct, time

def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF

# UDP, IPv4 and IPv6 (the reply from the closed port makes no entry of its own)
for family, addr in ((socket.AF_INET, "198.18.3.7"), (socket.AF_INET6, "::1")):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.sendto(b"hello", (addr, 5353))
    s.sendto(b"again!", (addr, 5353))
# ICMP echo, IPv4 (checksum by hand) and IPv6 (the kernel sums it)
icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
head = struct.pack("!BBHHH", 8, 0, 0, 0x4242, 1)
icmp.sendto(struct.pack("!BBHHH", 8, 0, checksum(head + b"ping"), 0x4242, 1) + b"ping", ("198.18.3.9", 0))
icmp6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
icmp6.sendto(struct.pack("!BBHHH", 128, 0, 0, 0x4343, 1) + b"ping", ("::1", 0))
# TCP, IPv4 and IPv6, left ESTABLISHED
keep = []
for family, addr in ((socket.AF_INET, "198.18.3.8"), (socket.AF_INET6, "::1")):
    server = socket.socket(family, socket.SOCK_STREAM)
    server.bind((addr, 8080))
    server.listen()
    client = socket.create_connection((addr, 8080))
    peer, _ = server.accept()
    client.sendall(b"GET / HTTP/1.0\r\n\r\n")
    peer.recv(100)
    peer.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
    client.recv(100)
    keep += [server, client, peer]
time.sleep(0.3)  # let ICMP replies and TCP ACKs settle before the dump
print("ready", flush=True)
import sys
sys.stdin.read()  # hold the TCP connections open until the test is done
"""


def capture_dump(netns: str) -> list[bytes]:
    """The raw datagrams of one ctnetlink dump, framed by hand (independently of the decoder)."""
    chunks: list[bytes] = []
    with open_socket(netns) as sock:
        sock.settimeout(10)
        sock.send(dump_request())
        while True:
            data = sock.recv(1 << 18)
            chunks.append(data)
            off = 0
            while off + 16 <= len(data):
                length, mtype = struct.unpack_from("=IH", data, off)
                if mtype in (NLMSG_DONE, 2):  # done, or an error reply
                    return chunks
                off += (length + 3) & ~3


def decode_all(chunks: list[bytes]) -> tuple[list[Flow], CtDecoder]:
    decoder = CtDecoder()
    flows: list[Flow] = []
    for chunk in chunks:
        decoder.decode_flows(chunk, len(chunk), flows)
    return flows, decoder


def assert_tuple(ours: object, ref: CtTuple, icmp_side: str) -> None:
    assert ours.proto == ref.proto  # type: ignore[attr-defined]
    assert ours.src == ref.src and ours.dst == ref.dst  # type: ignore[attr-defined]
    if ref.proto in (1, 58):  # the echo id sits where the ports would be, mirrored in the reply
        expected = (ref.icmp_id, 0) if icmp_side == "orig" else (0, ref.icmp_id)
        assert (ours.sport, ours.dport) == expected  # type: ignore[attr-defined]
    else:
        assert (ours.sport, ours.dport) == (ref.sport, ref.dport)  # type: ignore[attr-defined]


def assert_matches(flow: Flow, ref: CtLine) -> None:
    assert flow.family == ref.family
    assert_tuple(flow.orig, ref.orig, "orig")
    assert_tuple(flow.reply, ref.reply, "reply")
    assert flow.tcp_state == ref.state
    assert abs((flow.timeout or 0) - ref.timeout) <= 2
    assert flow.mark == ref.mark and flow.zone == ref.zone
    assert bool(flow.status & 2) == ("UNREPLIED" not in ref.flags)  # IPS_SEEN_REPLY
    assert bool(flow.status & 4) == ("ASSURED" in ref.flags)
    if ref.orig.packets is not None:
        assert (flow.orig_packets, flow.orig_bytes) == (ref.orig.packets, ref.orig.bytes)
        assert (flow.reply_packets, flow.reply_bytes) == (ref.reply.packets, ref.reply.bytes)


@pytest.fixture
def ns() -> object:
    with CtNamespace() as namespace:
        yield namespace


@pytest.fixture
def traffic(ns: CtNamespace) -> object:
    """Leave UDP, ICMP and TCP entries for IPv4 and IPv6 in the table while the test runs."""
    import subprocess

    proc = subprocess.Popen(ns.python_cmd(TRAFFIC), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()  # our own child, by its Popen handle
        proc.wait()


# --------------------------------------------------------------------------------------------------
# against the kernel


@pytest.mark.lab
def test_dump_matches_conntrack_listing(ns: CtNamespace, traffic: object) -> None:
    ns.flood(300)
    reference = ns.listing()
    flows, decoder = decode_all(capture_dump(ns.name))
    assert decoder.errors == 0 and decoder.done and decoder.error == 0
    by_id = {flow.id: flow for flow in flows}
    assert len(by_id) == len(flows), "duplicate ids"
    assert set(by_id) == set(reference)
    for ct_id, ref in reference.items():
        assert_matches(by_id[ct_id], ref)
    kinds = {(f.family, f.orig.proto) for f in flows}
    for family in (socket.AF_INET, socket.AF_INET6):
        for proto in (6, 17):
            assert (family, proto) in kinds
    assert (socket.AF_INET, 1) in kinds and (socket.AF_INET6, 58) in kinds
    tcp = [f for f in flows if f.orig.proto == 6]
    assert {f.tcp_state for f in tcp} == {"ESTABLISHED"}
    v6 = next(f for f in flows if f.family == socket.AF_INET6 and f.orig.proto == 17)
    assert (
        v6.orig.src == "::1"
        and v6.orig.dport == 5353
        and (v6.orig_packets, v6.orig_bytes) == (2, 2 * 48 + 11)
    )
    assert not any(f.snat or f.dnat for f in flows)


@pytest.mark.lab
def test_nat_is_seen_in_the_reply_tuple(ns: CtNamespace) -> None:
    ns.nft("add table ip avnat")
    ns.nft("add chain ip avnat out { type nat hook output priority -100 ; }")
    ns.nft("add chain ip avnat post { type nat hook postrouting priority 100 ; }")
    ns.nft("add rule ip avnat out ip daddr 198.18.6.1 udp dport 53 dnat to 198.18.6.2:5353")
    ns.nft("add rule ip avnat post ip daddr 198.18.7.0/24 snat to 10.99.0.1")
    ns.python(
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for dst in (('198.18.6.1', 53), ('198.18.7.1', 9999), ('198.18.8.1', 1)): s.sendto(b'q', dst)\n"
    )
    reference = ns.listing()
    flows, decoder = decode_all(capture_dump(ns.name))
    assert decoder.errors == 0
    by_dst = {f.orig.dst: f for f in flows}
    dnat, snat, plain = by_dst["198.18.6.1"], by_dst["198.18.7.1"], by_dst["198.18.8.1"]
    assert dnat.dnat and not dnat.snat and (dnat.reply.src, dnat.reply.sport) == ("198.18.6.2", 5353)
    assert snat.snat and not snat.dnat and snat.reply.dst == "10.99.0.1"
    assert not plain.snat and not plain.dnat
    assert dnat.status & 0x20 and snat.status & 0x10  # IPS_DST_NAT, IPS_SRC_NAT
    for flow in flows:
        assert_matches(flow, reference[flow.id])


@pytest.mark.lab
def test_counters_and_timestamps(ns: CtNamespace) -> None:
    before = time.time_ns()
    ns.python(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for _ in range(7): s.sendto(b'x' * 100, ('198.18.9.9', 7777))\n"
    )
    after = time.time_ns()
    (flow,) = [f for f in decode_all(capture_dump(ns.name))[0] if f.orig.dst == "198.18.9.9"]
    assert (flow.orig_packets, flow.orig_bytes) == (7, 7 * 128)
    assert flow.start_ns is not None and before - 10**9 <= flow.start_ns <= after + 10**9
    assert flow.stop_ns is None


@pytest.mark.lab
def test_without_acct_and_timestamp() -> None:
    with CtNamespace(acct=False, timestamp=False) as ns:
        ns.flood(5)
        flows, decoder = decode_all(capture_dump(ns.name))
    assert len(flows) == 5 and decoder.errors == 0
    assert all(f.orig_packets == f.orig_bytes == 0 and f.start_ns is None for f in flows)


@pytest.mark.lab
def test_event_messages_new_and_destroy(ns: CtNamespace) -> None:
    with open_socket(ns.name) as sock:
        sock.bind((0, GROUP_NEW | GROUP_DESTROY))
        sock.settimeout(5)
        ns.python(
            "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('198.18.5.5', 53))"
        )
        ns.conntrack("-D", "-d", "198.18.5.5")
        raw = [sock.recv(65536), sock.recv(65536)]
    assert struct.unpack_from("=H", raw[0], 4)[0] == CT_NEW_TYPE
    assert struct.unpack_from("=H", raw[0], 6)[0] & (NLM_F_CREATE | NLM_F_EXCL) == NLM_F_CREATE | NLM_F_EXCL
    assert struct.unpack_from("=H", raw[1], 4)[0] == CT_DELETE_TYPE
    decoder = CtDecoder()
    (new,) = decoder.decode(raw[0])
    (gone,) = decoder.decode(raw[1])
    assert new[0] is FlowEventKind.NEW and gone[0] is FlowEventKind.DESTROY
    assert new[1].id == gone[1].id and new[1].orig == gone[1].orig
    assert gone[1].stop_ns is not None and gone[1].stop_ns >= (gone[1].start_ns or 0)
    assert decoder.errors == 0


# --------------------------------------------------------------------------------------------------
# synthetic messages (no root needed)


def nla(atype: int, payload: bytes, nested: bool = False) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), atype | (0x8000 if nested else 0)) + payload
    return data + b"\0" * (-len(data) % 4)


def ct_tuple(src: bytes, dst: bytes, proto: bytes) -> bytes:
    v6 = len(src) == 16
    ip = nla(3 if v6 else 1, src) + nla(4 if v6 else 2, dst)
    return nla(1, ip, nested=True) + nla(2, proto, nested=True)


def message(attrs: bytes, mtype: int = CT_NEW_TYPE, flags: int = 0, family: int = socket.AF_INET) -> bytes:
    body = struct.pack("=BBH", family, 0, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), mtype, flags, 0, 0) + body


def sample_messages() -> list[bytes]:
    """An IPv6 ICMPv6 echo with 32-bit counters, and an IPv4 TCP entry with every field."""
    lo6 = socket.inet_pton(socket.AF_INET6, "fd00::1")
    icmp_proto = nla(1, b"\x3a") + nla(7, struct.pack("!H", 77)) + nla(8, b"\x80") + nla(9, b"\0")
    reply_proto = nla(1, b"\x3a") + nla(7, struct.pack("!H", 77)) + nla(8, b"\x81") + nla(9, b"\0")
    v6 = message(
        nla(1, ct_tuple(lo6, lo6, icmp_proto), nested=True)
        + nla(2, ct_tuple(lo6, lo6, reply_proto), nested=True)
        + nla(9, nla(3, struct.pack("!I", 3)) + nla(4, struct.pack("!I", 300)), nested=True)
        + nla(12, struct.pack("!I", 0xDEADBEEF)),
        mtype=CT_DELETE_TYPE,
        family=socket.AF_INET6,
    )
    a, b = socket.inet_aton("10.0.0.2"), socket.inet_aton("198.18.0.1")
    tcp = nla(1, b"\x06") + nla(2, struct.pack("!H", 40000)) + nla(3, struct.pack("!H", 443))
    rtcp = nla(1, b"\x06") + nla(2, struct.pack("!H", 443)) + nla(3, struct.pack("!H", 40000))
    v4 = message(
        nla(1, ct_tuple(a, b, tcp), nested=True)
        + nla(2, ct_tuple(b, a, rtcp), nested=True)
        + nla(3, struct.pack("!I", 0x18E))
        + nla(4, nla(1, nla(1, b"\x03") + nla(2, b"\x07"), nested=True), nested=True)
        + nla(7, struct.pack("!I", 431999))
        + nla(8, struct.pack("!I", 42))
        + nla(9, nla(1, struct.pack("!Q", 10)) + nla(2, struct.pack("!Q", 1000)), nested=True)
        + nla(10, nla(1, struct.pack("!Q", 8)) + nla(2, struct.pack("!Q", 9000)), nested=True)
        + nla(12, struct.pack("!I", 12345))
        + nla(18, struct.pack("!H", 3))
        + nla(20, nla(1, struct.pack("!Q", 1_700_000_000 * 10**9)), nested=True)
        + nla(99, b"unknown attribute"),
        flags=NLM_F_CREATE | NLM_F_EXCL,
    )
    return [v6, v4]


def test_synthetic_messages() -> None:
    decoder = CtDecoder()
    buf = b"".join(sample_messages())
    for _ in range(2):  # once learning the layouts, once through the templates
        (kind6, f6), (kind4, f4) = decoder.decode(buf)
        assert kind6 is FlowEventKind.DESTROY and kind4 is FlowEventKind.NEW
        assert f6.family == socket.AF_INET6 and f6.id == 0xDEADBEEF
        assert (f6.orig.proto, f6.orig.src, f6.orig.sport, f6.orig.dport) == (58, "fd00::1", 77, 0)
        assert (f6.reply.sport, f6.reply.dport) == (0, 77) and not f6.snat and not f6.dnat
        assert (f6.orig_packets, f6.orig_bytes) == (3, 300)
        assert f4.tcp_state == "ESTABLISHED" and f4.status == 0x18E and f4.timeout == 431999
        assert (f4.mark, f4.zone, f4.id) == (42, 3, 12345)
        assert (f4.orig_packets, f4.orig_bytes, f4.reply_packets, f4.reply_bytes) == (10, 1000, 8, 9000)
        assert f4.start_ns == 1_700_000_000 * 10**9 and f4.stop_ns is None
        assert (f4.orig.src, f4.orig.dport, f4.reply.src) == ("10.0.0.2", 443, "198.18.0.1")
    assert decoder.errors == 0


def test_update_and_done_and_error() -> None:
    decoder = CtDecoder()
    v4 = sample_messages()[1]
    update = v4[:6] + struct.pack("=H", 0) + v4[8:]
    done = struct.pack("=IHHIIi", 20, NLMSG_DONE, 2, 0, 0, 0)
    [(kind, _)] = decoder.decode(update + done)
    assert kind is FlowEventKind.UPDATE and decoder.done and decoder.error == 0
    decoder.decode(struct.pack("=IHHIIi", 36, 2, 0, 0, 0, -1) + b"\0" * 16)  # NLMSG_ERROR EPERM
    assert decoder.error == 1


# --------------------------------------------------------------------------------------------------
# garbage never raises, and is counted


def checked_decode(data: bytes) -> tuple[CtDecoder, int]:
    decoder = CtDecoder()
    for _ in range(2):  # the second pass goes through any template learned in the first
        result = decoder.decode(data)
        flows = decoder.decode_flows(memoryview(data))
        assert len(result) == len(flows)
    return decoder, len(flows)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_never_raise_and_are_counted(data: bytes) -> None:
    decoder, n_flows = checked_decode(data)
    accounted = decoder.errors + decoder.ignored + n_flows + decoder.done + bool(decoder.error)
    assert accounted > 0 or not data


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_truncated_messages_are_counted(data: st.DataObject) -> None:
    whole = b"".join(sample_messages())
    cut = data.draw(st.integers(min_value=1, max_value=len(whole) - 1))
    first = len(sample_messages()[0])
    decoder = CtDecoder()
    events = decoder.decode(whole[:cut])
    assert decoder.errors == (0 if cut == first else 1)  # a cut between two messages is no error
    assert len(events) == (1 if cut >= first else 0)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_corrupted_messages_never_raise(data: st.DataObject) -> None:
    raw = bytearray(b"".join(sample_messages()))
    for _ in range(data.draw(st.integers(min_value=1, max_value=8))):
        raw[data.draw(st.integers(min_value=0, max_value=len(raw) - 1))] = data.draw(st.integers(0, 255))
    checked_decode(bytes(raw))
