"""ConntrackSource against the real kernel: snapshot, events, refresh, and resync after ENOBUFS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from apviz.events import Event, Flow, FlowEvent, FlowEventKind, FlowSnapshot, FlowTuple, SourceError
from apviz.sources.conntrack import ALL_GROUPS, ConntrackPermissionError, ConntrackSource, dump
from tests.ctlab import CtNamespace, ids_from_conntrack

pytestmark = pytest.mark.lab


@pytest.fixture
def ns() -> Iterator[CtNamespace]:
    with CtNamespace() as namespace:
        yield namespace


FlowKey = tuple[int, FlowTuple, int]


def key(flow: Flow) -> FlowKey:
    """What identifies an entry: CTA_ID is a 32-bit hash and collides between live entries."""
    return (flow.id, flow.orig, flow.zone)


class Consumer:
    """What the live state does with the source: replace on snapshot, apply events by id."""

    def __init__(self, source: ConntrackSource) -> None:
        self.source = source
        self.table: dict[FlowKey, Flow] = {}
        self.items: list[Event] = []
        self.last = time.monotonic()
        self.snapshots: list[FlowSnapshot] = []
        self.duplicates = 0
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Consumer:
        self.task = asyncio.create_task(self._consume())
        await self.wait_for(lambda: bool(self.snapshots))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def _consume(self) -> None:
        async for item in self.source:
            self.last = time.monotonic()
            if isinstance(item, FlowSnapshot):
                self.snapshots.append(item)
                self.table = {key(flow): flow for flow in item.flows}
                self.duplicates += len(item.flows) - len(self.table)
            elif isinstance(item, FlowEvent):
                self.items.append(item)
                if item.kind is FlowEventKind.DESTROY:
                    self.table.pop(key(item.flow), None)
                else:
                    self.table[key(item.flow)] = item.flow
            else:
                self.items.append(item)

    def events(self, kind: FlowEventKind) -> list[Flow]:
        return [e.flow for e in self.items if isinstance(e, FlowEvent) and e.kind is kind]

    async def wait_for(self, condition: object, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():  # type: ignore[operator]
            if self.task is not None and self.task.done():
                self.task.result()  # re-raise the source's failure
            assert time.monotonic() < deadline, "timed out waiting for the source"
            await asyncio.sleep(0.02)

    async def settle(self, quiet: float = 1.0, timeout: float = 20.0) -> None:
        """Wait until the source has been silent for ``quiet`` seconds."""
        await self.wait_for(lambda: time.monotonic() - self.last >= quiet, timeout)


async def run_in(ns: CtNamespace, cmd: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()


async def aiter_first(source: ConntrackSource) -> Event:
    iterator: AsyncIterator[Event] = aiter(source)
    try:
        return await anext(iterator)
    finally:
        await iterator.aclose()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------------


def test_initial_snapshot_holds_the_table(ns: CtNamespace) -> None:
    ns.flood(50)
    first = asyncio.run(aiter_first(ConntrackSource(ns.name)))
    assert isinstance(first, FlowSnapshot) and first.reason == "initial"
    assert {f.id for f in first.flows} == ids_from_conntrack(ns.conntrack("-L", "-o", "id"))
    assert len(first.flows) == 50


TCP_SESSION = """
import socket
server = socket.socket(); server.bind(("198.18.2.2", 8443)); server.listen()
client = socket.create_connection(("198.18.2.2", 8443)); peer, _ = server.accept()
client.sendall(b"hello"); peer.recv(5); peer.sendall(b"world"); client.recv(5)
client.close(); peer.close(); server.close()
"""


def test_tcp_connection_gives_new_then_destroy(ns: CtNamespace) -> None:
    async def scenario() -> Consumer:
        async with Consumer(ConntrackSource(ns.name, groups=ALL_GROUPS, refresh_interval=None)) as consumer:
            await run_in(ns, ns.python_cmd(TCP_SESSION))
            await consumer.wait_for(lambda: consumer.events(FlowEventKind.NEW))
            await run_in(
                ns, ["ip", "netns", "exec", ns.name, "conntrack", "-D", "-p", "tcp", "--dport", "8443"]
            )
            await consumer.wait_for(lambda: consumer.events(FlowEventKind.DESTROY))
            return consumer

    consumer = asyncio.run(scenario())
    (new,) = consumer.events(FlowEventKind.NEW)
    (gone,) = consumer.events(FlowEventKind.DESTROY)
    assert new.id == gone.id
    assert (new.orig.proto, new.orig.dst, new.orig.dport) == (6, "198.18.2.2", 8443)
    assert new.tcp_state == "SYN_SENT"
    states = [f.tcp_state for f in consumer.events(FlowEventKind.UPDATE) if f.id == new.id]
    assert "ESTABLISHED" in states  # UPDATE was subscribed: the handshake is seen
    assert gone.orig_packets >= 4 and gone.stop_ns is not None  # counters and timestamps on
    assert key(new) not in consumer.table


def test_default_groups_have_no_updates(ns: CtNamespace) -> None:
    async def scenario() -> Consumer:
        async with Consumer(ConntrackSource(ns.name, refresh_interval=None)) as consumer:
            await run_in(ns, ns.python_cmd(TCP_SESSION))
            await consumer.wait_for(lambda: consumer.events(FlowEventKind.NEW))
            await asyncio.sleep(0.3)
            return consumer

    consumer = asyncio.run(scenario())
    assert not consumer.events(FlowEventKind.UPDATE)
    assert len(consumer.events(FlowEventKind.NEW)) == 1


SAME_THREE = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 40000))  # a fixed source port: the same three entries every time
for port in (1, 2, 3):
    s.sendto(b"x", ("198.18.4.4", port))
"""


