"""The neighbour table (ARP for IPv4, NDP for IPv6): addresses to MACs for hosts without a lease.

IPv6 devices pick their own addresses (SLAAC, privacy addresses) and static hosts never ask for
a lease, so the leases file alone cannot say which device a flow belongs to. The kernel's
neighbour table can. We take one dump at start and then follow RTM_NEWNEIGH/RTM_DELNEIGH events,
which is what pyroute2 is good at.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from apviz.events import Neighbour

log = logging.getLogger(__name__)

RTMGRP_NEIGH = 0x4
NUD_INCOMPLETE = 0x01
NUD_FAILED = 0x20
NUD_NOARP = 0x40


def neighbour_from_msg(msg: Mapping[str, Any]) -> Neighbour | None:
    """Turn a pyroute2 neighbour message into a :class:`Neighbour`, or None if it says nothing useful.

    Multicast and NOARP entries carry synthetic MACs and no device behind them, so they are skipped.
    """
    get = msg.get
    dst = get("dst") if callable(get) else None
    if not dst:
        return None
    try:
        addr = ipaddress.ip_address(dst)
    except ValueError:
        return None
    if addr.is_multicast or addr.is_loopback:
        return None
    state = msg.get("state", 0) or 0
    ifindex = msg.get("ifindex")
    iface = str(ifindex) if ifindex is not None else None
    if msg.get("event") == "RTM_DELNEIGH" or state & (NUD_FAILED | NUD_INCOMPLETE):
        return Neighbour(ip=str(addr), mac=None, interface=iface, gone=True)
    if state & NUD_NOARP:
        return None
    mac = msg.get("lladdr")
    if not mac:
        return None
    return Neighbour(ip=str(addr), mac=str(mac).lower(), interface=iface)


def neighbours_from_msgs(msgs: Iterable[Mapping[str, Any]]) -> list[Neighbour]:
    return [n for n in (neighbour_from_msg(m) for m in msgs) if n is not None]


class NeighbourSource:
    """Async iterator of :class:`Neighbour` events for one network namespace (None: the host's)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

    async def __aiter__(self) -> AsyncIterator[Neighbour]:
        from pyroute2 import AsyncIPRoute

        # Subscribe before dumping so nothing that changes during the dump is missed.
        events = AsyncIPRoute(netns=self.netns, groups=0)
        try:
            await events.setup_endpoint()
            await events.bind(groups=RTMGRP_NEIGH)
            async with AsyncIPRoute(netns=self.netns) as ipr:
                for n in neighbours_from_msgs([m async for m in await ipr.get_neighbours()]):
                    yield n
            while True:
                async for msg in events.get():
                    n = neighbour_from_msg(msg)
                    if n is not None:
                        yield n
        finally:
            events.close()
