"""The live state: the one place where devices, flows and their names are kept.

Only the owner task calls :meth:`LiveState.apply` and :meth:`LiveState.expire`; sources never
touch it, and views read it between events. That single owner is why nothing here needs a lock.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from apviz.events import (
    DhcpEvent,
    DnsAnswer,
    DnsQuery,
    Event,
    Flow,
    FlowEvent,
    FlowEventKind,
    FlowSnapshot,
    LeaseSnapshot,
    Neighbour,
    PrivateDnsRefused,
    ResolverAnswer,
    ServerName,
    SourceError,
)
from apviz.live.blocking import BlockDecider
from apviz.live.model import Change, ChangeKind, Device, FlowRecord
from apviz.live.names import OWN, RANK, Attribution, FlowId, NameMemory, NameSource, clean_name

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# TCP states after both sides closed: the kernel keeps such entries (TIME_WAIT for 120 s) but
# the connection is over, so the screen should let it go after the usual hold.
CLOSED_TCP = frozenset({"TIME_WAIT", "CLOSE", "LAST_ACK"})

DEFAULT_LAN = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fe80::/10")


#: Bound on remembered forgotten connections (a reset with 100k open flows must not grow without end).
MAX_FORGOTTEN_FLOWS = 200_000


def _flow_id(rec: FlowRecord) -> FlowId:
    return (rec.client, rec.sport, rec.dst, rec.dport, rec.proto)


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """Parse CIDRs, raising a ValueError that names the bad one."""
    out = []
    for c in cidrs:
        try:
            out.append(ipaddress.ip_network(c, strict=False))
        except ValueError as exc:
            raise ValueError(f"not a network address: {c!r} ({exc})") from None
    return tuple(out)


@dataclass(slots=True)
class StateConfig:
    """Knobs of the live state (validated by :func:`networks` and ``__post_init__``)."""

    lan: tuple[Network, ...] = field(default_factory=lambda: networks(DEFAULT_LAN))
    local_addresses: frozenset[str] = frozenset()  # the gateway's own addresses: not destinations
    flow_hold: float = 30.0  # seconds an ended flow stays visible
    device_idle: float = 600.0  # seconds without traffic (and no lease) before a device is forgotten
    name_hold: float = 1800.0  # seconds a DNS answer is credited to flows
    # Seconds a new flow whose only name is another device's lookup waits for its own (asked,
    # server name, other resolver) before that shared name is shown; 0: show it at once.
    name_wait: float = 1.0
    # Seconds without traffic after which a device is forgotten even though its DHCP lease runs on
    # (leases last hours; a visitor who left must not stay in memory that long). None: wait for it.
    forget_after: float | None = None

    def __post_init__(self) -> None:
        for key in ("flow_hold", "device_idle", "name_hold", "forget_after", "name_wait"):
            if (getattr(self, key) or 0) < 0:
                raise ValueError(f"{key} must not be negative, got {getattr(self, key)!r}")


class LiveState:
    """Devices and attributed flows, updated by events, observed through :class:`Change` callbacks."""

    def __init__(self, config: StateConfig | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config or StateConfig()
        self.clock = clock
        self.names = NameMemory(hold=self.config.name_hold)
        self.devices: dict[str, Device] = {}
        self.flows: dict[tuple[object, ...], FlowRecord] = {}  # by Flow.key
        self.observers: list[Callable[[Change], None]] = []
        self.counts: dict[str, int] = {
            "events": 0,
            "flows_ignored": 0,
            "snapshots": 0,
            "source_errors": 0,
            "server_names": 0,
            "server_names_bad": 0,  # no name, or text that cannot be a name: skipped
            "resolver_answers": 0,
            "private_dns_refused": 0,
            "name_waits": 0,  # flows that waited for their own name (only another device's was known)
            "name_waits_own": 0,  # ... and got their own in time: no foreign name ever showed
            "names_shared": 0,  # flows shown with another device's name (after the wait)
            "foreign_name_first": 0,  # ... whose own name arrived later: a foreign name showed first
            "own_names_late": 0,  # young flows renamed from the device's earlier lookup to its late one
            "flows_new": 0,
            "dns_answers": 0,
        }
        self._ip_to_mac: dict[str, str] = {}  # from leases and DHCP (authoritative)
        self._neigh_mac: dict[str, str] = {}  # from the neighbour table (fallback)
        self._pairs: dict[tuple[str, str], set[tuple[object, ...]]] = {}
        # Connections the screen is done with that the kernel still tracks: those of forgotten
        # devices, and ended ones whose hold passed (a closed TCP connection stays in TIME_WAIT for
        # two minutes). The periodic dump must not bring them back as new connections. Dropped when
        # the kernel ends them (DESTROY, or absent from a dump).
        self._forgotten: set[tuple[object, ...]] = set()
        self._lan_cache: dict[str, bool] = {}
        # Flow key by original tuple, so a server name finds its flow.
        self._by_tuple: dict[FlowId, tuple[object, ...]] = {}
        # Deadlines of waiting flows (see ``name_wait``): (when, seq, flow key). Entries of flows
        # named or gone meanwhile are skipped when they come due, so nothing is ever searched.
        self._waits: list[tuple[float, int, tuple[object, ...]]] = []
        self._wait_seq = itertools.count()
        # Bumped by every event that may alter what a view shows without a Change (byte counters,
        # leases). DNS lines do not bump it: a name alters a view only through FLOW_NAMED. The
        # service rebuilds views on a revision or a Change, so a phone's DNS chatter costs nothing.
        self.revision = 0
        # Tracker blocking (apviz.live.blocking): set by whoever assembles apviz when it is enabled;
        # it sees every answer bound to a device and the forgetting of a device, nothing else.
        self.blocking: BlockDecider | None = None

    # ------------------------------------------------------------------------------ helpers

    def _emit(self, kind: ChangeKind, flow: FlowRecord | None = None, device: Device | None = None) -> None:
        if self.observers:
            change = Change(kind, flow, device)
            for observer in self.observers:
                observer(change)

    def _is_lan(self, ip: str) -> bool:
        hit = self._lan_cache.get(ip)
        if hit is None:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                addr = None
            hit = addr is not None and any(addr in net for net in self.config.lan)
            if len(self._lan_cache) > 65536:
                self._lan_cache.clear()
            self._lan_cache[ip] = hit
        return hit

    def _relevant(self, flow: Flow) -> bool:
        """A flow from a LAN device to somewhere beyond the LAN (not to the gateway itself)."""
        o = flow.orig
        return (
            self._is_lan(o.src)
            and not self._is_lan(o.dst)
            and o.dst not in self.config.local_addresses
            and o.src not in self.config.local_addresses
        )

    def device_key_for(self, ip: str) -> str:
        mac = self._ip_to_mac.get(ip) or self._neigh_mac.get(ip)
        return mac if mac else f"ip:{ip}"

    def _device_for(self, ip: str, now: float) -> Device:
        key = self.device_key_for(ip)
        dev = self.devices.get(key)
        if dev is None:
            mac = None if key.startswith("ip:") else key
            dev = Device(key=key, mac=mac, first_seen=now, last_seen=now)
            dev.ips.add(ip)
            self.devices[key] = dev
            self._emit(ChangeKind.DEVICE, device=dev)
        elif ip not in dev.ips:
            dev.ips.add(ip)
            self._emit(ChangeKind.DEVICE, device=dev)
        return dev

    def _learn_mac(self, ip: str, mac: str, hostname: str | None, now: float, *, lease: bool) -> None:
        """Record that ``ip`` belongs to ``mac``; move a provisional ``ip:`` device onto the MAC."""
        table = self._ip_to_mac if lease else self._neigh_mac
        table[ip] = mac
        dev = self.devices.get(mac)
        changed = False
        if not lease and dev is None and f"ip:{ip}" not in self.devices:
            return  # a neighbour alone is not a visitor: wait until it has a flow or a lease
        if dev is None:
            dev = Device(key=mac, mac=mac, first_seen=now, last_seen=now)
            self.devices[mac] = dev
            changed = True
        if ip not in dev.ips:
            # The address may have belonged to another device before (a re-used lease).
            for other in self.devices.values():
                if other is not dev and ip in other.ips and (lease or other.key.startswith("ip:")):
                    other.ips.discard(ip)
            dev.ips.add(ip)
            changed = True
        if lease and hostname and hostname != dev.hostname:
            dev.hostname = hostname
            changed = True
        provisional = self.devices.pop(f"ip:{ip}", None)
        if provisional is not None:
            for rec in self.flows.values():
                if rec.device == provisional.key:
                    rec.device = mac
            dev.first_seen = min(dev.first_seen, provisional.first_seen)
            dev.last_seen = max(dev.last_seen, provisional.last_seen)
            self._emit(ChangeKind.DEVICE_GONE, device=provisional)
            changed = True
        if changed:
            self._emit(ChangeKind.DEVICE, device=dev)

    # ------------------------------------------------------------------------------ flows

    def _upsert(self, flow: Flow, now: float) -> FlowRecord | None:
        key = flow.key
        rec = self.flows.get(key)
        if rec is None:
            if not self._relevant(flow):
                self.counts["flows_ignored"] += 1
                return None
            o = flow.orig
            dev = self._device_for(o.src, now)
            rec = FlowRecord(
                key=key,
                id=flow.id,
                device=dev.key,
                client=o.src,
                proto=o.proto,
                dst=o.dst,
                dport=o.dport,
                sport=o.sport,
                first_seen=now,
                last_seen=now,
            )
            self.flows[key] = rec
            self._pairs.setdefault((o.src, o.dst), set()).add(key)
            self._by_tuple[_flow_id(rec)] = key
            self._name_new(rec, now)
            self._update_counters(rec, flow, now)
            dev.last_seen = now
            self._emit(ChangeKind.FLOW_NEW, flow=rec)
            return rec
        self._update_counters(rec, flow, now)
        return rec

    def _update_counters(self, rec: FlowRecord, flow: Flow, now: float) -> None:
        if flow.orig_bytes or flow.reply_bytes or flow.orig_packets:
            sent = flow.orig_bytes != rec.bytes_up
            moved = sent or flow.reply_bytes != rec.bytes_down
            rec.bytes_up, rec.bytes_down = flow.orig_bytes, flow.reply_bytes
            rec.packets_up, rec.packets_down = flow.orig_packets, flow.reply_packets
            if moved:
                rec.last_seen = now
            # Only what the device sends shows it is still here: a server goes on retransmitting
            # to a phone that has left for a quarter of an hour (and even a download has its ACKs).
            if sent:
                dev = self.devices.get(rec.device)
                if dev is not None:
                    dev.last_seen = now
        if flow.tcp_state:
            rec.tcp_state = flow.tcp_state

    def _end(self, rec: FlowRecord, now: float) -> None:
        if rec.closed_at is None:
            rec.closed_at = now
            self._emit(ChangeKind.FLOW_END, flow=rec)

    def _apply_flow_event(self, ev: FlowEvent, now: float) -> None:
        if ev.flow.key in self._forgotten:
            if ev.kind is FlowEventKind.DESTROY:
                self._forgotten.discard(ev.flow.key)
            return
        rec = self._upsert(ev.flow, now)
        if rec is not None and ev.kind is FlowEventKind.NEW:
            self.counts["flows_new"] += 1  # conntrack NEW of a LAN device: proof that phones talk
        if rec is not None and (ev.kind is FlowEventKind.DESTROY or ev.flow.tcp_state in CLOSED_TCP):
            self._end(rec, now)

    def _apply_snapshot(self, snap: FlowSnapshot, now: float) -> None:
        self.counts["snapshots"] += 1
        if snap.reason == "resync":
            self.counts["resyncs"] = self.counts.get("resyncs", 0) + 1
        present: set[tuple[object, ...]] = set()
        for flow in snap.flows:
            present.add(flow.key)
            if flow.key in self._forgotten:
                continue
            rec = self._upsert(flow, now)
            if rec is not None and flow.tcp_state in CLOSED_TCP:
                self._end(rec, now)  # the kernel keeps it ~2 min in TIME_WAIT; the visitor's is over
        for rec in list(self.flows.values()):
            if rec.closed_at is None and rec.key not in present:
                self._end(rec, now)
        self._forgotten &= present

    # ------------------------------------------------------------------------------ names

    # The order (names.RANK): the connection's own server name, this device's lookup at dnsmasq,
    # its lookup at another resolver, an ECH front, and only then another device's lookup, which a
    # new flow shows only after waiting ``name_wait`` seconds for one of its own.

    def _name_new(self, rec: FlowRecord, now: float) -> None:
        """Name a flow as it appears, or make it wait when another device's name is all there is."""
        best: Attribution | None = None
        sn = self.names.server_name(_flow_id(rec), now)
        if sn is not None and not sn[1]:
            best = Attribution(sn[0], NameSource.CONNECTION)
        else:
            best = self.names.own(rec.client, rec.dst, now)
            if best is None and sn is not None:
                best = Attribution(sn[0], NameSource.FRONT)
        if best is None:
            shared = self.names.shared(rec.dst, now)
            if shared is None:
                return
            if self.config.name_wait > 0:
                rec.waiting_until = now + self.config.name_wait
                heapq.heappush(self._waits, (rec.waiting_until, next(self._wait_seq), rec.key))
                self.counts["name_waits"] += 1
                return
            best = shared
            self.counts["names_shared"] += 1
        rec.name, rec.name_source, rec.name_at = best.name, best.source, best.at

    def _offer(self, rec: FlowRecord, name: str, source: NameSource) -> None:
        """Give ``rec`` this name if its source beats the one it has (names.RANK)."""
        current = rec.name_source
        # As good or better already: a second answer does not rename a flow, unless it is the late
        # lookup of a young flow (checked last and cheaply: a busy address offers to all its flows).
        if (
            current is not None
            and RANK[source] <= RANK[current]
            and (source is not current or name == rec.name or not self._own_late(rec, source))
        ):
            return
        if current is NameSource.SHARED and source in OWN and not rec.foreign_first:
            rec.foreign_first = True  # it showed another device's name before its own
            self.counts["foreign_name_first"] += 1
        if rec.waiting_until is not None:
            rec.waiting_until = None
            if source in OWN:
                self.counts["name_waits_own"] += 1
        rec.name, rec.name_source = name, source
        rec.name_at = self.clock() if source in (NameSource.ASKED, NameSource.RESOLVER) else None
        self._emit(ChangeKind.FLOW_NAMED, flow=rec)

    def _own_late(self, rec: FlowRecord, source: NameSource) -> bool:
        """A young flow named from its device's *old* lookup of this address takes the device's new
        lookup of another name for it, read within ``name_wait`` of the flow: the kernel reports a
        flow before the log line of the lookup that led to it is read, so the old lookup (the same
        CDN address under another name, looked up more than ``name_wait`` before) only came first
        because the new one was late. A lookup made just before the flow (a page asking for two
        names of one address, then connecting to the first) stays, and older flows keep their name:
        a later lookup is not what they connected for."""
        if source not in (NameSource.ASKED, NameSource.RESOLVER):
            return False
        wait = self.config.name_wait
        if rec.name_at is None or rec.first_seen - rec.name_at <= wait:
            return False
        if self.clock() - rec.first_seen > wait:
            return False
        self.counts["own_names_late"] += 1
        return True

    def _apply_answer(self, ans: DnsAnswer) -> None:
        for b in self.names.on_answer(ans):
            if self.blocking is not None:
                self.blocking.on_answer(b.client, (b.name,), (b.address,))
            for key in self._pairs.get((b.client, b.address), ()):
                self._offer(self.flows[key], b.name, NameSource.ASKED)

    def _apply_resolver_answer(self, ans: ResolverAnswer) -> None:
        self.counts["resolver_answers"] += 1
        for b in self.names.on_resolver_answer(ans):
            if self.blocking is not None:
                self.blocking.on_answer(b.client, (b.name,), (b.address,))
            for key in self._pairs.get((b.client, b.address), ()):
                self._offer(self.flows[key], b.name, NameSource.RESOLVER)

    def _apply_server_name(self, ev: ServerName) -> None:
        name = clean_name(ev.name)
        if name is None:
            self.counts["server_names_bad"] += 1
            return
        self.counts["server_names"] += 1
        fid = self.names.on_server_name(ev, name)
        key = self._by_tuple.get(fid)
        rec = self.flows.get(key) if key is not None else None
        if rec is None:
            return  # conntrack has not reported it yet: the flow finds it when it does
        # An ECH outer name is the provider's front: it only beats another device's lookup.
        self._offer(rec, name, NameSource.FRONT if ev.ech else NameSource.CONNECTION)

    def _apply_refused(self, ev: PrivateDnsRefused, now: float) -> None:
        self.counts["private_dns_refused"] += 1
        if not self._is_lan(ev.client):
            return
        dev = self._device_for(ev.client, now)
        first = dev.private_dns_refused is None
        dev.private_dns_refused = now
        if first:
            self._emit(ChangeKind.DEVICE, device=dev)

    def next_name_deadline(self) -> float | None:
        """Seconds (on the state's clock) until the next waiting flow is due, or None when none waits."""
        if not self._waits:
            return None
        return max(0.0, self._waits[0][0] - self.clock())

    def settle_names(self) -> int:
        """End the waits that are due: such a flow shows another device's name now (marked shared),
        or, when that name has gone too, shows unnamed. Returns how many flows changed."""
        now = self.clock()
        done = 0
        while self._waits and self._waits[0][0] <= now:
            _, _, key = heapq.heappop(self._waits)
            rec = self.flows.get(key)
            if rec is None or rec.waiting_until is None or rec.waiting_until > now:
                continue  # named meanwhile, gone, or waiting again under a later entry
            rec.waiting_until = None
            shared = self.names.shared(rec.dst, now)
            if shared is not None and rec.name_source is None:
                rec.name, rec.name_source = shared.name, shared.source
                self.counts["names_shared"] += 1
            done += 1
            self.revision += 1
            self._emit(ChangeKind.FLOW_NAMED, flow=rec)
        return done

    def _apply_leases(self, snap: LeaseSnapshot, now: float) -> None:
        current = set()
        for lease in snap.leases:
            if lease.mac is None:
                continue
            current.add(lease.mac)
            self._learn_mac(lease.ip, lease.mac, lease.hostname, now, lease=True)
            dev = self.devices[lease.mac]
            if dev.lease_expiry != lease.expiry:
                dev.lease_expiry = lease.expiry
        for dev in self.devices.values():
            if dev.mac and dev.mac not in current and dev.lease_expiry is not None:
                dev.lease_expiry = None

    def _apply_dhcp(self, ev: DhcpEvent, now: float) -> None:
        if ev.ip is None or ev.mac is None:
            return
        if ev.message == "DHCPACK":
            self._learn_mac(ev.ip, ev.mac.lower(), ev.hostname, now, lease=True)
        elif ev.message == "DHCPRELEASE":
            dev = self.devices.get(ev.mac.lower())
            if dev is not None:
                dev.lease_expiry = None

    # ------------------------------------------------------------------------------ public

    def apply(self, event: Event) -> None:
        """Apply one source event. Unknown event types are ignored (sources may grow)."""
        now = self.clock()
        self.counts["events"] += 1
        if not isinstance(event, DnsQuery | DnsAnswer | ServerName | ResolverAnswer):
            self.revision += 1
        match event:
            case FlowEvent():
                self._apply_flow_event(event, now)
            case FlowSnapshot():
                self._apply_snapshot(event, now)
            case DnsQuery():
                self.names.on_query(event)
            case DnsAnswer():
                self.counts["dns_answers"] += 1
                self._apply_answer(event)
            case ServerName():
                self._apply_server_name(event)
            case ResolverAnswer():
                self._apply_resolver_answer(event)
            case PrivateDnsRefused():
                self._apply_refused(event, now)
            case DhcpEvent():
                self._apply_dhcp(event, now)
            case LeaseSnapshot():
                self._apply_leases(event, now)
            case Neighbour(gone=False, mac=str() as mac):
                if self._is_lan(event.ip) and self._neigh_mac.get(event.ip) != mac.lower():
                    self._learn_mac(event.ip, mac.lower(), None, now, lease=False)
            case Neighbour(gone=True):
                self._neigh_mac.pop(event.ip, None)
            case SourceError():
                self.counts["source_errors"] += 1
                log.warning("%s: %s", event.source, event.message)
            case _:
                pass

    def expire(self) -> None:
        """Forget ended flows after their hold time and devices that left; end due name waits."""
        self.settle_names()
        now = self.clock()
        hold = self.config.flow_hold
        for rec in [r for r in self.flows.values() if r.closed_at is not None and now - r.closed_at >= hold]:
            del self.flows[rec.key]
            pair = self._pairs.get((rec.client, rec.dst))
            if pair is not None:
                pair.discard(rec.key)
                if not pair:
                    del self._pairs[(rec.client, rec.dst)]
            self._drop_tuple(rec)
            if len(self._forgotten) < MAX_FORGOTTEN_FLOWS:
                self._forgotten.add(rec.key)  # ended: the next dump's TIME_WAIT entry is not new
            self._emit(ChangeKind.FLOW_GONE, flow=rec)
        busy = {r.device for r in self.flows.values() if r.closed_at is None}
        wall = time.time()
        after = self.config.forget_after
        for dev in list(self.devices.values()):
            idle = now - dev.last_seen
            # No byte moved for ``forget_after`` seconds: the visitor has gone, even though the kernel
            # still tracks their connections (an established TCP entry outlives a phone that walked
            # away by days) and their lease runs on.
            if after is None or idle < after:
                if dev.key in busy or idle < self.config.device_idle:
                    continue
                if dev.lease_expiry is not None and (dev.lease_expiry == 0 or dev.lease_expiry > wall):
                    continue
            self.forget_device(dev.key)

    def forget_device(self, key: str) -> None:
        """Remove a device, its flows and what it resolved.

        Which MAC holds which address is kept: it is the network's current state (dnsmasq has it
        too), not something the visitor did, and without it the device's next connection would come
        back under a provisional ``ip:`` key, a different public id and colour, until its lease
        is next rewritten. Its connections that are still open stay forgotten: the next dump of
        the table must not bring the past back; only new connections show again.
        """
        dev = self.devices.pop(key, None)
        if dev is None:
            return
        for rec in [r for r in self.flows.values() if r.device == key]:
            del self.flows[rec.key]
            if rec.closed_at is None and len(self._forgotten) < MAX_FORGOTTEN_FLOWS:
                self._forgotten.add(rec.key)
            self._pairs.get((rec.client, rec.dst), set()).discard(rec.key)
            self._drop_tuple(rec)
            self._emit(ChangeKind.FLOW_GONE, flow=rec)
        for ip in dev.ips:
            self.names.forget_client(ip)
            if self.blocking is not None:
                self.blocking.forget(ip)
        self._emit(ChangeKind.DEVICE_GONE, device=dev)

    def _drop_tuple(self, rec: FlowRecord) -> None:
        fid = _flow_id(rec)
        if self._by_tuple.get(fid) == rec.key:
            del self._by_tuple[fid]

    def device_flows(self, key: str) -> list[FlowRecord]:
        return [r for r in self.flows.values() if r.device == key]
