"""The session summary: what a class (or a museum day) talked to, for the lesson afterwards.

It adds up, since the service started or the operator's last reset, connections and bytes per
company, per ad/tracker, per country, and per device as "Device 1..N" in order of appearance:
never a hostname, MAC or address, and not the pseudonyms either (a classroom knows whose "Yellow
Fox" is).

Why it watches :class:`~apviz.live.model.Change` events and renders on request, instead of folding
the public view at each publish: a flow that is still in the live state is counted from the state
when someone asks for the summary (its latest bytes and name), and only a flow that *leaves* the
state (``FLOW_GONE``) is folded into the totals, once, with its final figures. The ticks pay
nothing; a download costs one pass over the live flows.

What is kept is *raw* descriptions (org, domain, country, tracker category), not labels: the
privacy rules of :mod:`apviz.live.privacy` are applied when the summary is rendered, under the
mode and language of that moment, so a domain a visitor registered cannot reach a classroom
download because it was counted while the screen was in home mode.

"Forget me" and the operator's "hide" reach the summary too: a hidden device's own row and its
contributions to every total are dropped. A device that simply left (forgotten after
``forget_after``) stays in the totals under its number, but the link from its MAC to that number
is cut, so the summary does not remember who it was.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from apviz.live.destinations import Describe, Destination
from apviz.live.model import Change, ChangeKind, FlowRecord
from apviz.live.privacy import Privacy
from apviz.live.state import LiveState

#: Distinct destinations kept per device; more are folded into one "other" destination.
MAX_DESTINATIONS = 256
#: Device rows kept; beyond it the oldest device that left is folded into "other devices".
MAX_DEVICES = 1000
#: Flows that left the state are remembered (as a hash of their key, no address) this long, so
#: that the kernel re-reporting an entry it still holds (TIME_WAIT lasts 120 s, longer than the
#: state's hold) does not count that connection twice.
RECOUNT_WINDOW = 300.0
RECOUNT_MAX = 65536

OTHER_DESTINATION = Destination(org="other companies", org_source="other")
OTHER_DEVICES = "other devices"


@dataclass(slots=True)
class _Tally:
    connections: int = 0
    bytes: int = 0


@dataclass(slots=True)
class _Entry:
    """One device's folded flows, keyed by its reduced raw destination."""

    order: int  # order of first appearance: the N of "Device N"
    dests: dict[Destination, _Tally] = field(default_factory=dict)

    def add(self, d: Destination, connections: int, nbytes: int) -> None:
        tally = self.dests.get(d)
        if tally is None:
            if len(self.dests) >= MAX_DESTINATIONS - 1:  # the last slot is for "other"
                d = OTHER_DESTINATION
                tally = self.dests.get(d)
            if tally is None:
                tally = self.dests[d] = _Tally()
        tally.connections += connections
        tally.bytes += nbytes

    def merge(self, other: _Entry) -> None:
        self.order = min(self.order, other.order)
        for d, t in other.dests.items():
            self.add(d, t.connections, t.bytes)


@dataclass(slots=True)
class Row:
    """One line of the summary. ``detail``: a company's category, a tracker's category ("ads"), a
    country's ISO code; ``companies``: companies a device contacted (device rows only)."""

    name: str
    connections: int = 0
    bytes: int = 0
    trackers: int = 0  # connections to ad/tracker destinations
    detail: str = ""
    companies: int | None = None


@dataclass(slots=True)
class Summary:
    """A rendered summary: plain data for the CSV and SVG writers."""

    started: float
    ended: float
    mode: str
    total: Row
    companies: list[Row]
    trackers: list[Row]
    countries: list[Row]
    devices: list[Row]


def _country(d: Destination) -> tuple[str, str]:
    if d.country:
        return d.country, d.country_name or d.country
    if d.special:
        return "special", d.special
    return "unknown", "unknown place"


def _bump(table: dict[Any, Row], key: Any, name: str, detail: str, conns: int, nbytes: int, trk: int) -> None:
    row = table.get(key)
    if row is None:
        row = table[key] = Row(name, detail=detail)
    row.connections += conns
    row.bytes += nbytes
    row.trackers += trk


