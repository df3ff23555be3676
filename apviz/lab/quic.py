"""QUIC in the lab (aioquic): the line protocol of ``apviz.lab.internet`` carried on QUIC streams.

Phones open real QUIC v1 connections (TLS 1.3, SNI in the Initial packet) so the gateway sees what it
sees from a real phone's YouTube or Instagram. Both ends drive ``aioquic.quic.connection.QuicConnection``
directly instead of aioquic's asyncio ``serve()``/``connect()``:

- the server's one socket answers every address of 198.18.0.0/15 (a ``local`` route), and a reply must
  leave from the address the phone sent to or the gateway's conntrack never matches it; ``serve()``
  replies from whatever the routing table picks, so here IP_PKTINFO names the source of each datagram;
- the phone is a blocking thread per action, which a short synchronous loop over a connected UDP socket
  suits better than an event loop per connection (and it knows its source port before sending).

One stream per exchange: the phone writes ``PUT <n>\\n`` + n bytes and/or ``GET <n>\\n`` and ends the
stream; the server answers ``OK <n>\\n`` and the n bytes in order, then ends its side.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.packet_builder import QuicPacketBuilderStop

ALPN = ["h3"]  # what real phones offer on UDP 443; the payload is the lab's line protocol all the same
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
PKTINFO = struct.Struct("I4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr
CHUNK = bytes(range(256)) * 256
MAX_CONNECTIONS = 4096  # new Initials beyond this are dropped (and counted): the server's memory is bounded
MAX_TRANSFER = 64 << 20  # a GET/PUT larger than this on QUIC is refused (aioquic buffers a stream whole)
SMALLEST_INITIAL = 1200  # RFC 9000 14.1: a client's Initial datagram is at least this long


def server_configuration(cert: Path, key: Path) -> QuicConfiguration:
    config = QuicConfiguration(is_client=False, alpn_protocols=ALPN, idle_timeout=30.0)
    config.load_cert_chain(str(cert), str(key))
    return config


def client_configuration(server_name: str | None, ca: Path | None) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=True, alpn_protocols=ALPN, server_name=server_name, idle_timeout=10.0
    )
    if ca is not None:
        config.load_verify_locations(cafile=str(ca))
    else:
        config.verify_mode = ssl.CERT_NONE
    return config


# --------------------------------------------------------------------------------------------------
# Server (runs in the internet namespace's event loop)


@dataclass(slots=True)
class _Stream:
    """Parser state of one stream's requests."""

    buf: bytearray = field(default_factory=bytearray)
    put_left: int = 0
    put_size: int = 0
    closed: bool = False


@dataclass(slots=True)
class _Conn:
    quic: QuicConnection
    local: bytes  # the 4-byte address the phone sent to: every reply leaves from it
    streams: dict[int, _Stream] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


