"""The leases file: parsing, and reloading on in-place rewrite, atomic replace and deletion."""

import asyncio
import os

from apviz.events import LeaseSnapshot, SourceError
from apviz.sources.leases import LeasesSource, parse_leases

REAL = """1763780000 02:a5:00:00:00:01 10.99.1.101 phone-1 01:02:a5:00:00:00:01
1763780100 02:A5:00:00:00:02 10.99.1.102 * *
duid 00:01:00:01:2c:aa:bb:cc:02:a5:00:00:00:09
1763780200 3456789 fd00::1:5 laptop-6 00:01:00:01:2c:aa:bb:cc:02:a5:00:00:00:09
garbage line
0 02:a5:00:00:00:03 10.99.1.103 tv-1 *
"""


def test_parse_real_lines():
    snap = parse_leases(REAL)
    assert snap.errors == 1
    by_ip = {lease.ip: lease for lease in snap.leases}
    assert by_ip["10.99.1.101"].hostname == "phone-1"
    assert by_ip["10.99.1.101"].client_id == "01:02:a5:00:00:00:01"
    assert by_ip["10.99.1.102"].mac == "02:a5:00:00:00:02"
    assert by_ip["10.99.1.102"].hostname is None
    assert by_ip["fd00::1:5"].mac is None  # IPv6 leases carry an IAID, not a MAC
    assert by_ip["10.99.1.103"].expiry == 0


async def _collect(src, n, actions):
    out = []

    async def consume():
        async for ev in src:
            out.append(ev)
            if len(out) >= n:
                return

    task = asyncio.create_task(consume())
    for delay, act in actions:
        await asyncio.sleep(delay)
        act()
    await asyncio.wait_for(task, 5)
    return out


def test_reload_on_rewrite_replace_and_delete(tmp_path):
    path = tmp_path / "dnsmasq.leases"
    path.write_text("1 02:00:00:00:00:01 10.0.0.1 a *\n")

    def rewrite():
        path.write_text("1 02:00:00:00:00:01 10.0.0.1 a *\n1 02:00:00:00:00:02 10.0.0.2 b *\n")

    def replace():
        tmp = tmp_path / "new"
        tmp.write_text("1 02:00:00:00:00:03 10.0.0.3 c *\n")
        os.replace(tmp, path)

    def delete():
        path.unlink()

    def recreate():
        path.write_text("1 02:00:00:00:00:04 10.0.0.4 d *\n")

    src = LeasesSource(path, interval=0.02)
    events = asyncio.run(_collect(src, 5, [(0.1, rewrite), (0.1, replace), (0.1, delete), (0.1, recreate)]))
    snaps = [e for e in events if isinstance(e, LeaseSnapshot)]
    assert [[lease.hostname for lease in s.leases] for s in snaps] == [["a"], ["a", "b"], ["c"], ["d"]]
    assert any(isinstance(e, SourceError) for e in events)  # the missing file was reported
