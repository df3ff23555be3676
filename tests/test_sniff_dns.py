"""DNS answers from other resolvers: dnspython-built responses (A, AAAA, CNAME chains, NXDOMAIN, no
answer), TCP framing cut anywhere, hostile names, and garbage.

``response`` and ``samples`` here seed bench/fuzz_sniff.py and bench/decoders.py.
"""

from __future__ import annotations

import struct

import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apviz.sniff.dnswire import MAX_CHAIN, DnsResponse, DnsWireError, parse_response, split_tcp
from tests.test_sniff_tls import is_safe

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def response(
    qname: str | dns.name.Name, qtype: str = "A", *records: tuple[str | dns.name.Name, int, str, str]
) -> bytes:
    """A response to ``qname``/``qtype`` with these answer records (owner, ttl, type, value)."""
    query = dns.message.make_query(qname, qtype)
    reply = dns.message.make_response(query)
    for owner, ttl, rdtype, value in records:
        reply.answer.append(dns.rrset.from_text(owner, ttl, "IN", rdtype, value))
    return reply.to_wire()


def nxdomain(qname: str) -> bytes:
    reply = dns.message.make_response(dns.message.make_query(qname, "A"))
    reply.set_rcode(dns.rcode.NXDOMAIN)
    return reply.to_wire()


def samples() -> list[bytes]:
    return [
        response("dns.lab.test", "A", ("dns.lab.test.", 300, "A", "198.18.0.53")),
        response(
            "www.shop.example",
            "A",
            ("www.shop.example.", 300, "CNAME", "shop.cdn.example."),
            ("shop.cdn.example.", 120, "CNAME", "edge7.cdn.example."),
            ("edge7.cdn.example.", 30, "A", "198.18.1.7"),
            ("edge7.cdn.example.", 30, "A", "198.18.1.8"),
        ),
        response("v6.example", "AAAA", ("v6.example.", 60, "AAAA", "2001:db8::1")),
        nxdomain("mask.icloud.com"),
    ]


def test_a_record() -> None:
    got = parse_response(response("Dns.Lab.Test", "A", ("dns.lab.test.", 300, "A", "198.18.0.53")))
    assert got == DnsResponse("dns.lab.test", "NOERROR", ("198.18.0.53",), (), 300)


def test_aaaa_record() -> None:
    got = parse_response(response("v6.example", "AAAA", ("v6.example.", 60, "AAAA", "2001:db8::1")))
    assert got == DnsResponse("v6.example", "NOERROR", ("2001:db8::1",), (), 60)


def test_cname_chain_gives_the_addresses_at_its_end_and_the_smallest_ttl() -> None:
    got = parse_response(samples()[1])
    assert got == DnsResponse(
        "www.shop.example",
        "NOERROR",
        ("198.18.1.7", "198.18.1.8"),
        ("shop.cdn.example", "edge7.cdn.example"),
        30,
    )


def test_chain_in_any_answer_order() -> None:
    wire = response(
        "a.example",
        "A",
        ("c.example.", 50, "A", "198.18.2.2"),
        ("b.example.", 200, "CNAME", "c.example."),
        ("a.example.", 100, "CNAME", "b.example."),
    )
    assert parse_response(wire) == DnsResponse(
        "a.example", "NOERROR", ("198.18.2.2",), ("b.example", "c.example"), 50
    )


def test_records_off_the_chain_are_ignored() -> None:
    wire = response(
        "asked.example",
        "A",
        ("asked.example.", 100, "A", "198.18.3.1"),
        ("other.example.", 5, "A", "198.18.3.99"),  # an address for a name nobody asked
        ("unrelated.example.", 5, "CNAME", "asked.example."),
    )
    assert parse_response(wire) == DnsResponse("asked.example", "NOERROR", ("198.18.3.1",), (), 100)


def test_nxdomain_and_no_answer() -> None:
    assert parse_response(nxdomain("use-application-dns.net")) == DnsResponse(
        "use-application-dns.net", "NXDOMAIN", (), (), None
    )
    assert parse_response(response("empty.example", "AAAA")) == DnsResponse(
        "empty.example", "NOERROR", (), (), None
    )
    refused = dns.message.make_response(dns.message.make_query("x.example", "A"))
    refused.set_rcode(dns.rcode.REFUSED)
    assert parse_response(refused.to_wire()).rcode == "REFUSED"


def test_cname_without_addresses() -> None:
    got = parse_response(response("a.example", "A", ("a.example.", 100, "CNAME", "gone.example.")))
    assert got == DnsResponse("a.example", "NOERROR", (), ("gone.example",), 100)


def test_cname_loop_and_long_chain_are_bounded() -> None:
    loop = response(
        "a.example", "A", ("a.example.", 10, "CNAME", "b.example."), ("b.example.", 10, "CNAME", "a.example.")
    )
    assert parse_response(loop).cnames == ("b.example",)
    links = [(f"n{i}.example.", 10, "CNAME", f"n{i + 1}.example.") for i in range(40)]
    long = parse_response(response("n0.example", "A", *links, ("n40.example.", 10, "A", "198.18.0.1")))
    assert len(long.cnames) == MAX_CHAIN and long.addresses == ()


