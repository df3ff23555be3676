"""Synthetic IP packets for the packet-path tests: IPv4/IPv6 with TCP or UDP, as NFLOG copies them.

Checksums are left zero: the decoder never reads them (the kernel already judged the packet).
"""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
import struct

from apviz.sources.nflog import ETH_P_IP, ETH_P_IPV6, LoggedPacket

SYN, ACK, PSH, RST = 0x02, 0x10, 0x08, 0x04


def ip(src: str, dst: str, proto: int, l4: bytes, *, ext: bytes = b"", frag: int = 0) -> bytes:
    """An IPv4 or IPv6 header (by the address family) around ``l4``; ``ext`` goes after an IPv6 header
    as one hop-by-hop option header (it must be 6 bytes long to make 8 with its two-byte head)."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        return (
            struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, frag, 64, proto, 0, s.packed, d.packed)
            + l4
        )
    if ext:
        body = bytes([proto, 0]) + ext + l4
        return struct.pack("!IHBB16s16s", 0x60000000, len(body), 0, 64, s.packed, d.packed) + body
    return struct.pack("!IHBB16s16s", 0x60000000, len(l4), proto, 64, s.packed, d.packed) + l4


def tcp(
    sport: int, dport: int, seq: int, flags: int = ACK | PSH, payload: bytes = b"", ack: int = 0
) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def logged(prefix: str, packet: bytes) -> LoggedPacket:
    return LoggedPacket(prefix, ETH_P_IP if packet[0] >> 4 == 4 else ETH_P_IPV6, packet)


def client_hello(server_name: str, alpn: tuple[str, ...] = ()) -> bytes:
    """A real ClientHello (TLS records) written by OpenSSL for ``server_name``."""
    ctx = ssl.create_default_context()
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def split(data: bytes, pieces: int) -> list[tuple[int, bytes]]:
    """``data`` cut into ``pieces`` (offset, bytes) parts."""
    step = -(-len(data) // pieces)
    return [(i, data[i : i + step]) for i in range(0, len(data), step)]
