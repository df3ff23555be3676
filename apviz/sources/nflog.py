"""A small NFLOG (nfnetlink_log) client: the packets nftables ``log group N`` rules copy to us.

Why hand-written: pyroute2 0.9.7 has no nfnetlink_log, and the protocol apviz needs is tiny: one
config message to bind a group and ask for packet copies, then ``NFULNL_MSG_PACKET`` messages whose
attributes carry the IP packet (``NFULA_PAYLOAD``) and the rule's prefix (``NFULA_PREFIX``). The
constants are those of ``linux/netfilter/nfnetlink_log.h``.

Why NFLOG is safe for forwarding: the kernel copies a logged packet into a netlink message and
forwards the original at once; if nobody is bound to the group, or our receive buffer is full,
the copy is simply not made (the latter reported to us as ENOBUFS, which we count and go on: a lost
first packet costs a name, never a connection).

The socket is made inside the gateway's network namespace (NFLOG instances are per namespace) with
:func:`apviz.sources.netns.socket_in`; binding a group needs CAP_NET_ADMIN there.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from apviz.sources.netns import socket_in

NETLINK_NETFILTER: Final = 12
SO_RCVBUFFORCE: Final = getattr(socket, "SO_RCVBUFFORCE", 33)

NLMSG_NOOP: Final = 1
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLMSG_OVERRUN: Final = 4
NLM_F_REQUEST: Final = 0x1
NLM_F_ACK: Final = 0x4
NLA_TYPE_MASK: Final = 0x3FFF

NFNL_SUBSYS_ULOG: Final = 4
NFULNL_MSG_PACKET: Final = 0
NFULNL_MSG_CONFIG: Final = 1
PACKET_TYPE: Final = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
CONFIG_TYPE: Final = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG

NFULA_PACKET_HDR: Final = 1
NFULA_MARK: Final = 2
NFULA_IFINDEX_INDEV: Final = 4
NFULA_IFINDEX_OUTDEV: Final = 5
NFULA_PAYLOAD: Final = 9
NFULA_PREFIX: Final = 10

NFULA_CFG_CMD: Final = 1
NFULA_CFG_MODE: Final = 2
NFULA_CFG_NLBUFSIZ: Final = 3
NFULA_CFG_TIMEOUT: Final = 4
NFULA_CFG_QTHRESH: Final = 5
NFULNL_CFG_CMD_BIND: Final = 1
NFULNL_CFG_CMD_UNBIND: Final = 2
NFULNL_COPY_PACKET: Final = 2

ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD

_NLMSGHDR: Final = struct.Struct("=IHHII")
_NLATTR: Final = struct.Struct("=HH")
_NFGENMSG: Final = struct.Struct("!BBH")
_BE16: Final = struct.Struct("!H")
_BE32: Final = struct.Struct("!I")
_ERRNO: Final = struct.Struct("=i")
_RECV_SIZE: Final = 256 * 1024  # larger than any batch the kernel sends (nlbufsiz is far smaller)
CAP_NET_ADMIN: Final = 12


class NflogError(OSError):
    """The NFLOG group could not be set up; the message says why and what to do."""


class NflogPermissionError(PermissionError):
    """The kernel refused to bind: apviz needs CAP_NET_ADMIN in the namespace."""


@dataclass(frozen=True, slots=True)
class LoggedPacket:
    """One packet a log rule copied: the IP packet from its network header on, and the rule's prefix."""

    prefix: str
    hw_protocol: int  # ETH_P_IP or ETH_P_IPV6 for packets logged in the inet family's hooks
    payload: bytes
    indev: int = 0
    outdev: int = 0


def _attr(kind: int, value: bytes) -> bytes:
    length = _NLATTR.size + len(value)
    return _NLATTR.pack(length, kind) + value + b"\0" * (-length % 4)


