"""The neighbour table source against the lab gateway's real ARP table: dump, then live events."""

from __future__ import annotations

import asyncio

import pytest

from apviz.events import Neighbour
from apviz.sources.neighbours import NeighbourSource

pytestmark = pytest.mark.lab


def test_gateway_neighbours_map_phone_addresses_to_their_macs(lab_factory):
    lab = lab_factory(phones=2)
    first, second = lab.phones
    lab.phone_resolve(first, "icloud.com")  # the gateway now has an ARP entry for the first phone
    # The second phone's entry must arrive as a live event, not in the initial dump.
    lab.exec_in(lab.gateway_ns, ["ip", "neigh", "del", second.ip, "dev", lab.bridge], check=False)

    async def main():
        seen: dict[str, str] = {}
        live: list[str] = []

        async def collect():
            started = asyncio.get_running_loop().time()
            async for ev in NeighbourSource(lab.gateway_ns):
                if asyncio.get_running_loop().time() - started > 0.4:
                    live.append(ev.ip)
                assert isinstance(ev, Neighbour)
                if not ev.gone and ev.mac:
                    seen[ev.ip] = ev.mac
                if first.ip in seen and second.ip in seen:
                    return

        task = asyncio.create_task(collect())
        await asyncio.sleep(0.5)  # the dump is in: now make a new entry appear live
        await asyncio.to_thread(
            lab.exec_in,
            lab.gateway_ns,
            [
                "ip",
                "neigh",
                "replace",
                second.ip,
                "lladdr",
                second.mac,
                "dev",
                lab.bridge,
                "nud",
                "reachable",
            ],
        )
        await asyncio.wait_for(task, 10)
        return seen, live

    seen, live = asyncio.run(main())
    assert second.ip in live
    assert seen[first.ip] == first.mac
    assert seen[second.ip] == second.mac
