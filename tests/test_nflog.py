"""The NFLOG client: message decoding (pure) and binding a group in a real network namespace."""

from __future__ import annotations

import errno
import select
import struct
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apviz.lab.lab import Lab
from apviz.sources import nflog
from apviz.sources.capture import CaptureRules, CaptureTable
from apviz.sources.nflog import DecodeCounts, LoggedPacket, NflogError, NflogSocket, decode, packet_message


def test_decode_several_messages_in_one_datagram() -> None:
    data = packet_message(7400, b"\x45abc", "apviz-tls", indev=3) + packet_message(
        7400, b"\x60xyz!", "apviz-dns", hw_protocol=nflog.ETH_P_IPV6
    )
    counts = DecodeCounts()
    got = list(decode(data, len(data), counts))
    assert got == [
        LoggedPacket("apviz-tls", nflog.ETH_P_IP, b"\x45abc", indev=3),
        LoggedPacket("apviz-dns", nflog.ETH_P_IPV6, b"\x60xyz!"),
    ]
    assert counts == DecodeCounts(messages=2)


def test_a_packet_without_payload_or_cut_short_is_counted_malformed() -> None:
    counts = DecodeCounts()
    whole = packet_message(1, b"\x45" * 40, "p")
    assert list(decode(whole, len(whole) - 10, counts)) == []  # the kernel never cuts; a bug must not crash
    no_payload = struct.pack("=IHHII", 20, nflog.PACKET_TYPE, 0, 0, 0) + b"\0\0\0\0"
    assert list(decode(no_payload, len(no_payload), counts)) == []
    assert counts.malformed == 2


def test_error_messages_are_counted_and_skipped() -> None:
    err = struct.pack("=IHHIIi", 20, nflog.NLMSG_ERROR, 0, 0, 0, -errno.ENOBUFS)
    data = err + packet_message(1, b"\x45", "x")
    counts = DecodeCounts()
    assert len(list(decode(data, len(data), counts))) == 1
    assert counts.errors == 1


def test_config_message_layout() -> None:
    msg = nflog.config_message(7400, command=nflog.NFULNL_CFG_CMD_BIND, seq=9)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", msg)
    assert (length, kind, seq) == (len(msg), nflog.CONFIG_TYPE, 9)
    assert flags == nflog.NLM_F_REQUEST | nflog.NLM_F_ACK
    assert struct.unpack_from("!BBH", msg, 16) == (0, 0, 7400)
    assert struct.unpack_from("=HHB", msg, 20) == (5, nflog.NFULA_CFG_CMD, nflog.NFULNL_CFG_CMD_BIND)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_decode_never_raises(data: bytes) -> None:
    for blob in (data, struct.pack("=IHHII", 16 + len(data), nflog.PACKET_TYPE, 0, 0, 0) + data):
        list(decode(blob, len(blob), DecodeCounts()))


@pytest.mark.lab
def test_bind_in_a_namespace_and_a_taken_group_is_explained(module_lab: Lab) -> None:
    first = NflogSocket(7400, module_lab.gateway_ns)
    try:
        with pytest.raises(NflogError, match="already taken by another program") as info:
            NflogSocket(7400, module_lab.gateway_ns)
        assert info.value.errno == errno.EBUSY
        other = NflogSocket(7401, module_lab.gateway_ns)  # another group is free
        other.close()
    finally:
        first.close()
    again = NflogSocket(7400, module_lab.gateway_ns)  # closing the socket freed the group
    again.close()


@pytest.mark.lab
def test_a_full_receive_buffer_is_counted_and_reading_goes_on(lab_factory: Any) -> None:
    """ENOBUFS: the kernel dropped copies because we were slow; counted, and the socket still works."""
    lab = lab_factory(phones=1)
    sock = NflogSocket(7400, lab.gateway_ns, rcvbuf=4096, qthreshold=1, timeout_cs=0)
    table = CaptureTable(lab.gateway_ns, CaptureRules())
    try:
        table.install()
        for _ in range(6):  # several SYN + data copies, none read meanwhile: the tiny buffer overflows
            lab.phone_connect(lab.phones[0], address="198.18.3.3", nbytes=10, upload=3000, port=80)
        time.sleep(0.2)
        first = sock.read()
        assert sock.enobufs >= 1
        lab.phone_connect(lab.phones[0], address="198.18.3.3", nbytes=10, upload=200, port=80)
        deadline = time.monotonic() + 3
        later: list[LoggedPacket] = []
        while not later and time.monotonic() < deadline:
            select.select([sock], [], [], 0.2)
            later = sock.read()
        assert later and all(p.prefix == "apviz-tls" for p in first + later)
    finally:
        sock.close()
        table.remove()
