"""The session summary (apviz.live.summary) on a real LiveState fed events, and its CSV and SVG files.

Each flow counts once however often its bytes move or its name changes, ended and departed flows stay
in the totals, "forget me" takes a device's numbers out, a reset empties it, and nothing a visitor
chose (hostname, MAC, address, a domain of their own) reaches either file in exhibit or classroom
mode, even when it was counted while the screen was in home mode."""

from __future__ import annotations

import csv
import io
import socket
import time
import xml.etree.ElementTree as ET

import pytest

from apviz.events import (
    DnsAnswer,
    DnsAnswerKind,
    DnsQuery,
    Flow,
    FlowEvent,
    FlowEventKind,
    FlowSnapshot,
    FlowTuple,
    Lease,
    LeaseSnapshot,
)
from apviz.live import summary as summary_mod
from apviz.live.destinations import Destination
from apviz.live.privacy import KnownDomains, Privacy
from apviz.live.state import LiveState, StateConfig, networks
from apviz.live.summary import Row, SessionSummary, Summary
from apviz.server.summary_export import CSV_COLUMNS, filename, to_csv, to_svg

RUDE = "rude-word-1234.example"
HOST = "Bobs-iPhone"
MAC = "02:a5:00:00:00:01"
IP = "10.99.1.23"
COMPANIES = {
    "wikipedia.org": ("Wikimedia", None, "knowledge", "NL", "Netherlands"),
    "google.com": ("Google", None, "search", "US", "United States"),
    "doubleclick.net": ("Google", "ads", "advertising", "US", "United States"),
}
ADDRESSES = {
    "wikipedia.org": "198.18.0.10",
    "google.com": "198.18.0.11",
    "doubleclick.net": "198.18.0.12",
    RUDE: "198.18.0.13",
}


def describe(name: str | None, address: str, proto: int = 0, dport: int = 0) -> Destination:
    if name:
        dom = ".".join(name.split(".")[-2:])
        if dom in COMPANIES:
            org, tracker, category, cc, country = COMPANIES[dom]
            return Destination(
                org=org,
                org_source="company",
                domain=dom,
                country=cc,
                country_name=country,
                city="Somewhere",
                lat=1.0,
                lon=2.0,
                tracker=tracker,
                category=category,
                asn_org="Example Hosting",
            )
        return Destination(
            org=dom, org_source="domain", domain=dom, country="FR", country_name="France", asn_org="OVH"
        )
    return Destination(org="OVH", org_source="asn", asn_org="OVH", country="FR", country_name="France")


class World:
    """A LiveState with a hand-driven clock, fed the events a gateway would produce."""

    def __init__(self, mode: str = "classroom") -> None:
        self.now = 1_700_000_000.0
        config = StateConfig(lan=networks(["10.99.1.0/24"]), flow_hold=30.0, forget_after=600.0)
        self.state = LiveState(config, clock=lambda: self.now)
        self.privacy = Privacy(mode, known=KnownDomains(COMPANIES), clock=lambda: self.now)
        self.summary = SessionSummary(self.state, describe, self.privacy, clock=lambda: self.now)
        self.state.observers.append(self.summary.observe)
        self.serial = 0

    def lease(self, ip: str = IP, mac: str = MAC, host: str | None = HOST) -> None:
        self.state.apply(LeaseSnapshot((Lease(0, mac, ip, host, "01:" + mac),)))

    def ask(self, name: str, ip: str = IP) -> None:
        self.serial += 1
        dst = ADDRESSES.get(name, "198.18.0.99")
        self.state.apply(DnsQuery(self.now, self.serial, ip, "A", name))
        self.state.apply(DnsAnswer(self.now, self.serial, ip, DnsAnswerKind.REPLY, name, dst))

    @staticmethod
    def flow(fid: int, name: str, up: int, down: int, ip: str = IP, state: str | None = None) -> Flow:
        dst = ADDRESSES.get(name, "198.18.0.99")
        return Flow(
            fid,
            socket.AF_INET,
            FlowTuple(6, ip, dst, 40000 + fid, 443),
            FlowTuple(6, dst, "10.99.255.2", 443, 40000 + fid),
            orig_bytes=up,
            reply_bytes=down,
            orig_packets=1,
            tcp_state=state,
        )

    def event(self, kind: FlowEventKind, fid: int, name: str, up: int, down: int, **kw: object) -> None:
        self.state.apply(FlowEvent(kind, self.flow(fid, name, up, down, **kw)))

    def wait(self, seconds: float) -> None:
        self.now += seconds
        self.state.expire()

    def forget_me(self, key: str = MAC) -> None:
        """What apviz.server.forget does for "forget me" and the operator's "hide"."""
        dev = self.state.devices[key]
        self.privacy.hide(key)
        for ip in dev.ips:
            self.privacy.hide(f"ip:{ip}")
        self.state.forget_device(key)