class _Tables:
    """Accumulators for one rendering."""

    def __init__(self, privacy: Privacy) -> None:
        self.privacy = privacy
        self.orgs: dict[str, Row] = {}
        self.trackers: dict[tuple[str, str], Row] = {}
        self.countries: dict[str, Row] = {}
        self.total = Row("all devices")

    def add(self, device: Row, orgs: set[str], d: Destination, conns: int, nbytes: int) -> None:
        pd = self.privacy.destination(d)  # the public label, under the mode of this moment
        tracker = conns if pd.tracker else 0
        _bump(self.orgs, pd.org, pd.org, pd.category or "", conns, nbytes, tracker)
        if pd.tracker:
            _bump(self.trackers, (pd.org, pd.tracker), pd.org, pd.tracker, conns, nbytes, tracker)
        code, cname = _country(pd)
        _bump(self.countries, code, cname, code if len(code) == 2 else "", conns, nbytes, tracker)
        for row in (device, self.total):
            row.connections += conns
            row.bytes += nbytes
            row.trackers += tracker
        if conns or nbytes:
            orgs.add(pd.org)


def _ranked(rows: Iterable[Row], by_connections: bool = False) -> list[Row]:
    if by_connections:
        return sorted(rows, key=lambda r: (-r.connections, -r.bytes, r.name))
    return sorted(rows, key=lambda r: (-r.bytes, -r.connections, r.name))


