"""The CRYPTO frames of a client's QUIC Initial packets, decrypted with their public keys.

A QUIC client's first packets carry its TLS ClientHello, encrypted with keys that anyone can derive
from the packet's Destination Connection ID (RFC 9001 5.2; RFC 9369 3.3.1 for QUIC v2: another salt
and other HKDF labels). This module does exactly what an on-path observer may: derive the client
Initial keys, remove header protection (RFC 9001 5.4: an AES-ECB mask over a sample of the
ciphertext), open the AES-128-GCM payload with ``cryptography`` and read the frames an Initial may
hold (PADDING, PING, ACK, CRYPTO, CONNECTION_CLOSE). Only client Initials decrypt: a server's
Initial uses the server keys and fails authentication, which is a ``QuicError`` like any other
malformed packet. The caller reassembles CRYPTO frames (by offset) and reads the hello with
:func:`apviz.sniff.tls.hello_from_handshake`.

Keys are cached per (version, DCID) in a bounded LRU: all Initials of one connection share the
DCID the client chose, so the HKDF work is done once per connection (bench/decoders.py measures
both). Not thread-safe (the cached header-protection cipher is shared); apviz decodes in one thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

VERSION_1 = 0x00000001
VERSION_2 = 0x6B3343CF
MAX_CID = 20  # RFC 9000 17.2: connection ids of QUIC v1 and v2 are at most 20 bytes
KEY_CACHE = 1024  # connections whose Initial keys are kept

# Per version: Initial salt, the long-header type bits of Initial, and the labels of key, iv, hp.
_VERSIONS: dict[int, tuple[bytes, int, bytes, bytes, bytes]] = {
    VERSION_1: (
        bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
        0,
        b"quic key",
        b"quic iv",
        b"quic hp",
    ),
    VERSION_2: (
        bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
        1,
        b"quicv2 key",
        b"quicv2 iv",
        b"quicv2 hp",
    ),
}
_INITIAL_TYPE = {version: spec[1] for version, spec in _VERSIONS.items()}
_NOT_PADDING = re.compile(b"[^\x00]")


class QuicError(ValueError):
    """Not a client Initial, malformed, or failing authentication: the caller counts and skips."""


@dataclass(frozen=True, slots=True)
class InitialPacket:
    """One decrypted client Initial: its connection ids, packet number and CRYPTO frames."""

    version: int
    dcid: bytes
    scid: bytes
    packet_number: int
    crypto: tuple[tuple[int, bytes], ...]  # CRYPTO frames (offset, data) in packet order


@dataclass(frozen=True, slots=True)
class InitialKeys:
    """The client Initial keys of one (version, DCID); the raw values are kept for the RFC tests."""

    key: bytes
    iv: bytes
    hp: bytes
    aead: AESGCM
    mask: CipherContext  # AES-ECB with the header-protection key


def _label(label: bytes, length: int) -> bytes:
    """The HkdfLabel of TLS 1.3 (RFC 8446 7.1) with an empty context."""
    full = b"tls13 " + label
    return length.to_bytes(2) + bytes([len(full)]) + full + b"\x00"


def derive_keys(version: int, dcid: bytes) -> InitialKeys:
    """The client's Initial key, IV and header-protection key for this version and DCID (uncached)."""
    salt, _, key_label, iv_label, hp_label = _VERSIONS[version]
    # HKDF-Extract(salt, dcid) then HKDF-Expand-Label(., "client in", "", 32) is one HKDF call.
    secret = HKDF(hashes.SHA256(), 32, salt, _label(b"client in", 32)).derive(dcid)
    key = HKDFExpand(hashes.SHA256(), 16, _label(key_label, 16)).derive(secret)
    iv = HKDFExpand(hashes.SHA256(), 12, _label(iv_label, 12)).derive(secret)
    hp = HKDFExpand(hashes.SHA256(), 16, _label(hp_label, 16)).derive(secret)
    mask = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()  # ECB is what RFC 9001 5.4.3 specifies
    return InitialKeys(key=key, iv=iv, hp=hp, aead=AESGCM(key), mask=mask)


initial_keys = lru_cache(maxsize=KEY_CACHE)(derive_keys)


def looks_like_initial(datagram: bytes) -> bool:
    """A long header with the Initial type of QUIC v1 or v2: a cheap test, no crypto."""
    if len(datagram) < 7 or not datagram[0] & 0x80:
        return False
    kind = _INITIAL_TYPE.get(int.from_bytes(datagram[1:5]))
    return kind is not None and (datagram[0] >> 4) & 3 == kind


