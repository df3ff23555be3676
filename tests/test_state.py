"""The live state: devices keyed by MAC, flows attributed, late names, expiry."""

import dataclasses
import socket

from apviz.events import (
    DhcpEvent,
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
    Neighbour,
)
from apviz.live.model import ChangeKind
from apviz.live.names import NameSource
from apviz.live.state import LiveState, StateConfig, networks


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def flow(fid, src, dst, dport=443, up=0, down=0):
    return Flow(
        id=fid,
        family=socket.AF_INET,
        orig=FlowTuple(6, src, dst, 40000 + fid, dport),
        reply=FlowTuple(6, dst, "10.99.255.2", dport, 40000 + fid),
        orig_bytes=up,
        reply_bytes=down,
        orig_packets=1 if up else 0,
    )


def by_id(st, fid):
    (rec,) = [r for r in st.flows.values() if r.id == fid]
    return rec


def make():
    clock = Clock()
    st = LiveState(
        StateConfig(lan=networks(["10.99.1.0/24"]), local_addresses=frozenset({"10.99.1.1"})), clock
    )
    changes = []
    st.observers.append(changes.append)
    return st, clock, changes


def test_flow_gets_device_hostname_and_asked_name_even_when_dns_is_late():
    st, clock, changes = make()
    st.apply(LeaseSnapshot((Lease(0, "02:a5:00:00:00:01", "10.99.1.101", "phone-1", None),)))
    st.apply(FlowEvent(FlowEventKind.NEW, flow(1, "10.99.1.101", "198.18.0.10")))
    rec = by_id(st, 1)
    assert rec.device == "02:a5:00:00:00:01" and rec.name is None
    st.apply(DnsQuery(clock.t, 5, "10.99.1.101", "A", "doubleclick.net"))
    st.apply(DnsAnswer(clock.t, 5, "10.99.1.101", DnsAnswerKind.REPLY, "doubleclick.net", "198.18.0.10"))
    assert rec.name == "doubleclick.net" and rec.name_source is NameSource.ASKED
    assert [c.kind for c in changes if c.flow is rec] == [ChangeKind.FLOW_NEW, ChangeKind.FLOW_NAMED]
    assert st.devices[rec.device].hostname == "phone-1"


def test_local_and_wan_flows_are_ignored():
    st, _, _ = make()
    st.apply(FlowEvent(FlowEventKind.NEW, flow(1, "10.99.1.101", "10.99.1.1", 53)))
    st.apply(FlowEvent(FlowEventKind.NEW, flow(2, "10.99.255.1", "198.18.0.53", 53)))
    assert st.flows == {} and st.counts["flows_ignored"] == 2


def test_provisional_device_moves_to_mac_when_dhcp_ack_arrives():
    st, clock, _ = make()
    st.apply(FlowEvent(FlowEventKind.NEW, flow(1, "10.99.1.150", "198.18.0.10")))
    assert by_id(st, 1).device == "ip:10.99.1.150"
    st.apply(DhcpEvent(clock.t, 1, "DHCPACK", "br0", "10.99.1.150", "02:A5:00:00:00:07", "tv-1"))
    assert by_id(st, 1).device == "02:a5:00:00:00:07"
    assert "ip:10.99.1.150" not in st.devices
    assert st.devices["02:a5:00:00:00:07"].hostname == "tv-1"


def test_neighbour_maps_ipv6_address_to_the_device():
    st, _, _ = make()
    st.config.lan = networks(["10.99.1.0/24", "fd00::/8"])
    st.apply(LeaseSnapshot((Lease(0, "02:a5:00:00:00:01", "10.99.1.101", "phone-1", None),)))
    st.apply(Neighbour("fd00::1:5", "02:A5:00:00:00:01"))
    f = Flow(
        id=9,
        family=socket.AF_INET6,
        orig=FlowTuple(6, "fd00::1:5", "2001:db8::1", 5555, 443),
        reply=FlowTuple(6, "2001:db8::1", "fd00::1:5", 443, 5555),
    )
    st.apply(FlowEvent(FlowEventKind.NEW, f))
    assert by_id(st, 9).device == "02:a5:00:00:00:01"


def test_snapshot_ends_missing_flows_and_expiry_removes_them():
    st, clock, changes = make()
    st.apply(FlowEvent(FlowEventKind.NEW, flow(1, "10.99.1.101", "198.18.0.10")))
    st.apply(FlowEvent(FlowEventKind.NEW, flow(2, "10.99.1.101", "198.18.0.11")))
    st.apply(FlowSnapshot([flow(2, "10.99.1.101", "198.18.0.11", up=500, down=9000)], "refresh"))
    assert not by_id(st, 1).open and by_id(st, 2).open
    assert by_id(st, 2).bytes == 9500
    clock.t += st.config.flow_hold + 1
    st.expire()
    assert {r.id for r in st.flows.values()} == {2}
    assert ChangeKind.FLOW_GONE in [c.kind for c in changes]


def test_destroy_keeps_final_counters_then_idle_device_is_forgotten():
    st, clock, _ = make()
    st.apply(FlowEvent(FlowEventKind.NEW, flow(1, "10.99.1.101", "198.18.0.10")))
    st.apply(FlowEvent(FlowEventKind.DESTROY, flow(1, "10.99.1.101", "198.18.0.10", up=100, down=2000)))
    assert by_id(st, 1).bytes == 2100 and not by_id(st, 1).open
    clock.t += st.config.device_idle + 1
    st.expire()
    assert st.flows == {} and st.devices == {}


