"""Names of phones that do not ask dnsmasq, end to end: the real service with the packet path on a lab.

One lab with the network policy on (as the exhibit ships) and the personas that hide their DNS.
The service is ``apviz serve``'s (conntrack, dnsmasq log, leases, ``[names] capture``), listening
on the gateway's LAN address too, so ``/api/me`` is asked from inside each phone's namespace:

(a) TLS and QUIC connections whose address came from DoH or was pinned are named from the
    connection (source "connection"), on the right device;
(b) two phones asking dnsmasq for different names of one CDN address, the second connecting at
    once (its own answer is read after the kernel reports the flow): no connection ever shows the
    other phone's name first, over many tries;
(c) a phone with a hard-coded resolver opens plain TCP (no TLS): named from the answer the packet
    path read (source "resolver");
(d) a strict Private DNS phone, refused by the policy, is told so on /api/me;
(e) the DoH connection itself is labelled private DNS on /api/me.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest

from apviz.lab.lab import Lab
from apviz.lab.phone import Phone
from apviz.live.model import ChangeKind, FlowRecord
from apviz.live.names import NameSource
from apviz.service import Service
from tests.test_web_lab import lab_service, until

pytestmark = pytest.mark.lab

PERSONAS = ["app-own-doh", "tls-bare-address", "android-phone", "android-phone", "hardcoded-resolver"]
STRICT = "android-strict-dns"
SHARED = ("graph.facebook.com", "graph.instagram.com")  # one Meta front end address in world.toml
TCP, UDP = 6, 17

FETCH = """
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    print(r.read().decode())
"""


def api_me(lab: Lab, phone: Phone, port: int) -> dict[str, Any]:
    """/api/me as the phone's browser would ask for it: from inside its namespace."""
    url = f"http://{lab.gateway_ip}:{port}/api/me"
    proc = lab.exec_in(phone.ns, [sys.executable, "-c", FETCH, url], timeout=20)
    return json.loads(proc.stdout)


def flow_of(service: Service, client: str, sport: int, dst: str, dport: int, proto: int) -> FlowRecord | None:
    for rec in service.state.flows.values():
        if (rec.client, rec.sport, rec.dst, rec.dport, rec.proto) == (client, sport, dst, dport, proto):
            return rec
    return None


async def named(service: Service, phone: Phone, res: Any, source: NameSource) -> FlowRecord:
    proto = TCP if res.proto == "tcp" else UDP

    def ready() -> FlowRecord | None:
        rec = flow_of(service, phone.ip, res.sport, res.address, res.port, proto)
        return rec if rec is not None and rec.name_source is source else None

    return await until(ready, 10, f"{phone.hostname}'s {res.name} named from {source}")