def rows(text: str) -> list[dict[str, str]]:
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text[1:])))


def by_name(items: list[Row]) -> dict[str, tuple[int, int, int]]:
    return {r.name: (r.connections, r.bytes, r.trackers) for r in items}


# ------------------------------------------------------------------------------ counting


def test_a_flow_counts_once_while_its_bytes_grow_and_its_name_arrives_later():
    w = World()
    w.lease()
    w.event(FlowEventKind.NEW, 1, "wikipedia.org", 100, 200)  # no name yet: the answer comes later
    assert by_name(w.summary.summary().companies) == {"OVH": (1, 300, 0)}  # the network's owner
    w.event(FlowEventKind.UPDATE, 1, "wikipedia.org", 1000, 2000)
    w.ask("wikipedia.org")  # the name arrives after the connection (FLOW_NAMED)
    w.event(FlowEventKind.UPDATE, 1, "wikipedia.org", 3000, 7000)
    s = w.summary.summary()
    assert by_name(s.companies) == {"Wikimedia": (1, 10000, 0)}
    assert (s.total.connections, s.total.bytes) == (1, 10000)

    # It ends and leaves the state: its final figures are folded in, once.
    w.event(FlowEventKind.DESTROY, 1, "wikipedia.org", 4000, 8000)
    w.wait(31)
    assert w.state.flows == {}
    s = w.summary.summary()
    assert by_name(s.companies) == {"Wikimedia": (1, 12000, 0)}
    assert by_name(s.countries) == {"Netherlands": (1, 12000, 0)}
    assert [(d.name, d.connections, d.bytes, d.companies) for d in s.devices] == [("Device 1", 1, 12000, 1)]


def test_the_kernel_re_reporting_an_ended_connection_does_not_count_it_again():
    """TIME_WAIT entries outlive the state's hold: a refresh dump still lists them."""
    w = World()
    w.lease()
    w.ask("google.com")
    w.event(FlowEventKind.NEW, 7, "google.com", 500, 500, state="ESTABLISHED")
    w.event(FlowEventKind.UPDATE, 7, "google.com", 600, 900, state="TIME_WAIT")
    w.wait(31)
    assert w.state.flows == {}
    w.state.apply(FlowSnapshot((w.flow(7, "google.com", 600, 900, state="TIME_WAIT"),), "refresh"))
    assert w.state.flows == {}  # the state does not bring it back ...
    assert by_name(w.summary.summary().companies) == {"Google": (1, 1500, 0)}  # ... nor count it again
    w.wait(31)
    assert by_name(w.summary.summary().companies) == {"Google": (1, 1500, 0)}


def test_trackers_countries_and_devices_in_order_of_arrival():
    w = World()
    w.lease()
    w.lease(ip="10.99.1.24", mac="02:a5:00:00:00:02", host="Alices-Pad")
    w.ask("google.com")
    w.ask("doubleclick.net")
    w.ask("doubleclick.net", ip="10.99.1.24")
    w.event(FlowEventKind.NEW, 1, "doubleclick.net", 10, 90, ip="10.99.1.24")  # the second arrives first
    w.event(FlowEventKind.NEW, 2, "google.com", 100, 900)
    w.event(FlowEventKind.NEW, 3, "doubleclick.net", 50, 50)
    w.event(FlowEventKind.NEW, 4, "doubleclick.net", 50, 50)
    s = w.summary.summary()
    assert by_name(s.companies) == {"Google": (4, 1300, 3)}
    assert [(r.name, r.detail, r.connections) for r in s.trackers] == [("Google", "ads", 3)]
    assert by_name(s.countries) == {"United States": (4, 1300, 3)}
    assert s.countries[0].detail == "US"
    devices = [(d.name, d.connections, d.bytes, d.trackers, d.companies) for d in s.devices]
    assert devices == [("Device 1", 1, 100, 1, 1), ("Device 2", 3, 1200, 2, 1)]
    assert (s.total.connections, s.total.trackers, s.total.companies) == (4, 3, 1)


