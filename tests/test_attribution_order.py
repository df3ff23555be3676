"""The attribution order, per device and connection, from synthetic events.

The connection's own server name, then the name this device asked dnsmasq for, then a DNS answer
it got from another resolver, an ECH front, and only then another device's lookup, which a new
flow shows only after ``name_wait`` seconds without a name of its own.
"""

import socket

from hypothesis import given, settings
from hypothesis import strategies as hs

from apviz.events import (
    DnsAnswer,
    DnsAnswerKind,
    DnsQuery,
    Flow,
    FlowEvent,
    FlowEventKind,
    FlowTuple,
    Lease,
    LeaseSnapshot,
    PrivateDnsRefused,
    ResolverAnswer,
    ServerName,
    ServerNameVia,
)
from apviz.live.model import ChangeKind
from apviz.live.names import NameMemory, NameSource
from apviz.live.publicview import ViewBuilder
from apviz.live.state import LiveState, StateConfig, networks
from apviz.live.views import device_table

PHONE, OTHER = "10.99.1.101", "10.99.1.102"
MAC, OTHER_MAC = "02:a5:00:00:00:01", "02:a5:00:00:00:02"
CDN = "198.18.7.7"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(name_wait: float = 1.0) -> tuple[LiveState, Clock, list]:
    clock = Clock()
    st = LiveState(StateConfig(lan=networks(["10.99.1.0/24"]), name_wait=name_wait), clock)
    changes: list = []
    # Flows are live objects: keep what each change showed at the moment it was told.
    st.observers.append(
        lambda c: changes.append((c, c.flow.name if c.flow else None, c.flow and c.flow.name_source))
    )
    st.apply(
        LeaseSnapshot((Lease(0, MAC, PHONE, "phone-1", None), Lease(0, OTHER_MAC, OTHER, "phone-2", None)))
    )
    return st, clock, changes


def flow(fid: int, src: str = PHONE, dst: str = CDN, dport: int = 443, proto: int = 6) -> Flow:
    sport = 40000 + fid
    return Flow(
        fid,
        socket.AF_INET,
        FlowTuple(proto, src, dst, sport, dport),
        FlowTuple(proto, dst, src, dport, sport),
    )


def new(st: LiveState, fid: int, src: str = PHONE, dst: str = CDN, **kw: int):
    st.apply(FlowEvent(FlowEventKind.NEW, flow(fid, src, dst, **kw)))
    (rec,) = [r for r in st.flows.values() if r.id == fid]
    return rec


def ask(st: LiveState, client: str, name: str, address: str = CDN, serial: int = 1) -> None:
    st.apply(DnsQuery(st.clock(), serial, client, "A", name))
    st.apply(DnsAnswer(st.clock(), serial, client, DnsAnswerKind.REPLY, name, address))


def sni(
    st: LiveState, fid: int, name: str | None, src: str = PHONE, dst: str = CDN, ech: bool = False
) -> None:
    st.apply(ServerName(st.clock(), src, 40000 + fid, dst, 443, 6, name, ServerNameVia.TLS, ech=ech))


def resolved(st: LiveState, client: str, name: str, address: str = CDN) -> None:
    st.apply(ResolverAnswer(st.clock(), client, "198.18.53.53", name, (address,)))


def named(changes: list, rec) -> list[tuple[str | None, str | None]]:
    """What a flow showed, change by change, from its first appearance."""
    return [(n, s) for c, n, s in changes if c.flow is rec and c.kind is ChangeKind.FLOW_NAMED]


def test_server_name_beats_the_asked_name():
    st, _, _ = make()
    ask(st, PHONE, "www.example.com")
    rec = new(st, 1)
    assert (rec.name, rec.name_source) == ("www.example.com", NameSource.ASKED)
    sni(st, 1, "api.example.com")
    assert (rec.name, rec.name_source) == ("api.example.com", NameSource.CONNECTION)
    ask(st, PHONE, "other.example.com", serial=2)  # a later lookup does not take it back
    assert rec.name_source is NameSource.CONNECTION


def test_server_name_before_the_flow_is_found_when_the_flow_arrives():
    st, _, _ = make()
    ask(st, OTHER, "cdn-other.example")  # a shared candidate exists, but the flow has its own
    sni(st, 1, "Video.Example.")
    rec = new(st, 1)
    assert (rec.name, rec.name_source) == ("video.example", NameSource.CONNECTION)
    assert rec.waiting_until is None and st.counts["name_waits"] == 0