def test_two_live_entries_with_one_kernel_id_stay_two_flows():
    st, _, _ = make()
    st.apply(FlowEvent(FlowEventKind.NEW, flow(7, "10.99.1.101", "198.18.0.10")))
    st.apply(FlowEvent(FlowEventKind.NEW, flow(7, "10.99.1.102", "198.18.0.11")))
    assert len(st.flows) == 2
    st.apply(FlowEvent(FlowEventKind.DESTROY, flow(7, "10.99.1.102", "198.18.0.11")))
    assert sorted(r.open for r in st.flows.values()) == [False, True]


def test_time_wait_in_a_refresh_dump_ends_the_flow():
    st, _, _ = make()
    st.apply(FlowEvent(FlowEventKind.NEW, flow(3, "10.99.1.101", "198.18.0.10")))
    done = flow(3, "10.99.1.101", "198.18.0.10", up=10, down=20)
    done.tcp_state = "TIME_WAIT"
    st.apply(FlowSnapshot([done], "refresh"))
    assert not by_id(st, 3).open and by_id(st, 3).bytes == 30


def test_forgotten_device_comes_back_only_with_new_connections_under_its_mac():
    st, _, _ = make()
    mac = "02:a5:00:00:00:01"
    st.apply(LeaseSnapshot((Lease(0, mac, "10.99.1.10", "phone", None),)))
    old, ended = flow(1, "10.99.1.10", "198.18.2.10"), flow(2, "10.99.1.10", "198.18.2.11")
    st.apply(FlowEvent(FlowEventKind.NEW, old))
    st.apply(FlowEvent(FlowEventKind.NEW, ended))
    st.forget_device(mac)
    assert mac not in st.devices and not st.flows

    # The periodic dump still lists the open connection: it stays forgotten.
    st.apply(FlowSnapshot((old, ended), "refresh"))
    st.apply(FlowEvent(FlowEventKind.DESTROY, ended))  # the kernel ends one: no longer remembered
    st.apply(FlowSnapshot((old,), "refresh"))
    assert not st.flows and mac not in st.devices
    assert len(st._forgotten) == 1

    # A new connection brings the device back under its MAC (the lease mapping is the network's).
    st.apply(FlowEvent(FlowEventKind.NEW, flow(3, "10.99.1.10", "198.18.2.12")))
    assert [r.id for r in st.flows.values()] == [3] and st.flows[next(iter(st.flows))].device == mac
    st.apply(FlowSnapshot((flow(3, "10.99.1.10", "198.18.2.12"),), "refresh"))  # the old one is gone now
    assert not st._forgotten


def test_a_visitor_who_walked_away_is_forgotten_though_the_kernel_keeps_their_connection():
    clock = Clock()
    cfg = StateConfig(lan=networks(["10.99.1.0/24"]), forget_after=60.0)
    st = LiveState(cfg, clock)
    mac = "02:a5:00:00:00:02"
    st.apply(LeaseSnapshot((Lease(0, mac, "10.99.1.11", "phone", None),)))
    open_flow = flow(1, "10.99.1.11", "198.18.2.10", up=100, down=1000)
    st.apply(FlowEvent(FlowEventKind.NEW, open_flow))
    clock.t += 50
    st.apply(FlowSnapshot((flow(1, "10.99.1.11", "198.18.2.10", up=200, down=3000),), "refresh"))
    clock.t += 50  # 50 s since a byte last moved: still here
    st.expire()
    assert mac in st.devices
    clock.t += 20  # an established entry stays in conntrack for days; only the server still sends
    st.apply(FlowSnapshot((flow(1, "10.99.1.11", "198.18.2.10", up=200, down=3400),), "refresh"))
    st.expire()
    assert mac not in st.devices and not st.flows

    # Without forget_after (home), an open connection keeps its device.
    st2 = LiveState(StateConfig(lan=networks(["10.99.1.0/24"]), device_idle=60.0), clock)
    st2.apply(FlowEvent(FlowEventKind.NEW, open_flow))
    clock.t += 1000
    st2.expire()
    assert len(st2.devices) == 1


def test_an_ended_flow_is_not_brought_back_by_the_next_dump():
    """A closed TCP connection stays in the kernel's table (TIME_WAIT) well past the screen's hold:
    the refresh dumps that still list it must not show it again as a new connection."""
    now = [0.0]
    st = LiveState(StateConfig(lan=networks(["10.99.0.0/16"]), flow_hold=10.0), clock=lambda: now[0])
    kinds: list[ChangeKind] = []
    st.observers.append(lambda change: kinds.append(change.kind))
    orig = FlowTuple(6, "10.99.1.5", "198.18.0.10", 40000, 443)
    flow = Flow(1, socket.AF_INET, orig, FlowTuple(6, "198.18.0.10", "10.99.1.5", 443, 40000), orig_bytes=10)
    st.apply(FlowEvent(FlowEventKind.NEW, flow))
    closed = dataclasses.replace(flow, tcp_state="TIME_WAIT")
    st.apply(FlowEvent(FlowEventKind.UPDATE, closed))
    for step in range(1, 7):  # a minute of refresh dumps that still list the TIME_WAIT entry
        now[0] = step * 10.0
        st.expire()
        st.apply(FlowSnapshot([closed], "refresh"))
    assert kinds.count(ChangeKind.FLOW_NEW) == 1 and kinds.count(ChangeKind.FLOW_GONE) == 1
    assert not st.flows
    st.apply(FlowSnapshot([], "refresh"))  # the kernel let it go: nothing is remembered any more
    assert not st._forgotten
