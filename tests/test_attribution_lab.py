"""Attribution end to end in the lab: real dnsmasq, real conntrack, real leases, both log feeds.

Acceptance of the spine issue: a phone's connection carries the phone's MAC, its DHCP hostname and
the exact name it looked up (a); two phones asking different names that share one address are
never credited with each other's name (b); a CNAME chain is credited to the name asked for (c);
all of it through the journald feed too (d); and log rotation and a leases-file replacement lose
no lines and no leases (f).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from apviz.events import DnsQuery, LeaseSnapshot
from apviz.live.model import ChangeKind
from tests.livelab import LiveLab

pytestmark = pytest.mark.lab

FEEDS = ["file", "journal"]


def resolutions(lab):
    return {name: lab.world.resolve(name) for name in lab.world.names}.items()


def shared_pairs(lab):
    """Pairs of different catalogue names that resolve to one address (as CDNs do)."""
    by_address: dict[str, list[str]] = {}
    for name, res in resolutions(lab):
        if len(res.addresses) == 1 and not res.chain:
            by_address.setdefault(res.addresses[0], []).append(name)
    pairs = [names[:2] for names in by_address.values() if len(names) >= 2]
    assert len(pairs) >= 2, "the lab world must have shared addresses"
    return pairs


@pytest.mark.parametrize("feed", FEEDS)
def test_connection_event_carries_mac_hostname_and_exact_name(lab_factory, feed):
    lab = lab_factory(phones=2, log=feed)

    async def main():
        async with LiveLab(lab) as live:
            phone = lab.phones[0]
            started = time.monotonic()
            res = await live.call(lab.phone_connect, phone, "graph.facebook.com", 20000)
            rec = await live.named_flow(phone.ip, res.sport)
            latency = time.monotonic() - started
            dev = live.state.devices[rec.device]
            assert rec.name == "graph.facebook.com"
            assert dev.mac == phone.mac and dev.hostname == phone.hostname
            assert rec.dst == res.address
            # The observers were told: a change for this flow carried the name.
            assert any(c.flow is rec and name == "graph.facebook.com" for _, c, name in live.changes)
            assert latency < 3.0, f"named after {latency:.2f} s"
            # Counters arrive with the destroy event or the refresh dump.
            await live.wait_for(lambda: rec.bytes_down >= 20000, 6, "byte counters")

    asyncio.run(main())


@pytest.mark.parametrize("feed", FEEDS)
def test_two_phones_same_address_never_cross_attributed(lab_factory, feed):
    lab = lab_factory(phones=2, log=feed)
    pairs = shared_pairs(lab)
    a, b = lab.phones

    async def main():
        async with LiveLab(lab) as live:
            expected = {}
            rounds = 0
            while len(expected) < 200:
                name_a, name_b = pairs[rounds % len(pairs)]
                rounds += 1
                # Both ask before either connects: a global "address -> last name" map would
                # credit phone A's connection with phone B's name.
                ra = await live.call(lab.phone_resolve, a, name_a)
                rb = await live.call(lab.phone_resolve, b, name_b)
                assert ra.addresses == rb.addresses
                ca = await live.call(lab.phone_connect, a, None, 200, address=ra.addresses[0])
                cb = await live.call(lab.phone_connect, b, None, 200, address=rb.addresses[0])
                # Keyed with the address too: the kernel reuses a source port towards another address.
                expected[(a.ip, ca.sport, ra.addresses[0])] = name_a
                expected[(b.ip, cb.sport, rb.addresses[0])] = name_b
            flows = {}
            for client, sport, dst in expected:
                flows[(client, sport, dst)] = await live.named_flow(client, sport, timeout=10, dst=dst)
            wrong = [(k, flows[k].name, v) for k, v in expected.items() if flows[k].name != v]
            assert wrong == [], f"{len(wrong)} cross-attributions of {len(expected)}"
            assert len(expected) >= 200

    asyncio.run(main())


@pytest.mark.parametrize("feed", FEEDS)
def test_cname_chain_credited_to_the_name_asked_for(lab_factory, feed):
    lab = lab_factory(phones=1, log=feed)
    chains = [name for name, res in resolutions(lab) if len(res.chain) >= 2]
    assert "www.apple.com" in chains

    async def main():
        async with LiveLab(lab) as live:
            phone = lab.phones[0]
            for name in ["www.netflix.com", "www.apple.com", *chains[:3]]:
                res = await live.call(lab.phone_connect, phone, name, 500)
                assert res.resolve.cnames, f"{name} should be a CNAME chain"
                rec = await live.named_flow(phone.ip, res.sport)
                assert rec.name == name, (rec.name, name, res.resolve.cnames)

    asyncio.run(main())


def test_log_rotation_and_leases_replacement_lose_nothing(lab_factory):
    lab = lab_factory(phones=2, log="file")
    log_path = Path(lab.dnsmasq_log)

    async def main():
        async with LiveLab(lab) as live:
            phone = lab.phones[0]
            names = [
                "www.google.com",
                "icloud.com",
                "graph.facebook.com",
                "www.netflix.com",
                "doubleclick.net",
            ]
            asked = 0
            for rnd in range(6):
                for name in names:
                    await live.call(lab.phone_resolve, phone, name)
                    asked += 1
                # Rotate like logrotate's "create": rename, create the new file with the old one's
                # owner (dnsmasq has dropped root and cannot create it), then SIGUSR2 to reopen.
                st = log_path.stat()
                os.rename(log_path, log_path.with_suffix(f".log.{rnd}"))
                log_path.touch(mode=st.st_mode & 0o777)
                os.chown(log_path, st.st_uid, st.st_gid)
                pid = int((lab.run_dir / "gateway" / "dnsmasq.pid").read_text())
                os.kill(pid, signal.SIGUSR2)
                # logrotate runs daily, not six times a second: give the follower (polling every
                # 0.1 s) a moment to see each new file. Lines written just before each rename are
                # still read from the old file.
                await asyncio.sleep(0.3)

            def queries():
                return [e for e in live.events if isinstance(e, DnsQuery) and e.client == phone.ip]

            await live.wait_for(lambda: len(queries()) >= asked, 8, f"{asked} queries")
            await asyncio.sleep(0.5)
            assert len(queries()) == asked  # no line lost, none read twice

            # Replace the leases file atomically with one more lease than dnsmasq wrote.
            await live.wait_for(
                lambda: len(lab.phones) == sum(d.mac is not None for d in live.state.devices.values())
            )
            text = Path(lab.leases_file).read_text()
            extra = f"{int(time.time()) + 3600} 02:a5:00:00:00:77 10.99.1.250 visitor-77 *\n"
            tmp = Path(lab.leases_file).with_suffix(".new")
            tmp.write_text(text + extra)
            os.replace(tmp, lab.leases_file)
            await live.wait_for(lambda: "02:a5:00:00:00:77" in live.state.devices, 5, "the new lease")
            snaps = [e for e in live.events if isinstance(e, LeaseSnapshot)]
            hosts = {lease.hostname for lease in snaps[-1].leases}
            assert {p.hostname for p in lab.phones} | {"visitor-77"} <= hosts
            for p in lab.phones:
                assert live.state.devices[p.mac].hostname == p.hostname
            assert not any(c.kind is ChangeKind.DEVICE_GONE and c.device.mac for _, c, _ in live.changes)

    asyncio.run(main())
