"""The packet path without the kernel: IP/TCP/UDP headers, TCP reassembly of ClientHellos, bounds.

The hellos are real ones (OpenSSL's, via :mod:`ssl`); only the IP packets around them are built
here. The kernel side (nft rules, NFLOG) is proved in test_capture_lab.py.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apviz.events import PrivateDnsRefused, ServerName, ServerNameVia
from apviz.sources.capture import (
    PREFIX_DNS,
    PREFIX_DOT_REFUSED,
    PREFIX_TLS,
    CaptureError,
    CaptureRules,
    CaptureTable,
)
from apviz.sources.packets import Malformed, PacketDecoder, parse_ip
from tests.packetkit import ACK, PSH, RST, SYN, client_hello, ip, logged, split, tcp, udp

PHONE, SERVER = "10.99.1.100", "198.18.1.10"
PHONE6, SERVER6 = "fd00::100", "2001:db8::10"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def decoder(**kwargs: object) -> tuple[PacketDecoder, Clock]:
    clock = Clock()
    return PacketDecoder(clock=clock, wall=lambda: 5.0, **kwargs), clock  # type: ignore[arg-type]


def hello_packets(
    name: str, pieces: int, *, src: str = PHONE, dst: str = SERVER, sport: int = 40000, isn: int = 1000
) -> list[bytes]:
    """SYN, then the hello in ``pieces`` segments (sequence numbers from ``isn`` + 1)."""
    out = [ip(src, dst, 6, tcp(sport, 443, isn, SYN))]
    for offset, chunk in split(client_hello(name), pieces):
        out.append(ip(src, dst, 6, tcp(sport, 443, (isn + 1 + offset) & 0xFFFFFFFF, ACK | PSH, chunk)))
    return out


def feed_all(dec: PacketDecoder, packets: list[bytes], prefix: str = PREFIX_TLS) -> list[object]:
    events: list[object] = []
    for packet in packets:
        events.extend(dec.feed(logged(prefix, packet)))
    return events


# --------------------------------------------------------------------------------------------------
# headers


def test_parse_ipv4_tcp() -> None:
    seg = parse_ip(ip(PHONE, SERVER, 6, tcp(40000, 443, 7, SYN)))
    assert (seg.src, seg.dst, seg.proto, seg.sport, seg.dport, seg.seq, seg.flags) == (
        PHONE, SERVER, 6, 40000, 443, 7, SYN,
    )  # fmt: skip
    assert seg.payload == b""


def test_parse_ipv6_udp_with_extension_header() -> None:
    seg = parse_ip(ip(PHONE6, SERVER6, 17, udp(5353, 53, b"hello"), ext=b"\x01\x04\0\0\0\0"))
    assert (seg.src, seg.dst, seg.proto, seg.sport, seg.dport, seg.payload) == (
        PHONE6, SERVER6, 17, 5353, 53, b"hello",
    )  # fmt: skip


def test_parse_trims_to_the_ip_length_and_tolerates_a_short_copy() -> None:
    packet = ip(PHONE, SERVER, 17, udp(1, 2, b"abcdef"))
    assert parse_ip(packet + b"trailer").payload == b"abcdef"  # Ethernet padding is not payload
    assert parse_ip(packet[:-2]).payload == b"abcd"  # a snaplen cut: what was copied


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x45" + bytes(10),
        ip(PHONE, SERVER, 6, tcp(1, 2, 3))[:30],  # truncated TCP header
        ip(PHONE, SERVER, 17, b"\0\0"),  # truncated UDP header
        ip(PHONE, SERVER, 1, b"\x08\0\0\0\0\0\0\0"),  # ICMP
        ip(PHONE, SERVER, 6, tcp(1, 2, 3), frag=0x2000),  # first fragment (more fragments)
        ip(PHONE, SERVER, 6, tcp(1, 2, 3), frag=0x0010),  # a later fragment
        bytes([0x70]) + bytes(60),  # IP version 7
        ip(PHONE6, SERVER6, 44, bytes(16)),  # IPv6 fragment header
    ],
)
def test_parse_refuses_what_it_cannot_use(packet: bytes) -> None:
    with pytest.raises(Malformed):
        parse_ip(packet)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=120))
def test_parse_never_raises_anything_else(data: bytes) -> None:
    for packet in (data, b"\x45" + data, b"\x60" + data):
        with contextlib.suppress(Malformed):
            parse_ip(packet)


# --------------------------------------------------------------------------------------------------
# TLS over TCP


def test_hello_split_over_four_segments() -> None:
    dec, _ = decoder()
    events = feed_all(dec, hello_packets("www.example.org", 4))
    assert events == [
        ServerName(5.0, PHONE, 40000, SERVER, 443, 6, "www.example.org", ServerNameVia.TLS, False, ())
    ]
    assert dec.counts["hellos"] == 1 and dec.in_progress == 0


def test_hello_out_of_order_with_retransmissions_and_sequence_wrap() -> None:
    dec, _ = decoder()
    packets = hello_packets("wrap.example.net", 6, isn=0xFFFFFF00)  # the sequence wraps inside the hello
    syn, data = packets[0], packets[1:]
    order = [syn, data[3], data[0], data[0], data[5], data[1], data[4], data[2]]
    events = feed_all(dec, order)
    assert [e.name for e in events] == ["wrap.example.net"]  # type: ignore[attr-defined]


def test_hello_without_the_syn_starts_at_the_first_payload() -> None:
    dec, _ = decoder()
    events = feed_all(dec, hello_packets("nosyn.example.org", 3)[1:])
    assert [e.name for e in events] == ["nosyn.example.org"]  # type: ignore[attr-defined]


def test_ipv6_hello_and_alpn() -> None:
    dec, _ = decoder()
    packets = [ip(PHONE6, SERVER6, 6, tcp(50000, 8443, 5, SYN))]
    packets.append(ip(PHONE6, SERVER6, 6, tcp(50000, 8443, 6, ACK, client_hello("v6.example", ("h2",)))))
    (event,) = feed_all(dec, packets)
    assert (event.client, event.sport, event.server, event.dport, event.alpn) == (  # type: ignore[attr-defined]
        PHONE6, 50000, SERVER6, 8443, ("h2",),
    )  # fmt: skip


def test_not_tls_is_given_up_at_once_and_later_packets_are_ignored() -> None:
    dec, _ = decoder()
    packets = [ip(PHONE, SERVER, 6, tcp(41000, 80, 1, SYN))]
    packets += [
        ip(PHONE, SERVER, 6, tcp(41000, 80, 2 + 100 * i, ACK, b"GET / HTTP/1.1\r\n".ljust(100)))
        for i in range(5)
    ]
    assert feed_all(dec, packets) == []
    assert dec.counts["not_tls"] == 1 and dec.in_progress == 0


def test_two_flows_interleaved_are_kept_apart() -> None:
    dec, _ = decoder()
    a = hello_packets("a.example", 3, sport=40001)
    b = hello_packets("b.example", 3, sport=40002, isn=1000)  # the same sequence numbers
    events = feed_all(dec, [p for pair in zip(a, b, strict=True) for p in pair])
    assert sorted((e.sport, e.name) for e in events) == [(40001, "a.example"), (40002, "b.example")]  # type: ignore[attr-defined]


def test_hostile_server_name_comes_out_as_safe_text() -> None:
    real = client_hello("aaaaaaaaaaaaaaaaaaaa.example")
    assert len(b"<img src=x>\x1b[2J\xff.evil.exampl") == 28
    hostile = real.replace(b"aaaaaaaaaaaaaaaaaaaa.example", b"<img src=x>\x1b[2J\xff.evil.exampl")
    dec, _ = decoder()
    packets = [
        ip(PHONE, SERVER, 6, tcp(40000, 443, 1, SYN)),
        ip(PHONE, SERVER, 6, tcp(40000, 443, 2, ACK, hostile)),
    ]
    (event,) = feed_all(dec, packets)
    assert event.name == "\\x3cimg\\x20src\\x3dx\\x3e\\x1b\\x5b2j\\xff.evil.exampl"  # type: ignore[attr-defined]


def test_oversized_hello_is_dropped_and_counted() -> None:
    dec, _ = decoder()
    header = bytes([0x16, 3, 1]) + (0x4000).to_bytes(2, "big") + bytes([1]) + (0x3FFC).to_bytes(3, "big")
    packets = [ip(PHONE, SERVER, 6, tcp(40000, 443, 1, SYN))]
    for i in range(14):  # 14 segments of 1400 bytes: the declared hello needs more than 16 KiB of stream
        chunk = (header + bytes(1400 - len(header))) if i == 0 else bytes(1400)
        packets.append(ip(PHONE, SERVER, 6, tcp(40000, 443, 2 + i * 1400, ACK, chunk)))
    assert feed_all(dec, packets) == []
    assert dec.counts["too_large"] == 1 and dec.in_progress == 0


def test_garbage_after_a_tls_start_is_counted_as_a_malformed_hello() -> None:
    dec, _ = decoder()
    bad = bytes([0x16, 3, 1, 0, 8, 2, 0, 0, 4, 0, 0, 0, 0])  # a handshake record holding a ServerHello
    packets = [
        ip(PHONE, SERVER, 6, tcp(40000, 443, 1, SYN)),
        ip(PHONE, SERVER, 6, tcp(40000, 443, 2, ACK, bad)),
    ]
    assert feed_all(dec, packets) == []
    assert dec.counts["malformed_hello"] == 1


def test_reset_and_pure_acks_are_harmless() -> None:
    dec, _ = decoder()
    packets = [ip(PHONE, SERVER, 6, tcp(40000, 443, 1, SYN)), ip(PHONE, SERVER, 6, tcp(40000, 443, 2, ACK))]
    packets.append(ip(PHONE, SERVER, 6, tcp(40000, 443, 2, RST)))
    assert feed_all(dec, packets) == []
    assert dec.in_progress == 1  # waiting for the hello, until it is too old


# --------------------------------------------------------------------------------------------------
# bounds


def test_unfinished_streams_expire_and_are_counted() -> None:
    dec, clock = decoder(max_age=2.0)
    first_half = hello_packets("slow.example", 2)[:2]
    feed_all(dec, first_half)
    assert dec.in_progress == 1
    clock.now += 2.5
    dec.expire(clock())
    assert dec.in_progress == 0 and dec.counts["expired"] == 1
    assert (
        feed_all(dec, hello_packets("slow.example", 2)[2:]) == []
    )  # the rest alone does not start with 0x16


def test_streams_in_progress_are_capped() -> None:
    dec, _ = decoder(max_flows=10)
    for port in range(20):
        dec.feed(logged(PREFIX_TLS, ip(PHONE, SERVER, 6, tcp(30000 + port, 443, 1, SYN))))
    assert dec.in_progress == 10 and dec.counts["flows_full"] == 10
    # a finished flow still takes its place until it is old: the cap also bounds the finished entries
    assert len(dec._streams) == 10


def test_random_segments_never_crash_the_decoder() -> None:
    rng = random.Random(11)
    dec, clock = decoder(max_flows=64)
    hello = client_hello("fuzz.example")
    for _ in range(3000):
        sport = rng.randrange(40000, 40040)
        offset = rng.randrange(0, len(hello))
        chunk = bytearray(hello[offset : offset + rng.randrange(1, 300)])
        for _ in range(rng.randrange(0, 3)):
            if chunk:
                chunk[rng.randrange(len(chunk))] = rng.randrange(256)
        flags = rng.choice([ACK, ACK | PSH, SYN, RST])
        dec.feed(
            logged(
                PREFIX_TLS, ip(PHONE, SERVER, 6, tcp(sport, 443, rng.randrange(2**32), flags, bytes(chunk)))
            )
        )
        clock.now += 0.01
    assert dec.counts["packets"] == 3000
    assert len(dec._streams) <= 64


# --------------------------------------------------------------------------------------------------
# prefixes


def test_refused_private_dns_is_one_event_per_retry_window() -> None:
    dec, clock = decoder()
    syn = ip(PHONE, "198.18.0.77", 6, tcp(45000, 853, 1, SYN))
    events = feed_all(dec, [syn, syn, syn], PREFIX_DOT_REFUSED)
    assert events == [PrivateDnsRefused(5.0, PHONE, "198.18.0.77", 6, 853)]
    clock.now += 3
    assert len(feed_all(dec, [syn], PREFIX_DOT_REFUSED)) == 1


def test_unknown_prefix_and_wrong_protocol_are_counted_not_decoded() -> None:
    dec, _ = decoder()
    dec.feed(logged("someone-else", ip(PHONE, SERVER, 6, tcp(1, 2, 3, SYN))))
    dec.feed(logged(PREFIX_TLS, ip(PHONE, SERVER, 17, udp(1, 2, b"x"))))
    assert dec.counts["other"] == 2
    dec.feed(logged(PREFIX_DNS, b"\x45garbage"))
    assert dec.counts["malformed"] == 1


# --------------------------------------------------------------------------------------------------
# the table's text and nft's absence


def test_without_nft_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no nft, no ip
    with pytest.raises(CaptureError, match=r"apt install nftables.*capture = false"):
        CaptureTable("avlb0000-gw", CaptureRules()).install()


def test_ruleset_only_logs_and_replaces_a_leftover_first() -> None:
    text = CaptureRules(group=7401, tcp_packets=6).ruleset()
    lines = text.splitlines()
    assert lines[:2] == ["table inet apviz_capture", "delete table inet apviz_capture"]
    rules = [line.strip() for line in lines if " log " in line]
    assert len(rules) == 7
    assert all("group 7401" in r and "ct " in r and " packets 1-" in r for r in rules)
    verdicts = ("accept", "drop", "reject", "queue", "jump", "goto", "return")
    assert not any(word in r.split() for r in rules for word in verdicts)
    assert "policy accept;" in text and "hook forward" in text
    assert any("ct original packets 1-6" in r for r in rules)
    # TCP data is copied only until the server answers: the hello, not the requests after it.
    tls_rules = [r for r in rules if "apviz-tls" in r or "apviz-quic" in r]
    assert len(tls_rules) == 3 and all("ct reply bytes < 1024" in r for r in tls_rules)


def test_a_later_quic_initial_with_the_servers_connection_id_is_not_malformed(tmp_path: Path) -> None:
    """After the server answered, the client's Initials carry the server's connection id: their keys
    come from the first id, which an observer of that packet alone cannot know. They are counted
    apart (the capture rules do not even copy them: see the ruleset test), not as malformed."""
    import time

    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    from apviz.lab.ca import make_ca
    from apviz.sources.capture import PREFIX_QUIC

    ca = make_ca(tmp_path, ["quic.example.org"])
    client_cfg = QuicConfiguration(is_client=True, server_name="quic.example.org", alpn_protocols=["x"])
    client_cfg.load_verify_locations(str(ca.ca_cert))
    server_cfg = QuicConfiguration(is_client=False, alpn_protocols=["x"])
    server_cfg.load_cert_chain(str(ca.cert), str(ca.key))
    now = time.time()
    client = QuicConnection(configuration=client_cfg)
    client.connect((SERVER, 443), now=now)
    first = [d for d, _ in client.datagrams_to_send(now=now)]
    dec = PacketDecoder()
    events = feed_all(dec, [ip(PHONE, SERVER, 17, udp(50000, 443, d)) for d in first], PREFIX_QUIC)
    assert [e.name for e in events] == ["quic.example.org"]  # type: ignore[attr-defined]
    server = None
    for d in first:
        server = server or QuicConnection(
            configuration=server_cfg, original_destination_connection_id=d[6 : 6 + d[5]]
        )
        server.receive_datagram(d, (PHONE, 50000), now=now)
    assert server is not None
    for d, _ in server.datagrams_to_send(now=now):
        client.receive_datagram(d, (SERVER, 443), now=now)
    later = [d for d, _ in client.datagrams_to_send(now=now) if d[0] & 0x80 and len(d) >= 1200]
    assert later, "the client's second flight has a padded Initial"
    feed_all(dec, [ip(PHONE, SERVER, 17, udp(50000, 443, d)) for d in later], PREFIX_QUIC)
    assert dec.counts["quic_later_initials"] == len(later) and dec.counts["malformed_quic"] == 0
    # The same datagram from a connection never seen before is malformed (nothing explains it).
    feed_all(dec, [ip(PHONE, SERVER, 17, udp(50001, 443, later[0]))], PREFIX_QUIC)
    assert dec.counts["malformed_quic"] == 1
