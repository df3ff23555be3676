"""Addresses that are not "somewhere on the internet": say what they are instead of placing them.

A geolocation database has no answer for ``192.168.1.20`` or ``fe80::1``, and a guess would put a
dot on the map where nothing is. These ranges get a clear label instead (IANA special-purpose
registries, RFC 6890 and successors), and the gateway's own addresses are recognised as such.

One range is *soft*: 198.18.0.0/15 (benchmarking, RFC 2544) is what apviz's lab uses as its
pretend internet, with a lab database that places those addresses in real cities. A soft label
applies only when no database answered; :class:`apviz.enrich.enricher.Enricher` asks the databases
first for soft ranges. ``soft_benchmarking=False`` makes it a hard label like the others.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from apviz.enrich._common import (
    DEFAULT_CACHE_SIZE,
    EnrichOptionError,
    IPAddress,
    bounded_cache,
    check_cache_size,
    parse_ip,
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class SpecialInfo:
    """A label for an address that has no place on the map."""

    kind: str  # machine-readable: "gateway", "private", "loopback", ...
    label: str  # short, for the screen
    description: str  # one plain sentence
    soft: bool = False  # a database answer, when there is one, wins


_KINDS: dict[str, tuple[str, str]] = {
    "gateway": ("This Wi-Fi gateway", "The box that runs this Wi-Fi network and shows this screen."),
    "private": (
        "Local network",
        "A device inside this building's network; this does not go out to the internet.",
    ),
    "cgnat": ("Provider's network", "An address inside the internet provider's own network."),
    "loopback": ("This device itself", "A device talking to itself."),
    "link-local": ("Nearby device", "A device on the same network, talking directly without a router."),
    "multicast": ("Group message", "A message for many devices at once, such as 'is there a printer here?'."),
    "broadcast": ("Everyone nearby", "A message for every device on the local network."),
    "unspecified": ("No address yet", "A device that does not have an address yet."),
    "documentation": ("Example address", "An address kept for examples in books; it is never used for real."),
    "benchmarking": ("Test network", "An address kept for testing network equipment."),
    "reserved": ("Reserved address", "An address that is not used on the internet."),
    "nat64": ("IPv6 translator", "A bridge that lets IPv6-only networks reach older IPv4 addresses."),
    "discard": ("Nowhere", "An address whose messages are thrown away on purpose."),
}

# (network, kind). More specific entries are found first because the table is searched by
# longest prefix (see SpecialRanges._match).
_RANGES: tuple[tuple[str, str], ...] = (
    # IPv4
    ("0.0.0.0/32", "unspecified"),
    ("0.0.0.0/8", "reserved"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "cgnat"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
    # IPv6
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b::/96", "nat64"),
    ("64:ff9b:1::/48", "nat64"),
    ("100::/64", "discard"),
    ("2001:2::/48", "benchmarking"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "private"),  # unique local addresses
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
)


def info_for(kind: str, soft: bool = False) -> SpecialInfo:
    label, description = _KINDS[kind]
    return SpecialInfo(kind, label, description, soft)


class SpecialRanges:
    """Labels for special-purpose addresses and for the gateway's own addresses.

    Options:
      gateway: the gateway's own addresses or networks (``"10.99.0.1"``, ``"fd00:99::1"``); they
        are labelled "This Wi-Fi gateway" and win over every other label.
      soft_benchmarking: treat 198.18.0.0/15 and 2001:2::/48 as soft (the lab's pretend internet
        is geolocated by the lab database). True by default.
      cache_size: entries in the LRU cache of answers.
    """

    def __init__(
        self,
        gateway: Iterable[str] = (),
        *,
        soft_benchmarking: bool = True,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.cache_size = check_cache_size(cache_size)
        if not isinstance(soft_benchmarking, bool):
            raise EnrichOptionError(f"soft_benchmarking must be true or false, got {soft_benchmarking!r}")
        if isinstance(gateway, str):
            gateway = [gateway]
        self.gateway: list[Network] = []
        for item in gateway:
            try:
                self.gateway.append(ipaddress.ip_network(str(item).strip(), strict=False))
            except ValueError:
                raise EnrichOptionError(
                    f"gateway address must be an IP address or network, got {item!r}"
                ) from None
        self.soft_benchmarking = soft_benchmarking
        self._table: list[tuple[Network, str]] = sorted(
            ((ipaddress.ip_network(net), kind) for net, kind in _RANGES),
            key=lambda item: -item[0].prefixlen,
        )
        self.lookup = bounded_cache(self._lookup, self.cache_size)

    def _lookup(self, ip: str | IPAddress) -> SpecialInfo | None:
        addr = parse_ip(ip)
        if addr is None:
            return None
        for net in self.gateway:
            if addr.version == net.version and addr in net:
                return info_for("gateway")
        for net, kind in self._table:
            if addr.version == net.version and addr in net:
                return info_for(kind, soft=kind == "benchmarking" and self.soft_benchmarking)
        return None

    @staticmethod
    def embedded_ipv4(ip: str | IPAddress) -> ipaddress.IPv4Address | None:
        """The IPv4 address inside a NAT64 (64:ff9b::/96) address, to place it on the map."""
        addr = parse_ip(ip)
        if isinstance(addr, ipaddress.IPv6Address) and addr in _NAT64:
            return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
