"""The lab's names machinery: its CA, TLS and QUIC servers, DoH/DoT resolvers and the personas that do
not ask the gateway's dnsmasq (unit first, then a real lab with the ``lab`` marker).

The names work (issue 11) measures itself against these phones, so each test checks that a persona
does what a real device does with the gateway's policy off: where its lookups went (and that the
gateway's resolver did *not* hear them), which server name it sent, and that the bytes still add up in
the gateway's conntrack.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from apviz.lab import quic
from apviz.lab.ca import make_ca
from apviz.lab.phone import (
    DNS_MODES,
    PersonaError,
    ResolveResult,
    canary_allows_doh,
    load_personas,
    parse_personas,
    relay_target,
)
from apviz.lab.world import WorldError, load_world, parse_world

NEW_PERSONAS = [
    "iphone-relay",
    "firefox-doh",
    "android-private-dns",
    "android-strict-dns",
    "app-own-doh",
    "hardcoded-resolver",
    "tls-bare-address",
]

# --------------------------------------------------------------------------------------------------
# unit: CA, catalogue, personas, the phones' decisions, QUIC over loopback


def test_ca_names_every_catalogue_name_and_address(tmp_path: Path) -> None:
    world = load_world()
    made = make_ca(tmp_path, world.names, world.addresses)
    leaf = x509.load_pem_x509_certificate(made.cert.read_bytes())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == set(world.names)
    assert {str(a) for a in sans.get_values_for_type(x509.IPAddress)} == set(world.addresses)
    assert made.key.stat().st_mode & 0o077 == 0  # the key is the run's own


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> None:
    """A TLS handshake over a socket pair (both ends in threads); raises what the client saw."""
    a, b = socket.socketpair()
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            with server.wrap_socket(b, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError) as exc:
            failure.append(exc)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with client.wrap_socket(a, server_hostname=name) as c:
            c.sendall(b"x")
    finally:
        a.close()
        t.join(5)
        b.close()


def test_ca_verifies_catalogue_names_only(tmp_path: Path) -> None:
    made = make_ca(tmp_path, ["www.wikipedia.org", "dns.google"], ["198.18.20.8"])
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(made.cert, made.key)
    client = ssl.create_default_context(cafile=str(made.ca_cert))
    _handshake(server, client, "dns.google")
    _handshake(server, client, "198.18.20.8")  # a bare address: no SNI, the IP SAN is checked
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(server, client, "not-in-the-catalogue.example")
    stranger = ssl.create_default_context(cafile=str(make_ca(tmp_path / "other", ["dns.google"]).ca_cert))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, stranger, "dns.google")  # another lab's CA is not trusted


def test_world_services_name_hosts() -> None:
    world = load_world()
    assert world.service_addresses("plain_dns") == ["198.18.20.8"]
    assert "198.18.21.4" in world.service_addresses("doh")  # mozilla.cloudflare-dns.com
    for name in ("mask.icloud.com", "mask-h2.icloud.com", "use-application-dns.net", "dns.google"):
        assert world.resolve(name) is not None, name
    apple = world.block_for(world.hosts["mask.icloud.com"].addresses[0])
    assert apple is not None and apple.asn == 714
    base = {"block": [{"cidr": "198.18.0.0/24", "org": "x", "asn": 1, "city": "c", "country": "NL",
                       "lat": 0, "lon": 0}],
            "host": [{"name": "a.example", "address": "198.18.0.1"}],
            "cname": [{"name": "b.example", "target": "a.example"}]}  # fmt: skip
    with pytest.raises(WorldError, match="not a \\[\\[host\\]\\]"):
        parse_world({**base, "services": {"doh": ["b.example"]}})
    with pytest.raises(WorldError, match="unknown key"):
        parse_world({**base, "services": {"doq": ["a.example"]}})


@pytest.mark.parametrize(
    ("persona", "message"),
    [
        ({"dns": "carrier-pigeon"}, "dns must be one of"),
        ({"dns": "doh"}, "needs dns_server"),
        ({"dns": "resolver", "dns_server": "8.8.8.8"}, "outside the lab internet"),
        ({"dns": "dot-strict", "dns_server": "dns.nowhere.example"}, "not in world.toml"),
        ({"dns": "relay", "dns_server": "dns.google"}, "takes no dns_server"),
        ({"habit": [{"what": "bare", "port": 80}]}, "only a habit with an address may have none"),
        ({"habit": [{"address": "198.18.2.10", "tls": "yes"}]}, "tls must be true or false"),
    ],
)
def test_persona_mistakes_are_named(persona: dict, message: str) -> None:
    raw = {"habit": [{"what": "web", "names": ["www.google.com"]}], **persona}
    with pytest.raises(PersonaError, match=re.escape(message)) as info:
        parse_personas({"persona": {"odd": raw}}, set(load_world().names))
    assert "persona odd" in str(info.value)


def test_new_personas_are_valid_and_pinned_addresses_match_the_world() -> None:
    world = load_world()
    book = load_personas(known_names=set(world.names))
    assert set(NEW_PERSONAS) <= set(book.personas)
    assert {p.dns for p in book.personas.values()} == set(DNS_MODES)
    for persona in book.personas.values():
        for habit in persona.habits:
            for name in habit.names if habit.address else ():
                resolution = world.resolve(name)
                assert resolution and habit.address in resolution.addresses, (persona.name, name)


def _answer(name: str, rcode: str, addresses: list[str]) -> ResolveResult:
    return ResolveResult(name, "A", rcode, addresses, [], 300, "10.99.1.100", 40000, "10.99.1.1")


def test_relay_follows_apples_network_signal() -> None:
    mask = _answer("mask.icloud.com", "NOERROR", ["198.18.24.10"])
    h2 = _answer("mask-h2.icloud.com", "NOERROR", ["198.18.24.11"])
    nx = _answer("mask.icloud.com", "NXDOMAIN", [])
    nx_h2 = _answer("mask-h2.icloud.com", "NXDOMAIN", [])
    empty = _answer("mask.icloud.com", "NOERROR", [])  # "no error, no answer" is negative too
    assert relay_target(mask, h2) == ("mask.icloud.com", "198.18.24.10", "quic")
    assert relay_target(nx, h2) == ("mask-h2.icloud.com", "198.18.24.11", "tls")  # the TCP fallback
    assert relay_target(nx, nx_h2) is None  # the policy: relay off, use the network's DNS
    assert relay_target(empty, nx_h2) is None


def test_firefox_canary() -> None:
    assert canary_allows_doh(_answer("use-application-dns.net", "NOERROR", ["198.18.0.80"]))
    assert not canary_allows_doh(_answer("use-application-dns.net", "NXDOMAIN", []))
    assert not canary_allows_doh(_answer("use-application-dns.net", "NOERROR", []))
    assert not canary_allows_doh(_answer("use-application-dns.net", "SERVFAIL", []))


@pytest.fixture
def loopback_quic(tmp_path: Path) -> Iterator[tuple[int, Path, quic.QuicServer]]:
    """The lab's QUIC server on 127.0.0.1 in a thread of its own (no namespace needed)."""
    made = make_ca(tmp_path, ["www.youtube.com"], ["127.0.0.1"])
    loop = asyncio.new_event_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_IP, quic.IP_PKTINFO, 1)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    server = quic.QuicServer(loop, sock, quic.server_configuration(made.cert, made.key))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield sock.getsockname()[1], made.ca_cert, server
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_quic_line_protocol_over_loopback(loopback_quic: tuple[int, Path, quic.QuicServer]) -> None:
    port, ca, server = loopback_quic
    ex = quic.exchange("127.0.0.1", port, server_name="www.youtube.com", ca=ca, nbytes=300_000, upload=5_000)
    ex.close()
    assert ex.received == 300_000 + len("OK 5000\n") and ex.sent == 5_000 + len("PUT 5000\nGET 300000\n")
    with pytest.raises(ConnectionError, match=r"certificate|hostname"):
        quic.exchange("127.0.0.1", port, server_name="evil.example", ca=ca, nbytes=10, upload=0)
    # Junk and short datagrams are counted and ignored; the server keeps serving.
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for payload in (b"", b"\xc0", b"\x40" * 30, b"\xc0\x00\x00\x00\x01" + b"\xff" * 40):
        junk.sendto(payload, ("127.0.0.1", port))
    junk.close()
    again = quic.exchange("127.0.0.1", port, server_name="www.youtube.com", ca=ca, nbytes=1_000, upload=0)
    again.close()
    assert again.received == 1_000
    assert server.counters["bad_packets"] >= 3 and server.counters["connections"] >= 3
    # Closed connections leave the server's table (after their draining period).
    deadline = time.monotonic() + 10
    while server.conns and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.conns


