"""Encrypted DNS, VPNs and Apple's relay are recognised from name, address, protocol and port."""

import asyncio
import socket
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from apviz.app import enricher_describe, hidden_classifier, state_config
from apviz.config import from_dict
from apviz.enrich.enricher import EnrichConfig, Enricher
from apviz.enrich.hidden import DEFAULT_LIST, LABELS, HiddenClassifier, HiddenKind, HiddenLists
from apviz.events import (
    DnsAnswer,
    DnsAnswerKind,
    DnsQuery,
    Flow,
    FlowEvent,
    FlowEventKind,
    FlowTuple,
)
from apviz.live.pipeline import NamedSource, Pipeline
from apviz.live.privacy import Privacy
from apviz.live.publicview import ViewBuilder
from apviz.live.state import LiveState, StateConfig, networks

DNS, VPN, RELAY = HiddenKind.PRIVATE_DNS, HiddenKind.VPN, HiddenKind.PRIVATE_RELAY
TCP, UDP = 6, 17


@pytest.fixture(scope="module")
def hidden() -> HiddenClassifier:
    return HiddenClassifier.shipped(private_dns_servers=["198.18.53.53"], relay_addresses=["198.18.99.1"])


def test_dns_over_tls_and_quic_on_853_anywhere(hidden):
    assert hidden.classify(None, "198.18.0.1", TCP, 853) is DNS
    assert hidden.classify("dns.example", "198.18.0.1", UDP, 853) is DNS
    assert hidden.classify(None, "198.18.0.1", TCP, 443) is None


@pytest.mark.parametrize(
    "name",
    ["dns.google", "DNS.Google.", "mozilla.cloudflare-dns.com", "dns.quad9.net", "abc123.dns.nextdns.io",
     "dns.adguard-dns.com", "doh.opendns.com", "doh.cleanbrowsing.org", "dns.mullvad.net"],
)  # fmt: skip
def test_doh_by_server_name_or_looked_up_name(hidden, name):
    assert hidden.classify(name, "198.18.0.1", TCP, 443) is DNS
    assert hidden.classify(name, "198.18.0.1", UDP, 443) is DNS  # DoH over HTTP/3
    # A hard-coded plain resolver named by another device's lookup (dns.google on 53): readable.
    assert hidden.classify(name, "198.18.0.1", UDP, 53) is None
    assert hidden.classify(name, "198.18.0.1", TCP, 53) is None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "9.9.9.9", "45.90.28.7"])
def test_doh_by_address_but_not_plain_dns(hidden, address):
    assert hidden.classify(None, address, TCP, 443) is DNS
    assert hidden.classify(None, address, UDP, 53) is None  # plain DNS: readable, its names come through


def test_operator_addresses_are_private_dns_too(hidden):
    assert hidden.classify(None, "198.18.53.53", TCP, 443) is DNS
    assert HiddenClassifier.shipped().classify(None, "198.18.53.53", TCP, 443) is None
    with pytest.raises(ValueError, match="not-an-ip"):
        HiddenClassifier.shipped(private_dns_servers=["not-an-ip"])


@pytest.mark.parametrize(("proto", "port"), [(UDP, 51820), (UDP, 500), (UDP, 4500), (UDP, 1194), (TCP, 1194)])
def test_vpn_ports(hidden, proto, port):
    assert hidden.classify(None, "198.18.0.1", proto, port) is VPN


def test_ipsec_without_ports_and_not_vpn_lookalikes(hidden):
    assert hidden.classify(None, "198.18.0.1", 50, 0) is VPN  # ESP
    assert hidden.classify(None, "198.18.0.1", TCP, 51820) is None  # WireGuard is UDP only
    assert hidden.classify(None, "198.18.0.1", TCP, 500) is None


def test_apple_relay_by_name_or_listed_address(hidden):
    for name in ("mask.icloud.com", "mask-h2.icloud.com", "MASK.icloud.com."):
        assert hidden.classify(name, "198.18.0.1", UDP, 443) is RELAY
    assert hidden.classify(None, "198.18.99.1", UDP, 443) is RELAY
    assert hidden.classify("www.icloud.com", "198.18.0.1", TCP, 443) is None
    assert hidden.classify("evil-mask.icloud.com.example", "198.18.0.1", TCP, 443) is None


@pytest.mark.parametrize(
    "name",
    ["<b>dns.google</b>", "dns.google\x00", "x" * 5000, "dns.google.evil.example", "fakedns.google",
     "\u202edns.google", "", "..."],
)  # fmt: skip
def test_hostile_names_match_nothing(hidden, name):
    assert hidden.classify(name, "198.18.0.1", TCP, 443) is None
    assert hidden.classify(name, "not an address", TCP, 443) is None


def test_the_shipped_list_is_valid_and_names_the_well_known_resolvers():
    lists = HiddenLists.load()
    for name in ("dns.google", "cloudflare-dns.com", "mozilla.cloudflare-dns.com", "dns.quad9.net",
                 "dns.nextdns.io", "dns.adguard-dns.com", "doh.opendns.com", "doh.cleanbrowsing.org",
                 "dns.mullvad.net"):  # fmt: skip
        assert name in lists.doh_names
    assert {"mask.icloud.com", "mask-h2.icloud.com"} <= set(lists.relay_names)
    raw = tomllib.loads(DEFAULT_LIST.read_text())
    assert set(raw) == {"doh", "relay"}