def test_refresh_snapshot_renews_counters(ns: CtNamespace) -> None:
    ns.python(SAME_THREE)

    async def scenario() -> Consumer:
        async with Consumer(ConntrackSource(ns.name, refresh_interval=0.3)) as consumer:
            ns.python(SAME_THREE)  # counters move, no event
            await consumer.wait_for(lambda: len(consumer.snapshots) >= 3)
            return consumer

    consumer = asyncio.run(scenario())
    initial, *_, last = consumer.snapshots
    assert initial.reason == "initial" and last.reason == "refresh"
    assert {f.orig_packets for f in initial.flows} == {1}
    assert {f.orig_packets for f in last.flows} == {2}
    assert not consumer.events(FlowEventKind.NEW)


def test_burst_with_small_buffer_resyncs_to_the_exact_table(ns: CtNamespace) -> None:
    """>= 100k events into a 64 KiB buffer: ENOBUFS, resync, and the consumer ends exact."""
    ns.flood(1000, base=200_000)  # something to be in the initial snapshot

    async def scenario() -> tuple[Consumer, set[FlowKey]]:
        source = ConntrackSource(ns.name, rcvbuf=64 * 1024, refresh_interval=None)
        async with Consumer(source) as consumer:
            start = time.monotonic()
            flood = asyncio.create_task(run_in(ns, ns.flood_cmd(100_000)))
            await asyncio.sleep(0.2)
            # destroy events race with the flood and the resync dumps
            delete = ["ip", "netns", "exec", ns.name, "conntrack", "-D", "-d", "198.18.0.0/25"]
            await asyncio.gather(flood, run_in(ns, delete))
            await consumer.settle()
            assert time.monotonic() - start < 30
            fresh = {key(f) for f in dump(ns.name)}
            return consumer, fresh

    consumer, fresh = asyncio.run(scenario())
    counts = consumer.source.counts
    assert counts["enobufs"] >= 1 and counts["resyncs"] >= 1, counts
    assert any(isinstance(i, SourceError) for i in consumer.items)
    assert any(s.reason == "resync" for s in consumer.snapshots)
    assert consumer.duplicates == 0
    assert set(consumer.table) == fresh
    assert {k[0] for k in fresh} == ids_from_conntrack(ns.conntrack("-L", "-o", "id"))
    assert 101_000 - 127 * 250 <= len(fresh) <= 101_000  # 198.18.0.1-127 hold 250 entries each


def test_large_buffer_loses_nothing(ns: CtNamespace) -> None:
    async def scenario() -> Consumer:
        async with Consumer(ConntrackSource(ns.name, refresh_interval=None)) as consumer:
            await run_in(ns, ns.flood_cmd(30_000))
            await consumer.wait_for(lambda: len(consumer.events(FlowEventKind.NEW)) >= 30_000, timeout=20)
            return consumer

    consumer = asyncio.run(scenario())
    assert consumer.source.counts["enobufs"] == 0
    assert not any(isinstance(i, SourceError) for i in consumer.items)
    # CTA_ID is a 32-bit hash: among 30,000 live entries two share one about one run in ten,
    # so distinct flows are counted by the full key, as the source itself does.
    assert len({key(f) for f in consumer.events(FlowEventKind.NEW)}) == 30_000


def test_dump_function_and_missing_namespace(ns: CtNamespace) -> None:
    ns.flood(10)
    assert len(dump(ns.name)) == 10
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dump(ns.name + "-missing")


@pytest.mark.parametrize(
    "kwargs",
    [{"groups": 0}, {"groups": 8}, {"rcvbuf": 10}, {"refresh_interval": 0}, {"max_pending": 0}],
)
def test_bad_options_name_the_value(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=repr(next(iter(kwargs.values())))):
        ConntrackSource(**kwargs)  # type: ignore[arg-type]


def test_without_cap_net_admin_the_error_says_what_to_do(ns: CtNamespace) -> None:
    code = (
        "import asyncio\n"
        "from apviz.sources.conntrack import ConntrackSource, dump\n"
        "for attempt in (dump, lambda: asyncio.run(anext(aiter(ConntrackSource())))):\n"
        "    try:\n"
        "        attempt()\n"
        "    except PermissionError as exc:\n"
        "        print(type(exc).__name__, exc)\n"
    )
    cmd = ["ip", "netns", "exec", ns.name, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
           "--inh-caps=-all", sys.executable, "-c", code]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=os.getcwd(), check=False)
    if "Permission denied" in proc.stderr and "python" in proc.stderr.lower():
        pytest.skip("the venv's python is not readable by nobody")
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, proc.stderr
    for line in lines:
        assert line.startswith(ConntrackPermissionError.__name__)
        assert "root" in line and "CAP_NET_ADMIN" in line
