"""A burst of 100k new connections through the lab gateway, against a deliberately small event
buffer: the kernel drops events (ENOBUFS), the conntrack source resynchronises with a dump, and the
live state ends equal to a fresh dump of the gateway's table: no flow lost, none duplicated."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from apviz.sources.conntrack import dump
from tests.livelab import LiveLab

pytestmark = pytest.mark.lab

BURST = 100_000

SENDER = """
import socket, sys
n = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(n):
    # one new flow per packet: 1,000 addresses x 100 ports in 198.18.100.0/22 (no listener there)
    host, port = divmod(i, 100)
    s.sendto(b"x", (f"198.18.{100 + host // 256}.{host % 256}", 20000 + port))
"""


def test_burst_overflows_small_buffer_and_resync_matches_a_fresh_dump(lab_factory):
    lab = lab_factory(phones=1)
    phone = lab.phones[0]

    async def main():
        async with LiveLab(lab, conntrack_rcvbuf=64 * 1024, conntrack_refresh=3600.0) as live:
            started = time.monotonic()
            sent = await live.call(
                lab.exec_in, phone.ns, [sys.executable, "-c", SENDER, str(BURST)], timeout=120
            )
            assert sent.returncode == 0, sent.stderr
            burst_s = time.monotonic() - started
            await live.wait_for(lambda: live.state.counts.get("resyncs", 0) >= 1, 30, "a resync (ENOBUFS)")

            def open_keys():
                return {key for key, rec in live.state.flows.items() if rec.open}

            def truth():
                flows = dump(lab.gateway_ns)
                return {f.key for f in flows if f.orig.src == phone.ip and f.orig.dst.startswith("198.18.")}

            # Let the source drain what is queued, then compare with a dump taken now.
            deadline = time.monotonic() + 60
            while True:
                await asyncio.sleep(0.5)
                if live.pipeline.queue.empty():
                    mine, fresh = open_keys(), await asyncio.to_thread(truth)
                    if mine == fresh or time.monotonic() > deadline:
                        break
            assert len(fresh) >= BURST, f"only {len(fresh)} entries in the gateway's table"
            missing, extra = fresh - mine, mine - fresh
            assert not missing and not extra, f"{len(missing)} lost, {len(extra)} stale of {len(fresh)}"
            print(f"burst of {BURST} sent in {burst_s:.1f} s, resyncs={live.state.counts['resyncs']}")

    asyncio.run(main())