def parse_initials(datagram: bytes) -> list[InitialPacket]:
    """Client Initial packets in one UDP datagram (coalesced packets: stop at the first non-Initial).
    Derive the Initial keys from the DCID (RFC 9001 5.2 for v1, RFC 9369 for v2: other salt and HKDF
    labels), remove header protection (AES-ECB mask), decrypt AES-128-GCM with `cryptography`.
    Raises QuicError on anything malformed or failing authentication."""
    if not looks_like_initial(datagram):
        raise QuicError("not a QUIC v1/v2 Initial packet")
    packets: list[InitialPacket] = []
    pos = 0
    while pos < len(datagram) and looks_like_initial(datagram[pos : pos + 7]):
        packet, pos = _one(datagram, pos)
        packets.append(packet)
    return packets


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A QUIC variable-length integer (RFC 9000 16) at ``pos``: its value and the next position."""
    if pos >= end:
        raise QuicError("truncated variable-length integer")
    first = buf[pos]
    size = 1 << (first >> 6)
    if pos + size > end:
        raise QuicError("truncated variable-length integer")
    value = first & 0x3F
    for b in buf[pos + 1 : pos + size]:
        value = (value << 8) | b
    return value, pos + size


def _one(data: bytes, start: int) -> tuple[InitialPacket, int]:
    """Decrypt the Initial at ``start``; returns it and where the next coalesced packet begins."""
    total = len(data)
    version = int.from_bytes(data[start + 1 : start + 5])
    pos = start + 5
    dcid_len = data[pos]
    if dcid_len > MAX_CID:
        raise QuicError(f"destination connection id of {dcid_len} bytes")
    dcid = data[pos + 1 : pos + 1 + dcid_len]
    pos += 1 + dcid_len
    if pos >= total:
        raise QuicError("truncated header")
    scid_len = data[pos]
    if scid_len > MAX_CID:
        raise QuicError(f"source connection id of {scid_len} bytes")
    scid = data[pos + 1 : pos + 1 + scid_len]
    pos += 1 + scid_len
    if pos > total:
        raise QuicError("truncated header")
    token_len, pos = _varint(data, pos, total)
    pos += token_len
    length, pn_offset = _varint(data, pos, total)
    end = pn_offset + length
    if end > total:
        raise QuicError(f"packet of {length} bytes in {total - pn_offset} left")
    if length < 4 + 16:  # the header-protection sample starts 4 bytes after the packet number
        raise QuicError(f"packet of {length} bytes is too short to protect")

    keys = initial_keys(version, bytes(dcid))
    sample = data[pn_offset + 4 : pn_offset + 20]
    mask = keys.mask.update(sample)
    first = data[start] ^ (mask[0] & 0x0F)
    pn_len = (first & 0x03) + 1
    pn_bytes = bytes(b ^ m for b, m in zip(data[pn_offset : pn_offset + pn_len], mask[1:], strict=False))
    packet_number = int.from_bytes(pn_bytes)
    header = bytes([first]) + data[start + 1 : pn_offset] + pn_bytes
    nonce = (int.from_bytes(keys.iv) ^ packet_number).to_bytes(12)
    try:
        payload = keys.aead.decrypt(nonce, data[pn_offset + pn_len : end], header)
    except InvalidTag:
        raise QuicError("Initial packet failed authentication") from None
    if first & 0x0C:
        raise QuicError("reserved header bits set")  # RFC 9000 17.2: after removing protection
    crypto = _frames(payload)
    return InitialPacket(version, bytes(dcid), bytes(scid), packet_number, crypto), end


def _frames(payload: bytes) -> tuple[tuple[int, bytes], ...]:
    """The CRYPTO frames of a decrypted Initial payload; the other frames allowed there are skipped."""
    crypto: list[tuple[int, bytes]] = []
    pos, end = 0, len(payload)
    if not end:
        raise QuicError("empty Initial payload")  # RFC 9000 12.4: a packet holds at least one frame
    while pos < end:
        kind = payload[pos]
        pos += 1
        if kind == 0x00:  # PADDING: skip the whole run
            found = _NOT_PADDING.search(payload, pos)
            pos = found.start() if found else end
        elif kind == 0x01:  # PING
            continue
        elif kind == 0x06:  # CRYPTO
            offset, pos = _varint(payload, pos, end)
            length, pos = _varint(payload, pos, end)
            if length > end - pos:
                raise QuicError("CRYPTO frame longer than the packet")
            crypto.append((offset, payload[pos : pos + length]))
            pos += length
        elif kind in (0x02, 0x03):  # ACK, ACK with ECN counts
            _, pos = _varint(payload, pos, end)  # largest acknowledged
            _, pos = _varint(payload, pos, end)  # delay
            ranges, pos = _varint(payload, pos, end)
            for _ in range(min(ranges, end) * 2 + 1):  # first range, then gap/length pairs
                _, pos = _varint(payload, pos, end)
            for _ in range(3 if kind == 0x03 else 0):
                _, pos = _varint(payload, pos, end)
        elif kind == 0x1C:  # CONNECTION_CLOSE (transport)
            _, pos = _varint(payload, pos, end)
            _, pos = _varint(payload, pos, end)
            reason, pos = _varint(payload, pos, end)
            if reason > end - pos:
                raise QuicError("CONNECTION_CLOSE reason longer than the packet")
            pos += reason
        else:
            raise QuicError(f"frame type {kind:#x} is not allowed in an Initial packet")
    return tuple(crypto)
