"""Views computed from the live state. Pure functions: state in, plain rows out."""

from __future__ import annotations

from dataclasses import dataclass, field

from apviz.live.model import FlowRecord
from apviz.live.state import LiveState


@dataclass(slots=True)
class NameRow:
    """One name (or, for flows without one, one address) a device talked to."""

    name: str | None
    addresses: set[str] = field(default_factory=set)
    open: int = 0
    total: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    shared: bool = False  # the name came from another device's answer (a fallback)

    @property
    def bytes(self) -> int:
        return self.bytes_up + self.bytes_down


@dataclass(slots=True)
class DeviceRow:
    key: str
    label: str
    mac: str | None
    ips: list[str]
    names: list[NameRow]

    @property
    def bytes(self) -> int:
        return sum(n.bytes for n in self.names)

    @property
    def open(self) -> int:
        return sum(n.open for n in self.names)


def _add(row: NameRow, rec: FlowRecord) -> None:
    row.addresses.add(rec.dst)
    row.total += 1
    row.open += rec.open
    row.bytes_up += rec.bytes_up
    row.bytes_down += rec.bytes_down


def device_table(state: LiveState, max_names: int = 12) -> list[DeviceRow]:
    """Devices (busiest first), each with the names it talked to (busiest first)."""
    groups: dict[str, dict[str, NameRow]] = {key: {} for key in state.devices}
    for rec in state.flows.values():
        if rec.waiting_until is not None:
            continue  # waiting for its own name (name_wait): shown once it has one or the wait ends
        per = groups.setdefault(rec.device, {})
        key = rec.name or f"addr:{rec.dst}"
        row = per.get(key)
        if row is None:
            row = per[key] = NameRow(name=rec.name)
        row.shared = row.shared or (rec.name_source == "shared")
        _add(row, rec)
    rows = []
    for key, per in groups.items():
        dev = state.devices.get(key)
        names = sorted(per.values(), key=lambda r: (-r.bytes, -r.total, r.name or ""))[:max_names]
        rows.append(
            DeviceRow(
                key=key,
                label=dev.label if dev else key,
                mac=dev.mac if dev else None,
                ips=sorted(dev.ips) if dev else [],
                names=names,
            )
        )
    rows.sort(key=lambda d: (-d.bytes, d.label))
    return rows