def config_message(
    group: int,
    *,
    command: int | None = None,
    copy_range: int | None = None,
    qthreshold: int | None = None,
    timeout_cs: int | None = None,
    nlbufsiz: int | None = None,
    seq: int = 0,
) -> bytes:
    """An ``NFULNL_MSG_CONFIG`` request for ``group`` asking for an acknowledgement."""
    attrs = b""
    if command is not None:
        attrs += _attr(NFULA_CFG_CMD, bytes([command]))
    if copy_range is not None:
        attrs += _attr(NFULA_CFG_MODE, _BE32.pack(copy_range) + bytes([NFULNL_COPY_PACKET, 0]))
    if nlbufsiz is not None:
        attrs += _attr(NFULA_CFG_NLBUFSIZ, _BE32.pack(nlbufsiz))
    if timeout_cs is not None:
        attrs += _attr(NFULA_CFG_TIMEOUT, _BE32.pack(timeout_cs))
    if qthreshold is not None:
        attrs += _attr(NFULA_CFG_QTHRESH, _BE32.pack(qthreshold))
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, group) + attrs
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), CONFIG_TYPE, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def packet_message(
    group: int, payload: bytes, prefix: str = "", hw_protocol: int = ETH_P_IP, indev: int = 0
) -> bytes:
    """An ``NFULNL_MSG_PACKET`` message as the kernel writes it (for tests and the fuzzer)."""
    attrs = _attr(NFULA_PACKET_HDR, _BE16.pack(hw_protocol) + b"\x02\0")
    if prefix:
        attrs += _attr(NFULA_PREFIX, prefix.encode() + b"\0")
    if indev:
        attrs += _attr(NFULA_IFINDEX_INDEV, _BE32.pack(indev))
    attrs += _attr(NFULA_PAYLOAD, payload)
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, group) + attrs
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), PACKET_TYPE, 0, 0, 0) + body


@dataclass(slots=True)
class DecodeCounts:
    messages: int = 0
    malformed: int = 0
    errors: int = 0  # NLMSG_ERROR with a non-zero code outside a request


def decode(buf: bytes | bytearray | memoryview, n: int, counts: DecodeCounts) -> Iterator[LoggedPacket]:
    """The logged packets in the first ``n`` bytes of one netlink datagram (malformed ones counted)."""
    view = memoryview(buf)
    pos = 0
    while pos + _NLMSGHDR.size <= n:
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(view, pos)
        if length < _NLMSGHDR.size or pos + length > n:
            counts.malformed += 1
            return
        end = pos + length
        if kind == PACKET_TYPE:
            counts.messages += 1
            packet = _decode_packet(view, pos + _NLMSGHDR.size + _NFGENMSG.size, end)
            if packet is None:
                counts.malformed += 1
            else:
                yield packet
        elif kind == NLMSG_ERROR:
            if length >= _NLMSGHDR.size + 4 and _ERRNO.unpack_from(view, pos + _NLMSGHDR.size)[0] != 0:
                counts.errors += 1
        elif kind not in (NLMSG_NOOP, NLMSG_DONE, NLMSG_OVERRUN):
            counts.malformed += 1
        pos = end + (-length % 4)


def _decode_packet(view: memoryview, pos: int, end: int) -> LoggedPacket | None:
    prefix = ""
    hw_protocol = 0
    payload: bytes | None = None
    indev = outdev = 0
    while pos + _NLATTR.size <= end:
        alen, atype = _NLATTR.unpack_from(view, pos)
        if alen < _NLATTR.size or pos + alen > end:
            return None
        start = pos + _NLATTR.size
        atype &= NLA_TYPE_MASK
        if atype == NFULA_PAYLOAD:
            payload = bytes(view[start : pos + alen])
        elif atype == NFULA_PREFIX:
            prefix = bytes(view[start : pos + alen]).split(b"\0", 1)[0].decode("ascii", "replace")
        elif atype == NFULA_PACKET_HDR and alen >= _NLATTR.size + 2:
            hw_protocol = _BE16.unpack_from(view, start)[0]
        elif atype == NFULA_IFINDEX_INDEV and alen >= _NLATTR.size + 4:
            indev = _BE32.unpack_from(view, start)[0]
        elif atype == NFULA_IFINDEX_OUTDEV and alen >= _NLATTR.size + 4:
            outdev = _BE32.unpack_from(view, start)[0]
        pos += alen + (-alen % 4)
    if payload is None:
        return None
    return LoggedPacket(prefix, hw_protocol, payload, indev, outdev)


