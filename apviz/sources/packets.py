"""Server names and outside DNS answers from the first packets the capture table copies to apviz.

:class:`PacketDecoder` is pure (bytes and a clock in, events out): it reads the IPv4/IPv6 and
TCP/UDP headers of each NFLOG copy, puts each flow's first bytes back in order and hands them to
the decoders of :mod:`apviz.sniff`. :class:`PacketSource` is the plumbing around it: it installs
the nftables table (:mod:`apviz.sources.capture`), binds the NFLOG group (:mod:`apviz.sources.nflog`),
reads on the event loop and removes the table when it stops.

Which packets come here and why is the capture module's business; this one trusts only the rule's
prefix for the direction (``apviz-tls`` and ``apviz-quic`` are sent by the LAN device,
``apviz-dns`` answers arrive for it) and treats everything else as hostile bytes: any packet that
does not parse is counted and skipped, never raised.

Bounds: at most ``max_flows`` streams in progress (a new one beyond that is counted in
``flows_full`` and ignored), each at most 16 KiB (``too_large``), each at most ``max_age``
seconds old (``expired``). A TCP stream whose first bytes are not a TLS handshake record is given
up at once (``not_tls``): copies of its later packets only cost a dictionary look-up.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Final

from apviz.events import Event, PrivateDnsRefused, ResolverAnswer, ServerName, ServerNameVia, SourceError
from apviz.sniff import dnswire, quic, tls
from apviz.sniff.reassembly import Reassembly, TooLarge
from apviz.sources.capture import (
    PREFIX_BLOCKED,
    PREFIX_DNS,
    PREFIX_DOT_REFUSED,
    PREFIX_QUIC,
    PREFIX_TLS,
    CaptureError,
    CaptureRules,
    CaptureTable,
)
from apviz.sources.nflog import LoggedPacket, NflogSocket

log = logging.getLogger(__name__)

TCP: Final = 6
UDP: Final = 17
STREAM_LIMIT: Final = 16 * 1024
_SEQ_HALF: Final = 1 << 31
_TCP_SYN: Final = 0x02
_TCP_RST: Final = 0x04
_TCP_ACK: Final = 0x10
_IPV4: Final = struct.Struct("!BBHHHBBH4s4s")
_IPV6: Final = struct.Struct("!IHBB16s16s")
_TCP_HDR: Final = struct.Struct("!HHIIBB")
_UDP_HDR: Final = struct.Struct("!HHH")
_IPV6_EXTENSIONS: Final = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
_IPV6_FRAGMENT: Final = 44
_SOURCE: Final = "capture"


# --------------------------------------------------------------------------------------------------
# headers


@dataclass(frozen=True, slots=True)
class Segment:
    """The parts of one IP packet the decoders need; ``payload`` is what the copy holds of it."""

    src: str
    dst: str
    proto: int
    sport: int
    dport: int
    payload: bytes
    seq: int = 0
    flags: int = 0


class Malformed(ValueError):
    """Not a whole enough IPv4/IPv6 + TCP/UDP packet to use."""


def parse_ip(packet: bytes) -> Segment:
    """Read an IP packet as copied by NFLOG (network header first). Raises :class:`Malformed`.

    Fragments are refused: a first packet of a connection is never fragmented by a sane sender, and
    reassembling IP fragments from copies would be a second, pointless reassembly engine.
    """
    if len(packet) < 20:
        raise Malformed("shorter than an IP header")
    version = packet[0] >> 4
    if version == 4:
        vihl, _tos, total, _id, frag, _ttl, proto, _sum, src, dst = _IPV4.unpack_from(packet)
        ihl = (vihl & 0x0F) * 4
        if ihl < 20 or total < ihl or len(packet) < ihl:
            raise Malformed("bad IPv4 header length")
        if frag & 0x3FFF:  # more-fragments flag or an offset
            raise Malformed("IPv4 fragment")
        family, start, end = socket.AF_INET, ihl, min(total, len(packet))
    elif version == 6:
        if len(packet) < 40:
            raise Malformed("shorter than an IPv6 header")
        _vtf, plen, proto, _hop, src, dst = _IPV6.unpack_from(packet)
        family, start, end = socket.AF_INET6, 40, min(40 + plen, len(packet))
        for _ in range(8):  # a bounded walk over extension headers
            if proto == _IPV6_FRAGMENT:
                raise Malformed("IPv6 fragment")
            if proto not in _IPV6_EXTENSIONS:
                break
            if start + 8 > end:
                raise Malformed("truncated IPv6 extension header")
            proto, hlen = packet[start], (packet[start + 1] + 1) * 8
            start += hlen
        else:
            raise Malformed("too many IPv6 extension headers")
    else:
        raise Malformed(f"IP version {version}")
    src_s, dst_s = socket.inet_ntop(family, src), socket.inet_ntop(family, dst)
    if proto == TCP:
        if start + 20 > end:
            raise Malformed("truncated TCP header")
        sport, dport, seq, _ack, off, flags = _TCP_HDR.unpack_from(packet, start)
        doff = (off >> 4) * 4
        if doff < 20 or start + doff > end:
            raise Malformed("bad TCP data offset")
        return Segment(src_s, dst_s, TCP, sport, dport, bytes(packet[start + doff : end]), seq, flags)
    if proto == UDP:
        if start + 8 > end:
            raise Malformed("truncated UDP header")
        sport, dport, ulen = _UDP_HDR.unpack_from(packet, start)
        if ulen < 8:
            raise Malformed("bad UDP length")
        return Segment(src_s, dst_s, UDP, sport, dport, bytes(packet[start + 8 : min(end, start + ulen)]))
    raise Malformed(f"IP protocol {proto}")


# --------------------------------------------------------------------------------------------------
# streams in progress


@dataclass(slots=True)
class _Stream:
    """One flow's first bytes being put back in order (TCP by sequence number, QUIC by CRYPTO offset)."""

    started: float
    base: int | None = None  # TCP: sequence number of the first payload byte
    data: Reassembly | None = field(default_factory=lambda: Reassembly(STREAM_LIMIT))
    done: bool = False
    emitted: int = 0  # DNS over TCP: messages already turned into events

    def finish(self) -> None:
        self.done = True
        self.data = None  # the bytes are no longer needed; the entry only absorbs later copies


