"""What the live state holds and tells its observers: devices and attributed flows.

These are the plain records views are computed from. They carry no behaviour beyond small
derived properties, so views, the terminal UI and the server can read them without reaching into
the state's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from apviz.live.names import NameSource


@dataclass(slots=True)
class Device:
    """A device on the LAN, keyed by its MAC (or by ``ip:ADDR`` until its MAC is known)."""

    key: str
    mac: str | None
    hostname: str | None = None  # the lease's (sanitised) hostname: hostile text, escape it
    ips: set[str] = field(default_factory=set)
    lease_expiry: int | None = None
    first_seen: float = 0.0
    last_seen: float = 0.0
    # When the gateway last refused this device's DNS over TLS (a phone whose Private DNS is set to
    # a provider does not fall back, so its names stay hidden: the phone page says why).
    private_dns_refused: float | None = None

    @property
    def label(self) -> str:
        return self.hostname or self.mac or self.key


@dataclass(slots=True)
class FlowRecord:
    """One connection of a device, with the name it was attributed to."""

    key: tuple[object, ...]  # Flow.key: the kernel id with the original tuple and zone
    id: int
    device: str  # Device.key
    client: str  # LAN address the flow came from
    proto: int
    dst: str  # the address the device connected to (before any DNAT)
    dport: int
    sport: int = 0
    name: str | None = None
    name_source: NameSource | None = None
    # While set (a deadline on the state's clock) the flow's only name is another device's lookup and
    # the views leave it out, so its own name, merely late, can still come first (``name_wait``).
    waiting_until: float | None = None
    foreign_first: bool = False  # it showed another device's name, then its own arrived
    name_at: float | None = None  # when the lookup it is named from was read (own lookups only)
    bytes_up: int = 0
    bytes_down: int = 0
    packets_up: int = 0
    packets_down: int = 0
    tcp_state: str | None = None
    first_seen: float = 0.0
    last_seen: float = 0.0
    closed_at: float | None = None

    @property
    def open(self) -> bool:
        return self.closed_at is None

    @property
    def bytes(self) -> int:
        return self.bytes_up + self.bytes_down


class ChangeKind(StrEnum):
    FLOW_NEW = "flow_new"
    # A name arrived or improved (shared -> asked -> connection, see names.RANK) after the flow, or
    # the flow stopped waiting for its own name (``FlowRecord.waiting_until`` passed).
    FLOW_NAMED = "flow_named"
    FLOW_END = "flow_end"
    FLOW_GONE = "flow_gone"  # hold time after its end passed; removed from the state
    DEVICE = "device"  # a device appeared or changed (name, addresses)
    DEVICE_GONE = "device_gone"


@dataclass(frozen=True, slots=True)
class Change:
    """Told to observers after the state applied an event. ``flow``/``device`` are live objects:
    read them at once, don't keep them."""

    kind: ChangeKind
    flow: FlowRecord | None = None
    device: Device | None = None