def has_net_admin() -> bool:
    """Whether this process holds CAP_NET_ADMIN (to tell "no permission" from "group taken")."""
    try:
        with open(f"/proc/{os.getpid()}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except OSError:
        pass
    return os.geteuid() == 0


class NflogSocket:
    """A netlink socket bound to one NFLOG group of a network namespace, read without blocking.

    ``qthreshold`` and ``timeout_cs`` let the kernel batch packets into one datagram (up to that
    many packets, or that many hundredths of a second): one wake-up of the event loop per batch
    instead of per packet, which is most of the per-packet cost (see bench/capture.py).
    """

    def __init__(
        self,
        group: int,
        netns: str | None = None,
        *,
        rcvbuf: int = 4 * 1024 * 1024,
        copy_range: int = 0xFFFF,
        qthreshold: int = 64,
        timeout_cs: int = 10,
        nlbufsiz: int = 64 * 1024,
    ) -> None:
        if not 0 <= group <= 0xFFFF:
            raise ValueError(f"NFLOG group must be 0..65535, not {group!r}")
        self.group = group
        self.netns = netns
        self.counts = DecodeCounts()
        self.enobufs = 0
        self.granted_rcvbuf = 0
        self._buf = bytearray(_RECV_SIZE)
        self._sock = socket_in(netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self._sock.bind((0, 0))
            self.granted_rcvbuf = self._set_rcvbuf(rcvbuf)
            self._request(config_message(group, command=NFULNL_CFG_CMD_BIND, seq=1), "bind")
            self._request(
                config_message(
                    group,
                    copy_range=copy_range,
                    qthreshold=qthreshold,
                    timeout_cs=timeout_cs,
                    nlbufsiz=nlbufsiz,
                    seq=2,
                ),
                "configure",
            )
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def _set_rcvbuf(self, size: int) -> int:
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except PermissionError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        return self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2

    def _request(self, message: bytes, what: str) -> None:
        """Send a config request and wait (blocking, briefly) for the kernel's acknowledgement."""
        self._sock.settimeout(2.0)
        self._sock.send(message)
        seq = _NLMSGHDR.unpack_from(message)[3]
        while True:
            n = self._sock.recv_into(self._buf)
            pos = 0
            while pos + _NLMSGHDR.size <= n:
                length, kind, _f, rseq, _p = _NLMSGHDR.unpack_from(self._buf, pos)
                if length < _NLMSGHDR.size:
                    break
                if kind == NLMSG_ERROR and rseq == seq:
                    code = -_ERRNO.unpack_from(self._buf, pos + _NLMSGHDR.size)[0]
                    if code:
                        self._raise(code, what)
                    return
                pos += length + (-length % 4)

    def _raise(self, code: int, what: str) -> None:
        where = f"network namespace {self.netns!r}" if self.netns else "this network namespace"
        if code == errno.EPERM:
            if has_net_admin():
                raise NflogError(
                    errno.EBUSY,
                    f"NFLOG group {self.group} in {where} is already taken by another program (ulogd, "
                    "another apviz?): stop it, or choose another [names] nflog_group",
                )
            raise NflogPermissionError(
                errno.EPERM,
                f"not permitted to {what} NFLOG group {self.group} in {where}: apviz needs CAP_NET_ADMIN "
                "(systemd/apviz.service grants it; `apviz doctor` checks the set-up)",
            )
        raise NflogError(code, f"cannot {what} NFLOG group {self.group} in {where}: {os.strerror(code)}")

    def read(self, max_datagrams: int = 64) -> list[LoggedPacket]:
        """Packets waiting now (up to ``max_datagrams`` kernel batches); ENOBUFS is counted, not raised."""
        out: list[LoggedPacket] = []
        for _ in range(max_datagrams):
            try:
                n = self._sock.recv_into(self._buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.enobufs += 1  # the kernel dropped copies; the packets themselves went on
                    continue
                raise
            out.extend(decode(self._buf, n, self.counts))
        return out

    def close(self) -> None:
        """Closing the socket is enough: the kernel frees the instance bound to our port id."""
        self._sock.close()
