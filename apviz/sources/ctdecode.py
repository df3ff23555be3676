"""Decode ctnetlink messages (conntrack dumps and events) straight from the socket's bytes.

Why not pyroute2's message objects: building an attribute object per netlink attribute costs about
48 s for 100k entries (DESIGN.md), far too slow for a gateway that dumps its table every few seconds.
This module reads the same bytes with precompiled :class:`struct.Struct` objects instead.

How it stays fast: the kernel writes every conntrack entry of one kind (same family, protocol and
sysctls) with exactly the same attribute layout. The first message of a layout is walked attribute
by attribute (:func:`_learn`); the walk is compiled into a :class:`_Template`: one big-endian
``Struct`` reading the whole message at once, plus the attribute headers it expects to find. Later
messages of the same length are unpacked in one call and accepted only when every attribute header
(length and type, compared as raw 32-bit words) matches the template, so a template never reads a
message whose structure differs from the one it was learned from. Per message this is one
``unpack_from``, two ``itemgetter`` calls, four dictionary look-ups for the address strings and the
three objects the caller needs (:class:`Flow` and its two :class:`FlowTuple`).

Robustness: bytes that are not a well-formed ctnetlink message are counted in
:attr:`CtDecoder.errors` and skipped; nothing raises out of :meth:`CtDecoder.decode`.

ICMP and ICMPv6 have no ports; the echo id goes where the ports would be, ``sport`` of the original
tuple and ``dport`` of the reply tuple (the reply tuple is the inverted original), so that the
:attr:`Flow.snat` / :attr:`Flow.dnat` comparisons stay right, including when NAT rewrites the id.
ICMP type and code are decoded by the walk but :class:`Flow` has no field for them.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
from collections.abc import Callable
from operator import itemgetter
from typing import Final

from apviz.events import Flow, FlowEventKind, FlowTuple

Buffer = bytes | bytearray | memoryview

# --------------------------------------------------------------------------------------------------
# constants from linux/netlink.h, linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h

NLMSG_NOOP: Final = 1
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLMSG_OVERRUN: Final = 4
NLM_F_REQUEST: Final = 0x1
NLM_F_MULTI: Final = 0x2
NLM_F_ACK: Final = 0x4
NLM_F_DUMP: Final = 0x300
NLM_F_EXCL: Final = 0x200
NLM_F_CREATE: Final = 0x400
NLA_TYPE_MASK: Final = 0x3FFF  # strips NLA_F_NESTED and NLA_F_NET_BYTEORDER

NFNL_SUBSYS_CTNETLINK: Final = 1
IPCTNL_MSG_CT_NEW: Final = 0
IPCTNL_MSG_CT_GET: Final = 1
IPCTNL_MSG_CT_DELETE: Final = 2
CT_NEW_TYPE: Final = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW
CT_GET_TYPE: Final = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
CT_DELETE_TYPE: Final = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE

# event groups as a bind() bitmask: bit (NFNLGRP_CONNTRACK_x - 1)
GROUP_NEW: Final = 1
GROUP_UPDATE: Final = 2
GROUP_DESTROY: Final = 4

CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO = 1, 2, 3, 4
CTA_TIMEOUT, CTA_MARK, CTA_COUNTERS_ORIG, CTA_COUNTERS_REPLY = 7, 8, 9, 10
CTA_ID, CTA_ZONE, CTA_TIMESTAMP = 12, 18, 20
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE = 4, 5, 6
CTA_PROTO_ICMPV6_ID, CTA_PROTO_ICMPV6_TYPE, CTA_PROTO_ICMPV6_CODE = 7, 8, 9
CTA_PROTOINFO_TCP, CTA_PROTOINFO_TCP_STATE = 1, 1
CTA_COUNTERS_PACKETS, CTA_COUNTERS_BYTES, CTA_COUNTERS32_PACKETS, CTA_COUNTERS32_BYTES = 1, 2, 3, 4
CTA_TIMESTAMP_START, CTA_TIMESTAMP_STOP = 1, 2

# the names conntrack(8) prints, indexed by enum tcp_conntrack
TCP_STATE_NAMES: Final = (
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
)
_NO_TCP_STATE: Final = 256  # index of None in _TCP_NAMES: "no CTA_PROTOINFO_TCP_STATE"
_TCP_NAMES: Final[tuple[str | None, ...]] = (*TCP_STATE_NAMES, *([None] * (257 - len(TCP_STATE_NAMES))))

_NLMSGHDR: Final = struct.Struct("=IHH")  # length, type, flags (seq and pid are not needed)
_NLA: Final = struct.Struct("=HH")
_ERRNO: Final = struct.Struct("=i")
_NLMSG_AND_NFGEN: Final = 20  # struct nlmsghdr (16) + struct nfgenmsg (4)
# Templates read everything big-endian, the host-order nlmsg_flags included: compare with this.
_CREATED_RAW: Final = int.from_bytes(struct.pack("=H", NLM_F_CREATE | NLM_F_EXCL), "big")

# --------------------------------------------------------------------------------------------------
# canonical field order: what a template produces for every message, whatever the layout

(
    F_ID,
    F_OPROTO,
    F_OSRC,
    F_ODST,
    F_OSPORT,
    F_ODPORT,
    F_RPROTO,
    F_RSRC,
    F_RDST,
    F_RSPORT,
    F_RDPORT,
    F_STATUS,
    F_TCP_STATE,
    F_TIMEOUT,
    F_MARK,
    F_ZONE,
    F_OPACKETS,
    F_OBYTES,
    F_RPACKETS,
    F_RBYTES,
    F_START,
    F_STOP,
    F_FLAGS,  # nlmsg_flags, read as a big-endian word (see _CREATED_RAW)
) = range(23)
_FIELD_DEFAULTS: Final[tuple[object, ...]] = (
    0,  # id
    None,  # orig proto (required)
    None,  # orig src (required)
    None,  # orig dst (required)
    0,
    0,
    None,  # reply proto (required)
    None,  # reply src (required)
    None,  # reply dst (required)
    0,
    0,
    0,  # status
    _NO_TCP_STATE,
    None,  # timeout
    0,  # mark
    0,  # zone
    0,
    0,
    0,
    0,
    None,  # timestamp start
    None,  # timestamp stop
    0,  # flags
)
_REQUIRED: Final = (F_OPROTO, F_OSRC, F_ODST, F_RPROTO, F_RSRC, F_RDST)

# An attribute spec maps an attribute type to either a leaf ``(field, struct format)`` or a nested
# spec (a dict). A field of ``None`` means "decode and check the size, but Flow has no place for it".
Spec = dict[int, "tuple[int | None, str] | Spec"]


def _tuple_spec(src: int, dst: int, proto: int, sport: int, dport: int, icmp_id: int) -> Spec:
    """The spec of CTA_TUPLE_ORIG / CTA_TUPLE_REPLY, for the given destination fields."""
    return {
        CTA_TUPLE_IP: {
            CTA_IP_V4_SRC: (src, "4s"),
            CTA_IP_V4_DST: (dst, "4s"),
            CTA_IP_V6_SRC: (src, "16s"),
            CTA_IP_V6_DST: (dst, "16s"),
        },
        CTA_TUPLE_PROTO: {
            CTA_PROTO_NUM: (proto, "B"),
            CTA_PROTO_SRC_PORT: (sport, "H"),
            CTA_PROTO_DST_PORT: (dport, "H"),
            CTA_PROTO_ICMP_ID: (icmp_id, "H"),
            CTA_PROTO_ICMP_TYPE: (None, "B"),
            CTA_PROTO_ICMP_CODE: (None, "B"),
            CTA_PROTO_ICMPV6_ID: (icmp_id, "H"),
            CTA_PROTO_ICMPV6_TYPE: (None, "B"),
            CTA_PROTO_ICMPV6_CODE: (None, "B"),
        },
    }


def _counters_spec(packets: int, nbytes: int) -> Spec:
    return {
        CTA_COUNTERS_PACKETS: (packets, "Q"),
        CTA_COUNTERS_BYTES: (nbytes, "Q"),
        CTA_COUNTERS32_PACKETS: (packets, "I"),
        CTA_COUNTERS32_BYTES: (nbytes, "I"),
    }


_MESSAGE_SPEC: Final[Spec] = {
    CTA_TUPLE_ORIG: _tuple_spec(F_OSRC, F_ODST, F_OPROTO, F_OSPORT, F_ODPORT, icmp_id=F_OSPORT),
    CTA_TUPLE_REPLY: _tuple_spec(F_RSRC, F_RDST, F_RPROTO, F_RSPORT, F_RDPORT, icmp_id=F_RDPORT),
    CTA_STATUS: (F_STATUS, "I"),
    CTA_PROTOINFO: {CTA_PROTOINFO_TCP: {CTA_PROTOINFO_TCP_STATE: (F_TCP_STATE, "B")}},
    CTA_TIMEOUT: (F_TIMEOUT, "I"),
    CTA_MARK: (F_MARK, "I"),
    CTA_COUNTERS_ORIG: _counters_spec(F_OPACKETS, F_OBYTES),
    CTA_COUNTERS_REPLY: _counters_spec(F_RPACKETS, F_RBYTES),
    CTA_ID: (F_ID, "I"),
    CTA_ZONE: (F_ZONE, "H"),
    CTA_TIMESTAMP: {CTA_TIMESTAMP_START: (F_START, "Q"), CTA_TIMESTAMP_STOP: (F_STOP, "Q")},
}


class MalformedMessage(ValueError):
    """Raised inside the decoder only; turned into a count by :class:`CtDecoder`."""


# --------------------------------------------------------------------------------------------------
# learning a layout


class _Template:
    """One compiled message layout: how to read every message whose headers match it.

    ``build(values)`` turns the unpacked values into a :class:`Flow`. It is generated source code,
    the technique :mod:`dataclasses` and :func:`collections.namedtuple` use, because a function
    that indexes the values tuple with constants is the cheapest way from bytes to objects in
    CPython (no intermediate tuple, no per-field dispatch). The generated text contains only
    integers, ``None`` and fixed names, never a byte of the message.
    """

    __slots__ = ("build", "destroy", "expected", "flags_index", "headers", "size", "step", "unpack_from")

    def __init__(
        self,
        mlen: int,
        mtype: int,
        family: int,
        segments: list[tuple[int, str, int | None]],
        address: Callable[[bytes], str],
        cache: dict[bytes, str],
    ) -> None:
        """``segments``: ``(offset, format, field)`` where field ``-1`` marks a header word."""
        # Header words that touch (a nested attribute and its first child, say) are read as one
        # bytes run: fewer objects to make and compare per message.
        runs: list[tuple[int, int, int | None, str]] = []  # (offset, size, field, code)
        for offset, code, field in sorted(segments, key=lambda s: s[0]):
            size = struct.calcsize(">" + code)
            if field == -1 and runs and runs[-1][2] == -1 and runs[-1][0] + runs[-1][1] == offset:
                start, length, _, _ = runs.pop()
                runs.append((start, length + size, -1, ""))
            else:
                runs.append((offset, size, field, code))
        fmt = [">"]
        pos = 0
        header_idx: list[int] = []
        field_idx: dict[int, int] = {}
        for i, (offset, size, field, code) in enumerate(runs):
            if offset > pos:
                fmt.append(f"{offset - pos}x")
            fmt.append(f"{size}s" if field == -1 else code)
            pos = offset + size
            if field == -1:
                header_idx.append(i)
            elif field is not None:
                field_idx[field] = i  # a repeated attribute: the last one wins, as in the kernel's parser
        self.unpack_from: Callable[[Buffer, int], tuple[object, ...]] = struct.Struct(
            "".join(fmt)
        ).unpack_from
        self.headers: Callable[[tuple[object, ...]], tuple[object, ...]] = itemgetter(*header_idx)
        self.build = _compile_builder(family, field_idx, address, cache)
        self.expected: tuple[object, ...] = ()
        self.flags_index = field_idx[F_FLAGS]
        self.size = mlen
        self.step = (mlen + 3) & ~3
        self.destroy = mtype == CT_DELETE_TYPE


def _slot_setters() -> tuple[Callable[[object, object], None], ...] | None:
    """Setters for FlowTuple's slots, in field order; None when the fast path would be wrong.

    FlowTuple is a frozen dataclass, so its ``__init__`` goes through ``object.__setattr__`` once
    per field: 0.34 us per tuple against 0.19 us for ``object.__new__`` plus the slot descriptors'
    ``__set__`` (measured), and a dump makes two tuples per entry. The result is the same object;
    should FlowTuple ever gain a default, a ``__post_init__`` or lose its slots, the decoder falls
    back to calling the class.
    """
    names = tuple(f.name for f in dataclasses.fields(FlowTuple))
    if names != ("proto", "src", "dst", "sport", "dport") or hasattr(FlowTuple, "__post_init__"):
        return None
    descriptors = [FlowTuple.__dict__.get(name) for name in names]
    if not all(hasattr(d, "__set__") for d in descriptors):
        return None
    return tuple(d.__set__ for d in descriptors)  # type: ignore[union-attr]


_SETTERS: Final = _slot_setters()


def _compile_builder(
    family: int, field_idx: dict[int, int], address: Callable[[bytes], str], cache: dict[bytes, str]
) -> Callable[[tuple[object, ...]], Flow]:
    """Generate ``build(v) -> Flow`` for one layout (see :class:`_Template`)."""

    def value(field: int) -> str:
        index = field_idx.get(field)
        return repr(_FIELD_DEFAULTS[field]) if index is None else f"v[{index}]"

    def addr(field: int) -> str:
        return f"(get({value(field)}) or address({value(field)}))"

    def ftuple(name: str, fields: tuple[int, int, int, int, int]) -> list[str]:
        proto, src, dst, sport, dport = fields
        values = (value(proto), addr(src), addr(dst), value(sport), value(dport))
        if _SETTERS is None:
            return [f"    {name} = FlowTuple({', '.join(values)})"]
        return [f"    {name} = new(FlowTuple)"] + [f"    set{i}({name}, {v})" for i, v in enumerate(values)]

    args = [
        value(F_ID),
        str(int(family)),
        "orig",
        "reply",
        value(F_STATUS),
        f"tcp_names[{value(F_TCP_STATE)}]" if F_TCP_STATE in field_idx else "None",
        *(value(f) for f in (F_TIMEOUT, F_MARK, F_ZONE, F_OPACKETS, F_OBYTES, F_RPACKETS, F_RBYTES)),
        value(F_START),
        value(F_STOP),
    ]
    namespace: dict[str, object] = {
        "Flow": Flow,
        "FlowTuple": FlowTuple,
        "new": object.__new__,
        "get": cache.get,
        "address": address,
        "tcp_names": _TCP_NAMES,
    }
    namespace.update((f"set{i}", setter) for i, setter in enumerate(_SETTERS or ()))
    defaults = ", ".join(f"{name}={name}" for name in namespace)
    lines = [
        f"def build(v, {defaults}):",
        *ftuple("orig", (F_OPROTO, F_OSRC, F_ODST, F_OSPORT, F_ODPORT)),
        *ftuple("reply", (F_RPROTO, F_RSRC, F_RDST, F_RSPORT, F_RDPORT)),
        f"    return Flow({', '.join(args)})",
    ]
    exec(compile("\n".join(lines) + "\n", "<ctdecode template>", "exec"), namespace)
    return namespace["build"]  # type: ignore[return-value]


def _walk(
    buf: Buffer,
    base: int,
    span: tuple[int, int],
    spec: Spec,
    out: list[tuple[int, str, int | None]],
    seen: set[int],
) -> None:
    """Collect the header words and wanted leaves in ``buf[start:end]``, at offsets from ``base``."""
    off, end = span
    while end - off >= 4:
        alen, atype = _NLA.unpack_from(buf, off)
        if alen < 4 or off + alen > end:
            raise MalformedMessage(f"attribute length {alen} at {off}")
        out.append((off - base, "I", -1))
        entry = spec.get(atype & NLA_TYPE_MASK)
        if isinstance(entry, dict):
            _walk(buf, base, (off + 4, off + alen), entry, out, seen)
        elif entry is not None:
            field, code = entry
            if alen - 4 < struct.calcsize(">" + code):
                raise MalformedMessage(f"attribute type {atype} too short ({alen})")
            out.append((off + 4 - base, code, field))
            if field is not None:
                seen.add(field)
        off += (alen + 3) & ~3


def _learn(
    buf: Buffer, off: int, mlen: int, mtype: int, address: Callable[[bytes], str], cache: dict[bytes, str]
) -> _Template:
    """Walk one message attribute by attribute and compile its layout (the slow path)."""
    family = buf[off + 16]
    # nlmsg_len, nlmsg_type and nfgen_family must match too; nlmsg_flags is read, not compared
    segments: list[tuple[int, str, int | None]] = [
        (0, "I", -1),
        (4, "H", -1),
        (6, "H", F_FLAGS),
        (16, "B", -1),
    ]
    seen: set[int] = set()
    _walk(buf, off, (off + _NLMSG_AND_NFGEN, off + mlen), _MESSAGE_SPEC, segments, seen)
    missing = [f for f in _REQUIRED if f not in seen]
    if missing:
        raise MalformedMessage(f"message without address or protocol (fields {missing})")
    template = _Template(mlen, mtype, family, segments, address, cache)
    template.expected = template.headers(template.unpack_from(buf, off))
    return template


# --------------------------------------------------------------------------------------------------
# the decoder


class CtDecoder:
    """Turns received ctnetlink bytes into flows; keeps its learned layouts and counters.

    One decoder per socket: ``done`` and ``error`` describe the stream that socket carries (the
    end of a dump, an error reply).

    Attributes:
        errors: malformed messages skipped so far.
        ignored: well-formed netlink messages of other types skipped (e.g. NLMSG_NOOP).
        done: an NLMSG_DONE was seen (end of a dump); reset it before the next dump.
        error: the errno of the last NLMSG_ERROR that carried one (0 for none or a plain ack).
    """

    max_templates: int = 256  # bounds memory when fed garbage that happens to parse
    max_addresses: int = 65536  # address-text cache size before it is cleared

    def __init__(self) -> None:
        self.errors = 0
        self.ignored = 0
        self.done = False
        self.error = 0
        self._templates: dict[int, list[_Template]] = {}
        self._n_templates = 0
        self._addr: dict[bytes, str] = {}
        self._last: _Template | None = None

    def reset(self) -> None:
        """Forget the end-of-dump and error state before a new request (the templates stay)."""
        self.done = False
        self.error = 0

    def decode(self, buf: Buffer, nbytes: int | None = None) -> list[tuple[FlowEventKind, Flow]]:
        """Decode every conntrack message in ``buf[:nbytes]`` with its event kind.

        A NEW message flagged NLM_F_CREATE|NLM_F_EXCL is a new entry, any other NEW message an update
        (dump replies are NEW messages too: callers of a dump ignore the kind); DELETE is a destroy.
        """
        out: list[tuple[FlowEventKind, Flow]] = []
        self._decode(buf, len(buf) if nbytes is None else nbytes, out.append, True)
        return out

    def decode_flows(
        self, buf: Buffer, nbytes: int | None = None, out: list[Flow] | None = None
    ) -> list[Flow]:
        """Decode the flows in ``buf[:nbytes]`` and append them to ``out`` (the dump's fast path)."""
        if out is None:
            out = []
        self._decode(buf, len(buf) if nbytes is None else nbytes, out.append, False)
        return out

    # the hot loop ----------------------------------------------------------------------------

    def _decode(self, buf: Buffer, n: int, emit: Callable[[object], None], with_kind: bool) -> None:
        """Walk the netlink messages; decoding a conntrack message never raises.

        The fast path tries the template that matched the previous message first: a dump is one
        layout repeated, so most messages cost no framing and no look-up at all. The template's
        header words include the netlink length and type, so a match also frames the message.
        """
        n = min(n, len(buf))
        off = 0
        new_kind, update_kind, destroy_kind = FlowEventKind.NEW, FlowEventKind.UPDATE, FlowEventKind.DESTROY
        created = _CREATED_RAW
        template = self._last
        while n - off >= 16:
            values = None
            if template is not None and off + template.size <= n:
                values = template.unpack_from(buf, off)
                if template.headers(values) != template.expected:
                    values = None
            if values is None:
                template, values, step = self._frame(buf, off, n)
                if template is None or values is None:  # not a conntrack message, or a bad one
                    if step == 0:
                        break
                    off += step
                    continue
            if not with_kind:
                emit(template.build(values))
            elif template.destroy:
                emit((destroy_kind, template.build(values)))
            elif values[template.flags_index] & created == created:  # type: ignore[operator]
                emit((new_kind, template.build(values)))
            else:
                emit((update_kind, template.build(values)))
            off += template.step
        self._last = template
        if 0 < n - off < 16:
            self.errors += 1  # a few stray bytes after the last message

    # slow paths -------------------------------------------------------------------------------

    def _frame(
        self, buf: Buffer, off: int, n: int
    ) -> tuple[_Template | None, tuple[object, ...] | None, int]:
        """Frame one message the ordinary way: returns its template and values, or the step to skip it.

        A step of 0 means the rest of the buffer cannot be framed (truncated or garbage length).
        """
        mlen, mtype, _flags = _NLMSGHDR.unpack_from(buf, off)
        if mlen < 16 or off + mlen > n:
            self.errors += 1
            return None, None, 0
        step = (mlen + 3) & ~3
        if mtype in (CT_NEW_TYPE, CT_DELETE_TYPE):
            for candidate in self._templates.get(mlen, ()):
                values = candidate.unpack_from(buf, off)
                if candidate.headers(values) == candidate.expected:
                    return candidate, values, step
            template = self._learn(buf, off, mlen, mtype)
            if template is None:
                return None, None, step
            return template, template.unpack_from(buf, off), step
        if mtype == NLMSG_DONE:
            self.done = True
            if mlen >= 20:  # a dump that failed half-way ends with DONE carrying -errno
                self._error_message(buf, off, mlen)
        elif mtype == NLMSG_ERROR:
            self._error_message(buf, off, mlen)
        else:
            self.ignored += 1
        return None, None, step

    def _learn(self, buf: Buffer, off: int, mlen: int, mtype: int) -> _Template | None:
        """Compile a new layout, or count the message as malformed and return None."""
        if mlen < _NLMSG_AND_NFGEN:
            self.errors += 1
            return None
        try:
            template = _learn(buf, off, mlen, mtype, self._address, self._addr)
        except (MalformedMessage, struct.error, IndexError, ValueError):
            self.errors += 1
            return None
        if self._n_templates < self.max_templates:
            self._templates.setdefault(mlen, []).append(template)
            self._n_templates += 1
        return template

    def _address(self, raw: bytes) -> str:
        """Canonical text of a 4- or 16-byte address, cached: a gateway sees the same few again."""
        text = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
        if len(self._addr) >= self.max_addresses:
            self._addr.clear()
        self._addr[raw] = text
        return text

    def _error_message(self, buf: Buffer, off: int, mlen: int) -> None:
        """NLMSG_ERROR: errno 0 is an acknowledgement, anything else is remembered for the caller."""
        if mlen < 20:
            self.errors += 1
            return
        (code,) = _ERRNO.unpack_from(buf, off + 16)
        if code:
            self.error = abs(code)  # the kernel sends -errno
        else:
            self.ignored += 1  # an acknowledgement


def dump_request(seq: int = 1, family: int = socket.AF_UNSPEC) -> bytes:
    """The IPCTNL_MSG_CT_GET dump request; AF_UNSPEC asks for IPv4 and IPv6 entries alike."""
    return struct.pack("=IHHIIBBH", 20, CT_GET_TYPE, NLM_F_REQUEST | NLM_F_DUMP, seq, 0, family, 0, 0)
