"""Ask a DNS server a list of questions, one after the other (run inside the client namespace).

Usage: ask.py SERVER SOURCE NAME/TYPE ... ; NAME may use dnspython escapes (``\\032``, ``\\007``)."""

from __future__ import annotations

import sys

import dns.exception
import dns.message
import dns.name
import dns.query


def main() -> None:
    server, source = sys.argv[1], sys.argv[2]
    for item in sys.argv[3:]:
        text, _, rdtype = item.rpartition("/")
        query = dns.message.make_query(dns.name.from_text(text), rdtype)
        try:
            response = dns.query.udp(query, server, timeout=3, source=source)
            print(item, dns.rcode.to_text(response.rcode()), len(response.answer), flush=True)
        except dns.exception.Timeout:
            print(item, "timeout", flush=True)


if __name__ == "__main__":
    main()