StreamKey = tuple[object, ...]


class PacketDecoder:
    """Turns NFLOG copies into :class:`ServerName`, :class:`ResolverAnswer` and
    :class:`PrivateDnsRefused` events; ``counts`` says what happened to every packet."""

    def __init__(
        self,
        *,
        max_flows: int = 1024,
        max_age: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.max_flows = max_flows
        self.max_age = max_age
        self.clock = clock
        self.wall = wall
        self.counts: collections.Counter[str] = collections.Counter()
        self._streams: dict[StreamKey, _Stream] = {}  # insertion order is age order
        self._refused: dict[tuple[str, str, int, int], float] = {}
        # Connections (5-tuples) whose first Initial was read: a later Initial of theirs carries the
        # server's connection id, whose keys no observer can derive (they come from the first one):
        # unreadable by design, not malformed. Bounded like the streams.
        self._quic_read: collections.OrderedDict[tuple[str, int, str, int], None] = collections.OrderedDict()

    @property
    def in_progress(self) -> int:
        return sum(1 for s in self._streams.values() if not s.done)

    def feed(self, packet: LoggedPacket) -> list[Event]:
        """Events from one copied packet (usually none: most packets only add bytes to a stream)."""
        self.counts["packets"] += 1
        now = self.clock()
        self.expire(now)
        try:
            seg = parse_ip(packet.payload)
        except Malformed:
            self.counts["malformed"] += 1
            return []
        prefix = packet.prefix
        if prefix == PREFIX_TLS and seg.proto == TCP:
            return self._tls(seg, now)
        if prefix == PREFIX_QUIC and seg.proto == UDP:
            return self._quic(seg, now)
        if prefix == PREFIX_DNS:
            return self._dns_udp(seg) if seg.proto == UDP else self._dns_tcp(seg, now)
        if prefix == PREFIX_DOT_REFUSED:
            return self._refused_dot(seg, now)
        if prefix == PREFIX_BLOCKED:
            # Tracker blocking's copies: counted here as a figure only; the attempts per device come
            # from the block sets' own counters (apviz.block.runner), which cannot be lost to a full
            # socket buffer, so no event is made of them.
            self.counts["blocked"] += 1
            return []
        self.counts["other"] += 1
        return []

    def expire(self, now: float) -> None:
        """Forget streams older than ``max_age``; unfinished ones are counted as ``expired``."""
        streams = self._streams
        while streams:
            key = next(iter(streams))
            stream = streams[key]
            if now - stream.started < self.max_age:
                break
            del streams[key]
            if not stream.done:
                self.counts["expired"] += 1
        refused = self._refused  # also in age order: an entry is never renewed
        while refused:
            rkey = next(iter(refused))
            if now - refused[rkey] < self.max_age:
                break
            del refused[rkey]

    def _stream(self, key: StreamKey, now: float) -> _Stream | None:
        stream = self._streams.get(key)
        if stream is None:
            if len(self._streams) >= self.max_flows:
                self.counts["flows_full"] += 1
                return None
            stream = self._streams[key] = _Stream(now)
        return stream

    # TLS over TCP ------------------------------------------------------------------------------

    def _tcp_data(self, key: StreamKey, seg: Segment, now: float) -> tuple[_Stream, bytes] | None:
        """The stream a TCP segment belongs to and its contiguous bytes so far, or None when there
        is nothing (more) to decode: a reset, a finished or refused stream, no payload yet."""
        if seg.flags & _TCP_RST:
            return None
        stream = self._stream(key, now)
        if stream is None or stream.done:
            return None
        if seg.flags & _TCP_SYN:
            stream.base = (seg.seq + 1) & 0xFFFFFFFF
        if not seg.payload:
            return None
        data = self._place(stream, seg)
        return (stream, data) if data else None

    def _tls(self, seg: Segment, now: float) -> list[Event]:
        got = self._tcp_data((TCP, seg.src, seg.sport, seg.dst, seg.dport), seg, now)
        if got is None:
            return []
        stream, data = got
        if not tls.looks_like_tls(data[:3]):
            if len(data) >= 3:
                self.counts["not_tls"] += 1
                stream.finish()
            return []
        try:
            hello = tls.hello_from_records(data)
        except tls.HelloTooLarge:
            self.counts["too_large"] += 1
            stream.finish()
            return []
        except tls.TlsError:
            self.counts["malformed_hello"] += 1
            stream.finish()
            return []
        if hello is None:
            return []
        stream.finish()
        self.counts["hellos"] += 1
        return [
            ServerName(
                self.wall(),
                seg.src,
                seg.sport,
                seg.dst,
                seg.dport,
                TCP,
                hello.server_name,
                ServerNameVia.TLS,
                hello.ech,
                hello.alpn,
            )
        ]

    def _place(self, stream: _Stream, seg: Segment) -> bytes | None:
        """Add a TCP segment's payload to its stream; the contiguous bytes from the start, or None.

        Without the SYN (lost, or the connection began before apviz), the first payload seen is
        taken as the start: right for a stream whose first segment arrives first, and a later
        segment taken for the start fails the record-type test and the flow is given up.
        """
        assert stream.data is not None
        if stream.base is None:
            stream.base = seg.seq
        offset = (seg.seq - stream.base) & 0xFFFFFFFF
        if offset >= _SEQ_HALF:  # before the start: a retransmitted SYN's data or an old segment
            return None
        self.counts["tcp_segments"] += 1
        try:
            stream.data.add(offset, seg.payload)
        except TooLarge:
            self.counts["too_large"] += 1
            stream.finish()
            return None
        return stream.data.prefix

    # QUIC --------------------------------------------------------------------------------------

    def _quic(self, seg: Segment, now: float) -> list[Event]:
        datagram = seg.payload
        if not quic.looks_like_initial(datagram):
            self.counts["not_quic"] += 1
            return []
        conn = (seg.src, seg.sport, seg.dst, seg.dport)
        try:
            initials = quic.parse_initials(datagram)
        except quic.QuicError:
            self.counts["quic_later_initials" if conn in self._quic_read else "malformed_quic"] += 1
            return []
        self._quic_read[conn] = None
        self._quic_read.move_to_end(conn)
        while len(self._quic_read) > self.max_flows:
            self._quic_read.popitem(last=False)
        events: list[Event] = []
        for initial in initials:
            self.counts["quic_initials"] += 1
            if not initial.crypto:
                continue
            key = (UDP, seg.src, seg.sport, seg.dst, seg.dport, bytes(initial.dcid))
            stream = self._stream(key, now)
            if stream is None or stream.done:
                continue
            assert stream.data is not None
            try:
                for offset, chunk in initial.crypto:
                    stream.data.add(offset, chunk)
            except TooLarge:
                self.counts["too_large"] += 1
                stream.finish()
                continue
            try:
                hello = tls.hello_from_handshake(stream.data.prefix)
            except tls.HelloTooLarge:
                self.counts["too_large"] += 1
                stream.finish()
                continue
            except tls.TlsError:
                self.counts["malformed_hello"] += 1
                stream.finish()
                continue
            if hello is None:
                continue
            stream.finish()
            self.counts["quic_hellos"] += 1
            events.append(
                ServerName(
                    self.wall(),
                    seg.src,
                    seg.sport,
                    seg.dst,
                    seg.dport,
                    UDP,
                    hello.server_name,
                    ServerNameVia.QUIC,
                    hello.ech,
                    hello.alpn,
                )
            )
        return events

    # DNS answers from other resolvers ------------------------------------------------------------

    def _answer(self, seg: Segment, wire: bytes) -> ResolverAnswer | None:
        try:
            resp = dnswire.parse_response(wire)
        except dnswire.DnsWireError:
            self.counts["malformed_dns"] += 1
            return None
        self.counts["dns_answers"] += 1
        return ResolverAnswer(
            self.wall(),
            client=seg.dst,
            resolver=seg.src,
            name=resp.name,
            addresses=tuple(resp.addresses),
            cnames=tuple(resp.cnames),
            rcode=str(resp.rcode),
            ttl=resp.ttl,
        )

    def _dns_udp(self, seg: Segment) -> list[Event]:
        answer = self._answer(seg, seg.payload)
        return [] if answer is None else [answer]

    def _dns_tcp(self, seg: Segment, now: float) -> list[Event]:
        got = self._tcp_data((TCP, seg.dst, seg.dport, seg.src, seg.sport, "dns"), seg, now)
        if got is None:
            return []
        stream, data = got
        try:
            messages, _consumed = dnswire.split_tcp(data)
        except dnswire.DnsWireError:
            self.counts["malformed_dns"] += 1
            stream.finish()
            return []
        events: list[Event] = []
        for wire in messages[stream.emitted :]:
            answer = self._answer(seg, wire)
            if answer is not None:
                events.append(answer)
        stream.emitted = len(messages)
        return events

    # the policy's refusals of DNS over TLS --------------------------------------------------------

    def _refused_dot(self, seg: Segment, now: float) -> list[Event]:
        """One event per device, server and protocol every ``max_age`` seconds (retries are many)."""
        key = (seg.src, seg.dst, seg.proto, seg.dport)
        if key in self._refused or len(self._refused) >= self.max_flows:
            return []
        self._refused[key] = now
        self.counts["dot_refused"] += 1
        return [PrivateDnsRefused(self.wall(), seg.src, seg.dst, seg.proto, seg.dport)]


# --------------------------------------------------------------------------------------------------
# the source


class PacketSource:
    """Async iterator of the events in the packets the capture table copies (see the module doc).

    Start: bind the NFLOG group first (so nothing is copied to no one), then (re)create the table;
    if either fails (no nft, no permission, the group taken) a :class:`SourceError` says why and
    the source tries again every ``retry_interval`` seconds. Stop (cancelled, or a failure): remove
    the table, close the socket. The decoder is passed in so its counters live across restarts.
    """

    def __init__(
        self,
        netns: str | None = None,
        group: int = 7400,
        *,
        rules: CaptureRules | None = None,
        decoder: PacketDecoder | None = None,
        max_pending: int = 4096,
        retry_interval: float = 60.0,
        open_socket: Callable[[int, str | None], NflogSocket] = NflogSocket,
    ) -> None:
        self.netns = netns
        self.group = group
        self.rules = rules or CaptureRules(group=group)
        self.decoder = decoder or PacketDecoder()
        self.max_pending = max_pending
        self.retry_interval = retry_interval
        self._open_socket = open_socket
        self._pending: collections.deque[Event] = collections.deque()
        self._wake = asyncio.Event()
        self._sock: NflogSocket | None = None
        self._paused = False
        self._failure: BaseException | None = None

    def counts(self) -> dict[str, int]:
        return dict(self.decoder.counts)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._run()

    async def _run(self) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        table = CaptureTable(self.netns, self.rules)
        while True:
            try:
                await self._setup(loop, table)
                break
            except (CaptureError, OSError) as exc:  # no nft, no permission, the group taken
                # Names from connections are a bonus: say why they are missing and try again later,
                # while the rest of apviz runs (raising would keep the service from ever being ready).
                self.decoder.counts["setup_failures"] += 1
                yield SourceError(_SOURCE, f"names from connections are off: {exc}", self.counts())
                await asyncio.sleep(self.retry_interval)
        assert self._sock is not None
        try:
            loop.add_reader(self._sock.fileno(), self._on_readable)
            log.info("capture: nftables table installed, reading NFLOG group %d", self.group)
            while True:
                if self._failure is not None:
                    raise self._failure
                if self._pending:
                    event = self._pending.popleft()
                    if self._paused and len(self._pending) <= self.max_pending // 2:
                        self._resume()
                    yield event
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
                self.decoder.expire(self.decoder.clock())
        finally:
            if self._sock is not None:
                if not self._paused and not loop.is_closed():
                    loop.remove_reader(self._sock.fileno())
                self._sock.close()
                self._sock = None
            if table.installed:
                table.remove()  # blocking for a few ms: it must happen even when we are cancelled

    async def _setup(self, loop: asyncio.AbstractEventLoop, table: CaptureTable) -> None:
        """Bind the group first (so nothing is copied to no one), then (re)create the table."""
        sock = await loop.run_in_executor(None, self._open_socket, self.group, self.netns)
        try:
            await loop.run_in_executor(None, table.install)
        except BaseException:
            sock.close()
            if table.installed:  # cancelled just after the table was made
                table.remove()
            raise
        self._sock = sock

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        before = sock.enobufs
        try:
            packets = sock.read()
        except OSError as exc:
            self._failure = exc
            self._wake.set()
            return
        counts = self.decoder.counts
        if sock.enobufs != before:
            counts["enobufs"] += sock.enobufs - before
        malformed = sock.counts.malformed
        if malformed:
            counts["malformed"] += malformed
            sock.counts.malformed = 0
        feed = self.decoder.feed
        for packet in packets:
            try:
                self._pending.extend(feed(packet))
            except Exception:  # a decoder bug must cost one packet, not the source
                counts["decoder_bugs"] += 1
                if counts["decoder_bugs"] == 1:
                    log.exception("capture: a packet broke the decoder (counted in decoder_bugs)")
        if len(self._pending) >= self.max_pending and not self._paused:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            self._paused = True
            counts["paused"] += 1
        if self._pending:
            self._wake.set()

    def _resume(self) -> None:
        if self._sock is not None and self._paused:
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._on_readable)
            self._paused = False