def test_a_wrong_list_entry_is_named(tmp_path):
    bad = tmp_path / "list.toml"
    bad.write_text('[doh]\nnames = ["dns.example"]\naddresses = ["1.2.3.999"]\n')
    with pytest.raises(ValueError, match=r"1\.2\.3\.999"):
        HiddenClassifier.shipped(bad)
    bad.write_text('[doh]\nnames = "dns.example"\n')
    with pytest.raises(ValueError, match="list of strings"):
        HiddenLists.load(bad)


def test_enricher_describe_labels_them_instead_of_the_company_in_every_mode(hidden):
    describe = enricher_describe(Enricher(EnrichConfig(companies_path=None)), hidden)
    d = describe("dns.google", "8.8.8.8", TCP, 443)
    assert (d.org, d.org_source, d.hidden, d.domain) == (LABELS[DNS], "hidden", "private-dns", None)
    assert describe(None, "198.18.0.1", UDP, 51820).org == "VPN"
    assert describe("mask.icloud.com", "198.18.0.1", UDP, 443).org == "Apple Private Relay"
    assert describe("www.example.com", "198.18.0.1", TCP, 443).org_source != "hidden"
    # Exhibit mode keeps the label (it is a safe, known label), and the node says what it is.
    st = LiveState(StateConfig(lan=networks(["10.99.1.0/24"])))
    st.apply(FlowEvent(FlowEventKind.NEW, _flow(1, "8.8.8.8", 443)))
    st.apply(FlowEvent(FlowEventKind.NEW, _flow(2, "198.18.0.1", 853)))
    view = ViewBuilder(describe=describe, privacy=Privacy("exhibit")).build(st)
    node = view["nodes"]["o:" + LABELS[DNS]]
    assert (node["source"], node["hidden"], node["connections"]) == ("hidden", "private-dns", 2)


def _flow(fid: int, dst: str, dport: int, proto: int = TCP, src: str = "10.99.1.101") -> Flow:
    sport = 40000 + fid
    return Flow(
        fid,
        socket.AF_INET,
        FlowTuple(proto, src, dst, sport, dport),
        FlowTuple(proto, dst, src, dport, sport),
    )


def test_the_pipeline_wakes_for_a_waiting_flow_not_the_next_expiry():
    """A flow that waits for its own name is settled when its wait ends, even with expiry a minute
    away, and observers hear of it (that is what makes the service publish)."""

    async def run() -> list[str]:
        st = LiveState(StateConfig(lan=networks(["10.99.1.0/24"]), name_wait=0.3))
        told: list[str] = []
        st.observers.append(lambda c: told.append(c.kind.value))

        async def feed():
            yield DnsQuery(st.clock(), 1, "10.99.1.102", "A", "shared.example")
            yield DnsAnswer(st.clock(), 1, "10.99.1.102", DnsAnswerKind.REPLY, "shared.example", "198.18.0.1")
            yield FlowEvent(FlowEventKind.NEW, _flow(1, "198.18.0.1", 443))
            await asyncio.sleep(3600)

        pipeline = Pipeline(st, [NamedSource("feed", feed, restart=False)], expire_interval=60.0)
        task = asyncio.create_task(pipeline.run())
        try:
            for _ in range(100):
                await asyncio.sleep(0.05)
                rec = next(iter(st.flows.values()), None)
                if rec is not None and rec.name_source == "shared":
                    break
            assert rec is not None and rec.name == "shared.example" and rec.waiting_until is None
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return told

    told = asyncio.run(run())
    assert told[-1] == "flow_named"


def test_the_configuration_reaches_the_state_and_the_classifier():
    cfg = from_dict({"names": {"name_wait": 0.25, "private_dns_servers": ["198.18.53.54"]}}, env={})
    assert state_config(cfg).name_wait == 0.25
    assert hidden_classifier(cfg).classify(None, "198.18.53.54", TCP, 443) is DNS
    assert state_config(from_dict({}, env={})).name_wait == 1.0  # the documented default


def test_listed_networks_match_by_containment_only():
    h = HiddenClassifier.shipped()
    assert h.classify(None, "45.90.30.200", TCP, 443) is DNS  # NextDNS anycast /24
    assert h.classify(None, "2a07:a8c0::1", TCP, 443) is DNS  # ... and its /33
    assert h.classify(None, "2a07:a8c1:7fff::1", TCP, 443) is DNS
    assert h.classify(None, "2a07:a8c1:ffff::1", TCP, 443) is None
    assert h.classify(None, "45.90.29.1", TCP, 443) is None
    wide = HiddenClassifier(HiddenLists(doh_addresses=("0.0.0.0/1",)))
    assert wide.classify(None, "100.1.2.3", TCP, 443) is DNS  # a network wider than one octet
    assert wide.classify(None, "200.1.2.3", TCP, 443) is None


@settings(max_examples=2000, deadline=None)
@given(
    name=hs.one_of(hs.none(), hs.text(max_size=300)), address=hs.text(max_size=60), port=hs.integers(0, 65535)
)
def test_any_text_is_classified_without_error(name, address, port):
    kind = _SHIPPED.classify(name, address, TCP, port)
    assert kind is None or isinstance(kind, HiddenKind)


_SHIPPED = HiddenClassifier.shipped()