def test_server_name_after_the_flow_upgrades_it():
    st, _, changes = make()
    rec = new(st, 1)
    assert rec.name is None
    sni(st, 1, "video.example")
    assert named(changes, rec) == [("video.example", NameSource.CONNECTION)]
    sni(st, 2, "unrelated.example")  # another tuple: no flow yet, nothing changes
    assert rec.name == "video.example"


def test_ech_front_does_not_replace_the_looked_up_name():
    st, _, _ = make()
    ask(st, PHONE, "secret-site.example")
    rec = new(st, 1)
    sni(st, 1, "cloudflare-ech.com", ech=True)
    assert (rec.name, rec.name_source) == ("secret-site.example", NameSource.ASKED)


def test_ech_front_is_used_only_when_nothing_of_the_device_exists_and_beats_shared():
    st, _, _ = make()
    rec = new(st, 1)
    sni(st, 1, "cloudflare-ech.com", ech=True)
    assert (rec.name, rec.name_source) == ("cloudflare-ech.com", NameSource.FRONT)
    resolved(st, PHONE, "secret-site.example")  # its own lookup arrives: it wins
    assert (rec.name, rec.name_source) == ("secret-site.example", NameSource.RESOLVER)
    # A front read before the flow: beats another device's name at once, no wait.
    ask(st, OTHER, "shared.example", "198.18.8.8")
    sni(st, 2, "cloudflare-ech.com", dst="198.18.8.8", ech=True)
    rec2 = new(st, 2, dst="198.18.8.8")
    assert (rec2.name, rec2.name_source, rec2.waiting_until) == ("cloudflare-ech.com", NameSource.FRONT, None)


def test_asked_beats_resolver_beats_shared():
    st, clock, _ = make()
    ask(st, OTHER, "other-phone.example")
    resolved(st, PHONE, "from-resolver.example")
    rec = new(st, 1)
    assert (rec.name, rec.name_source) == ("from-resolver.example", NameSource.RESOLVER)
    ask(st, PHONE, "asked.example", serial=2)
    assert (rec.name, rec.name_source) == ("asked.example", NameSource.ASKED)
    resolved(st, PHONE, "later-resolver.example")  # a resolver answer never beats the asked name
    assert rec.name_source is NameSource.ASKED
    # Both known before the flow: asked wins at once.
    rec2 = new(st, 2)
    assert (rec2.name, rec2.name_source) == ("asked.example", NameSource.ASKED)
    # A device with neither: only another device's lookup, after the wait.
    rec3 = new(st, 3, src="10.99.1.103")
    assert rec3.name is None and rec3.waiting_until is not None
    clock.t += 1.0
    st.expire()
    assert rec3.name_source is NameSource.SHARED


def test_own_answer_late_within_name_wait_so_the_shared_name_never_shows():
    st, clock, changes = make()
    ask(st, OTHER, "www.instagram.com")
    rec = new(st, 1)
    assert rec.name is None and rec.waiting_until == clock.t + 1.0
    builder = ViewBuilder()
    view = builder.build(st)
    assert view["totals"]["connections"] == 0  # kept off the screen while it waits
    assert builder.device_detail(st, builder.device_id(MAC))["destinations"] == []
    assert all(not r.names for r in device_table(st) if r.key == MAC)
    clock.t += 0.6
    st.expire()
    assert rec.waiting_until is not None
    ask(st, PHONE, "graph.facebook.com", serial=2)
    assert (rec.name, rec.name_source, rec.waiting_until) == ("graph.facebook.com", NameSource.ASKED, None)
    clock.t += 5
    st.expire()
    assert named(changes, rec) == [("graph.facebook.com", NameSource.ASKED)]
    assert st.counts["name_waits"] == st.counts["name_waits_own"] == 1
    assert st.counts["foreign_name_first"] == 0 and st.counts["names_shared"] == 0
    assert builder.build(st)["totals"]["connections"] == 1


def test_after_name_wait_the_shared_name_shows_marked_and_a_late_own_name_counts():
    st, clock, changes = make(name_wait=0.5)
    ask(st, OTHER, "www.instagram.com")
    rec = new(st, 1)
    assert st.next_name_deadline() == 0.5
    clock.t += 0.5
    assert st.settle_names() == 1  # what the pipeline calls when the deadline passes
    assert (rec.name, rec.name_source) == ("www.instagram.com", NameSource.SHARED)
    assert st.next_name_deadline() is None and st.counts["names_shared"] == 1
    assert [r.shared for d in device_table(st) if d.key == MAC for r in d.names] == [True]
    b = ViewBuilder()
    detail = b.device_detail(st, b.device_id(MAC))
    assert detail["destinations"][0]["name_sources"] == ["shared"]
    sni(st, 1, "graph.facebook.com")  # its own name after all: a foreign name showed first
    assert st.counts["foreign_name_first"] == 1 and rec.foreign_first
    assert named(changes, rec) == [
        ("www.instagram.com", NameSource.SHARED),
        ("graph.facebook.com", NameSource.CONNECTION),
    ]