def test_phones_that_hide_their_dns_are_named_and_told(lab_factory):
    lab = lab_factory(phones=0, policy=True)
    phones = [lab.add_phone(f"{p}-{i}", p, traffic=False) for i, p in enumerate(PERSONAS, 1)]
    doh, pinned, android_a, android_b, hardcoded = phones
    strict = lab.add_phone("strict-6", STRICT, traffic=False)

    async def main() -> None:
        async with lab_service(lab, names={"capture": True}) as (service, port):
            first_shown: dict[tuple[object, ...], tuple[str | None, str | None, str]] = {}

            def observe(change: Any) -> None:
                rec = change.flow
                if (
                    rec is not None
                    and change.kind in (ChangeKind.FLOW_NEW, ChangeKind.FLOW_NAMED)
                    and rec.waiting_until is None
                    and rec.key not in first_shown
                ):
                    source = str(rec.name_source) if rec.name_source is not None else None
                    first_shown[rec.key] = (rec.name, source, rec.device)

            service.state.observers.append(observe)

            # (a) DoH-resolved TLS and QUIC, and TLS to a pinned address: named from the connection.
            cases = [
                (doh, {"name": "bidder.criteo.com"}, "doh"),
                (doh, {"name": "v16-webapp.tiktok.com", "proto": "udp"}, "doh"),
                (pinned, {"name": "dns.weixin.qq.com", "address": "198.18.12.11"}, "none"),
            ]
            for phone, kwargs, via in cases:
                res = await asyncio.to_thread(lab.phone_connect, phone, nbytes=2000, **kwargs)
                assert res.resolved_via == via and res.security == ("quic" if res.proto == "udp" else "tls")
                rec = await named(service, phone, res, NameSource.CONNECTION)
                assert rec.name == kwargs["name"] and rec.device == phone.mac.lower()
            me = await asyncio.to_thread(api_me, lab, doh, port)
            by_name = {d["name"]: d for d in me["destinations"]}
            for name in ("bidder.criteo.com", "v16-webapp.tiktok.com"):
                assert "connection" in by_name[name]["name_sources"], by_name[name]

            # (e) The DoH connection itself is shown as private DNS, not as the resolver's company.
            hidden = [d for d in me["destinations"] if d.get("hidden") == "private-dns"]
            assert hidden, me["destinations"]
            assert {d["name"] for d in hidden} == {"doh.opendns.com"}

            # (c) Plain TCP from a phone whose resolver is hard-coded: named from its ResolverAnswer.
            res = await asyncio.to_thread(
                lab.phone_connect, hardcoded, "device-metrics-us.amazon.com", 2000, 80, tls=False
            )
            assert res.resolved_via == "resolver" and res.security == "plain"
            rec = await named(service, hardcoded, res, NameSource.RESOLVER)
            assert rec.name == "device-metrics-us.amazon.com" and rec.device == hardcoded.mac.lower()

            # (d) Strict Private DNS: the policy refuses DoT, the phone cannot look up; /api/me says why.
            with pytest.raises(Exception, match="private DNS"):
                await asyncio.to_thread(lab.phone_connect, strict, "graph.facebook.com", 1000)
            await until(
                lambda: (
                    service.state.devices.get(strict.mac.lower()) is not None
                    and service.state.devices[strict.mac.lower()].private_dns_refused is not None
                ),
                10,
                "the refused DoT on the strict phone's device",
            )
            assert (await asyncio.to_thread(api_me, lab, strict, port))["private_dns_refused"] is True
            assert (await asyncio.to_thread(api_me, lab, android_a, port))["private_dns_refused"] is False

            # (b) The dnsmasq fallback race on a CDN-shared address: A asks for X, B asks for Y and
            # connects at once (plain and TLS); B's own answer may be read after its flow appears.
            # The roles swap each try, so B's own earlier lookup (as A) of the other name is there
            # too, older than name_wait: its late new answer must still win.
            tries = []
            for i in range(16):
                a, b = (android_a, android_b) if i % 2 == 0 else (android_b, android_a)
                x, y = SHARED if i % 4 < 2 else SHARED[::-1]
                await asyncio.sleep(service.state.config.name_wait + 0.1)
                await asyncio.to_thread(lab.phone_resolve, a, x)
                plain = i % 3 != 2
                res = await asyncio.to_thread(
                    lab.phone_connect, b, y, 500, 80 if plain else 443, tls=not plain
                )
                tries.append((b, y, res))
            late = 0
            for b, y, res in tries:
                rec = await until(
                    lambda b=b, res=res: flow_of(service, b.ip, res.sport, res.address, res.port, TCP),
                    10,
                    "the race's flow",
                )
                try:
                    await until(lambda rec=rec, y=y: rec.waiting_until is None and rec.name == y, 10, y)
                except TimeoutError:
                    pytest.fail(f"{b.hostname} {res.sport} asked {y}: {rec.name} ({rec.name_source})")
                shown = first_shown.get(rec.key)
                assert shown is not None
                # First shown: Y, unnamed (even A's answer not read yet), or B's own old lookup X for a
                # moment (its new one read late; apviz then renames it); never A's lookup.
                assert shown[1] != "shared", (b.hostname, y, shown)
                late += shown[0] != y
                assert not rec.foreign_first and rec.device == b.mac.lower()
            assert service.state.counts["foreign_name_first"] == 0
            assert service.state.counts["own_names_late"] <= late  # each rename was of a late one
            # No flow of this whole test showed another device's name first.
            assert not [s for s in first_shown.values() if s[1] == "shared"], first_shown

    asyncio.run(main())