# --------------------------------------------------------------------------------------------------
# the lab (root): servers, resolvers and the personas with the gateway's policy off


def _conntrack(lab, proto: str, sport: int) -> list[dict[str, int]]:
    """The gateway's conntrack entries from that source port: orig and reply byte counters."""
    out = lab.exec_in(
        lab.gateway_ns, ["conntrack", "-L", "-p", proto, "--orig-port-src", str(sport)], check=False
    )
    entries = []
    for line in out.stdout.splitlines():
        counts = [int(v) for v in re.findall(r"bytes=(\d+)", line)]
        if len(counts) == 2:
            entries.append({"orig": counts[0], "reply": counts[1]})
    return entries


def _gateway_log(lab) -> str:
    return lab.dnsmasq_log.read_text()


def _wait(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


@pytest.fixture(scope="module")
def names_lab():
    from apviz.lab.lab import Lab

    with Lab(
        phones=len(NEW_PERSONAS) + 1, personas=["android-phone", *NEW_PERSONAS], traffic=False, policy=False
    ) as lab:
        yield lab


def _by_persona(lab, persona: str):
    return next(p for p in lab.phones if p.persona == persona)


@pytest.mark.lab
def test_tls_and_quic_bytes_add_up_in_conntrack(names_lab) -> None:
    lab = names_lab
    phone = _by_persona(lab, "android-phone")
    tls = lab.phone_connect(phone, "www.netflix.com", nbytes=400_000, upload=20_000, hold=3.0)
    assert (tls.security, tls.sni, tls.resolved_via) == ("tls", "www.netflix.com", "dnsmasq")
    assert tls.received == 400_000 + len("OK 20000\n")
    q = lab.phone_connect(
        phone, "rr1---sn-4g5ednse.googlevideo.com", nbytes=300_000, upload=10_000, proto="udp"
    )
    assert (q.security, q.sni, q.proto, q.port) == ("quic", "rr1---sn-4g5ednse.googlevideo.com", "udp", 443)
    assert q.received == 300_000 + len("OK 10000\n")
    # Payload plus handshakes, framing and (QUIC, whose loss recovery is its own) retransmissions:
    # at least the payload, and not much more.
    for result, proto, slack in ((tls, "tcp", 1.08), (q, "udp", 1.5)):
        entries = _wait(lambda r=result, p=proto: _conntrack(lab, p, r.sport))
        assert len(entries) == 1, entries
        counts = entries[0]
        assert result.received <= counts["reply"] <= result.received * slack + 20_000, (proto, counts)
        assert result.sent <= counts["orig"] <= result.sent * slack + 40_000, (proto, counts)
    echo = lab.phone_connect(phone, "teams.microsoft.com", nbytes=3_000, proto="udp", port=3478)
    assert echo.security == "plain" and echo.sni is None and echo.sent == echo.received == 3_000


@pytest.mark.lab
def test_servers_present_the_lab_ca_and_phones_check_it(names_lab) -> None:
    lab = names_lab
    phone = _by_persona(lab, "android-phone")
    address = lab.world.hosts["www.google.com"].addresses[0]
    with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|mismatch"):
        lab.phone_connect(phone, None, 100, address=address, sni="evil.example")
    with pytest.raises(Exception, match=r"certificate|hostname"):
        lab.phone_connect(phone, None, 100, address=address, sni="evil.example", proto="udp")
    # From the internet namespace, with nothing but openssl and the run's CA file.
    out = lab.exec_in(
        lab.internet_ns,
        ["openssl", "s_client", "-connect", f"{address}:443", "-servername", "www.google.com",
         "-CAfile", str(lab.ca.ca_cert), "-verify_return_error", "-brief"],
        input="", check=False, timeout=10,
    )  # fmt: skip
    assert "Verification: OK" in out.stderr, out.stderr


@pytest.mark.lab
def test_dnsdist_answers_doh_and_dot_inside_a_phone_namespace(names_lab) -> None:
    lab = names_lab
    want = sorted(lab.world.resolve("www.reddit.com").addresses)
    doh = lab.phone_lookup(_by_persona(lab, "app-own-doh"), "www.reddit.com")
    assert (doh.via, doh.server, doh.rcode) == ("doh", "198.18.23.10", "NOERROR")
    assert sorted(doh.addresses) == want and doh.cnames == ["reddit.map.fastly.net"]
    dot = lab.phone_lookup(_by_persona(lab, "android-strict-dns"), "www.reddit.com")
    assert (dot.via, dot.server) == ("dot", "198.18.20.8") and sorted(dot.addresses) == want
    nx = lab.phone_lookup(_by_persona(lab, "android-strict-dns"), "not-in-the-catalogue.example")
    assert nx.rcode == "NXDOMAIN" and nx.via == "dot"
    # Both reached the internet's resolver through dnsdist, and the gateway's dnsmasq never saw them.
    upstream = (lab.run_dir / "internet" / "dnsmasq.log").read_text()
    assert "not-in-the-catalogue.example" in upstream
    assert "not-in-the-catalogue.example" not in _gateway_log(lab)


@pytest.mark.lab
def test_iphone_relay_sends_everything_to_the_relay(names_lab) -> None:
    lab = names_lab
    phone = _by_persona(lab, "iphone-relay")
    result = lab.phone_connect(phone, "www.wikipedia.org", nbytes=50_000, upload=2_000)
    relay = lab.world.hosts["mask.icloud.com"].addresses[0]
    assert (result.resolved_via, result.sni, result.security) == ("relay", "mask.icloud.com", "quic")
    assert (result.address, result.proto, result.port, result.resolve) == (relay, "udp", 443, None)
    assert result.received == 50_000 + len("OK 2000\n")
    log = _gateway_log(lab)
    assert re.search(rf"query\[A\] mask\.icloud\.com from {re.escape(phone.ip)}$", log, re.M)
    assert not re.search(rf"query\[A\] www\.wikipedia\.org from {re.escape(phone.ip)}$", log, re.M)
    assert _conntrack(lab, "udp", result.sport)


@pytest.mark.lab
def test_firefox_checks_the_canary_then_uses_doh(names_lab) -> None:
    lab = names_lab
    phone = _by_persona(lab, "firefox-doh")
    result = lab.phone_connect(phone, "yandex.ru", nbytes=5_000)
    assert (result.resolved_via, result.sni, result.security) == ("doh", "yandex.ru", "tls")
    assert result.resolve is not None and result.resolve.server == "198.18.21.4"
    log = _gateway_log(lab)
    ip = re.escape(phone.ip)
    assert re.search(rf"query\[A\] use-application-dns\.net from {ip}$", log, re.M)
    assert re.search(rf"query\[A\] mozilla\.cloudflare-dns\.com from {ip}$", log, re.M)  # the bootstrap
    assert not re.search(rf"query\[A\] yandex\.ru from {ip}$", log, re.M)


@pytest.mark.lab
def test_android_automatic_private_dns_falls_back_to_plain_dns(names_lab) -> None:
    lab = names_lab
    phone = _by_persona(lab, "android-private-dns")
    result = lab.phone_connect(phone, "g.whatsapp.net", nbytes=1_000)
    # The gateway runs no DoT: the probe to its 853 is refused, plain DNS at the gateway follows.
    assert (result.resolved_via, result.sni) == ("dnsmasq", "g.whatsapp.net")
    assert re.search(rf"query\[A\] g\.whatsapp\.net from {re.escape(phone.ip)}$", _gateway_log(lab), re.M)
    assert lab.set_traffic(phone, False).get("dot_failed", 0) >= 1


@pytest.mark.lab
def test_app_with_its_own_doh_and_a_hard_coded_resolver(names_lab) -> None:
    lab = names_lab
    app = lab.phone_connect(_by_persona(lab, "app-own-doh"), "bidder.criteo.com", nbytes=2_000)
    assert (app.resolved_via, app.sni) == ("doh", "bidder.criteo.com")
    stick = _by_persona(lab, "hardcoded-resolver")
    tv = lab.phone_connect(stick, "device-metrics-us.amazon.com", nbytes=2_000)
    assert (tv.resolved_via, tv.sni, tv.resolve.server) == (
        "resolver",
        "device-metrics-us.amazon.com",
        "198.18.20.8",
    )
    second = lab.run_dir / "internet" / "dns1.log"
    assert _wait(lambda: "device-metrics-us.amazon.com" in second.read_text())
    log = _gateway_log(lab)
    assert "bidder.criteo.com" not in log and "device-metrics-us.amazon.com" not in log


@pytest.mark.lab
def test_pinned_addresses_send_an_sni_or_nothing(names_lab) -> None:
    lab = names_lab
    phone = _by_persona(lab, "tls-bare-address")
    pinned = lab.phone_connect(phone, "dns.weixin.qq.com", 3_000, address="198.18.12.11")
    assert (pinned.resolved_via, pinned.sni, pinned.security, pinned.resolve) == (
        "none",
        "dns.weixin.qq.com",
        "tls",
        None,
    )
    bare = lab.phone_connect(phone, None, 3_000, address="198.18.12.20", port=80)
    assert (bare.resolved_via, bare.sni, bare.security) == ("none", None, "plain")
    assert "weixin" not in _gateway_log(lab)


@pytest.mark.lab
def test_persona_traffic_resolves_as_each_persona_claims(names_lab) -> None:
    """A few seconds of every new persona's own traffic: each connection went the persona's way."""
    lab = names_lab
    expected = {
        "iphone-relay": {"relay"},
        "firefox-doh": {"doh"},
        "android-private-dns": {"dnsmasq"},
        "android-strict-dns": {"dot"},
        "app-own-doh": {"doh"},
        "hardcoded-resolver": {"resolver"},
        "tls-bare-address": {"none"},
    }
    phones = [_by_persona(lab, p) for p in expected]
    for phone in phones:
        lab.phone_history(phone)  # forget the tests' own connections
        lab.set_traffic(phone, True)
    time.sleep(6)
    for phone in phones:
        counters = lab.set_traffic(phone, False)
        history = lab.phone_history(phone)
        assert history and counters["errors"] == 0, (phone.persona, counters)
        assert {r.resolved_via for r in history} == expected[phone.persona], phone.persona
        for r in history:
            if r.security != "plain":
                assert r.sni, (phone.persona, r)


@pytest.mark.lab
def test_strict_private_dns_fails_when_853_is_refused_and_automatic_does_not(names_lab) -> None:
    """What the gateway's policy will do (reject LAN 853), made here by a test-only nft table."""
    lab = names_lab
    table = "names_test_reject_dot"
    doh = lab.world.hosts["mozilla.cloudflare-dns.com"].addresses[0]
    rules = (
        f"table inet {table} {{ chain forward {{ type filter hook forward priority -10; "
        f"tcp dport 853 reject with tcp reset; ip daddr {doh} tcp dport 443 reject with tcp reset; }}; }}"
    )
    firefox = _by_persona(lab, "firefox-doh")
    assert lab.phone_lookup(firefox, "www.bing.com").via == "doh"  # a DoH connection is open now
    lab.exec_in(lab.gateway_ns, ["nft", "-f", "-"], input=rules)
    try:
        strict = _by_persona(lab, "android-strict-dns")
        with pytest.raises(Exception, match="strict mode"):
            lab.phone_connect(strict, "graph.facebook.com", 1_000)
        auto = lab.phone_connect(_by_persona(lab, "android-private-dns"), "graph.facebook.com", 1_000)
        assert auto.resolved_via == "dnsmasq"
        # Firefox's default DoH mode falls back to the network's resolver when its provider fails.
        fallback = lab.phone_connect(firefox, "www.bing.com", 1_000)
        assert fallback.resolved_via == "dnsmasq"
    finally:
        lab.exec_in(lab.gateway_ns, ["nft", "delete", "table", "inet", table])
    assert lab.phone_connect(strict, "graph.facebook.com", 1_000).resolved_via == "dot"
    assert lab.phone_connect(firefox, "www.bing.com", 1_000).resolved_via == "doh"


@pytest.mark.lab
def test_resolvers_are_recorded_and_end_with_the_lab() -> None:
    from apviz.lab import cleanup
    from apviz.lab.lab import Lab

    with Lab(phones=0, traffic=False) as lab:
        records = {r.name: r for r in cleanup.recorded_pids(lab.run_dir)}
        assert {"net-dnsdist", "net-dns1", "net-server", "net-dnsmasq"} <= set(records)
        assert all(cleanup.is_alive(r) for r in records.values())
        assert (lab.run_dir / "ca" / "ca.pem").is_file() and lab.summary()["ca_cert"] == str(lab.ca.ca_cert)
    assert not [r for r in records.values() if cleanup.is_alive(r)]
    assert not lab.run_dir.exists()
