"""QUIC Initial decoding: the RFC 9001 and RFC 9369 test vectors, real Initials from aioquic's
client (v1 and v2, a ClientHello over several packets), hand-protected packets for the frame
types an Initial may hold, and broken ones (bad tag, truncated, wrong type).

The builders here (``aioquic_initials``, ``protect``) seed bench/fuzz_sniff.py and bench/decoders.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicProtocolVersion
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apviz.sniff.quic import (
    KEY_CACHE,
    VERSION_1,
    VERSION_2,
    InitialPacket,
    QuicError,
    derive_keys,
    initial_keys,
    looks_like_initial,
    parse_initials,
)
from apviz.sniff.reassembly import Reassembly
from apviz.sniff.tls import ClientHello, TlsError, hello_from_handshake

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RFC_DCID = bytes.fromhex("8394c8f03e515708")

# The client Initial of RFC 9001 Appendix A.2 and RFC 9369 Appendix A.2 (the same ClientHello,
# packet number 2, padded to 1200 bytes), the CRYPTO frame both carry, and the server Initial of
# RFC 9001 Appendix A.3 (protected with the server keys).
RFC9001_CLIENT_INITIAL = bytes.fromhex(
    "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11d242b123dc9bd8bab936b47d92ec356c"
    "0bab7df5976d27cd449f63300099f3991c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c"
    "8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df621230c83711b39343fa028cea7f7fb5ff89"
    "eac2308249a02252155e2347b63d58c5457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208"
    "4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec4e15daf8500a6ef69ec4e3feb6b1d98e"
    "610ac8b7ec3faf6ad760b7bad1db4ba3485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db"
    "059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c7b4378e846d29f37ed7b4ea9ec5d82e7"
    "961b7f25a9323851f681d582363aa5f89937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556"
    "be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c7468449a13d8e3b95811a198f3491de3e7"
    "fe942b330407abf82a4ed7c1b311663ac69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00"
    "f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632291d6a418211cc2962e20fe47feb3edf"
    "330f2c603a9d48c0fcb5699dbfe5896425c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd"
    "14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ffef132eef2fa09346aee33c28eb130ff2"
    "8f5b766953334113211996d20011a198e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd"
    "c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73203a4a13e96f5432ec0fd4a1ee65accd"
    "d5e3904df54c1da510b0ff20dcc0c77fcb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e"
    "fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03adea2e1fbc5aa463d08ca19896d2bf59a07"
    "1b851e6c239052172f296bfb5e72404790a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2"
    "162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f440591f355e12d439ff150aab7613499d"
    "bd49adabc8676eef023b15b65bfc5ca06948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e"
    "8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0be79e2fb8f5d5fbbe2e30ecadd220723"
    "c8c0aea8078cdfcb3868263ff8f0940054da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab"
    "760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9f96f3ca9ec1dde434da7d2d392b905dd"
    "f3d1f9af93d1af5950bd493f5aa731b4056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064"
    "7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241e221af44860018ab0856972e194cd934"
)

RFC9369_CLIENT_INITIAL = bytes.fromhex(
    "d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485dd04de806071bf03dceebfa162e75d6c"
    "96058bdbfb127cdfcbf903388e99ad049f9a3dd4425ae4d0992cfff18ecf0fdb5a842d09747052f17ac2053d21f57c5d"
    "250f2c4f0e0202b70785b7946e992e58a59ac52dea6774d4f03b55545243cf1a12834e3f249a78d395e0d18f4d766004"
    "f1a2674802a747eaa901c3f10cda5500cb9122faa9f1df66c392079a1b40f0de1c6054196a11cbea40afb6ef5253cd68"
    "18f6625efce3b6def6ba7e4b37a40f7732e093daa7d52190935b8da58976ff3312ae50b187c1433c0f028edcc4c2838b"
    "6a9bfc226ca4b4530e7a4ccee1bfa2a3d396ae5a3fb512384b2fdd851f784a65e03f2c4fbe11a53c7777c023462239dd"
    "6f7521a3f6c7d5dd3ec9b3f233773d4b46d23cc375eb198c63301c21801f6520bcfb7966fc49b393f0061d974a2706df"
    "8c4a9449f11d7f3d2dcbb90c6b877045636e7c0c0fe4eb0f697545460c806910d2c355f1d253bc9d2452aaa549e27a1f"
    "ac7cf4ed77f322e8fa894b6a83810a34b361901751a6f5eb65a0326e07de7c1216ccce2d0193f958bb3850a833f7ae43"
    "2b65bc5a53975c155aa4bcb4f7b2c4e54df16efaf6ddea94e2c50b4cd1dfe06017e0e9d02900cffe1935e0491d77ffb4"
    "fdf85290fdd893d577b1131a610ef6a5c32b2ee0293617a37cbb08b847741c3b8017c25ca9052ca1079d8b78aebd4787"
    "6d330a30f6a8c6d61dd1ab5589329de714d19d61370f8149748c72f132f0fc99f34d766c6938597040d8f9e2bb522ff9"
    "9c63a344d6a2ae8aa8e51b7b90a4a806105fcbca31506c446151adfeceb51b91abfe43960977c87471cf9ad4074d30e1"
    "0d6a7f03c63bd5d4317f68ff325ba3bd80bf4dc8b52a0ba031758022eb025cdd770b44d6d6cf0670f4e990b22347a7db"
    "848265e3e5eb72dfe8299ad7481a408322cac55786e52f633b2fb6b614eaed18d703dd84045a274ae8bfa73379661388"
    "d6991fe39b0d93debb41700b41f90a15c4d526250235ddcd6776fc77bc97e7a417ebcb31600d01e57f32162a8560cacc"
    "7e27a096d37a1a86952ec71bd89a3e9a30a2a26162984d7740f81193e8238e61f6b5b984d4d3dfa033c1bb7e4f0037fe"
    "bf406d91c0dccf32acf423cfa1e7071010d3f270121b493ce85054ef58bada42310138fe081adb04e2bd901f2f13458b"
    "3d6758158197107c14ebb193230cd1157380aa79cae1374a7c1e5bbcb80ee23e06ebfde206bfb0fcbc0edc4ebec30966"
    "1bdd908d532eb0c6adc38b7ca7331dce8dfce39ab71e7c32d318d136b6100671a1ae6a6600e3899f31f0eed19e3417d1"
    "34b90c9058f8632c798d4490da4987307cba922d61c39805d072b589bd52fdf1e86215c2d54e6670e07383a27bbffb5a"
    "ddf47d66aa85a0c6f9f32e59d85a44dd5d3b22dc2be80919b490437ae4f36a0ae55edf1d0b5cb4e9a3ecabee93dfc6e3"
    "8d209d0fa6536d27a5d6fbb17641cde27525d61093f1b28072d111b2b4ae5f89d5974ee12e5cf7d5da4d6a31123041f3"
    "3e61407e76cffcdcfd7e19ba58cf4b536f4c4938ae79324dc402894b44faf8afbab35282ab659d13c93f70412e85cb19"
    "9a37ddec600545473cfb5a05e08d0b209973b2172b4d21fb69745a262ccde96ba18b2faa745b6fe189cf772a9f84cbfc"
)

RFC_CRYPTO_FRAME = bytes.fromhex(
    "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e86804fe3a47f06a2b69484c000004130113"
    "02010000c000000010000e00000b6578616d706c652e636f6dff01000100000a00080006001d00170018001000070005"
    "04616c706e000500050100000000003300260024001d00209370b2c9caa47fbabaf4559fedba753de171fa71f50f1ce1"
    "5d43e994ec74d748002b0003020304000d0010000e0403050306030203080408050806002d00020101001c0002400100"
    "3900320408ffffffffffffffff05048000ffff07048000ffff0801100104800075300901100f088394c8f03e51570806"
    "048000ffff"
)

RFC9001_SERVER_INITIAL = bytes.fromhex(
    "cf000000010008f067a5502a4262b5004075c0d95a482cd0991cd25b0aac406a5816b6394100f37a1c69797554780bb3"
    "8cc5a99f5ede4cf73c3ec2493a1839b3dbcba3f6ea46c5b7684df3548e7ddeb9c3bf9c73cc3f3bded74b562bfb19fb84"
    "022f8ef4cdd93795d77d06edbb7aaf2f58891850abbdca3d20398c276456cbc42158407dd074ee"
)


def aioquic_initials(
    server_name: str | None,
    alpn: list[str] | None = None,
    version: int = QuicProtocolVersion.VERSION_1,
) -> list[bytes]:
    """The first datagrams of a real aioquic client (its Initial packets, padded to 1200 bytes)."""
    config = QuicConfiguration(is_client=True, server_name=server_name, alpn_protocols=alpn)
    config.supported_versions = [version]
    conn = QuicConnection(configuration=config)
    conn.connect(("198.18.0.1", 443), now=0.0)
    return [datagram for datagram, _ in conn.datagrams_to_send(now=0.0)]


def varint2(value: int) -> bytes:
    return (0x4000 | value).to_bytes(2)


def protect(
    payload: bytes, pn: int = 0, version: int = VERSION_1, dcid: bytes = RFC_DCID, pn_len: int = 2
) -> bytes:
    """A client Initial around ``payload``, protected as RFC 9001 5 says (the inverse of the decoder)."""
    keys = derive_keys(version, dcid)
    payload = payload + bytes(max(0, 4 - pn_len - len(payload)))  # room for the header sample
    kind = 0 if version == VERSION_1 else 1
    first = 0xC0 | kind << 4 | (pn_len - 1)
    pn_bytes = pn.to_bytes(pn_len)
    header = bytes([first]) + version.to_bytes(4) + bytes([len(dcid)]) + dcid + b"\x00" + b"\x00"
    header += varint2(pn_len + len(payload) + 16) + pn_bytes
    nonce = (int.from_bytes(keys.iv) ^ pn).to_bytes(12)
    sealed = AESGCM(keys.key).encrypt(nonce, payload, header)
    sample = sealed[4 - pn_len : 20 - pn_len]
    mask = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor().update(sample)
    masked = bytes([first ^ (mask[0] & 0x0F)]) + header[1:-pn_len]
    masked += bytes(b ^ m for b, m in zip(pn_bytes, mask[1:], strict=False))
    return masked + sealed


def hello_of(datagrams: list[bytes]) -> ClientHello | None:
    stream = Reassembly()
    for datagram in datagrams:
        for packet in parse_initials(datagram):
            for offset, data in packet.crypto:
                stream.add(offset, data)
    return hello_from_handshake(stream.prefix)


def samples() -> list[bytes]:
    """Real client Initial datagrams to seed the fuzzer and the benchmark."""
    return [
        RFC9001_CLIENT_INITIAL,
        RFC9369_CLIENT_INITIAL,
        *aioquic_initials("quic.lab.test", ["h3"]),
        *aioquic_initials("v2.lab.test", ["h3"], QuicProtocolVersion.VERSION_2),
    ]


# --------------------------------------------------------------------------------------------------
# the RFC vectors


@pytest.mark.parametrize(
    ("version", "key", "iv", "hp"),
    [
        (
            VERSION_1,
            "1f369613dd76d5467730efcbe3b1a22d",
            "fa044b2f42a3fd3b46fb255c",
            "9f50449e04a0e810283a1e9933adedd2",
        ),
        (
            VERSION_2,
            "8b1a0bc121284290a29e0971b5cd045d",
            "91f73e2351d8fa91660e909f",
            "45b95e15235d6f45a6b19cbcb0294ba9",
        ),
    ],
)
def test_rfc_initial_keys(version: int, key: str, iv: str, hp: str) -> None:
    keys = derive_keys(version, RFC_DCID)
    assert (keys.key.hex(), keys.iv.hex(), keys.hp.hex()) == (key, iv, hp)


@pytest.mark.parametrize(
    ("version", "packet"), [(VERSION_1, RFC9001_CLIENT_INITIAL), (VERSION_2, RFC9369_CLIENT_INITIAL)]
)
def test_rfc_client_initial_decrypts_to_its_crypto_frame(version: int, packet: bytes) -> None:
    assert looks_like_initial(packet)
    (initial,) = parse_initials(packet)
    frame = RFC_CRYPTO_FRAME  # type 0x06, offset 0x00, length 0x40f1 (241), then the ClientHello
    assert frame[:4] == bytes.fromhex("060040f1")
    assert initial == InitialPacket(version, RFC_DCID, b"", 2, ((0, frame[4:]),))
    hello = hello_from_handshake(initial.crypto[0][1])
    assert hello == ClientHello(server_name="example.com", ech=False, alpn=("alpn",))


def test_a_server_initial_does_not_decrypt_with_client_keys() -> None:
    assert looks_like_initial(RFC9001_SERVER_INITIAL)
    with pytest.raises(QuicError, match="authentication"):
        parse_initials(RFC9001_SERVER_INITIAL)


# --------------------------------------------------------------------------------------------------
# real aioquic clients


def test_aioquic_v1_initial_gives_the_server_name() -> None:
    datagrams = aioquic_initials("quic.lab.test", ["h3"])
    (packet,) = parse_initials(datagrams[0])
    assert packet.version == VERSION_1 and packet.packet_number == 0 and len(packet.dcid) == 8
    assert hello_of(datagrams) == ClientHello(server_name="quic.lab.test", ech=False, alpn=("h3",))


def test_aioquic_without_server_name() -> None:
    assert hello_of(aioquic_initials(None, ["h3"])).server_name is None


def test_aioquic_v2_initial_gives_the_server_name() -> None:
    datagrams = aioquic_initials("v2.lab.test", ["h3"], QuicProtocolVersion.VERSION_2)
    (packet,) = parse_initials(datagrams[0])
    assert packet.version == VERSION_2 and datagrams[0][0] >> 4 & 3 == 1
    assert hello_of(datagrams).server_name == "v2.lab.test"


@pytest.mark.parametrize("version", [QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2])
def test_a_hello_over_two_initials_in_any_order(version: int) -> None:
    alpn = [f"{'x' * 180}{i}" for i in range(7)] + ["h3"]
    datagrams = aioquic_initials("big.lab.test", alpn, version)
    assert len(datagrams) == 2
    first, second = (parse_initials(d)[0] for d in datagrams)
    assert first.dcid == second.dcid and (first.packet_number, second.packet_number) == (0, 1)
    assert second.crypto[0][0] > 0  # the second packet continues the CRYPTO stream
    assert hello_from_handshake(b"".join(data for _, data in first.crypto)) is None  # half a hello
    want = ClientHello(server_name="big.lab.test", ech=False, alpn=tuple(alpn))
    assert hello_of(datagrams) == want
    assert hello_of(list(reversed(datagrams))) == want


def test_keys_are_cached_per_connection_and_bounded() -> None:
    datagrams = aioquic_initials("cache.lab.test", [f"{'y' * 200}{i}" for i in range(8)])
    before = initial_keys.cache_info()
    for datagram in datagrams:
        parse_initials(datagram)
    after = initial_keys.cache_info()
    assert after.misses - before.misses <= 1 and after.hits - before.hits >= len(datagrams) - 1
    assert after.maxsize == KEY_CACHE


# --------------------------------------------------------------------------------------------------
# coalesced packets and the frame types of an Initial


def test_coalesced_initials_and_what_follows_them() -> None:
    one = protect(b"\x06\x00\x03abc", pn=0)
    two = protect(b"\x06\x03\x03def", pn=1)
    packets = parse_initials(one + two)
    assert [p.crypto for p in packets] == [((0, b"abc"),), ((3, b"def"),)]
    assert len(parse_initials(one + bytes(50))) == 1  # zero padding after the packet
    zero_rtt = bytes([0xD0]) + (1).to_bytes(4) + b"\x08" + RFC_DCID + bytes(40)
    assert not looks_like_initial(zero_rtt)
    assert len(parse_initials(one + zero_rtt)) == 1  # stop at the first non-Initial
    with pytest.raises(QuicError):
        parse_initials(one + two[:-1])  # a coalesced Initial that is cut short


def test_allowed_frames_are_skipped() -> None:
    payload = (
        b"\x01"  # PING
        + b"\x02\x05\x00\x01\x00\x01\x02"  # ACK largest 5, delay 0, 1 range: first 0, gap 1, len 2
        + b"\x03\x05\x00\x00\x00\x01\x02\x03"  # ACK_ECN with its three counts
        + b"\x06\x00\x02hi"  # CRYPTO offset 0 "hi"
        + bytes(30)  # PADDING
        + b"\x1c\x0a\x00\x03bye"  # CONNECTION_CLOSE with a reason
        + b"\x06\x40\x02\x01!"  # CRYPTO offset 2 (two-byte varint) "!"
    )
    (packet,) = parse_initials(protect(payload, pn=7, pn_len=1))
    assert packet.packet_number == 7 and packet.crypto == ((0, b"hi"), (2, b"!"))


@pytest.mark.parametrize(
    "payload",
    [
        b"\x08\x00\x00",  # STREAM: not allowed in an Initial
        b"\x06\x00\x10abc",  # CRYPTO longer than the packet
        b"\x02\x05\x00\x7f",  # ACK cut short
        b"\x1c\x00\x00\x40\x50",  # CONNECTION_CLOSE reason longer than the packet
        b"\x06\x00",  # CRYPTO cut in its varints
    ],
)
def test_malformed_frames(payload: bytes) -> None:
    with pytest.raises(QuicError):
        parse_initials(protect(payload + (b"" if len(payload) > 3 else b"\x08"), pn_len=4))


# --------------------------------------------------------------------------------------------------
# broken packets


def test_any_flipped_byte_after_the_header_fails_authentication() -> None:
    datagram = aioquic_initials("flip.lab.test")[0]
    packet = datagram[: datagram.index(bytes(32))]  # aioquic pads the datagram after its packet
    assert parse_initials(packet) == parse_initials(datagram)
    for pos in range(30, len(packet), 7):
        broken = bytearray(packet)
        broken[pos] ^= 0x01
        with pytest.raises(QuicError):
            parse_initials(bytes(broken))
    tag_broken = packet[:-1] + bytes([packet[-1] ^ 0x80])
    with pytest.raises(QuicError, match="authentication"):
        parse_initials(tag_broken)


def test_every_truncation_is_an_error() -> None:
    packet = RFC9001_CLIENT_INITIAL
    for k in range(len(packet)):
        with pytest.raises(QuicError):
            parse_initials(packet[:k])


def test_wrong_dcid_fails_and_overlong_ids_are_refused() -> None:
    packet = bytearray(RFC9001_CLIENT_INITIAL)
    packet[6] ^= 0xFF  # the DCID: other keys
    with pytest.raises(QuicError):
        parse_initials(bytes(packet))
    overlong = RFC9001_CLIENT_INITIAL[:5] + b"\x15" + bytes(21) + RFC9001_CLIENT_INITIAL[14:]
    with pytest.raises(QuicError, match="connection id"):
        parse_initials(overlong)


@pytest.mark.parametrize(
    ("datagram", "initial"),
    [
        (RFC9001_CLIENT_INITIAL, True),
        (RFC9369_CLIENT_INITIAL, True),
        (bytes([0xE0]) + RFC9001_CLIENT_INITIAL[1:], False),  # v1 Handshake type
        (bytes([0xC0]) + RFC9369_CLIENT_INITIAL[1:], False),  # v2 type 0 is 0-RTT
        (bytes([0x40]) + RFC9001_CLIENT_INITIAL[1:], False),  # short header
        (RFC9001_CLIENT_INITIAL[:1] + bytes(4) + RFC9001_CLIENT_INITIAL[5:], False),  # version negotiation
        (RFC9001_CLIENT_INITIAL[:1] + b"\xff\x00\x00\x1d" + RFC9001_CLIENT_INITIAL[5:], False),  # draft 29
        (b"\xc0\x00", False),
        (b"", False),
    ],
)
def test_looks_like_initial(datagram: bytes, initial: bool) -> None:
    assert looks_like_initial(datagram) is initial
    if not initial:
        with pytest.raises(QuicError):
            parse_initials(datagram)


# --------------------------------------------------------------------------------------------------
# property tests: only QuicError, whatever the bytes


def check(datagram: bytes) -> None:
    try:
        packets = parse_initials(datagram)
    except QuicError:
        return
    assert packets and all(isinstance(p, InitialPacket) for p in packets)


REAL = [RFC9001_CLIENT_INITIAL, RFC9369_CLIENT_INITIAL, *aioquic_initials("fuzz.lab.test", ["h3"])]


@FAST
@given(st.binary(max_size=1400))
def test_random_bytes(data: bytes) -> None:
    check(data)
    check(RFC9001_CLIENT_INITIAL[:5] + data)
    check(RFC9369_CLIENT_INITIAL[:14] + data)


@FAST
@given(st.sampled_from(REAL), st.lists(st.tuples(st.integers(0, 1199), st.integers(0, 255)), max_size=6))
def test_mutated_real_initials(base: bytes, flips: list[tuple[int, int]]) -> None:
    data = bytearray(base)
    for pos, value in flips:
        data[pos] = value
    check(bytes(data))


@FAST
@given(st.binary(max_size=600), st.integers(0, 2**30), st.integers(1, 4))
def test_any_decrypted_payload(payload: bytes, pn: int, pn_len: int) -> None:
    """What the frame reader sees after a valid decryption: any bytes, only QuicError."""
    packet = protect(payload, pn=pn % (1 << (8 * pn_len)), pn_len=pn_len)
    try:
        (initial,) = parse_initials(packet)
    except QuicError:
        return
    for _, data in initial.crypto:
        with contextlib.suppress(TlsError):
            hello_from_handshake(data)


# --------------------------------------------------------------------------------------------------
# over a real UDP socket


@pytest.mark.parametrize("version", [QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2])
def test_initials_read_from_a_real_udp_socket(version: int) -> None:
    """aioquic's asyncio client sends to a loopback socket; the datagrams it receives decode."""

    async def capture() -> list[bytes]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        config = QuicConfiguration(is_client=True, server_name="udp.lab.test", alpn_protocols=["h3"])
        config.supported_versions = [version]
        loop = asyncio.get_running_loop()
        try:
            async with connect(*sock.getsockname(), configuration=config, wait_connected=False) as client:
                client.transmit()  # without waiting for the handshake, which nobody answers here
                return [await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)]
        finally:
            sock.close()

    datagrams = asyncio.run(capture())
    assert all(looks_like_initial(d) for d in datagrams)
    (packet,) = parse_initials(datagrams[0])
    assert packet.version == version
    assert hello_of(datagrams) == ClientHello(server_name="udp.lab.test", ech=False, alpn=("h3",))