def test_queries_and_odd_messages_are_refused() -> None:
    query = dns.message.make_query("x.example", "A")
    with pytest.raises(DnsWireError, match="query"):
        parse_response(query.to_wire())
    notify = dns.message.make_response(query)
    notify.set_opcode(dns.opcode.NOTIFY)
    with pytest.raises(DnsWireError, match="opcode"):
        parse_response(notify.to_wire())
    two = dns.message.make_response(query)
    two.question.append(dns.message.make_query("y.example", "A").question[0])
    with pytest.raises(DnsWireError, match="2 questions"):
        parse_response(two.to_wire())
    none = dns.message.make_response(query)
    none.question = []
    with pytest.raises(DnsWireError, match="0 questions"):
        parse_response(none.to_wire())


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\x00" * 11,
        b"\x12\x34\x81\x80" + b"\xff" * 30,
        b"\x12\x34\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c",
    ],
)
def test_garbage(wire: bytes) -> None:
    with pytest.raises(DnsWireError):
        parse_response(wire)


# --------------------------------------------------------------------------------------------------
# hostile names


@pytest.mark.parametrize(
    ("labels", "want"),
    [
        ((b"<script>", b"example"), "\\x3cscript\\x3e.example"),
        ((b"a\x00b\x1b[0m", b"example"), "a\\x00b\\x1b\\x5b0m.example"),
        ((b"dot.inside", b"example"), "dot\\x2einside.example"),
        (("bücher".encode(), b"DE"), "b\\xc3\\xbccher.de"),
        ((b"quote\"'&", b"x"), "quote\\x22\\x27\\x26.x"),
    ],
)
def test_hostile_names_become_safe_text(labels: tuple[bytes, ...], want: str) -> None:
    name = dns.name.Name((*labels, b""))
    target = dns.name.Name((b"<b>evil", b"example", b""))
    reply = dns.message.make_response(dns.message.make_query(name, "A"))
    reply.answer.append(dns.rrset.from_text(name, 10, "IN", "CNAME", target.to_text()))
    reply.answer.append(dns.rrset.from_text(target, 10, "IN", "A", "198.18.0.9"))
    got = parse_response(reply.to_wire())
    assert got.name == want and is_safe(got.name)
    assert got.cnames == ("\\x3cb\\x3eevil.example",) and got.addresses == ("198.18.0.9",)


def test_longest_name_is_kept_whole() -> None:
    name = dns.name.Name((b"\xff" * 63, b"a" * 63, b"b" * 63, b"c" * 61, b""))  # 255 wire bytes
    got = parse_response(response(name, "A"))
    assert got.name.count("\\xff") == 63 and got.name.endswith("c" * 61) and "..." not in got.name
    assert is_safe(got.name)


# --------------------------------------------------------------------------------------------------
# TCP framing


def framed(*messages: bytes) -> bytes:
    return b"".join(struct.pack("!H", len(m)) + m for m in messages)


def test_split_tcp_cut_anywhere() -> None:
    wires = samples()
    stream = framed(*wires)
    for cut in range(len(stream) + 1):
        head, used = split_tcp(stream[:cut])
        rest = stream[used:cut] + stream[cut:]
        tail, used2 = split_tcp(rest)
        assert head + tail == wires and used2 == len(rest)
        assert [parse_response(m) for m in head] == [parse_response(w) for w in wires[: len(head)]]


def test_split_tcp_edges() -> None:
    assert split_tcp(b"") == ([], 0)
    assert split_tcp(b"\x00") == ([], 0)
    assert split_tcp(b"\x00\x00") == ([b""], 2)  # an empty message is returned; parsing refuses it
    assert split_tcp(b"\x00\x05abc") == ([], 0)
    with pytest.raises(DnsWireError):
        parse_response(b"")


# --------------------------------------------------------------------------------------------------
# property tests: only DnsWireError, whatever the bytes


def check(wire: bytes) -> None:
    try:
        got = parse_response(wire)
    except DnsWireError:
        return
    assert is_safe(got.name) and all(is_safe(c) for c in got.cnames)
    assert got.ttl is None or got.ttl >= 0


@FAST
@given(st.binary(max_size=600))
def test_random_bytes(wire: bytes) -> None:
    check(wire)
    check(b"\x12\x34\x81\x80\x00\x01" + wire)
    messages, used = split_tcp(wire)
    assert used <= len(wire) and sum(len(m) + 2 for m in messages) == used


@FAST
@given(
    st.sampled_from(samples()),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
    st.integers(0, 400),
)
def test_mutated_real_answers(base: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(base)
    for pos, value in flips:
        data[pos % len(data)] = value
    check(bytes(data))
    check(bytes(data[:cut]))
