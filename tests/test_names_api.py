"""Where names come from reaches the API: /api/me words each destination's name source, hidden
connections (encrypted DNS, VPN, Apple's relay) carry their kind, and the public view shows them as
what they are, in exhibit mode too. A real uvicorn on loopback, fed synthetic events."""

import asyncio
import socket
import time

import pytest

import tests.test_exhibit_server as exhibit
from apviz.app import enricher_describe
from apviz.enrich.enricher import EnrichConfig, Enricher
from apviz.enrich.hidden import HiddenClassifier
from apviz.events import (
    Flow,
    FlowEvent,
    FlowEventKind,
    FlowTuple,
    PrivateDnsRefused,
    ResolverAnswer,
    ServerName,
    ServerNameVia,
)
from tests.test_exhibit_server import phone, push, running, until

ME = "127.0.0.1"
SNI = "<b>sni</b>.example"


def flow(fid: int, dst: str, dport: int = 443, proto: int = 6) -> FlowEvent:
    sport = 40000 + fid
    return FlowEvent(
        FlowEventKind.NEW,
        Flow(
            fid,
            socket.AF_INET,
            FlowTuple(proto, ME, dst, sport, dport),
            FlowTuple(proto, dst, ME, dport, sport),
            orig_bytes=10,
        ),
    )


@pytest.fixture
def real_describe(monkeypatch):
    """The service's own describe (enrichment without databases, plus the shipped hidden list)."""
    describe = enricher_describe(Enricher(EnrichConfig(companies_path=None)), HiddenClassifier.shipped())
    monkeypatch.setattr(exhibit, "describe", describe)


def test_api_me_says_where_each_name_came_from_and_what_is_hidden(real_describe):
    async def main():
        async with running(mode="exhibit") as (feed, service, http):
            events = phone(name="looked-up.example", fid=1, dst="198.18.0.10")  # asked dnsmasq
            events += [
                flow(2, "198.18.0.20"),
                ServerName(
                    time.time(), ME, 40002, "198.18.0.20", 443, 6, "<b>sni</b>.example", ServerNameVia.TLS
                ),
                ResolverAnswer(time.time(), ME, "198.18.53.53", "other-resolver.example", ("198.18.0.30",)),
                flow(3, "198.18.0.30"),
                flow(4, "198.18.0.40", dport=853),  # DNS over TLS
                flow(5, "198.18.0.50", dport=51820, proto=17),  # WireGuard
                PrivateDnsRefused(time.time(), ME, "198.18.0.40", 6),
            ]
            await push(feed, events)
            await until(
                lambda: len(service.state.flows) == 5 and service.state.counts["private_dns_refused"] == 1
            )
            me = (await http.get("/api/me")).json()
            by_name = {d["name"]: d for d in me["destinations"]}
            assert by_name["looked-up.example"]["name_sources"] == ["asked"]
            assert by_name["<b>sni</b>.example"]["name_sources"] == ["connection"]  # JSON text
            assert by_name["other-resolver.example"]["name_sources"] == ["resolver"]
            hidden = {d["hidden"]: d for d in me["destinations"] if d["hidden"]}
            assert set(hidden) == {"private-dns", "vpn"}
            assert hidden["private-dns"]["org"] == "private DNS: names hidden"
            assert hidden["vpn"]["org"] == "VPN" and hidden["vpn"]["name_sources"] == []
            assert me["private_dns_refused"] is True
            # The public view (exhibit mode): the hidden kinds are safe labels; the visitor's own
            # server name is not a known domain, so it never reaches the screen.
            await until(lambda: "o:VPN" in service.live_view.get("nodes", {}))
            view = (await http.get("/api/state")).json()["view"]
            nodes = view["nodes"]
            assert nodes["o:private DNS: names hidden"]["hidden"] == "private-dns"
            assert nodes["o:VPN"]["source"] == "hidden"
            assert "sni" not in str(view) and "looked-up" not in str(view)

    asyncio.run(main())


def test_the_service_publishes_a_waiting_flow_when_its_wait_ends(real_describe):
    """Only another device's lookup is known: the flow is off the public view for name_wait (1 s),
    then the service publishes it without any further event arriving."""

    async def main():
        async with running(mode="home") as (feed, service, http):
            other = phone(ip="10.99.1.7", mac="02:a5:00:00:00:07", name="shared.example", dst="198.18.0.60")
            await push(feed, other)
            await until(lambda: service.live_view.get("totals", {}).get("connections") == 1)
            await push(feed, [flow(8, "198.18.0.60")])  # this phone never looked it up
            await until(lambda: any(r.id == 8 for r in service.state.flows.values()))
            started = time.monotonic()
            (rec,) = [r for r in service.state.flows.values() if r.id == 8]
            assert rec.waiting_until is not None
            await asyncio.sleep(0.3)
            assert (await http.get("/api/state")).json()["view"]["totals"]["connections"] == 1
            await until(lambda: service.live_view.get("totals", {}).get("connections") == 2, timeout=3)
            waited = time.monotonic() - started
            assert 0.5 < waited < 2.0, waited
            assert rec.name == "shared.example" and rec.name_source == "shared"
            assert service.state.counts["names_shared"] == 1

    asyncio.run(main())
