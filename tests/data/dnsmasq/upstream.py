"""A tiny deterministic upstream DNS server for the fixture capture (runs inside the "internet"
namespace). It answers from a fixed table so that the captured dnsmasq lines are the same every
time: addresses, a CNAME chain, an HTTPS and a TXT record, NODATA, NXDOMAIN, SERVFAIL, REFUSED."""

from __future__ import annotations

import socket
import sys

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

A = {
    "ads.example.": "198.18.0.12",
    "tracker.example.": "198.18.0.10",
    "shop.cdn.example.": "198.18.0.20",
    "video.example.": "198.18.0.30",
}
AAAA = {"video.example.": "2001:db8:18::30"}
CNAME = {"www.shop.example.": "shop.cdn.example."}
HTTPS = {"ads.example.": '1 . alpn="h2"'}
TXT = {"tracker.example.": '"v=apviz-lab"'}
RCODE = {"servfail.example.": dns.rcode.SERVFAIL, "refused.example.": dns.rcode.REFUSED}


def answer(query: dns.message.Message) -> dns.message.Message:
    response = dns.message.make_response(query)
    question = query.question[0]
    name = question.name.to_text().lower()
    qtype = question.rdtype
    if name in RCODE:
        response.set_rcode(RCODE[name])
        return response
    while name in CNAME:
        target = CNAME[name]
        response.answer.append(dns.rrset.from_text(name, 300, "IN", "CNAME", target))
        name = target
    T = dns.rdatatype
    tables = {T.A: A, T.AAAA: AAAA, T.HTTPS: HTTPS, T.TXT: TXT}
    known = name in A or name in AAAA or name in HTTPS or name in TXT
    if qtype in tables and name in tables[qtype]:
        rtype = dns.rdatatype.to_text(qtype)
        response.answer.append(dns.rrset.from_text(name, 300, "IN", rtype, tables[qtype][name]))
    elif not known and not response.answer:
        response.set_rcode(dns.rcode.NXDOMAIN)
    return response


def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((sys.argv[1], 53))
    print("ready", flush=True)
    while True:
        data, peer = sock.recvfrom(4096)
        try:
            query = dns.message.from_wire(data)
        except Exception:  # a test server: drop what it cannot read
            continue
        sock.sendto(answer(query).to_wire(), peer)


if __name__ == "__main__":
    main()