def test_ended_flows_and_departed_devices_stay_in_the_totals_without_their_mac():
    w = World()
    w.lease()
    w.ask("wikipedia.org")
    w.event(FlowEventKind.NEW, 1, "wikipedia.org", 100, 100)
    w.event(FlowEventKind.DESTROY, 1, "wikipedia.org", 100, 400)
    w.wait(31)
    w.wait(601)  # no traffic for forget_after: the device is forgotten by the state
    assert w.state.devices == {}
    s = w.summary.summary()
    assert [(d.name, d.connections, d.bytes) for d in s.devices] == [("Device 1", 1, 500)]
    assert MAC not in w.summary._present  # the row is no longer linked to who it was

    # The same phone coming back is a new device, as on the kiosk.
    w.lease()
    w.ask("wikipedia.org")
    w.event(FlowEventKind.NEW, 2, "wikipedia.org", 1, 1)
    assert [d.name for d in w.summary.summary().devices] == ["Device 1", "Device 2"]


def test_forget_me_takes_the_devices_numbers_out_of_every_total():
    w = World()
    w.lease()
    w.lease(ip="10.99.1.24", mac="02:a5:00:00:00:02", host="Alices-Pad")
    w.ask("wikipedia.org")
    w.ask("google.com", ip="10.99.1.24")
    w.event(FlowEventKind.NEW, 1, "wikipedia.org", 100, 100)
    w.event(FlowEventKind.DESTROY, 1, "wikipedia.org", 100, 100)
    w.wait(31)  # folded already
    w.event(FlowEventKind.NEW, 2, "wikipedia.org", 100, 100)  # and one still live
    w.event(FlowEventKind.NEW, 3, "google.com", 1, 1, ip="10.99.1.24")
    assert len(w.summary.summary().devices) == 2
    w.forget_me(MAC)
    s = w.summary.summary()
    assert by_name(s.companies) == {"Google": (1, 2, 0)}
    assert [(d.name, d.connections) for d in s.devices] == [("Device 1", 1)]
    # It keeps talking while it stays on the Wi-Fi: still not counted.
    w.ask("wikipedia.org")
    w.event(FlowEventKind.NEW, 4, "wikipedia.org", 100, 100)
    w.lease()
    w.event(FlowEventKind.NEW, 5, "wikipedia.org", 100, 100)
    w.wait(1)
    assert by_name(w.summary.summary().companies) == {"Google": (1, 2, 0)}


def test_a_device_first_seen_by_address_keeps_its_row_when_its_mac_arrives():
    w = World()
    w.ask("wikipedia.org")
    w.event(FlowEventKind.NEW, 1, "wikipedia.org", 10, 10)
    w.event(FlowEventKind.DESTROY, 1, "wikipedia.org", 10, 10)
    w.wait(31)  # folded under the provisional device
    w.event(FlowEventKind.NEW, 2, "wikipedia.org", 10, 10)
    w.lease()  # the MAC becomes known: "ip:10.99.1.23" moves onto it
    assert list(w.state.devices) == [MAC]
    w.event(FlowEventKind.NEW, 3, "wikipedia.org", 10, 10)
    s = w.summary.summary()
    assert [(d.name, d.connections, d.bytes) for d in s.devices] == [("Device 1", 3, 60)]


def test_reset_starts_an_empty_session():
    w = World()
    w.lease()
    w.ask("wikipedia.org")
    w.event(FlowEventKind.NEW, 1, "wikipedia.org", 100, 100)
    w.event(FlowEventKind.DESTROY, 1, "wikipedia.org", 100, 100)
    w.wait(31)
    w.now += 100
    # The operator's reset: forget everyone, then start the summary anew.
    for key in list(w.state.devices):
        w.state.forget_device(key)
    w.summary.reset()
    s = w.summary.summary()
    assert (s.total.connections, s.total.bytes, s.companies, s.devices) == (0, 0, [], [])
    assert s.started == w.now
    w.lease()
    w.event(FlowEventKind.NEW, 2, "wikipedia.org", 1, 1)
    # The device's own lookup was forgotten with it: only the shared name is left, so the flow
    # waits name_wait for its own before it counts (see test_state's name_wait tests).
    assert w.summary.summary().devices == []
    w.wait(1.0)
    assert [d.name for d in w.summary.summary().devices] == ["Device 1"]


def test_memory_stays_bounded(monkeypatch):
    monkeypatch.setattr(summary_mod, "MAX_DEVICES", 3)
    monkeypatch.setattr(summary_mod, "MAX_DESTINATIONS", 2)
    w = World(mode="home")
    fid = 0
    for n in range(6):
        ip, mac = f"10.99.1.{50 + n}", f"02:a5:00:00:01:{n:02x}"
        w.lease(ip=ip, mac=mac, host=None)
        for name in ("a.example", "b.example", "c.example"):
            fid += 1
            w.ask(name, ip=ip)
            w.event(FlowEventKind.NEW, fid, name, 1, 1, ip=ip)
            w.event(FlowEventKind.DESTROY, fid, name, 1, 1, ip=ip)
        w.wait(31)
        w.state.forget_device(mac)  # left
    assert len(w.summary._entries) <= 3
    assert all(len(e.dests) <= 2 for e in w.summary._entries.values())
    s = w.summary.summary()
    assert (s.total.connections, s.total.bytes) == (18, 36)  # nothing lost, only folded
    assert s.devices[-1].name == "other devices"
    assert "other companies" in by_name(s.companies)


