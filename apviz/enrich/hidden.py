"""Connections that hide where a device goes: encrypted DNS, VPNs, Apple's Private Relay.

A phone that asks ``dns.google`` for its names over HTTPS is not "talking to Google" in the sense
the kiosk means: it is hiding its lookups from this network, and every other connection of it
loses its name. Showing such a connection under the company that runs the server misleads exactly
the visitors who care, so it is shown as what it is. This module only decides *which kind* a
connection is, from facts a gateway sees (name, address, protocol, port); the labels' words are
the views' and pages' business.

The heuristics and their limits:

* **Private DNS**: TCP or UDP port 853 (DNS over TLS, DNS over QUIC) to anywhere; a name on the
  curated list of DNS-over-HTTPS resolvers (``data/private-dns.toml``), or a listed resolver
  address (or ``[names] private_dns_servers``), on any port but 53, whose plain DNS the gateway
  reads. DoH to a resolver not on the list, on a shared address, looks like any HTTPS.
* **VPN**: WireGuard's usual UDP 51820, IPsec (UDP 500 and 4500, ESP and AH), OpenVPN's UDP/TCP
  1194. Ports are conventions: a WireGuard or OpenVPN server on another port (OpenVPN on TCP 443
  is common) is not recognised, and Wi-Fi calling (IPsec to the carrier on UDP 4500) *is* shown as
  a VPN, which it technically is.
* **Apple Private Relay**: the relay's entry names (``mask.icloud.com``, ``mask-h2.icloud.com``)
  as server name or looked-up name, or a listed entry address. Apple does not publish entry
  addresses, so without a name (a phone whose relay lookup went elsewhere) the relay's QUIC looks
  like any HTTPS to Apple.

Names are hostile text: anything that is not a plausible name simply matches nothing.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

#: The curated list shipped with apviz.
DEFAULT_LIST = Path(__file__).resolve().parents[2] / "data" / "private-dns.toml"

TCP, UDP, ESP, AH = 6, 17, 50, 51
DOT_PORT = 853  # DNS over TLS (TCP) and DNS over QUIC (UDP), RFC 7858 and RFC 9250
PLAIN_DNS_PORT = 53

#: (protocol, port) pairs by convention a VPN's: WireGuard, IPsec IKE and NAT traversal, OpenVPN.
VPN_PORTS = frozenset({(UDP, 51820), (UDP, 500), (UDP, 4500), (UDP, 1194), (TCP, 1194)})
VPN_PROTOCOLS = frozenset({ESP, AH})  # IPsec without NAT traversal: no ports at all


class HiddenKind(StrEnum):
    PRIVATE_DNS = "private-dns"  # the device's DNS lookups, encrypted: its other names are hidden
    VPN = "vpn"  # everything inside a tunnel to somewhere else
    PRIVATE_RELAY = "private-relay"  # Apple's iCloud Private Relay


#: English labels for the middle column (stable ids; pages show their own words by ``hidden``).
LABELS = {
    HiddenKind.PRIVATE_DNS: "private DNS: names hidden",
    HiddenKind.VPN: "VPN",
    HiddenKind.PRIVATE_RELAY: "Apple Private Relay",
}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class _Names:
    """Exact names plus ``*.suffix`` entries, matched case-insensitively."""

    def __init__(self, entries: Iterable[str], where: str) -> None:
        exact, suffixes = set(), []
        for raw in entries:
            if not isinstance(raw, str) or not raw.strip():
                raise ValueError(f"{where}: {raw!r} is not a name")
            entry = raw.strip().lower().rstrip(".")
            if entry.startswith("*."):
                suffixes.append(entry[1:])  # ".dns.nextdns.io"
            else:
                exact.add(entry)
        self.exact = frozenset(exact)
        self.suffixes = tuple(suffixes)

    def __contains__(self, name: str) -> bool:
        return name in self.exact or any(name.endswith(s) for s in self.suffixes)


class _Addresses:
    """Single addresses (a set lookup) and a few networks.

    Networks are filed under their first octet (IPv4) or group (IPv6) as text, so an address is
    parsed only when it could be in one (a whole classify() of an ordinary connection: 17 us when
    every address was parsed, 4 us filed; measured with 10k lab addresses).
    """

    def __init__(self, entries: Iterable[str], where: str) -> None:
        exact: set[str] = set()
        nets: dict[str, list[Network]] = {}
        for raw in entries:
            try:
                net = ipaddress.ip_network(str(raw).strip(), strict=False)
            except ValueError:
                raise ValueError(f"{where}: {raw!r} is not an address or network") from None
            if net.num_addresses == 1:
                exact.add(str(net.network_address))
            else:
                wide = net.prefixlen < (8 if net.version == 4 else 16)
                nets.setdefault("" if wide else _head(str(net.network_address)), []).append(net)
        self.exact = frozenset(exact)
        self.nets = {k: tuple(v) for k, v in nets.items()}

    def __contains__(self, address: str) -> bool:
        if address in self.exact:
            return True
        candidates = (*self.nets.get(_head(address), ()), *self.nets.get("", ()))
        if not candidates:
            return False
        try:
            addr = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(addr in net for net in candidates)


def _head(address: str) -> str:
    """The first octet or group of an address as written (canonical text has no leading zeros)."""
    return address.split(".", 1)[0] if "." in address and ":" not in address else address.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class HiddenLists:
    """The curated facts, as loaded from ``data/private-dns.toml`` (plus an operator's additions)."""

    doh_names: tuple[str, ...] = ()
    doh_addresses: tuple[str, ...] = ()
    relay_names: tuple[str, ...] = ()
    relay_addresses: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: Path | None = None) -> HiddenLists:
        """Read the list; a wrong entry raises a ValueError naming the file and the entry."""
        path = path or DEFAULT_LIST
        with path.open("rb") as f:
            data = tomllib.load(f)

        def strings(section: str, key: str) -> tuple[str, ...]:
            value = data.get(section, {}).get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{path}: [{section}] {key} must be a list of strings")
            return tuple(value)

        return cls(
            doh_names=strings("doh", "names"),
            doh_addresses=strings("doh", "addresses"),
            relay_names=strings("relay", "names"),
            relay_addresses=strings("relay", "addresses"),
        )


