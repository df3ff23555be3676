"""The hub: encode once, bounded queues, resync of slow clients, resume by event id."""

import asyncio
import json

import pytest

from apviz.live.diff import apply, diff
from apviz.server.hub import Hub, TooManyStreams


def parse(chunk: bytes):
    fields = dict(line.split(": ", 1) for line in chunk.decode().strip().split("\n"))
    _, _, seq = fields["id"].partition(".")
    return fields["event"], int(seq), json.loads(fields["data"])


def view(n):
    return {"totals": {"n": n}, "nodes": {f"o:{i}": {"id": f"o:{i}", "v": i} for i in range(n)}}


def test_diff_roundtrip():
    a, b = view(3), view(5)
    b["nodes"]["o:1"]["v"] = 99
    d = diff(a, b)
    assert set(d) == {"totals", "nodes"}
    assert sorted(x["id"] for x in d["nodes"]["upsert"]) == ["o:1", "o:3", "o:4"]
    assert apply(a, d) == b
    assert diff(b, b) == {}
    assert apply(b, diff(b, view(1))) == view(1)


def test_same_bytes_object_fans_out_and_snapshot_first():
    async def main():
        hub = Hub()
        hub.publish(view(1), diff({}, view(1)))
        c1, c2 = hub.connect("a"), hub.connect("b")
        s1, s2 = hub.stream(c1), hub.stream(c2)
        first = await anext(s1)
        assert parse(first)[0] == "snapshot" and parse(first)[2]["view"] == view(1)
        await anext(s2)
        hub.publish(view(2), diff(view(1), view(2)))
        m1, m2 = await anext(s1), await anext(s2)
        assert m1 is m2  # encoded once
        kind, seq, data = parse(m1)
        assert kind == "delta" and seq == 2 and data["base"] == 1
        await s1.aclose()
        await s2.aclose()
        assert hub.clients == set()

    asyncio.run(main())


def test_slow_client_is_resynced_not_buffered():
    async def main():
        hub = Hub(queue_size=4)
        hub.publish(view(0), {})
        c = hub.connect("a")
        s = hub.stream(c)
        await anext(s)  # snapshot
        for n in range(1, 50):
            hub.publish(view(n), diff(view(n - 1), view(n)))
            assert c.queue.qsize() <= 4
        kind, seq, data = parse(await anext(s))
        assert kind == "snapshot" and data["view"] == view(49) and seq == hub.seq
        assert c.dropped > 0
        await s.aclose()

    asyncio.run(main())


def test_resume_from_last_event_id_or_snapshot_when_too_old():
    async def main():
        hub = Hub(history=8, queue_size=16)
        hub.publish(view(0), {})
        for n in range(1, 20):
            hub.publish(view(n), diff(view(n - 1), view(n)))
        c = hub.connect("a", last_event_id=f"{hub.epoch}.{hub.seq - 3}")
        s = hub.stream(c)
        got = [parse(await anext(s)) for _ in range(3)]
        assert [g[0] for g in got] == ["delta"] * 3 and got[-1][1] == hub.seq
        await s.aclose()
        c = hub.connect("a", last_event_id=f"{hub.epoch}.1")  # older than the ring holds
        s = hub.stream(c)
        assert parse(await anext(s))[0] == "snapshot"
        await s.aclose()
        c = hub.connect("a", last_event_id=f"other.{hub.seq}")  # a previous run's id
        s = hub.stream(c)
        assert parse(await anext(s))[0] == "snapshot"
        await s.aclose()
        c = hub.connect("a", last_event_id="garbage")
        s = hub.stream(c)
        assert parse(await anext(s))[0] == "snapshot"
        await s.aclose()

    asyncio.run(main())


def test_per_address_limit():
    hub = Hub(max_per_address=2)
    a, b = hub.connect("10.0.0.2"), hub.connect("10.0.0.2")
    with pytest.raises(TooManyStreams):
        hub.connect("10.0.0.2")
    hub.connect("10.0.0.3")
    hub.disconnect(a)
    hub.connect("10.0.0.2")
    hub.disconnect(b)
    assert hub.stats["refused"] == 1
