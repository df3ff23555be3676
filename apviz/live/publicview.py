"""The views the browsers get: a sankey, geo points and arcs, devices and totals.

Computed from the state on a tick and diffed (:mod:`apviz.live.diff`), never patched by sources.
Every section is keyed by a stable id so the browser can animate items instead of redrawing, and
the sankey keeps the N biggest items per column and folds the rest into an "other" node so it
stays readable with fifty devices.

Device ids are salted hashes: the public view never carries a MAC or an address. What else it
may show (hostnames or pseudonyms, which domains) is decided by :mod:`apviz.live.privacy`, applied
here before anything is counted, so no id, label or list can carry a visitor's words.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from apviz.live.destinations import Describe, Destination, plain_describe
from apviz.live.model import Device, FlowRecord
from apviz.live.names import RANK, NameSource
from apviz.live.privacy import Privacy
from apviz.live.state import LiveState

OTHER = "*"


@dataclass(slots=True)
class ViewOptions:
    """How the public view is cut. Validated in ``__post_init__``; errors name the bad value."""

    top_devices: int = 12
    top_orgs: int = 15
    top_countries: int = 10
    gateway_lat: float | None = None
    gateway_lon: float | None = None
    gateway_label: str = ""  # empty: the kiosk's own words for "this exhibit", in its language
    describe_cache: int = 16384
    salt: bytes = field(default_factory=lambda: os.urandom(16))

    def __post_init__(self) -> None:
        for key in ("top_devices", "top_orgs", "top_countries"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"view.{key} must be a whole number >= 1, got {value!r}")
        if self.gateway_lat is not None and not -90 <= self.gateway_lat <= 90:
            raise ValueError(f"gateway latitude must be within -90..90, got {self.gateway_lat!r}")
        if self.gateway_lon is not None and not -180 <= self.gateway_lon <= 180:
            raise ValueError(f"gateway longitude must be within -180..180, got {self.gateway_lon!r}")


@dataclass(slots=True)
class _Acc:
    bytes: int = 0
    connections: int = 0
    open: int = 0
    trackers: int = 0

    def add(self, rec: FlowRecord, tracker: bool) -> None:
        self.bytes += rec.bytes
        self.connections += 1
        self.open += rec.open
        self.trackers += tracker

    def merge(self, other: _Acc) -> None:
        self.bytes += other.bytes
        self.connections += other.connections
        self.open += other.open
        self.trackers += other.trackers

    def json(self) -> dict[str, int]:
        return {
            "bytes": self.bytes,
            "connections": self.connections,
            "open": self.open,
            "trackers": self.trackers,
        }


def _into(table: dict[Any, _Acc], key: Any, acc: _Acc) -> None:
    """Add ``acc`` into ``table[key]`` (no throw-away accumulator per call, unlike setdefault)."""
    mine = table.get(key)
    if mine is None:
        table[key] = mine = _Acc()
    mine.merge(acc)


def _rank(acc: dict[str, _Acc], n: int) -> set[str]:
    """The ``n`` biggest keys by bytes, then connections; when more than ``n`` exist, keep n-1 + other."""
    if len(acc) <= n:
        return set(acc)
    order = sorted(acc, key=lambda k: (-acc[k].bytes, -acc[k].connections, k))
    return set(order[: n - 1])


class ViewBuilder:
    """Turns the live state into the public view dictionaries."""

    def __init__(
        self,
        options: ViewOptions | None = None,
        describe: Describe = plain_describe,
        privacy: Privacy | None = None,
    ) -> None:
        self.options = options or ViewOptions()
        self._describe = describe
        # Private (exhibit mode) unless the caller says otherwise: the safe default.
        self.privacy = privacy if privacy is not None else Privacy()
        self._frozen: dict[str, Any] | None = None
        self._cache: OrderedDict[tuple[str | None, str, int, int], Destination] = OrderedDict()
        self._public: dict[tuple[object, ...], Destination] = {}
        self._ids: dict[str, str] = {}
        # The credit lines for the data in use (Enricher.credits): they change when an update brings
        # another source's file, and the screen must credit that one. None: the page's default line.
        self.credits: Callable[[], Sequence[str]] | None = None

    # ---------------------------------------------------------------------------- lookups

    def describe(self, name: str | None, address: str, proto: int = 0, dport: int = 0) -> Destination:
        key = (name, address, proto, dport)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._describe(name, address, proto, dport)
            self._cache[key] = hit
            if len(self._cache) > self.options.describe_cache:
                self._cache.popitem(last=False)
        return hit

    def invalidate(self) -> None:
        """Forget cached descriptions (a database was replaced)."""
        self._cache.clear()
        self._public.clear()

    def device_id(self, key: str) -> str:
        """A stable, non-reversible public id for a device key (MAC)."""
        hit = self._ids.get(key)
        if hit is None:
            hit = "d" + hashlib.blake2s(key.encode(), key=self.options.salt[:32], digest_size=6).hexdigest()
            if len(self._ids) > 65536:
                self._ids.clear()
            self._ids[key] = hit
        return hit

    def device_label(self, dev: Device | None) -> str:
        """Home mode: the DHCP name, else its maker and a short suffix; private modes: the device's
        pseudonym (never a visitor's own words)."""
        if dev is None:
            return "unknown device"
        return self.privacy.device_label(dev.key, dev.hostname, self.device_id(dev.key), dev.mac)

    def device_colour(self, key: str) -> int:
        """The palette index the screens draw device ``key`` in (``colour`` in the view)."""
        return self.privacy.device_colour(key, self.device_id(key))

    def public(self, name: str | None, address: str, proto: int = 0, dport: int = 0) -> Destination:
        """The description the public view may show (see :mod:`apviz.live.privacy`).

        Cached per mode and language, so one (name, address) is one object per build: the build
        groups flows by that object's identity.
        """
        key = (name, address, proto, dport, self.privacy.mode, self.privacy.lang)
        hit = self._public.get(key)
        if hit is None:
            hit = self._public[key] = self.privacy.destination(self.describe(name, address, proto, dport))
            if len(self._public) > self.options.describe_cache:
                self._public.clear()
        return hit

    def refreeze(self) -> None:
        """Retake a paused screen's picture at the next build (after a forget, hide or reset: a
        frozen screen must not keep showing someone who asked to be forgotten)."""
        self._frozen = None

    @staticmethod
    def _country_key(d: Destination) -> tuple[str, str]:
        if d.country:
            return d.country, d.country_name or d.country
        if d.special:
            return "special", d.special
        return "unknown", "unknown place"

    # ---------------------------------------------------------------------------- the view

    def build(self, state: LiveState) -> dict[str, Any]:
        privacy = self.privacy
        privacy.sweep(state.devices)
        if privacy.paused and self._frozen is not None:
            return {**self._frozen, "time": round(time.time(), 3), "screen": privacy.screen()}
        view = self._build(state)
        self._frozen = view if privacy.paused else None
        return view

    def _build(self, state: LiveState) -> dict[str, Any]:
        opts = self.options
        privacy = self.privacy
        dev_acc: dict[str, _Acc] = {}
        org_acc: dict[str, _Acc] = {}
        cty_acc: dict[str, _Acc] = {}
        rows: list[tuple[str, str, str, _Acc]] = []
        org_meta: dict[str, Destination] = {}
        org_domains: dict[str, dict[str, int]] = {}
        cty_names: dict[str, str] = {}
        places: dict[str, tuple[Destination, _Acc]] = {}
        # First fold flows into (device, destination) groups: thousands of flows become a few
        # hundred groups, and everything after works per group. Descriptions are cached objects,
        # so their identity is a cheap, stable group key.
        groups: dict[tuple[str, int], _Acc] = {}
        dests: dict[int, Destination] = {}
        for rec in state.flows.values():
            # A flow still waiting for its own name stays off the screen for that moment (at most
            # ``name_wait``), rather than appear under the network's owner and jump to its name, or
            # show another device's name that its own answer would then replace.
            if privacy.hidden(rec.device) or rec.waiting_until is not None:
                continue
            d = self.public(rec.name, rec.dst, rec.proto, rec.dport)
            key = (rec.device, id(d))
            acc = groups.get(key)
            if acc is None:
                acc = groups[key] = _Acc()
                dests[id(d)] = d
            acc.add(rec, d.tracker is not None)
        for (device, did), acc in groups.items():
            d = dests[did]
            cty, cty_name = self._country_key(d)
            cty_names[cty] = cty_name
            org_meta.setdefault(d.org, d)
            if d.domain:
                doms = org_domains.setdefault(d.org, {})
                doms[d.domain] = doms.get(d.domain, 0) + acc.bytes + acc.connections
            if d.tracker is not None and org_meta[d.org].tracker is None:
                org_meta[d.org] = d
            _into(dev_acc, device, acc)
            _into(org_acc, d.org, acc)
            _into(cty_acc, cty, acc)
            rows.append((device, d.org, cty, acc))
            if d.lat is not None and d.lon is not None:
                pkey = f"{d.country or ''}|{d.city or ''}|{d.lat:.2f}|{d.lon:.2f}"
                place = places.get(pkey)
                if place is None:
                    place = places[pkey] = (d, _Acc())
                place[1].merge(acc)

        keep_dev = _rank(dev_acc, opts.top_devices)
        keep_org = _rank(org_acc, opts.top_orgs)
        keep_cty = _rank(cty_acc, opts.top_countries)

        nodes: dict[str, _Acc] = {}
        links: dict[tuple[str, str], _Acc] = {}
        # Nodes are the column totals, the ones not kept folded into "other".
        for prefix, column, keep in (
            ("d:", dev_acc, keep_dev),
            ("o:", org_acc, keep_org),
            ("c:", cty_acc, keep_cty),
        ):
            for key, acc in column.items():
                if key in keep:
                    nodes[prefix + (self.device_id(key) if prefix == "d:" else key)] = acc
                else:
                    _into(nodes, prefix + OTHER, acc)
        for dev, org, cty, acc in rows:
            dn = "d:" + (self.device_id(dev) if dev in keep_dev else OTHER)
            on = "o:" + (org if org in keep_org else OTHER)
            cn = "c:" + (cty if cty in keep_cty else OTHER)
            _into(links, (dn, on), acc)
            _into(links, (on, cn), acc)

        by_public_id = {self.device_id(k): state.devices.get(k) for k in dev_acc}
        sankey_nodes = {}
        for node_id, acc in nodes.items():
            kind, _, key = node_id.partition(":")
            item: dict[str, Any] = {"id": node_id, "kind": {"d": "device", "o": "org", "c": "country"}[kind]}
            if key == OTHER:
                item["label"] = {"d": "other devices", "o": "other companies", "c": "other places"}[kind]
                item["other"] = True
            elif kind == "d":
                dev = by_public_id.get(key)
                item["label"] = self.device_label(dev)
                item["device"] = key
                if dev is not None:
                    item["colour"] = self.device_colour(dev.key)
            elif kind == "o":
                meta = org_meta[key]
                doms = org_domains.get(key, {})
                item.update(
                    label=key,
                    source=meta.org_source,
                    category=meta.category,
                    tracker=meta.tracker,
                    hidden=meta.hidden,
                    company=meta.company,
                    domains=sorted(doms, key=lambda k: (-doms[k], k))[:5],
                )
            else:
                item.update(label=cty_names[key], country=key if len(key) == 2 else None)
            item.update(acc.json())
            sankey_nodes[node_id] = item
        sankey_links = {
            f"{s}>{t}": {"id": f"{s}>{t}", "source": s, "target": t, **acc.json()}
            for (s, t), acc in links.items()
        }

        blocked = self._blocked_links(state, keep_dev, keep_org, set(org_acc))
        for link_id, count in blocked.items():
            link = sankey_links.get(link_id)
            if link is not None:
                link["blocked"] = count

        devices = {}
        for key, acc in dev_acc.items():
            pid = self.device_id(key)
            devices[pid] = {
                "id": pid,
                "label": self.device_label(state.devices.get(key)),
                "colour": self.device_colour(key),
                **acc.json(),
            }
            if state.blocking is not None:  # the phone page's stream wakes on a change of this
                dev = state.devices.get(key)
                attempts = state.blocking.attempts
                devices[pid]["blocked"] = sum(attempts.get(ip, 0) for ip in (dev.ips if dev else ()))
        for key, dev in state.devices.items():  # devices that joined but have no flows yet
            if privacy.hidden(key):
                continue
            pid = self.device_id(key)
            if pid not in devices:
                devices[pid] = {
                    "id": pid,
                    "label": self.device_label(dev),
                    "colour": self.device_colour(key),
                    **_Acc().json(),
                }

        points = {}
        arcs = {}
        for pkey, (d, acc) in places.items():
            pid = "p:" + pkey
            points[pid] = {
                "id": pid,
                "country": d.country,
                "country_name": d.country_name,
                "city": d.city,
                "lat": d.lat,
                "lon": d.lon,
                **acc.json(),
            }
            if opts.gateway_lat is not None and opts.gateway_lon is not None:
                aid = "a:" + pkey
                arcs[aid] = {
                    "id": aid,
                    "to": pid,
                    "from_lat": opts.gateway_lat,
                    "from_lon": opts.gateway_lon,
                    "lat": d.lat,
                    "lon": d.lon,
                    "tracker": acc.trackers > 0,
                    **acc.json(),
                }
        countries = {
            cty: {"id": cty, "name": cty_names[cty], **acc.json()}
            for cty, acc in cty_acc.items()
            if len(cty) == 2
        }
        trackers_seen = {org for org, meta in org_meta.items() if meta.tracker}
        view: dict[str, Any] = {
            "time": round(time.time(), 3),
            "gateway": {"lat": opts.gateway_lat, "lon": opts.gateway_lon, "label": opts.gateway_label},
            "screen": privacy.screen(),
            "totals": {
                "devices": len(devices),
                "flows_open": sum(a.open for a in dev_acc.values()),
                "connections": sum(a.connections for a in dev_acc.values()),
                "bytes": sum(a.bytes for a in dev_acc.values()),
                "companies": len(org_acc),
                "countries": len(countries),
                "trackers": len(trackers_seen),
            },
            "devices": devices,
            "nodes": sankey_nodes,
            "links": sankey_links,
            "points": points,
            "arcs": arcs,
            "countries": countries,
            **self._attribution(),
        }
        if state.blocking is not None:  # only where blocking is configured: views elsewhere stay as they were
            view["blocked"] = blocked
        return view

    def _attribution(self) -> dict[str, str]:
        """The place data's credit (the first line: the screen has room for one), when known."""
        lines = self.credits() if self.credits is not None else ()
        return {"attribution": lines[0]} if lines else {}

    # ---------------------------------------------------------------------------- per device

    def _blocked_links(
        self, state: LiveState, keep_dev: set[str], keep_org: set[str], folded: set[str]
    ) -> dict[str, int]:
        """Blocked attempts per device -> organisation link ("d:ID>o:ORG" -> count), whether or not
        the link carries traffic: a rejected connection never becomes a conntrack flow, so the
        kiosk draws these as links of their own (a dashed red line with "blocked: N")."""
        blocking = state.blocking
        out: dict[str, int] = {}
        if blocking is None:
            return out
        for key, dev in state.devices.items():
            if self.privacy.hidden(key):
                continue
            dn = "d:" + (self.device_id(key) if key in keep_dev else OTHER)
            for ip in dev.ips:
                for address, (name, count) in blocking.blocked_by_address(ip).items():
                    d = self.public(name, address, 6, 443)
                    on = "o:" + (OTHER if d.org in folded and d.org not in keep_org else d.org)
                    out[f"{dn}>{on}"] = out.get(f"{dn}>{on}", 0) + count
        return out

    def device_blocking(self, state: LiveState, key: str) -> dict[str, Any]:
        """For the visitor's page: "12 attempts to 5 trackers blocked" and whether it is on."""
        blocking, dev = state.blocking, state.devices.get(key)
        if blocking is None or dev is None:
            return {"available": False, "allowed": False, "on": False, "attempts": 0, "trackers": 0}
        attempts = trackers = 0
        on = False
        for ip in dev.ips:
            summary = blocking.summary(ip)
            on = on or bool(summary["on"])
            attempts += int(summary["attempts"])
            trackers += int(summary["trackers"])
        allowed = blocking.allowed
        return {"available": True, "allowed": allowed, "on": on, "attempts": attempts, "trackers": trackers}

    def device_detail(self, state: LiveState, public_id: str) -> dict[str, Any] | None:
        """One device's destinations, for the device page and ``/api/devices/{id}``."""
        key = next((k for k in state.devices if self.device_id(k) == public_id), None)
        if key is None:
            return None
        dev = state.devices[key]
        dests: dict[tuple[str | None, str], dict[str, Any]] = {}
        sources: dict[tuple[str | None, str], set[str]] = {}
        total = _Acc()
        for rec in state.device_flows(key):
            if rec.waiting_until is not None:
                continue  # as on the screen: not before its own name had its chance
            d = self.describe(rec.name, rec.dst, rec.proto, rec.dport)
            k = (rec.name, d.org)
            item = dests.get(k)
            if item is None:
                item = dests[k] = {
                    "name": rec.name,
                    "org": d.org,
                    "domain": d.domain,
                    "country": d.country,
                    "country_name": d.country_name,
                    "city": d.city,
                    "tracker": d.tracker,
                    "category": d.category,
                    "hidden": d.hidden,
                    "company": d.company,
                    "bytes": 0,
                    "connections": 0,
                    "open": 0,
                }
                sources[k] = set()
            if rec.name_source is not None:
                sources[k].add(rec.name_source)
            item["bytes"] += rec.bytes
            item["connections"] += 1
            item["open"] += rec.open
            total.add(rec, d.tracker is not None)
        for k, item in dests.items():
            # Where the name came from, most trusted first (names.RANK): the phone page says it.
            item["name_sources"] = sorted(sources[k], key=lambda s: -RANK[NameSource(s)])
        return {
            "id": public_id,
            "label": self.device_label(dev),
            "colour": self.device_colour(key),
            "first_seen": round(dev.first_seen, 3),
            "last_seen": round(dev.last_seen, 3),
            "private_dns_refused": dev.private_dns_refused is not None,
            "blocking": self.device_blocking(state, key),
            **total.json(),
            "destinations": sorted(dests.values(), key=lambda x: (-x["bytes"], -x["connections"])),
        }
