"""Plain data types that travel from the sources to the live state.

Sources produce these and nothing else; the live state consumes them and knows nothing of how
they were read. Keeping them here, free of behaviour, lets either side change without the other
(the capture/presentation split Sniffnet uses). Addresses are kept as text in canonical form
(``ipaddress`` spelling) so IPv4 and IPv6 travel the same way and compare cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

# --------------------------------------------------------------------------------------------------
# conntrack


@dataclass(frozen=True, slots=True)
class FlowTuple:
    """One direction of a connection, as the kernel tracks it."""

    proto: int  # IPPROTO_* number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...)
    src: str
    dst: str
    sport: int  # 0 when the protocol has no ports (ICMP carries its id in ``sport``)
    dport: int


@dataclass(slots=True)
class Flow:
    """A conntrack entry: the original and reply tuples plus what the kernel counts about it.

    NAT is not reported by the kernel as attributes in a dump, so it is derived by comparing the
    reply tuple with the original one (``snat``/``dnat``).
    """

    id: int
    family: int  # socket.AF_INET or socket.AF_INET6
    orig: FlowTuple
    reply: FlowTuple
    status: int = 0  # IPS_* bits
    tcp_state: str | None = None  # "ESTABLISHED", "TIME_WAIT", ... for TCP only
    timeout: int | None = None
    mark: int = 0
    zone: int = 0
    orig_packets: int = 0
    orig_bytes: int = 0
    reply_packets: int = 0
    reply_bytes: int = 0
    start_ns: int | None = None  # nf_conntrack_timestamp, CLOCK_REALTIME ns
    stop_ns: int | None = None

    @property
    def key(self) -> tuple[int, FlowTuple, int]:
        """What identifies a flow: the kernel's id is a 32-bit hash and two live entries can share
        it (about one pair per 100k entries), so the original tuple and zone go with it."""
        return (self.id, self.orig, self.zone)

    @property
    def snat(self) -> bool:
        """True when the reply comes back to another address than the one that sent it."""
        return self.reply.dst != self.orig.src or self.reply.dport != self.orig.sport

    @property
    def dnat(self) -> bool:
        """True when the reply comes from another address than the one first addressed."""
        return self.reply.src != self.orig.dst or self.reply.sport != self.orig.dport

    @property
    def bytes(self) -> int:
        return self.orig_bytes + self.reply_bytes


class FlowEventKind(StrEnum):
    NEW = "new"
    UPDATE = "update"
    DESTROY = "destroy"


@dataclass(frozen=True, slots=True)
class FlowEvent:
    """A conntrack event: a flow was created, changed, or removed."""

    kind: FlowEventKind
    flow: Flow


@dataclass(frozen=True, slots=True)
class FlowSnapshot:
    """The complete conntrack table at one moment (initial dump, resync after loss, counter refresh).

    The consumer replaces what it knows with this: flows it holds that are absent here are gone.
    ``reason`` says why it was taken ("initial", "resync", "refresh") for logs and metrics.
    """

    flows: list[Flow]
    reason: str


# --------------------------------------------------------------------------------------------------
# dnsmasq query and DHCP log


class DnsAnswerKind(StrEnum):
    """Where dnsmasq took an answer from (the word before the name in its log line)."""

    REPLY = "reply"  # from upstream
    CACHED = "cached"
    CONFIG = "config"  # address=, host-record=, local data
    HOSTS = "hosts"  # /etc/hosts or addn-hosts: "/path/to/file name is ip"
    DHCP = "dhcp"  # a DHCP lease name
    CACHED_STALE = "cached-stale"


@dataclass(frozen=True, slots=True)
class DnsQuery:
    """``query[A] name from client``."""

    ts: float
    serial: int | None  # log-queries=extra only
    client: str  # the address that asked
    qtype: str  # "A", "AAAA", "HTTPS", ...
    name: str


@dataclass(frozen=True, slots=True)
class DnsForwarded:
    """``forwarded name to server``."""

    ts: float
    serial: int | None
    client: str | None
    name: str
    server: str


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """One answer line: ``reply|cached|config|<file> name is value``.

    ``address`` is set when the value is an IP address; ``cname`` is true for ``<CNAME>`` lines
    (the target is on the next answer line of the same query); ``rcode`` holds NODATA, NXDOMAIN,
    SERVFAIL, REFUSED ... for negative answers (with their ``-IPv4``/``-IPv6`` suffix removed).
    """

    ts: float
    serial: int | None
    client: str | None
    kind: DnsAnswerKind
    name: str
    address: str | None = None
    cname: bool = False
    rcode: str | None = None
    value: str = ""  # the raw text after "is", for records that are neither (e.g. <HTTPS>)


@dataclass(frozen=True, slots=True)
class DhcpEvent:
    """A ``dnsmasq-dhcp`` line about a lease: DHCPACK, DHCPRELEASE, DHCPDISCOVER, ...

    ``hostname`` is the name dnsmasq logged on the line; it is hostile text (a visitor chose it).
    """

    ts: float
    xid: int | None
    message: str  # "DHCPACK", "DHCPREQUEST", ...
    interface: str | None
    ip: str | None
    mac: str | None
    hostname: str | None = None


@dataclass(frozen=True, slots=True)
class DhcpClientName:
    """``client provides name: X``: the raw name a client sent, before dnsmasq sanitises it."""

    ts: float
    xid: int | None
    name: str


# --------------------------------------------------------------------------------------------------
# leases and neighbours


@dataclass(frozen=True, slots=True)
class Lease:
    """One line of the dnsmasq leases file. ``expiry`` is epoch seconds (0 = infinite).

    IPv6 leases carry an IAID where IPv4 ones carry the MAC, so ``mac`` is None for them: the
    neighbour table supplies the MAC of such addresses.
    """

    expiry: int
    mac: str | None
    ip: str
    hostname: str | None
    client_id: str | None


@dataclass(frozen=True, slots=True)
class LeaseSnapshot:
    """All current leases, re-read after the file changed."""

    leases: tuple[Lease, ...]
    errors: int = 0  # lines that could not be parsed


@dataclass(frozen=True, slots=True)
class Neighbour:
    """An ARP/NDP entry: ``ip`` is at ``mac`` (``gone`` when the kernel dropped it)."""

    ip: str
    mac: str | None
    interface: str | None = None
    gone: bool = False


@dataclass(frozen=True, slots=True)
class SourceError:
    """A source could not do its job for a while; shown to the operator, never fatal."""

    source: str
    message: str
    counts: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# names read from the connections themselves (apviz.sources.packets)


class ServerNameVia(StrEnum):
    """Which first packet a server name was read from."""

    TLS = "tls"  # the TLS ClientHello's server_name, over TCP
    QUIC = "quic"  # the ClientHello inside a QUIC Initial packet (decrypted with its public keys)


@dataclass(frozen=True, slots=True)
class ServerName:
    """A server name a LAN device wrote into a connection's first packets.

    The flow is identified by its original tuple as the device sent it (``client``/``sport`` to
    ``server``/``dport``, ``proto`` 6 or 17), the same tuple conntrack reports, so the state can find
    the flow however the two sources interleave. ``name`` is hostile text (any device may write
    anything there); None when the hello carried no name. With Encrypted Client Hello (``ech``) the
    name is the provider's public front, not the site the device visits.
    """

    ts: float
    client: str
    sport: int
    server: str
    dport: int
    proto: int
    name: str | None
    via: ServerNameVia
    ech: bool = False
    alpn: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ResolverAnswer:
    """A plain DNS answer that reached a LAN device from a resolver other than the gateway's dnsmasq.

    ``name`` is the question; ``addresses`` the A/AAAA records at the end of any CNAME chain
    (``cnames``, in answer order). Names are hostile text.
    """

    ts: float
    client: str
    resolver: str
    name: str
    addresses: tuple[str, ...]
    cnames: tuple[str, ...] = ()
    rcode: str = "NOERROR"
    ttl: int | None = None


@dataclass(frozen=True, slots=True)
class PrivateDnsRefused:
    """The gateway's policy refused a device's DNS-over-TLS connection (port 853).

    A phone in Android's automatic mode falls back to plain DNS after this; one set to a provider
    (strict mode) does not, and its names stay hidden: the phone page tells the visitor why.
    """

    ts: float
    client: str
    server: str
    proto: int
    dport: int = 853


Event = (
    FlowEvent
    | FlowSnapshot
    | DnsQuery
    | DnsForwarded
    | DnsAnswer
    | DhcpEvent
    | DhcpClientName
    | LeaseSnapshot
    | Neighbour
    | ServerName
    | ResolverAnswer
    | PrivateDnsRefused
    | SourceError
)