class HiddenClassifier:
    """Decides whether a connection is encrypted DNS, a VPN or Apple's relay. Pure: no state."""

    def __init__(
        self, lists: HiddenLists, private_dns_servers: Iterable[str] = (), relay_addresses: Iterable[str] = ()
    ) -> None:
        self._doh_names = _Names(lists.doh_names, "[doh] names")
        self._doh_addresses = _Addresses((*lists.doh_addresses, *private_dns_servers), "private DNS servers")
        self._relay_names = _Names(lists.relay_names, "[relay] names")
        self._relay_addresses = _Addresses((*lists.relay_addresses, *relay_addresses), "relay addresses")

    @classmethod
    def shipped(
        cls,
        path: Path | None = None,
        private_dns_servers: Iterable[str] = (),
        relay_addresses: Iterable[str] = (),
    ) -> HiddenClassifier:
        return cls(HiddenLists.load(path), private_dns_servers, relay_addresses)

    def classify(self, name: str | None, address: str, proto: int = 0, dport: int = 0) -> HiddenKind | None:
        """What the connection hides, or None for an ordinary one.

        ``name`` is the flow's name from any source (server name or lookup); ``proto``/``dport`` 0
        when unknown (then only names and addresses can tell).
        """
        clean = _clean(name)
        if (clean is not None and clean in self._relay_names) or address in self._relay_addresses:
            return HiddenKind.PRIVATE_RELAY
        if proto in (TCP, UDP) and dport == DOT_PORT:
            return HiddenKind.PRIVATE_DNS
        # Plain DNS (port 53) to a well-known resolver is readable: the gateway sees its answers
        # (apviz names the device's connections from them), so it hides nothing.
        listed = (clean is not None and clean in self._doh_names) or address in self._doh_addresses
        if listed and dport != PLAIN_DNS_PORT:
            return HiddenKind.PRIVATE_DNS
        if proto in VPN_PROTOCOLS or (proto, dport) in VPN_PORTS:
            return HiddenKind.VPN
        return None


def _clean(name: str | None) -> str | None:
    if not name or not isinstance(name, str) or len(name) > 253:
        return None
    return name.strip().lower().rstrip(".") or None
