"""Plain DNS answers a LAN device received from a resolver other than the gateway's dnsmasq.

The wire format is parsed by dnspython (``dns.message.from_wire``); this module only picks what the
attribution needs: the question, the rcode, the CNAME chain that starts at the question and the
A/AAAA records at its end. Records that are not on that chain (additional data, a CNAME for some
other name, an address for a name nobody asked) are ignored, so a resolver cannot attach addresses
to a name by merely listing them. Names come out through :func:`apviz.sniff.names.safe_labels`.

Over TCP (RFC 1035 4.2.2) messages carry a two-byte length prefix; :func:`split_tcp` cuts a stream
into whole messages and says how much it consumed, so the caller keeps only the remainder.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.exception
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from apviz.sniff.names import safe_labels

MAX_CHAIN = 16  # CNAME links followed from the question (resolvers give up around 8 to 16 too)
MAX_ADDRESSES = 64  # addresses kept from the end of the chain
MAX_MESSAGE = 65535


class DnsWireError(ValueError):
    """Not a DNS response with one question, or not parseable: the caller counts and skips."""


@dataclass(frozen=True, slots=True)
class DnsResponse:
    """What a DNS response tells about a name, with every name as safe text."""

    name: str  # the question name, lower case, no trailing dot
    rcode: str  # "NOERROR", "NXDOMAIN", ...
    addresses: tuple[str, ...]  # A/AAAA at the end of the CNAME chain that starts at `name`
    cnames: tuple[str, ...]  # the chain after `name`, in order
    ttl: int | None  # smallest TTL of the records used


def _text(name: dns.name.Name) -> str:
    labels = name.labels[:-1] if name.is_absolute() else name.labels
    return safe_labels(labels)


def parse_response(wire: bytes) -> DnsResponse:
    """Only responses (QR=1) of a standard query with one question; anything else is DnsWireError."""
    if len(wire) < 12:
        raise DnsWireError(f"{len(wire)} bytes is shorter than a DNS header")
    if not wire[2] & 0x80:
        raise DnsWireError("a query, not a response")
    try:
        msg = dns.message.from_wire(wire, ignore_trailing=True)
    except (dns.exception.DNSException, ValueError, IndexError, KeyError, UnicodeError) as exc:
        # DNSException is what dnspython raises on bad wire data (the only kind seen in 200,000
        # mutated answers and the atheris run); the others are a belt for its many rdata parsers.
        raise DnsWireError(f"unparseable DNS message: {type(exc).__name__}") from None
    if msg.opcode() != dns.opcode.QUERY:
        raise DnsWireError(f"opcode {dns.opcode.to_text(msg.opcode())}")
    if len(msg.question) != 1:
        raise DnsWireError(f"{len(msg.question)} questions")
    qname = msg.question[0].name
    # One pass over the answer section (dnspython already merged records into RRsets): the chain
    # walk is then dict look-ups, not a scan of the section per link.
    answers: dict[tuple[dns.name.Name, int], dns.rrset.RRset] = {}
    for rrset in msg.answer:
        if rrset.rdclass == dns.rdataclass.IN and len(rrset):
            answers.setdefault((rrset.name, rrset.rdtype), rrset)
    current = qname
    cnames: list[str] = []
    ttls: list[int] = []
    seen = {qname}
    for _ in range(MAX_CHAIN):
        link = answers.get((current, dns.rdatatype.CNAME))
        if link is None:
            break
        target = link[0].target
        if target in seen:
            break  # a loop: stop where it closes
        seen.add(target)
        ttls.append(link.ttl)
        cnames.append(_text(target))
        current = target
    addresses: list[str] = []
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        rrset = answers.get((current, rdtype))
        if rrset is not None:
            ttls.append(rrset.ttl)
            addresses.extend(rdata.address for rdata in rrset)
    return DnsResponse(
        name=_text(qname),
        rcode=dns.rcode.to_text(msg.rcode()),
        addresses=tuple(addresses[:MAX_ADDRESSES]),
        cnames=tuple(cnames),
        ttl=min(ttls) if ttls else None,
    )


def split_tcp(stream: bytes) -> tuple[list[bytes], int]:
    """2-byte length-prefixed messages: the complete ones, and the bytes they consumed."""
    messages: list[bytes] = []
    pos = 0
    while len(stream) - pos >= 2:
        length = int.from_bytes(stream[pos : pos + 2])
        if len(stream) - pos - 2 < length:
            break
        messages.append(stream[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return messages, pos
