"""Decode rates of the first-packet decoders (apviz/sniff) on real samples: one JSON line.

Rates are per CPU second of one core (the decoders are single-threaded Python).

Samples are made here by the real producers the tests use: OpenSSL ClientHellos (Python's ssl),
aioquic client Initials (v1 and v2, one connection each, so every DCID is distinct) and dnspython
answers (A, AAAA, a CNAME chain, NXDOMAIN). Each figure is a whole first-packet job as the packet
path will run it:

- ``tls_per_s``: ``hello_from_records`` on a first flight (one or more TLS records);
- ``quic_per_s``: ``parse_initials`` + CRYPTO reassembly + ``hello_from_handshake`` for a new
  connection, Initial keys derived each time (the cache cleared first: the cost a new flow pays);
  ``quic_cached_per_s`` the same with the DCID's keys cached (a connection's later Initials);
  ``quic_key_derivations_per_s`` the HKDF + cipher set-up alone;
- ``dns_per_s``: ``parse_response`` on one answer (dnspython's parser dominates).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from apviz.sniff.dnswire import parse_response, split_tcp  # noqa: E402
from apviz.sniff.quic import VERSION_1, derive_keys, initial_keys, parse_initials  # noqa: E402
from apviz.sniff.reassembly import Reassembly  # noqa: E402
from apviz.sniff.tls import hello_from_handshake, hello_from_records  # noqa: E402
from bench._common import say  # noqa: E402

SECONDS = 1.5  # CPU seconds per figure
ROUNDS = 3


def rate(
    func: Callable[[object], object], items: Sequence[object], before: Callable[[], None] | None = None
) -> int:
    """Calls per CPU second of ``func`` over ``items`` (cycled), best of ROUNDS rounds.

    CPU time of this process (``time.process_time``), not wall time: the machine is shared, and a
    decoder's cost is what it takes from the packet path's CPU.
    """
    best = 0.0
    for _ in range(ROUNDS):
        done = 0
        started = time.process_time()
        while True:
            for item in items:
                if before is not None:
                    before()
                func(item)
            done += len(items)
            elapsed = time.process_time() - started
            if elapsed >= SECONDS / ROUNDS:
                break
        best = max(best, done / elapsed)
    return round(best)


def quic_hello(datagrams: list[bytes]) -> str | None:
    stream = Reassembly()
    for datagram in datagrams:
        for packet in parse_initials(datagram):
            for offset, data in packet.crypto:
                stream.add(offset, data)
    hello = hello_from_handshake(stream.prefix)
    assert hello is not None
    return hello.server_name


def main() -> None:
    from aioquic.quic.packet import QuicProtocolVersion

    from tests.test_sniff_dns import framed
    from tests.test_sniff_dns import samples as dns_samples
    from tests.test_sniff_quic import aioquic_initials
    from tests.test_sniff_tls import ssl_hello

    say("making samples (OpenSSL hellos, aioquic Initials, dnspython answers)")
    hellos = [ssl_hello(f"site{i}.example", ["h2", "http/1.1"] if i % 2 else None) for i in range(50)]
    connections = [
        aioquic_initials(
            f"quic{i}.example", ["h3"], QuicProtocolVersion.VERSION_2 if i % 4 == 0 else VERSION_1
        )
        for i in range(100)
    ]
    assert all(len(c) == 1 for c in connections)
    dns = dns_samples()
    stream = framed(*dns) * 10
    assert all(hello_from_records(h) is not None for h in hellos)
    assert [quic_hello(c) for c in connections[:3]] == ["quic0.example", "quic1.example", "quic2.example"]

    say("measuring")
    result = {
        "bench": "decoders",
        "tls_per_s": rate(hello_from_records, hellos),
        "quic_per_s": rate(quic_hello, connections, before=initial_keys.cache_clear),
        "dns_per_s": rate(parse_response, dns),
        "quic_cached_per_s": 0,
        "quic_key_derivations_per_s": rate(lambda c: derive_keys(VERSION_1, c[0][6:14]), connections),
        "tls_handshake_per_s": rate(hello_from_handshake, [h[5:] for h in hellos]),
        "dns_tcp_split_per_s": rate(split_tcp, [stream]),
        "samples": {"tls": len(hellos), "quic_connections": len(connections), "dns": len(dns)},
        "cpu_seconds_per_figure": SECONDS,
        "rounds": ROUNDS,
    }
    for connection in connections:
        quic_hello(connection)  # warm the cache: every DCID's keys are in it
    result["quic_cached_per_s"] = rate(quic_hello, connections)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
