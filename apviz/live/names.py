"""Which name did *this* client ask for that resolved to *that* address?

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
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from apviz.events import DnsAnswer, DnsQuery


class NameSource(StrEnum):
    ASKED = "asked"  # this client asked for this name and got this address
    SHARED = "shared"  # another client's answer for this address (fallback)


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

    def _bind(self, client: str, address: str, name: str, at: float) -> None:
        table = self._clients.get(client)
        if table is None:
            table = _Lru(self.max_per_client)
            self._clients.put(client, table)
        else:
            self._clients.move_to_end(client)
        table.put(address, (name, at))

    def forget_client(self, client: str) -> None:
        """Drop what a client resolved (it left, or asked to be forgotten)."""
        self._clients.pop(client, None)

    # ---------------------------------------------------------------------------------- lookup

    def lookup(self, client: str, address: str, now: float) -> Attribution | None:
        """The name behind a flow from ``client`` to ``address``: the client's own, else shared, else None."""
        table = self._clients.get(client)
        if table is not None:
            hit = table.get(address)
            if hit is not None and now - hit[1] <= self.hold:
                return Attribution(hit[0], NameSource.ASKED)
        hit = self._global.get(address)
        if hit is not None and now - hit[1] <= self.hold:
            return Attribution(hit[0], NameSource.SHARED)
        return None

    def stats(self) -> dict[str, int]:
        return {
            "clients": len(self._clients),
            "addresses": len(self._global),
            "pending": len(self._by_serial),
            "orphans": self.orphans,
        }
