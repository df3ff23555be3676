"""Which addresses a device's tracker blocking rejects, decided from its own DNS answers.

One owner of state: the live state hands every answer a device received (name -> addresses) to
:class:`BlockDecider`; it answers with :class:`BlockAction` values (add or remove one element of the
device's set) that a component outside ``live/`` applies with nft (:mod:`apviz.block.table`). live/
never runs nft: the actions go through a callback given by whoever assembles apviz.

The rule that keeps collateral at 0: an address is blocked for a device only while *every* name that
device resolved to it is a tracker. A CDN or Google front end serves a tracker and the search page on
one address (the lab's ``198.18.2.10`` answers ``googleads.g.doubleclick.net`` and ``www.google.com``):
blocking it would break the search page, so an address the device also resolved for a non-tracker name
stays open (and an element already added is removed when such an answer arrives). The naive rule
("block every address of a tracker answer") is measured beside it by :meth:`BlockDecider.collateral`.
Per device, not global: another phone's lookup says nothing about what this phone's apps need.

Bounded: at most ``max_addresses`` addresses per device (oldest dropped, and their element removed);
elements expire in nft after ``timeout`` seconds (the same hold as the name bindings), so a crashed
apviz leaves nothing that outlives its next start (which removes the whole table anyway).
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class Op(StrEnum):
    ADD = "add"
    REMOVE = "remove"
    FLUSH = "flush"  # every element of this device (blocking switched off, or the device forgotten)


@dataclass(frozen=True, slots=True)
class BlockAction:
    """One change of the kernel sets: (device address . tracker address) added or removed."""

    op: Op
    device: str  # the device's address (its key in the nft set)
    address: str = ""  # the tracker's address; empty for FLUSH
    timeout: float = 0.0


@dataclass(slots=True)
class _Seen:
    trackers: set[str] = field(default_factory=set)
    others: set[str] = field(default_factory=set)


def canonical_ip(text: str) -> str | None:
    """The address in its canonical spelling, or None: not an address, or an IPv6 address with a zone
    (``fe80::1%eth0``: a zone is any text, and these addresses are written into nft commands)."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        return None
    return str(ip)


