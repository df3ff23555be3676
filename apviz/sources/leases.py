"""The dnsmasq leases file: which MAC holds which address, and the hostname the device gave.

dnsmasq rewrites the file on every lease change, either in place or (with some packagings and in
tests) by an atomic rename. Watching the file's identity and size/mtime catches both, and a small
poll interval costs nothing next to a DHCP exchange. A file that vanishes keeps the last snapshot:
the leases have not gone, only the file (it may be in the middle of being replaced).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from apviz.events import Lease, LeaseSnapshot, SourceError

log = logging.getLogger(__name__)

MAX_HOSTNAME = 255
MAX_CLIENT_ID = 1024  # DHCP option 61 holds 255 bytes, 765 characters as dnsmasq writes them


def _mac(text: str) -> str | None:
    """A canonical lower-case MAC, or None for an IPv6 IAID or anything else."""
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        return None
    try:
        return ":".join(f"{int(p, 16):02x}" for p in parts)
    except ValueError:
        return None


def parse_lease_line(line: str) -> Lease | None:
    """Parse ``expiry mac ip hostname client-id``; None for the ``duid`` line and malformed ones."""
    fields = line.split()
    # dnsmasq writes the expiry as plain ASCII digits; int() would also take "+5", "1_000" and
    # other scripts' digits, none of which dnsmasq writes.
    if len(fields) < 4 or not (fields[0].isascii() and fields[0].isdigit()):
        return None
    try:
        ip = str(ipaddress.ip_address(fields[2]))
    except ValueError:
        return None
    expiry = int(fields[0])
    hostname = None if fields[3] == "*" else fields[3][:MAX_HOSTNAME]
    client_id = fields[4][:MAX_CLIENT_ID] if len(fields) > 4 and fields[4] != "*" else None
    return Lease(expiry=expiry, mac=_mac(fields[1]), ip=ip, hostname=hostname, client_id=client_id)


def parse_leases(text: str) -> LeaseSnapshot:
    """Parse a whole leases file, counting the lines that are neither a lease nor the DUID line."""
    leases: list[Lease] = []
    errors = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        lease = parse_lease_line(line)
        if lease is None:
            if not line.startswith("duid "):
                errors += 1
            continue
        leases.append(lease)
    return LeaseSnapshot(leases=tuple(leases), errors=errors)


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


class LeasesSource:
    """Async iterator of :class:`LeaseSnapshot`, one at start and one after every change."""

    def __init__(self, path: str | os.PathLike[str], interval: float = 0.5) -> None:
        if interval <= 0:
            raise ValueError(f"leases poll interval must be positive, got {interval!r}")
        self.path = Path(path)
        self.interval = interval
        self.reloads = 0
        self.errors = 0  # malformed lines, counted at every reload that saw them

    def read(self) -> LeaseSnapshot | None:
        """Read the file now; None when it does not exist or cannot be read."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read leases file %s: %s", self.path, exc)
            return None
        self.reloads += 1
        snapshot = parse_leases(text)
        self.errors += snapshot.errors
        return snapshot

    async def __aiter__(self) -> AsyncIterator[LeaseSnapshot | SourceError]:
        seen: tuple[int, int, int, int] | None = None
        missing_reported = False
        while True:
            ident = _identity(self.path)
            if ident is None:
                seen = None  # whatever appears next at this path is new
                if not missing_reported:
                    missing_reported = True
                    msg = f"leases file {self.path} is missing; keeping the last known leases"
                    log.warning(msg)
                    yield SourceError("leases", msg)
            elif ident != seen:
                snapshot = self.read()
                # Re-check: a writer may have replaced the file while we read it.
                if snapshot is not None and _identity(self.path) == ident:
                    seen = ident
                    missing_reported = False
                    if snapshot.errors:
                        log.warning("%d malformed line(s) in %s", snapshot.errors, self.path)
                    yield snapshot
                    continue
            await asyncio.sleep(self.interval)