class SessionSummary:
    """Observes a :class:`LiveState` (append :meth:`observe` to its observers) and renders the
    session's summary on request with :meth:`summary`."""

    def __init__(
        self,
        state: LiveState,
        describe: Describe,
        privacy: Privacy,
        clock: Callable[[], float] = time.time,
        started: float | None = None,
    ) -> None:
        self.state = state
        self.describe = describe
        self.privacy = privacy
        self.clock = clock
        self._uids = itertools.count()
        self._reduce_cache: dict[Destination, Destination] = {}
        self.reset(started)

    def reset(self, started: float | None = None) -> None:
        """Start a new session (the operator's reset): everything counted so far is dropped."""
        self.started = self.clock() if started is None else started
        self._entries: dict[int, _Entry] = {}  # every device row, by a private id
        self._present: dict[str, int] = {}  # device key -> its row, while the state holds the device
        self._overflow = _Entry(order=-1)
        self._order = 0
        # hash(Flow.key) -> (when it left, bytes counted): no address is kept.
        self._counted: OrderedDict[int, tuple[float, int]] = OrderedDict()

    # ------------------------------------------------------------------ observing the state

    def observe(self, change: Change) -> None:
        kind = change.kind
        if kind is ChangeKind.FLOW_NEW and change.flow is not None:
            key = change.flow.device
            if key not in self._present and not self.privacy.hidden(key):
                self._new_entry(key)
        elif kind is ChangeKind.FLOW_GONE and change.flow is not None:
            self._fold(change.flow)
        elif kind is ChangeKind.DEVICE_GONE and change.device is not None:
            self._device_gone(change.device.key)

    def _new_entry(self, key: str, link: bool = True) -> _Entry:
        self._order += 1
        uid = next(self._uids)
        entry = self._entries[uid] = _Entry(self._order)
        if link:
            self._present[key] = uid
        if len(self._entries) > MAX_DEVICES:
            self._spill()
        return entry

    def _spill(self) -> None:
        """Fold the oldest device that left into "other devices" (memory stays bounded)."""
        present = set(self._present.values())
        for uid in self._entries:
            if uid not in present:
                self._overflow.merge(self._entries.pop(uid))
                return

    def _fold(self, rec: FlowRecord) -> None:
        if self.privacy.hidden(rec.device):
            return  # "forget me": not counted, and its row goes with DEVICE_GONE
        now = self.clock()
        counted = self._counted
        while counted:
            oldest = next(iter(counted.values()))
            if now - oldest[0] < RECOUNT_WINDOW and len(counted) < RECOUNT_MAX:
                break
            counted.popitem(last=False)
        h = hash(rec.key)
        seen = counted.pop(h, None)
        conns, nbytes = (0, max(0, rec.bytes - seen[1])) if seen is not None else (1, rec.bytes)
        counted[h] = (now, max(rec.bytes, seen[1]) if seen is not None else rec.bytes)
        uid = self._present.get(rec.device)
        entry = self._entries.get(uid) if uid is not None else None
        if entry is None:  # a row only links to a device the state still holds
            entry = self._new_entry(rec.device, link=rec.device in self.state.devices)
        entry.add(self._reduced(self.describe(rec.name, rec.dst, rec.proto, rec.dport)), conns, nbytes)

    def _reduced(self, d: Destination) -> Destination:
        """``d`` without what the summary does not show (city, coordinates): fewer distinct keys to
        keep. Cached (bounded): ``dataclasses.replace`` was most of the cost of folding a flow."""
        hit = self._reduce_cache.get(d)
        if hit is None:
            hit = d
            if d.city is not None or d.lat is not None or d.lon is not None:
                hit = dataclasses.replace(d, city=None, lat=None, lon=None)
            if len(self._reduce_cache) >= 4096:
                self._reduce_cache.clear()
            self._reduce_cache[d] = hit
        return hit

    def _device_gone(self, key: str) -> None:
        uid = self._present.pop(key, None)
        if uid is None:
            return
        if self.privacy.hidden(key):
            self._entries.pop(uid, None)  # forgotten on request: its numbers go too
            return
        if key.startswith("ip:"):
            # A provisional device whose MAC became known: its row continues under the MAC.
            ip = key[3:]
            heir = next((d.key for d in self.state.devices.values() if ip in d.ips and d.key != key), None)
            if heir is not None and not self.privacy.hidden(heir):
                other = self._present.get(heir)
                if other is None:
                    self._present[heir] = uid
                else:
                    self._entries[other].merge(self._entries.pop(uid))
        # Otherwise the device left: its row stays, no longer linked to its MAC.

    # ------------------------------------------------------------------ rendering

    def summary(self) -> Summary:
        """The session so far: folded flows plus the live state's flows at their latest figures."""
        privacy = self.privacy
        tables = _Tables(privacy)
        per_entry: dict[int, tuple[Row, set[str]]] = {}

        def device_row(uid: int) -> tuple[Row, set[str]]:
            hit = per_entry.get(uid)
            if hit is None:
                hit = per_entry[uid] = (Row(""), set())
            return hit

        for uid, entry in self._entries.items():
            row, orgs = device_row(uid)
            for d, t in entry.dests.items():
                tables.add(row, orgs, d, t.connections, t.bytes)
        counted = self._counted
        unknown: dict[str, int] = {}  # live devices without a row yet (hidden earlier, say)
        for rec in self.state.flows.values():
            if privacy.hidden(rec.device) or rec.waiting_until is not None:
                continue  # a flow waiting for its own name is counted once it shows
            uid = self._present.get(rec.device)
            if uid is None:
                uid = unknown.setdefault(rec.device, -1 - len(unknown))
            seen = counted.get(hash(rec.key)) if counted else None
            if seen is None:
                conns, nbytes = 1, rec.bytes
            else:
                conns, nbytes = 0, max(0, rec.bytes - seen[1])
            row, orgs = device_row(uid)
            tables.add(row, orgs, self.describe(rec.name, rec.dst, rec.proto, rec.dport), conns, nbytes)

        devices = []
        order = {uid: entry.order for uid, entry in self._entries.items()}
        order.update({uid: self._order - uid for uid in unknown.values()})  # after all the others
        n = 0
        for uid in sorted(per_entry, key=order.__getitem__):
            row, orgs = per_entry[uid]
            if not row.connections and not row.bytes:
                continue
            n += 1
            row.name = f"Device {n}"
            row.companies = len(orgs)
            devices.append(row)
        if self._overflow.dests:
            row, orgs = Row(OTHER_DEVICES), set()
            for d, t in self._overflow.dests.items():
                tables.add(row, orgs, d, t.connections, t.bytes)
            row.companies = len(orgs)
            devices.append(row)
        total = tables.total
        total.companies = len(tables.orgs)
        return Summary(
            started=self.started,
            ended=self.clock(),
            mode=privacy.mode.value,
            total=total,
            companies=_ranked(tables.orgs.values()),
            trackers=_ranked(tables.trackers.values(), by_connections=True),
            countries=_ranked(tables.countries.values()),
            devices=devices,
        )