class BlockDecider:
    """Per-device memory of which names resolved to which address, and the resulting blocks.

    ``is_tracker(name)`` is the enrichment's classifier (passed in: live/ does not load lists).
    ``apply`` receives every action; it must not block (the applier queues them for nft).
    """

    def __init__(
        self,
        is_tracker: Callable[[str], bool],
        apply: Callable[[BlockAction], None],
        *,
        timeout: float = 600.0,
        max_addresses: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.is_tracker = is_tracker
        self.apply = apply
        self.timeout = timeout
        self.max_addresses = max_addresses
        self.allowed = False  # the operator's switch: visitors may turn blocking on (off at start)
        self.everyone = False  # the operator's "on for everyone"
        self.enabled: set[str] = set()  # device addresses the visitor switched on
        self._seen: dict[str, OrderedDict[str, _Seen]] = {}
        self.clock = clock
        # device -> address -> when its element was (re)added: an element expires in the kernel after
        # ``timeout``, so an answer arriving after half of it renews the element (the app that just
        # looked the tracker up again is about to connect).
        self.blocked: dict[str, dict[str, float]] = {}
        self.attempts: dict[str, int] = {}  # device -> blocked attempts counted
        self.attempt_names: dict[str, dict[str, int]] = {}  # device -> tracker address -> attempts

    # -- switches ------------------------------------------------------------------------------------
    def active(self, device: str) -> bool:
        return self.everyone or device in self.enabled

    def enable(self, device: str) -> None:
        self.enabled.add(device)
        self._sync(device)

    def disable(self, device: str) -> None:
        self.enabled.discard(device)
        if not self.active(device):
            self._flush(device)

    def set_everyone(self, on: bool) -> None:
        self.everyone = on
        for device in list(self._seen):
            if self.active(device):
                self._sync(device)
            else:
                self._flush(device)

    def forget(self, device: str) -> None:
        """The visitor was forgotten: every trace of the device goes, its elements too."""
        self.enabled.discard(device)
        self._seen.pop(device, None)
        self._flush(device)
        self.attempts.pop(device, None)
        self.attempt_names.pop(device, None)

    # -- facts ---------------------------------------------------------------------------------------
    def on_answer(self, device: str, names: Iterable[str], addresses: Iterable[str]) -> None:
        """``device`` received ``addresses`` for ``names`` (the asked name and its CNAME chain): a name
        in the chain that is a tracker makes the answer a tracker answer (CNAME cloaking)."""
        device_ip = canonical_ip(device)
        if device_ip is None:
            return
        device = device_ip
        chain = [n for n in names if n]
        tracker = any(self.is_tracker(n) for n in chain)
        seen = self._seen.setdefault(device, OrderedDict())
        label = chain[0] if chain else ""
        for raw in addresses:
            address = canonical_ip(raw)
            if address is None or _family(address) != _family(device):
                continue
            entry = seen.get(address)
            if entry is None:
                entry = seen[address] = _Seen()
            seen.move_to_end(address)
            (entry.trackers if tracker else entry.others).add(label)
            while len(seen) > self.max_addresses:
                old, _ = seen.popitem(last=False)
                self._unblock(device, old)
            if self.active(device):
                self._decide(device, address, entry, renew=tracker)

    def on_blocked_attempt(self, device: str, address: str, count: int = 1) -> None:
        """The kernel rejected ``count`` packets of the device to ``address`` (a counter delta)."""
        if count <= 0:
            return
        self.attempts[device] = self.attempts.get(device, 0) + count
        hit = self.attempt_names.setdefault(device, {})
        if address in hit or len(hit) < self.max_addresses:
            hit[address] = hit.get(address, 0) + count

    # -- figures -------------------------------------------------------------------------------------
    def collateral(self, device: str) -> dict[str, int]:
        """Addresses a naive rule would block although the device also resolved a non-tracker name to
        them (``naive``), and how many the rule in force blocks so (``rule``, 0 by construction)."""
        seen = self._seen.get(device, {})
        naive = sum(1 for e in seen.values() if e.trackers and e.others)
        rule = sum(1 for a in self.blocked.get(device, ()) if seen.get(a) and seen[a].others)
        return {"naive": naive, "rule": rule}

    def blocked_by_address(self, device: str) -> dict[str, tuple[str | None, int]]:
        """Tracker address -> (a tracker name the device resolved to it, attempts), for the views."""
        seen = self._seen.get(device, {})
        out: dict[str, tuple[str | None, int]] = {}
        for address, count in self.attempt_names.get(device, {}).items():
            entry = seen.get(address)
            out[address] = (min(entry.trackers) if entry and entry.trackers else None, count)
        return out

    def summary(self, device: str) -> dict[str, int | bool]:
        return {
            "on": self.active(device),
            "attempts": self.attempts.get(device, 0),
            "trackers": len(self.attempt_names.get(device, ())),
            "blocked_addresses": len(self.blocked.get(device, ())),
        }

    # -- internals -----------------------------------------------------------------------------------
    def _sync(self, device: str) -> None:
        for address, entry in self._seen.get(device, {}).items():
            self._decide(device, address, entry)

    def _decide(self, device: str, address: str, entry: _Seen, renew: bool = False) -> None:
        if entry.trackers and not entry.others:
            blocked, now = self.blocked.setdefault(device, {}), self.clock()
            added = blocked.get(address)
            if added is None or (renew and now - added > self.timeout / 2):
                blocked[address] = now
                self.apply(BlockAction(Op.ADD, device, address, self.timeout))
        else:
            self._unblock(device, address)

    def _unblock(self, device: str, address: str) -> None:
        blocked = self.blocked.get(device)
        if blocked and address in blocked:
            del blocked[address]
            self.apply(BlockAction(Op.REMOVE, device, address))

    def _flush(self, device: str) -> None:
        if self.blocked.pop(device, None):
            self.apply(BlockAction(Op.FLUSH, device))


def _family(address: str) -> int:
    return ipaddress.ip_address(address).version