class QuicServer:
    """Serve the line protocol over QUIC on one wildcard UDP socket, replying from the right address."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, configuration: QuicConfiguration
    ) -> None:
        """``sock``: a bound, non-blocking UDP socket with IP_PKTINFO on (datagrams that arrived
        before this server existed are waiting in it and get served)."""
        self.loop = loop
        self.configuration = configuration
        self.conns: dict[tuple[bytes, tuple[str, int]], _Conn] = {}
        self.counters = {"connections": 0, "dropped": 0, "bad_packets": 0}
        self.sock = sock
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        touched: dict[tuple[bytes, tuple[str, int]], _Conn] = {}
        for _ in range(256):  # yield to the loop now and then under a flood
            try:
                data, ancillary, _flags, addr = self.sock.recvmsg(65535, socket.CMSG_SPACE(PKTINFO.size))
            except (BlockingIOError, InterruptedError):
                break
            local = b""
            for level, kind, cdata in ancillary:
                if level == socket.SOL_IP and kind == IP_PKTINFO and len(cdata) >= PKTINFO.size:
                    local = PKTINFO.unpack(cdata[: PKTINFO.size])[2]
            if not local:
                continue
            key = (local, addr)
            conn = self.conns.get(key) or self._accept(data, local, addr)
            if conn is None:
                continue
            conn.quic.receive_datagram(data, addr, now=self.loop.time())
            touched[key] = conn
        for key, conn in touched.items():
            self._process(key, conn)

    def _accept(self, data: bytes, local: bytes, addr: tuple[str, int]) -> _Conn | None:
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self.configuration.connection_id_length
            )
        except ValueError:
            self.counters["bad_packets"] += 1
            return None
        if header.packet_type == QuicPacketType.VERSION_NEGOTIATION:
            return None
        if header.version is not None and header.version not in self.configuration.supported_versions:
            packet = encode_quic_version_negotiation(
                source_cid=header.destination_cid,
                destination_cid=header.source_cid,
                supported_versions=self.configuration.supported_versions,
            )
            self._send(packet, local, addr)
            return None
        if header.packet_type != QuicPacketType.INITIAL or len(data) < SMALLEST_INITIAL:
            self.counters["bad_packets"] += 1
            return None
        if len(self.conns) >= MAX_CONNECTIONS:
            self.counters["dropped"] += 1
            return None
        quic = QuicConnection(
            configuration=self.configuration, original_destination_connection_id=header.destination_cid
        )
        conn = _Conn(quic=quic, local=local)
        self.conns[(local, addr)] = conn
        self.counters["connections"] += 1
        return conn

    def _process(self, key: tuple[bytes, tuple[str, int]], conn: _Conn) -> None:
        ended = False
        while (event := conn.quic.next_event()) is not None:
            if isinstance(event, StreamDataReceived):
                self._stream_data(conn, event)
            elif isinstance(event, ConnectionTerminated):
                ended = True
        try:
            datagrams = conn.quic.datagrams_to_send(now=self.loop.time())
        except QuicPacketBuilderStop:  # see _datagrams: a close that does not fit ends it silently
            datagrams, ended = [], True
        for data, addr in datagrams:
            self._send(data, conn.local, addr)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if ended:
            self.conns.pop(key, None)
            return
        deadline = conn.quic.get_timer()
        if deadline is not None:
            conn.timer = self.loop.call_at(deadline, self._on_timer, key)

    def _on_timer(self, key: tuple[bytes, tuple[str, int]]) -> None:
        conn = self.conns.get(key)
        if conn is not None:
            conn.timer = None
            conn.quic.handle_timer(now=self.loop.time())
            self._process(key, conn)

    def _stream_data(self, conn: _Conn, event: StreamDataReceived) -> None:
        stream = conn.streams.setdefault(event.stream_id, _Stream())
        if stream.closed:
            return
        stream.buf += event.data
        send = conn.quic.send_stream_data
        while stream.buf and not stream.closed:
            if stream.put_left:
                take = min(stream.put_left, len(stream.buf))
                del stream.buf[:take]
                stream.put_left -= take
                if not stream.put_left:
                    send(event.stream_id, b"OK %d\n" % stream.put_size)
                continue
            line, sep, rest = bytes(stream.buf).partition(b"\n")
            if not sep:
                if len(stream.buf) > 256:  # no request line is that long
                    stream.closed = True
                    send(event.stream_id, b"ERR\n", end_stream=True)
                break
            stream.buf = bytearray(rest)
            parts = line.split()
            ok = len(parts) == 2 and parts[1].isdigit() and int(parts[1]) <= MAX_TRANSFER
            if ok and parts[0] == b"GET":
                n = int(parts[1])
                while n > 0:
                    piece = CHUNK if n >= len(CHUNK) else CHUNK[:n]
                    send(event.stream_id, piece)
                    n -= len(piece)
            elif ok and parts[0] == b"PUT":
                stream.put_size = stream.put_left = int(parts[1])
                if not stream.put_left:
                    send(event.stream_id, b"OK 0\n")
            else:
                stream.closed = True
                send(event.stream_id, b"ERR\n", end_stream=True)
        if event.end_stream and not stream.closed:
            stream.closed = True
            send(event.stream_id, b"", end_stream=True)
        if stream.closed:
            stream.buf.clear()  # the entry stays (tiny) so late data on a finished stream is ignored

    def _send(self, data: bytes, local: bytes, addr: tuple[str, int]) -> None:
        cmsg = [(socket.SOL_IP, IP_PKTINFO, PKTINFO.pack(0, local, bytes(4)))]
        with contextlib.suppress(OSError):
            self.sock.sendmsg([data], cmsg, 0, addr)

    def close(self) -> None:
        for conn in self.conns.values():
            if conn.timer is not None:
                conn.timer.cancel()
        self.conns.clear()
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


# --------------------------------------------------------------------------------------------------
# Client (a phone's blocking thread)


@dataclass(slots=True)
class QuicExchange:
    """The outcome of one client exchange; ``close`` ends the connection (now or after a hold)."""

    src: str
    sport: int
    sent: int
    received: int
    close: Callable[[], None]


def exchange(
    address: str,
    port: int,
    *,
    server_name: str | None,
    ca: Path | None,
    nbytes: int,
    upload: int,
    timeout: float = 5.0,
) -> QuicExchange:
    """Open a QUIC connection, PUT ``upload`` and GET ``nbytes`` on one stream; the connection stays
    open until the returned ``close`` is called (so a caller can hold a live flow)."""
    quic = QuicConnection(configuration=client_configuration(server_name, ca))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Room for a burst while this thread decrypts: fewer drops, fewer retransmissions on the wire.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    peer = (address, port)
    try:
        sock.connect(peer)
        src, sport = sock.getsockname()
        quic.connect(peer, now=time.monotonic())
        stream_id = quic.get_next_available_stream_id()
        request = b""
        if upload:
            request += b"PUT %d\n" % upload + bytes(upload)
        if nbytes or not upload:
            request += b"GET %d\n" % nbytes
        quic.send_stream_data(stream_id, request, end_stream=True)
        received = _pump(quic, sock, peer, stream_id, time.monotonic() + timeout)
        expected = nbytes + (len(b"OK %d\n" % upload) if upload else 0)
        if received != expected:
            raise ConnectionError(f"QUIC stream ended after {received} of {expected} bytes")
    except BaseException:
        sock.close()
        raise

    def close() -> None:
        quic.close()
        with contextlib.suppress(OSError, ConnectionError):
            for data in _datagrams(quic):
                sock.send(data)
        sock.close()

    return QuicExchange(src=src, sport=sport, sent=len(request), received=received, close=close)


def _datagrams(quic: QuicConnection) -> list[bytes]:
    """What the connection has to send. aioquic 1.x raises QuicPacketBuilderStop when a
    CONNECTION_CLOSE reason does not fit one packet (a certificate name mismatch lists every SAN of
    the lab's certificate): that is the handshake failing, so say so with the reason."""
    try:
        return [data for data, _addr in quic.datagrams_to_send(now=time.monotonic())]
    except QuicPacketBuilderStop as exc:
        event = getattr(quic, "_close_event", None)
        reason = getattr(event, "reason_phrase", "") or "connection closed"
        raise ConnectionError(f"QUIC connection closed: {reason[:300]}") from exc


def _pump(
    quic: QuicConnection, sock: socket.socket, peer: tuple[str, int], stream_id: int, deadline: float
) -> int:
    """Drive the connection until the server ends our stream; returns the stream bytes received."""
    received = 0
    while True:
        for data in _datagrams(quic):
            sock.send(data)
        now = time.monotonic()
        if now >= deadline:
            raise TimeoutError(f"QUIC exchange with {peer[0]} timed out")
        timer = quic.get_timer()
        wait = deadline - now if timer is None else min(deadline, timer) - now
        sock.settimeout(max(wait, 0.001))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            if timer is not None and time.monotonic() >= timer:
                quic.handle_timer(now=time.monotonic())
        except ConnectionRefusedError as exc:  # ICMP port unreachable: nothing serves QUIC there
            raise ConnectionRefusedError(f"QUIC to {peer[0]}:{peer[1]} refused") from exc
        else:
            quic.receive_datagram(data, peer, now=time.monotonic())
        while (event := quic.next_event()) is not None:
            if isinstance(event, StreamDataReceived) and event.stream_id == stream_id:
                received += len(event.data)
                if event.end_stream:
                    return received
            elif isinstance(event, ConnectionTerminated):
                raise ConnectionError(f"QUIC connection closed: {event.reason_phrase or event.error_code}")