def test_wait_ends_unnamed_when_the_shared_name_expired_and_zero_wait_shows_at_once():
    st, clock, changes = make()
    ask(st, OTHER, "www.instagram.com")
    rec = new(st, 1)
    st.names._global.clear()  # the other device's answer has aged out meanwhile
    clock.t += 1.0
    st.expire()
    assert rec.waiting_until is None and rec.name is None
    assert [c.kind for c, _, _ in changes if c.flow is rec][-1] is ChangeKind.FLOW_NAMED  # re-published
    st0, _, _ = make(name_wait=0)
    ask(st0, OTHER, "www.instagram.com")
    assert new(st0, 1).name_source is NameSource.SHARED


def test_a_flow_gone_while_waiting_is_skipped_and_waits_are_per_flow():
    st, clock, _ = make()
    ask(st, OTHER, "shared.example")
    first = new(st, 1)
    clock.t += 0.5
    second = new(st, 2)
    st.forget_device(MAC)
    clock.t += 0.6
    assert st.settle_names() == 0 and first.key not in st.flows and second.key not in st.flows
    third = new(st, 3, src=OTHER)  # the other device asked itself
    assert third.name_source is NameSource.ASKED


def test_forget_device_clears_server_names_and_resolver_answers():
    st, clock, _ = make()
    sni(st, 9, "private.example")  # read before its flow
    resolved(st, PHONE, "resolved.example", "198.18.9.9")
    assert st.names.server_name((PHONE, 40009, CDN, 443, 6), clock.t) is not None
    st.forget_device(MAC)
    assert st.names.server_name((PHONE, 40009, CDN, 443, 6), clock.t) is None
    assert st.names.own(PHONE, "198.18.9.9", clock.t) is None
    assert st.names.stats()["resolver_clients"] == 0 and st.names.stats()["server_names"] == 0
    assert st._by_tuple == {}


def test_server_name_table_and_resolver_answers_are_bounded():
    m = NameMemory(max_server_names=100, server_name_hold=60)
    for i in range(1000):
        sn = ServerName(100.0, PHONE, i, CDN, 443, 6, f"n{i}.example", ServerNameVia.QUIC)
        m.on_server_name(sn, sn.name)
    assert m.stats()["server_names"] == 100
    assert m.server_name((PHONE, 999, CDN, 443, 6), 101.0) == ("n999.example", False)
    assert m.server_name((PHONE, 0, CDN, 443, 6), 101.0) is None  # evicted
    assert m.server_name((PHONE, 999, CDN, 443, 6), 200.0) is None  # too old for a late flow
    huge = ResolverAnswer(
        100.0, PHONE, "198.18.53.53", "x.example", tuple(f"198.18.{i // 250}.{i % 250}" for i in range(5000))
    )
    assert len(m.on_resolver_answer(huge)) == 64
    assert (
        m.on_resolver_answer(ResolverAnswer(100.0, PHONE, "r", "x.example", (CDN,), rcode="NXDOMAIN")) == []
    )


def test_bad_server_names_are_counted_and_skipped_hostile_ones_stay_text():
    st, _, _ = make()
    rec = new(st, 1)
    for bad in (None, "", "a" * 300, "evil\x00.example", "two words.example"):
        sni(st, 1, bad)
    assert rec.name is None and st.counts["server_names_bad"] == 5
    sni(st, 1, "<script>alert(1)</script>.example")
    assert rec.name == "<script>alert(1)</script>.example"  # text; the views escape and gate it


def test_private_dns_refused_marks_the_device_for_the_phone_page():
    st, _, changes = make()
    st.apply(PrivateDnsRefused(st.clock(), PHONE, "198.18.53.53", 6))
    assert st.devices[MAC].private_dns_refused is not None
    assert [c.kind for c, _, _ in changes][-1] is ChangeKind.DEVICE
    b = ViewBuilder()
    assert b.device_detail(st, b.device_id(MAC))["private_dns_refused"] is True
    assert b.device_detail(st, b.device_id(OTHER_MAC))["private_dns_refused"] is False
    st.apply(PrivateDnsRefused(st.clock(), "198.18.0.1", "198.18.53.53", 6))  # not the LAN: ignored
    assert st.counts["private_dns_refused"] == 2 and "ip:198.18.0.1" not in st.devices


# ------------------------------------------------------------------------------ any interleaving

