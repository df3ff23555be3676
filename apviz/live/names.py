"""Which name is behind *this* client's connection to *that* address?

A CDN address serves thousands of names; a global "address -> last name" map (what connvis does)
credits a phone's connection to whatever some other phone looked up last. So answers are bound
to the client that asked and to the name it asked for:

* with ``log-queries=extra`` every line of one query carries the same serial, so an answer (and
  every step of a CNAME chain) belongs to the query that opened the serial;
* without it, an answer belongs to the clients with an unanswered query for that name, and a
  CNAME chain (logged as consecutive lines) to the name at its head.

Bindings live for ``hold`` seconds after the answer (DNS TTLs are not in the log; apps reuse an
address well past a short TTL, so the hold is a bounded, configurable compromise). A per-address
"most recent name anyone resolved" is kept as the documented fallback, and every table is bounded.

Two more facts are kept here, because a phone that does not ask dnsmasq still names its
connections: the server name it wrote into a connection's first packets (:class:`ServerName`, by
the connection's original tuple, so a name read before conntrack reported the flow still finds it)
and the plain DNS answers it received from another resolver (:class:`ResolverAnswer`, per client
like dnsmasq's). Which of these wins is :data:`RANK`; the state applies it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from apviz.events import DnsAnswer, DnsQuery, ResolverAnswer, ServerName


class NameSource(StrEnum):
    CONNECTION = "connection"  # the server name this connection carries (TLS or QUIC hello)
    ASKED = "asked"  # this client asked dnsmasq for this name and got this address
    RESOLVER = "resolver"  # this client got this address for this name from another resolver
    FRONT = "front"  # the outer name of an Encrypted Client Hello: the provider's front, not the site
    SHARED = "shared"  # another client's answer for this address (fallback)


#: Which source beats which (higher wins). The connection's own name is what the device actually
#: asked the server for; a lookup may be for a name whose address another site shares. An ECH outer
#: name is the provider's public front (``cloudflare-ech.com``), true but not the site, so any
#: lookup of this device beats it; it still beats another device's lookup, which may be plain wrong.
RANK: dict[NameSource, int] = {
    NameSource.CONNECTION: 4,
    NameSource.ASKED: 3,
    NameSource.RESOLVER: 2,
    NameSource.FRONT: 1,
    NameSource.SHARED: 0,
}

#: The device's own names: with one of these a connection never waits for, nor shows, another's.
OWN = frozenset({NameSource.CONNECTION, NameSource.ASKED, NameSource.RESOLVER})

#: A flow's original tuple as a device sent it: (client, sport, server, dport, proto).
FlowId = tuple[str, int, str, int, int]

MAX_NAME = 253  # the longest DNS name; anything longer is not a server name


def clean_name(name: str | None) -> str | None:
    """A server or DNS name as the state keeps it (lower case, no final dot), or None when it cannot
    be a name at all (empty, over-long, control characters). Still hostile text: escape it."""
    if not name or not isinstance(name, str):
        return None
    name = name.strip().lower().rstrip(".")
    if not name or len(name) > MAX_NAME or not name.isprintable() or " " in name:
        return None
    return name


@dataclass(frozen=True, slots=True)
class Binding:
    """A name credited to (client, address), produced when an answer is read."""

    client: str
    address: str
    name: str
    at: float


@dataclass(frozen=True, slots=True)
class Attribution:
    name: str
    source: NameSource
    at: float | None = None  # when the lookup's answer was read (None: not a lookup)


@dataclass(slots=True)
class _Pending:
    client: str
    name: str
    qtype: str
    at: float
    answered_by: int | None = None  # serial of the reply that answered it (extra mode)


K = TypeVar("K")
V = TypeVar("V")


class _Lru(OrderedDict[K, V], Generic[K, V]):
    """An OrderedDict that forgets its oldest entries beyond ``maxsize``."""

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize
        self.evicted = 0

    def put(self, key: K, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)
            self.evicted += 1


class NameMemory:
    """Remembers DNS answers per client and answers "which name is behind this flow?"."""

    def __init__(
        self,
        hold: float = 1800.0,
        pending_window: float = 30.0,
        max_clients: int = 4096,
        max_per_client: int = 4096,
        max_addresses: int = 65536,
        max_pending: int = 8192,
        max_server_names: int = 8192,
        server_name_hold: float = 60.0,
    ) -> None:
        if hold <= 0:
            raise ValueError(f"name hold must be positive seconds, got {hold!r}")
        self.hold = hold
        self.pending_window = pending_window
        self.max_per_client = max_per_client
        self._by_serial: _Lru[int, _Pending] = _Lru(max_pending)
        self._by_name: _Lru[str, list[_Pending]] = _Lru(max_pending)
        self._clients: _Lru[str, _Lru[str, tuple[str, float]]] = _Lru(max_clients)
        self._global: _Lru[str, tuple[str, float]] = _Lru(max_addresses)
        # Without serials: the head of the CNAME chain being logged right now, if any.
        self._chain: list[_Pending] | None = None
        self._chain_names: set[str] = set()
        self.orphans = 0  # answers no query could be found for
        # Answers from other resolvers, per client like ``_clients``.
        self._resolved: _Lru[str, _Lru[str, tuple[str, float]]] = _Lru(max_clients)
        # Server names by flow tuple, for the flow that conntrack reports after the name was read
        # (the two sources interleave). A minute is ample: conntrack reports a flow within
        # milliseconds of its first packet, so this only bridges the reordering, never a lifetime.
        self.server_name_hold = server_name_hold
        self._server_names: _Lru[FlowId, tuple[str, bool, float]] = _Lru(max_server_names)

    # ---------------------------------------------------------------------------------- input

    def on_query(self, q: DnsQuery) -> None:
        self._chain = None
        name = q.name.lower().rstrip(".")
        p = _Pending(client=q.client, name=name, qtype=q.qtype, at=q.ts)
        if q.serial is not None:
            self._by_serial.put(q.serial, p)
        waiting = self._by_name.get(name)
        if waiting is None:
            self._by_name.put(name, [p])
        else:
            waiting[:] = [w for w in waiting if q.ts - w.at <= self.pending_window][-15:]
            waiting.append(p)
            self._by_name.move_to_end(name)

    def on_answer(self, a: DnsAnswer) -> list[Binding]:
        """Record an answer line; return the (client, address, name) bindings it creates."""
        askers = self._askers(a)
        if not askers:
            self.orphans += 1
            return []
        if a.address is None:
            return []
        bindings = []
        for p in askers:
            if a.serial is not None:
                p.answered_by = a.serial
            bindings.append(Binding(client=p.client, address=a.address, name=p.name, at=a.ts))
            self._bind(p.client, a.address, p.name, a.ts)
        self._global.put(a.address, (askers[0].name, a.ts))
        return bindings

    def _askers(self, a: DnsAnswer) -> list[_Pending]:
        name = a.name.lower().rstrip(".")
        if a.serial is not None:
            head = self._by_serial.get(a.serial)
            if head is None:
                return []
            # dnsmasq answers duplicate questions from other clients with one upstream reply, logged
            # under the first serial; those clients asked the same name and get the same answer.
            others = [
                w
                for w in self._by_name.get(head.name, ())
                if w is not head
                and w.answered_by in (None, a.serial)
                and w.qtype == head.qtype
                and 0 <= a.ts - w.at <= self.pending_window
            ]
            return [head, *others]
        # No serials: match by name, following a CNAME chain logged on consecutive lines.
        if self._chain is not None and name in self._chain_names:
            return self._chain
        askers = [w for w in self._by_name.get(name, ()) if 0 <= a.ts - w.at <= self.pending_window]
        if askers:
            # A fresh answer for a name someone asked: it may open a new chain.
            self._chain = askers if a.cname else None
            self._chain_names = {name}
            return askers
        if self._chain is not None:
            # The next link (or final address) of the chain being logged right now.
            self._chain_names.add(name)
            return self._chain
        return []

    def on_resolver_answer(self, ra: ResolverAnswer) -> list[Binding]:
        """Record an answer another resolver gave ``ra.client``; return the bindings it creates.

        The name credited is the question (the head of any CNAME chain), as for dnsmasq's answers.
        Another device connecting to these addresses may get it as a shared fallback too.
        """
        name = clean_name(ra.name)
        if name is None or ra.rcode != "NOERROR" or not ra.addresses:
            return []
        out = []
        for address in ra.addresses[:64]:  # a bounded answer: more records than this are noise
            self._bind(ra.client, address, name, ra.ts, self._resolved)
            self._global.put(address, (name, ra.ts))
            out.append(Binding(client=ra.client, address=address, name=name, at=ra.ts))
        return out

    def on_server_name(self, sn: ServerName, name: str) -> FlowId:
        """Remember the (cleaned) server name of one connection; return the connection's tuple."""
        fid: FlowId = (sn.client, sn.sport, sn.server, sn.dport, sn.proto)
        self._server_names.put(fid, (name, sn.ech, sn.ts))
        return fid

    def server_name(self, fid: FlowId, now: float) -> tuple[str, bool] | None:
        """The server name read for the connection ``fid`` lately: (name, ech), or None."""
        hit = self._server_names.get(fid)
        if hit is None or now - hit[2] > self.server_name_hold:
            return None
        return hit[0], hit[1]

    def _bind(
        self,
        client: str,
        address: str,
        name: str,
        at: float,
        tables: _Lru[str, _Lru[str, tuple[str, float]]] | None = None,
    ) -> None:
        tables = self._clients if tables is None else tables
        table = tables.get(client)
        if table is None:
            table = _Lru(self.max_per_client)
            tables.put(client, table)
        else:
            tables.move_to_end(client)
        table.put(address, (name, at))

    def forget_client(self, client: str) -> None:
        """Drop what a client resolved and the server names it sent (it left, or asked to be forgotten)."""
        self._clients.pop(client, None)
        self._resolved.pop(client, None)
        for fid in [f for f in self._server_names if f[0] == client]:  # bounded by max_server_names
            del self._server_names[fid]

    # ---------------------------------------------------------------------------------- lookup

    def own(self, client: str, address: str, now: float) -> Attribution | None:
        """The name ``client`` itself looked up for ``address``: from dnsmasq, else another resolver."""
        for tables, source in ((self._clients, NameSource.ASKED), (self._resolved, NameSource.RESOLVER)):
            table = tables.get(client)
            if table is not None:
                hit = table.get(address)
                if hit is not None and now - hit[1] <= self.hold:
                    return Attribution(hit[0], source, hit[1])
        return None

    def shared(self, address: str, now: float) -> Attribution | None:
        """The most recent name any client looked up for ``address`` (the fallback), or None."""
        hit = self._global.get(address)
        if hit is not None and now - hit[1] <= self.hold:
            return Attribution(hit[0], NameSource.SHARED)
        return None

    def lookup(self, client: str, address: str, now: float) -> Attribution | None:
        """The name behind a flow from ``client`` to ``address``: the client's own, else shared, else None."""
        return self.own(client, address, now) or self.shared(address, now)

    def stats(self) -> dict[str, int]:
        return {
            "clients": len(self._clients),
            "resolver_clients": len(self._resolved),
            "server_names": len(self._server_names),
            "addresses": len(self._global),
            "pending": len(self._by_serial),
            "orphans": self.orphans,
        }
