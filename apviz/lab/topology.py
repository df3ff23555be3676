"""Network namespaces, links, addresses, nftables and sysctls of the virtual gateway.

The lab is sealed: no link ever appears in the host's namespace (each veth is created directly inside
its namespaces), the gateway routes only 198.18.0.0/15 (to the internet namespace) and the internet
namespace has no route anywhere but its own link. So whatever a simulated phone does, its packets stay
inside namespaces this run created. Every name carries the run's prefix so parallel labs (other tests,
other engineers) never collide and leftovers can be found by name.

Commands go through ``ip -batch`` where possible: one process per namespace instead of one per change
keeps bring-up around a tenth of a second.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PREFIX_RE = re.compile(r"^avlb[0-9a-f]{4}$")
#: Names of namespaces (and run dirs) a lab creates: the prefix, a dash, a role.
NS_RE = re.compile(r"^(avlb[0-9a-f]{4})-[a-z0-9]+$")

LAN = ipaddress.IPv4Network("10.99.1.0/24")
GATEWAY_IP = "10.99.1.1"
GATEWAY_MAC = "02:a5:ff:00:00:01"  # locally administered; each lab's LAN is its own segment
DHCP_RANGE = ("10.99.1.100", "10.99.1.199")
WAN = ipaddress.IPv4Network("10.99.255.0/30")
WAN_GATEWAY_IP = "10.99.255.1"
WAN_INTERNET_IP = "10.99.255.2"
INTERNET = ipaddress.IPv4Network("198.18.0.0/15")
MAX_IFNAME = 15

# The appliance's network policy files, loaded by the lab exactly as they ship (see docs/network-policy.md).
_REPO = Path(__file__).resolve().parents[2]
POLICY_DNSMASQ = _REPO / "dnsmasq" / "apviz-policy.conf"
POLICY_NFT = _REPO / "nftables" / "apviz-policy.nft"
DNS_REDIRECT_NFT = _REPO / "nftables" / "apviz-dns-redirect.nft"
POLICY_TABLE = "apviz_policy"
DNS_REDIRECT_TABLE = "apviz_dns_redirect"


class LabError(RuntimeError):
    """Something in the lab could not be set up or torn down; the message says what and why."""


def new_prefix() -> str:
    """A fresh run prefix: ``avlb`` + 4 hex digits (short enough for 15-character interface names)."""
    return "avlb" + secrets.token_hex(2)


def check_prefix(prefix: str) -> str:
    if not PREFIX_RE.match(prefix):
        raise LabError(f"lab prefix {prefix!r} must look like 'avlb' + 4 hex digits (e.g. avlb1a2b)")
    return prefix


def phone_mac(index: int) -> str:
    """A deterministic, locally administered unicast MAC for phone ``index`` (02:a5:00:00:HH:LL)."""
    if not 0 < index < 0x10000:
        raise LabError(f"phone index {index} out of range 1..65535")
    return f"02:a5:00:00:{index >> 8:02x}:{index & 0xFF:02x}"


@dataclass(frozen=True, slots=True)
class Names:
    """Every namespace and interface name of one lab run, derived from its prefix."""

    prefix: str

    @property
    def gateway_ns(self) -> str:
        return f"{self.prefix}-gw"

    @property
    def internet_ns(self) -> str:
        return f"{self.prefix}-net"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br"

    @property
    def wan(self) -> str:
        """The gateway's end of the link to the internet namespace."""
        return f"{self.prefix}-wan"

    @property
    def uplink(self) -> str:
        """The internet namespace's end of that link."""
        return f"{self.prefix}-up"

    @property
    def phone_if(self) -> str:
        """The phone's only interface (the same name in every phone namespace)."""
        return f"{self.prefix}-wlan"

    def phone_ns(self, index: int) -> str:
        return f"{self.prefix}-p{index}"

    def phone_port(self, index: int) -> str:
        """The bridge port (gateway side) of phone ``index``."""
        name = f"{self.prefix}-l{index}"
        if len(name) > MAX_IFNAME:
            raise LabError(f"interface name {name!r} longer than {MAX_IFNAME} characters")
        return name


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, raising LabError with its stderr (the useful part) when it fails."""
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {detail}")
    return proc


def ip_batch(ns: str | None, lines: Sequence[str]) -> None:
    """Apply ``ip`` commands in one process, inside ``ns`` (or the host namespace for netns changes)."""
    argv = ["ip", *(["-n", ns] if ns else []), "-batch", "-"]
    run(argv, input="\n".join(lines) + "\n")


def sysctl(ns: str, settings: dict[str, str]) -> None:
    """Set sysctls inside a namespace (net.* ones are per namespace, e.g. nf_conntrack_acct)."""
    run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items())])


def nft_ruleset(names: Names) -> str:
    """The gateway's firewall: masquerade out of the WAN, forward LAN->WAN only, no DNS from outside.

    The NAT rule is also what makes the kernel track the namespace's connections at all.
    """
    return f"""
