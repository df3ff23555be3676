"""The catalogue of the lab's fake internet, read from ``data/lab/world.toml``.

One file says which names exist, where they point and who "runs" each address block, so the upstream
dnsmasq, the tests' expectations and (later) the lab's geo/ASN database all come from the same facts
and cannot drift apart. Loading validates everything once and names the bad entry, because a typo in
the catalogue would otherwise surface as a puzzling NXDOMAIN in some unrelated test.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

#: The range the internet namespace owns; every catalogue address must sit inside it.
INTERNET = ipaddress.IPv4Network("198.18.0.0/15")

DEFAULT_WORLD = Path(__file__).resolve().parents[2] / "data" / "lab" / "world.toml"


class WorldError(ValueError):
    """The catalogue is inconsistent; the message names the offending entry."""


@dataclass(frozen=True, slots=True)
class Block:
    """An address block with the real-world place and organisation it stands for."""

    network: ipaddress.IPv4Network
    org: str
    asn: int
    city: str
    country: str  # ISO 3166-1 alpha-2
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Host:
    """A name with one or more addresses (a dnsmasq ``host-record``)."""

    name: str
    addresses: tuple[str, ...]
    ttl: int


@dataclass(frozen=True, slots=True)
class Alias:
    """A CNAME (a dnsmasq ``cname=``); ``target`` is a host or another alias."""

    name: str
    target: str
    ttl: int


@dataclass(frozen=True, slots=True)
class Resolution:
    """What resolving a name should give: the CNAME chain walked and the final addresses."""

    name: str
    chain: tuple[str, ...]  # names after ``name``, in order, ending with the one holding the addresses
    addresses: tuple[str, ...]

    @property
    def canonical(self) -> str:
        return self.chain[-1] if self.chain else self.name


@dataclass(frozen=True, slots=True)
class Services:
    """Which catalogue names run more than the line-protocol servers (``[services]`` in world.toml).

    Each list holds host names (never aliases): the lab starts the service on that host's addresses.
    """

    doh: tuple[str, ...] = ()  # DNS over HTTPS (dnsdist, 443, path /dns-query)
    dot: tuple[str, ...] = ()  # DNS over TLS (dnsdist, 853)
    plain_dns: tuple[str, ...] = ()  # a second dnsmasq on 53, answering the same records
    relay: tuple[str, ...] = ()  # stands for Apple's Private Relay ingress (QUIC/TLS on 443)


@dataclass(slots=True)
class World:
    """The whole catalogue, validated."""

    upstream: str
    ttl: int
    blocks: list[Block] = field(default_factory=list)
    hosts: dict[str, Host] = field(default_factory=dict)
    aliases: dict[str, Alias] = field(default_factory=dict)
    services: Services = field(default_factory=Services)

    @property
    def addresses(self) -> list[str]:
        """Every address some host points at, in catalogue order, without repeats."""
        return list(dict.fromkeys(a for h in self.hosts.values() for a in h.addresses))

    def service_addresses(self, kind: str) -> list[str]:
        """The addresses of the hosts listed under ``kind`` in ``[services]``."""
        names: tuple[str, ...] = getattr(self.services, kind)
        return list(dict.fromkeys(a for n in names for a in self.hosts[n].addresses))

    @property
    def names(self) -> list[str]:
        """Every name that resolves (hosts and aliases), sorted."""
        return sorted([*self.hosts, *self.aliases])

    def block_for(self, address: str) -> Block | None:
        ip = ipaddress.IPv4Address(address)
        for block in self.blocks:
            if ip in block.network:
                return block
        return None

    def resolve(self, name: str) -> Resolution | None:
        """Follow the catalogue like a resolver would; None for a name the world does not have."""
        name = _norm(name)
        chain: list[str] = []
        current = name
        while current in self.aliases:
            current = self.aliases[current].target
            chain.append(current)
        host = self.hosts.get(current)
        if host is None:
            return None
        return Resolution(name=name, chain=tuple(chain), addresses=host.addresses)

    def names_at(self, address: str) -> list[str]:
        """Every host name pointing at ``address`` (CDN sharing), without aliases."""
        return sorted(h.name for h in self.hosts.values() if address in h.addresses)

    def dnsmasq_records(self) -> list[str]:
        """The ``host-record=`` and ``cname=`` lines that make the upstream dnsmasq answer as the world says.

        One host-record per address: dnsmasq merges lines for the same name into one RRset.
        """
        lines = [f"host-record={h.name},{a},{h.ttl}" for h in self.hosts.values() for a in h.addresses]
        lines += [f"cname={a.name},{a.target},{a.ttl}" for a in self.aliases.values()]
        return lines


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _check_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not name or len(name) > 253:
        raise WorldError(f"{where}: bad name {name!r}")
    norm = _norm(name)
    for label in norm.split("."):
        if not label or len(label) > 63 or not all(c.isalnum() or c in "-_" for c in label):
            raise WorldError(f"{where}: bad name {name!r}")
    return norm


def _check_address(value: object, where: str) -> str:
    try:
        ip = ipaddress.IPv4Address(str(value))
    except ValueError as exc:
        raise WorldError(f"{where}: bad address {value!r}") from exc
    if ip not in INTERNET:
        raise WorldError(f"{where}: address {ip} is outside {INTERNET}, which the lab internet owns")
    return str(ip)


def _block(raw: dict, index: int) -> Block:
    where = f"block #{index + 1}"
    try:
        network = ipaddress.IPv4Network(raw["cidr"])
        if not network.subnet_of(INTERNET):
            raise WorldError(f"{where}: {network} is outside {INTERNET}")
        return Block(
            network=network,
            org=str(raw["org"]),
            asn=int(raw["asn"]),
            city=str(raw["city"]),
            country=str(raw["country"]).upper(),
            lat=float(raw["lat"]),
            lon=float(raw["lon"]),
        )
    except KeyError as exc:
        raise WorldError(f"{where} ({raw.get('cidr', '?')}): missing field {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        if isinstance(exc, WorldError):
            raise
        raise WorldError(f"{where} ({raw.get('cidr', '?')}): {exc}") from exc


def parse_world(data: dict) -> World:
    """Build and validate a World from parsed TOML (split from loading so tests can feed dicts)."""
    dns = data.get("dns", {})
    ttl = int(dns.get("ttl", 300))
    world = World(upstream=_check_address(dns.get("upstream", "198.18.0.53"), "[dns] upstream"), ttl=ttl)
    world.blocks = [_block(raw, i) for i, raw in enumerate(data.get("block", []))]
    for i, a in enumerate(world.blocks):
        for b in world.blocks[i + 1 :]:
            if a.network.overlaps(b.network):
                raise WorldError(f"blocks {a.network} and {b.network} overlap")
    for raw in data.get("host", []):
        name = _check_name(raw.get("name"), "host")
        where = f"host {name}"
        if name in world.hosts:
            raise WorldError(f"{where}: listed twice")
        value = raw.get("address")
        values = value if isinstance(value, list) else [value]
        addresses = tuple(_check_address(v, where) for v in values)
        for address in addresses:
            if world.block_for(address) is None:
                raise WorldError(f"{where}: {address} is in no [[block]] (every address needs a place)")
        world.hosts[name] = Host(name=name, addresses=addresses, ttl=int(raw.get("ttl", ttl)))
    for raw in data.get("cname", []):
        name = _check_name(raw.get("name"), "cname")
        where = f"cname {name}"
        if name in world.aliases or name in world.hosts:
            raise WorldError(f"{where}: name already defined")
        target = _check_name(raw.get("target"), where)
        world.aliases[name] = Alias(name=name, target=target, ttl=int(raw.get("ttl", ttl)))
    for alias in world.aliases.values():
        seen = {alias.name}
        current = alias.target
        while current in world.aliases:
            if current in seen:
                raise WorldError(f"cname {alias.name}: loop through {current}")
            seen.add(current)
            current = world.aliases[current].target
        if current not in world.hosts:
            raise WorldError(f"cname {alias.name}: chain ends at {current}, which has no address")
    world.services = _services(data.get("services", {}), world)
    return world


def _services(raw: object, world: World) -> Services:
    if not isinstance(raw, dict):
        raise WorldError("[services] must be a table")
    kinds = set(Services.__slots__)  # type: ignore[attr-defined]
    unknown = set(raw) - kinds
    if unknown:
        raise WorldError(f"[services]: unknown key(s) {', '.join(sorted(unknown))} (known: {sorted(kinds)})")
    lists: dict[str, tuple[str, ...]] = {}
    for kind, names in raw.items():
        if not isinstance(names, list):
            raise WorldError(f"[services] {kind}: must be a list of host names")
        checked = tuple(_check_name(n, f"[services] {kind}") for n in names)
        for name in checked:
            if name not in world.hosts:
                raise WorldError(f"[services] {kind}: {name} is not a [[host]] (aliases have no address)")
        lists[kind] = checked
    return Services(**lists)


def load_world(path: Path | None = None) -> World:
    """Read the catalogue (the packaged one by default)."""
    path = path or DEFAULT_WORLD
    with path.open("rb") as fh:
        try:
            data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise WorldError(f"{path}: {exc}") from exc
    return parse_world(data)