DEVICES = (PHONE, OTHER)
ADDRESSES = ("198.18.7.7", "198.18.7.8")

_dev, _addr = hs.sampled_from(DEVICES), hs.sampled_from(ADDRESSES)
_step = hs.one_of(
    hs.tuples(hs.just("ask"), _dev, _addr),
    hs.tuples(hs.just("resolve"), _dev, _addr),
    hs.tuples(hs.just("flow"), _dev, _addr, hs.integers(1, 6)),
    hs.tuples(hs.just("sni"), _dev, _addr, hs.integers(1, 6), hs.booleans()),
    hs.tuples(hs.just("tick"), hs.sampled_from((0.1, 0.4, 1.0, 2.0))),
)


@settings(max_examples=400, deadline=None)
@given(hs.lists(_step, max_size=40))
def test_no_interleaving_shows_another_devices_name_while_its_own_is_known_or_merely_late(steps):
    """Whatever order lookups, server names, flows and time arrive in, a flow shows another device's
    name only after name_wait and only while nothing of its own is known; its own name then wins."""
    st, clock, _ = make(name_wait=1.0)
    born: dict[tuple, float] = {}
    serial = iter(range(1, 10_000))

    def own_known(rec) -> bool:
        sn = st.names.server_name((rec.client, rec.sport, rec.dst, rec.dport, rec.proto), clock.t)
        return st.names.own(rec.client, rec.dst, clock.t) is not None or (sn is not None and not sn[1])

    def check(change) -> None:
        rec = change.flow
        if rec is None or rec.name_source is not NameSource.SHARED:
            return
        assert not own_known(rec), "another device's name while the flow's own is known"
        assert clock.t - born.get(rec.key, clock.t) >= 1.0, "another device's name before name_wait"

    st.observers.append(check)
    for step in steps:
        kind, *args = step
        if kind == "ask":
            ask(st, args[0], f"{args[0]}-{args[1]}.example", args[1], serial=next(serial))
        elif kind == "resolve":
            resolved(st, args[0], f"r-{args[0]}-{args[1]}.example", args[1])
        elif kind == "flow":
            device, address, fid = args
            fid += 10 * DEVICES.index(device) + 100 * ADDRESSES.index(address)
            if not any(r.id == fid for r in st.flows.values()):
                born[new(st, fid, src=device, dst=address).key] = clock.t
        elif kind == "sni":
            device, address, fid, ech = args
            fid += 10 * DEVICES.index(device) + 100 * ADDRESSES.index(address)
            sni(st, fid, f"s{fid}.example", src=device, dst=address, ech=ech)
        else:
            clock.t += args[0]
            st.expire()
        for rec in st.flows.values():
            assert rec.waiting_until is None or rec.name is None
            if rec.name_source is NameSource.SHARED:
                assert not own_known(rec)
    assert st.counts["foreign_name_first"] == sum(r.foreign_first for r in st.flows.values())


def test_a_late_new_lookup_beats_the_devices_old_one_but_a_later_lookup_renames_nothing():
    """The device looked up X for the CDN address a while ago; now it asks for Y and connects at once,
    and the kernel reports the flow before Y's log line is read: the flow shows X for a moment,
    then Y. A lookup made just before the flow (a page asking for two names of one address) and a
    lookup after the flow's first ``name_wait`` seconds rename nothing."""
    st, clock, changes = make()
    ask(st, PHONE, "graph.facebook.com")
    clock.t += 30
    rec = new(st, 1)
    assert (rec.name, rec.name_source) == ("graph.facebook.com", NameSource.ASKED)
    clock.t += 0.05
    ask(st, PHONE, "graph.instagram.com", serial=2)  # read late: asked before the flow
    assert (rec.name, rec.name_source) == ("graph.instagram.com", NameSource.ASKED)
    assert st.counts["own_names_late"] == 1 and not rec.foreign_first
    clock.t += 0.1
    ask(st, PHONE, "graph.facebook.com", serial=3)  # a fresh binding now names the flow: it stays
    assert rec.name == "graph.instagram.com"
    fresh = new(st, 2)  # named from the lookup just read: a lookup right after does not rename it
    ask(st, PHONE, "www.instagram.com", serial=4)
    assert fresh.name == "graph.facebook.com"
    clock.t += 40
    old = new(st, 3)
    clock.t += 2  # past name_wait: whatever the device looks up now is not what it connected for
    ask(st, PHONE, "graph.facebook.com", serial=5)
    assert old.name == "www.instagram.com" and st.counts["own_names_late"] == 1
    assert named(changes, rec) == [("graph.instagram.com", NameSource.ASKED)]