# ------------------------------------------------------------------------------ the files


@pytest.mark.parametrize("mode", ["exhibit", "classroom"])
def test_no_identity_or_visitor_domain_reaches_the_files(mode):
    w = World(mode="home")  # counted while the screen showed real names ...
    w.lease()
    w.ask(RUDE)
    w.ask("wikipedia.org")
    w.event(FlowEventKind.NEW, 1, RUDE, 100, 100)
    w.event(FlowEventKind.DESTROY, 1, RUDE, 100, 100)
    w.wait(31)
    w.event(FlowEventKind.NEW, 2, RUDE, 100, 100)
    w.event(FlowEventKind.NEW, 3, "wikipedia.org", 100, 100)
    assert RUDE.split(".")[0] in to_csv(w.summary.summary())  # home mode shows every domain
    w.privacy.set_mode(mode)  # ... then downloaded in a private mode
    pseudonym = w.privacy.device_label(MAC, HOST, "d1")
    s = w.summary.summary()
    files = to_csv(s) + to_svg(s)
    for secret in ("rude-word", "1234.example", HOST, MAC, MAC.upper(), IP, pseudonym):
        assert secret not in files, secret
    assert by_name(s.companies) == {"OVH": (2, 400, 0), "Wikimedia": (1, 200, 0)}
    assert "Device 1" in files


def test_csv_is_one_table_and_neutralises_formulas():
    hostile = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]
    s = Summary(
        started=time.time() - 3600,
        ended=time.time(),
        mode="classroom",
        total=Row("all", 9, 900, 1, companies=len(hostile)),
        companies=[Row(h, 1, 100) for h in hostile] + [Row('Quote "and", comma', 1, 1, detail="search")],
        trackers=[Row("=cmd|' /C calc'!A0", 1, 1, 1, detail="ads")],
        countries=[Row("France", 2, 200, detail="FR")],
        devices=[Row("Device 1", 3, 300, 1, companies=2)],
    )
    text = to_csv(s)
    table = rows(text)
    assert tuple(table[0]) == CSV_COLUMNS
    assert [r["section"] for r in table] == ["session"] + ["company"] * 7 + ["tracker", "country", "device"]
    for cell in (c for r in table for c in r.values()):
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    assert [r["name"] for r in table[1:7]] == ["'" + h for h in hostile]
    assert table[7]["name"] == 'Quote "and", comma'
    assert table[8]["name"] == "'=cmd|' /C calc'!A0"
    assert table[10] == {
        "section": "device",
        "name": "Device 1",
        "detail": "",
        "connections": "3",
        "bytes": "300",
        "tracker_connections": "1",
        "companies": "2",
    }
    assert table[0]["detail"] == "classroom mode" and table[0]["connections"] == "9"
    assert filename(s, "csv").startswith("apviz-session-") and filename(s, "csv").endswith(".csv")


def test_svg_is_well_formed_and_escapes_hostile_text():
    evil = '<script>alert(1)</script>&"\x01\x1b]'
    s = Summary(
        started=time.time() - 60,
        ended=time.time(),
        mode="exhibit",
        total=Row("all", 3, 3000, 1, companies=2),
        companies=[Row(evil, 2, 2000), Row("Wikimedia & Co", 1, 1000)],
        trackers=[Row(evil, 1, 1, 1, detail="<ads>")],
        countries=[Row("Côte d'Ivoire", 3, 3000, detail="CI")],
        devices=[Row("Device 1", 3, 3000, 1, companies=2)],
    )
    svg = to_svg(s)
    root = ET.fromstring(svg.encode("utf-8"))
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == ns + "svg"
    tags = {el.tag.removeprefix(ns) for el in root.iter()}
    assert tags <= {"svg", "title", "rect", "g", "text"}, tags  # no script, image, link or style
    texts = [el.text or "" for el in root.iter(ns + "text")]
    assert any(t.startswith('<script>alert(1)</script>&"') for t in texts)
    assert "Wikimedia & Co" in texts and "Côte d'Ivoire" in texts
    assert "What our devices talked to" in texts
    assert "href" not in svg and "url(" not in svg and "@import" not in svg