table ip apviz_lab {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "{names.bridge}" oifname "{names.wan}" accept
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "{names.wan}" ct state established,related accept
        iifname "{names.wan}" drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{names.wan}" masquerade
    }}
}}
"""


def load_nft_file(names: Names, path: Path) -> None:
    """Load one of the appliance's nft files in the gateway, with the lab's bridge as the Wi-Fi (LAN_IF).

    The files replace their own table, so loading again is how the lab reloads them.
    """
    run(["ip", "netns", "exec", names.gateway_ns, "nft", "-D", f"LAN_IF={names.bridge}", "-f", str(path)])


def delete_table(names: Names, table: str) -> bool:
    """Delete ``inet <table>`` in the gateway (what the policy unit's ExecStop does); False if absent."""
    argv = ["ip", "netns", "exec", names.gateway_ns, "nft", "delete", "table", "inet", table]
    return run(argv, check=False).returncode == 0


def create_core(names: Names, upstream_dns: str) -> None:
    """Create the gateway and internet namespaces and everything between them."""
    ip_batch(None, [f"netns add {names.gateway_ns}", f"netns add {names.internet_ns}"])
    no_v6 = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
    sysctl(
        names.gateway_ns,
        {
            **no_v6,
            "net.ipv4.ip_forward": "1",
            "net.netfilter.nf_conntrack_acct": "1",
            "net.netfilter.nf_conntrack_timestamp": "1",
        },
    )
    sysctl(names.internet_ns, no_v6)
    lan_prefix = LAN.prefixlen
    wan_prefix = WAN.prefixlen
    ip_batch(
        names.gateway_ns,
        [
            "link set lo up",
            f"link add {names.wan} type veth peer name {names.uplink} netns {names.internet_ns}",
            # A fixed address: a bridge left to itself takes its lowest port's, and changes it when
            # that phone leaves; the other phones' ARP entries then point nowhere (as no real
            # access point would do to them) until they time out.
            f"link add {names.bridge} address {GATEWAY_MAC} type bridge stp_state 0 forward_delay 0",
            f"addr add {GATEWAY_IP}/{lan_prefix} dev {names.bridge}",
            f"link set {names.bridge} up",
            f"addr add {WAN_GATEWAY_IP}/{wan_prefix} dev {names.wan}",
            f"link set {names.wan} up",
            f"route add {INTERNET} via {WAN_INTERNET_IP}",
        ],
    )
    ip_batch(
        names.internet_ns,
        [
            "link set lo up",
            f"addr add {upstream_dns}/32 dev lo",
            f"route add local {INTERNET} dev lo",
            f"addr add {WAN_INTERNET_IP}/{wan_prefix} dev {names.uplink}",
            f"link set {names.uplink} up",
        ],
    )
    run(["ip", "netns", "exec", names.gateway_ns, "nft", "-f", "-"], input=nft_ruleset(names))


def create_phone(names: Names, index: int, mac: str) -> str:
    """Create phone ``index``'s namespace and plug it into the bridge; returns the namespace name."""
    ns = names.phone_ns(index)
    port = names.phone_port(index)
    ip_batch(None, [f"netns add {ns}"])
    ip_batch(
        names.gateway_ns,
        [
            f"link add {port} type veth peer name {names.phone_if} address {mac} netns {ns}",
            f"link set {port} master {names.bridge}",
            f"link set {port} up",
        ],
    )
    # addrgenmode none: no IPv6 link-local address, so the phone sends no IPv6 chatter at all.
    ip_batch(
        ns,
        ["link set lo up", f"link set {names.phone_if} addrgenmode none", f"link set {names.phone_if} up"],
    )
    return ns


def list_namespaces() -> list[str]:
    """Every network namespace name on the host (``ip netns list`` prints ``name (id: N)``)."""
    out = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespace_pids(ns: str) -> list[int]:
    """PIDs of processes living in ``ns``: ours by construction, since the namespace is ours."""
    proc = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def delete_namespaces(namespaces: Sequence[str]) -> None:
    """Delete namespaces (their veths go with them); already-missing ones are fine."""
    existing = set(list_namespaces())
    todo = [ns for ns in namespaces if ns in existing]
    if todo:
        run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {ns}\n" for ns in todo), check=False)
