"""Kernel conntrack as a stream of apviz events: a dump at start, then netlink events.

Plumbing choice: pyroute2 makes the sockets, apviz reads them. ``pyroute2.netns.create_socket``
opens the netlink socket inside a named network namespace from a short-lived child process and
hands back the descriptor, so no thread of this process ever changes namespace (``setns`` is
per thread and the asyncio loop or an executor thread must not end up in the wrong one). The
bytes are then read with ``recv_into`` into one reusable buffer and decoded by
:mod:`apviz.sources.ctdecode`. pyroute2's own ``AsyncNFCTSocket`` would subscribe just as well,
but it builds an attribute object per netlink attribute (48 s per 100k entries, DESIGN.md) and
its ``get()`` returns per batch; reading the raw socket is both faster and simpler to reason about
when events must be ordered exactly against dumps (see :class:`ConntrackSource`).

Permissions: dumping, joining the event groups and ``SO_RCVBUFFORCE`` need CAP_NET_ADMIN in the
namespace; the first two raise :class:`ConntrackPermissionError`, the third falls back to
``SO_RCVBUF`` with a warning (the kernel then caps the buffer at ``net.core.rmem_max``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import gc
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Final

from apviz.events import Event, Flow, FlowEvent, FlowEventKind, FlowSnapshot, SourceError
from apviz.sources.ctdecode import GROUP_DESTROY, GROUP_NEW, GROUP_UPDATE, CtDecoder, dump_request
from apviz.sources.netns import socket_in

log = logging.getLogger(__name__)

NETLINK_NETFILTER: Final = 12
SO_RCVBUFFORCE: Final = getattr(socket, "SO_RCVBUFFORCE", 33)
DEFAULT_RCVBUF: Final = 64 * 1024 * 1024
DEFAULT_GROUPS: Final = GROUP_NEW | GROUP_DESTROY
ALL_GROUPS: Final = GROUP_NEW | GROUP_UPDATE | GROUP_DESTROY
_DUMP_RCVBUF: Final = 4 * 1024 * 1024  # a dump is paced by our reads; this only saves syscalls
_RECV_SIZE: Final = 256 * 1024  # larger than any netlink skb (dumps use at most 32 KiB)
_SOURCE: Final = "conntrack"


class ConntrackPermissionError(PermissionError):
    """The kernel refused conntrack access: apviz needs root or CAP_NET_ADMIN."""

    def __init__(self, what: str, netns: str | None) -> None:
        where = f"network namespace {netns!r}" if netns else "this network namespace"
        super().__init__(
            errno.EPERM,
            f"not permitted to {what} in {where}: apviz needs CAP_NET_ADMIN. Run it as root, or "
            "grant the capability: under systemd AmbientCapabilities=CAP_NET_ADMIN (systemd/apviz.service "
            "does), by hand `setpriv --inh-caps +net_admin --ambient-caps +net_admin ...`, or `setcap "
            "cap_net_admin+ep` on an interpreter only apviz uses. `apviz doctor` checks the set-up.",
        )


# --------------------------------------------------------------------------------------------------
# sockets


def open_socket(netns: str | None = None) -> socket.socket:
    """A NETLINK_NETFILTER socket that belongs to ``netns`` (None: the namespace we run in).

    See :func:`apviz.sources.netns.socket_in` for why a thread, not a fork, enters the namespace.
    """
    return socket_in(netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for ``size`` bytes of receive buffer; returns what the kernel granted.

    SO_RCVBUFFORCE ignores ``net.core.rmem_max`` but needs CAP_NET_ADMIN; without it SO_RCVBUF is
    the best we can do, and a burst of events may then overflow it (we resync, but warn).
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        log.warning(
            "conntrack: SO_RCVBUFFORCE not permitted; receive buffer is %d bytes instead of %d "
            "(raise net.core.rmem_max or grant CAP_NET_ADMIN), bursts may cause resyncs",
            granted,
            size,
        )
        return granted
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # the kernel reports double


def open_event_socket(netns: str | None, groups: int, rcvbuf: int) -> tuple[socket.socket, int]:
    """Subscribe to conntrack event ``groups`` (bitmask); returns the socket and its buffer size."""
    sock = open_socket(netns)
    try:
        granted = set_receive_buffer(sock, rcvbuf)
        try:
            sock.bind((0, groups))
        except PermissionError as exc:
            raise ConntrackPermissionError("subscribe to conntrack events", netns) from exc
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock, granted


# --------------------------------------------------------------------------------------------------
# dumping

_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a dump builds its (acyclic) flows.

    Building 300k small objects triggers many collections that scan the growing list again and
    again: about a fifth of a 100k dump's time, measured. Nested and concurrent users are counted
    so the collector comes back exactly when the last one leaves, and only if it was on.
    """
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()


def _discard_pending(sock: socket.socket, buf: bytearray) -> None:
    """Throw away anything left on a dump socket by an earlier, interrupted dump."""
    while True:
        try:
            sock.recv_into(buf, 0, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return


def dump_socket(sock: socket.socket, decoder: CtDecoder, netns: str | None = None) -> list[Flow]:
    """Dump the conntrack table over an open, unsubscribed netlink socket (blocking)."""
    buf = bytearray(_RECV_SIZE)
    view = memoryview(buf)
    _discard_pending(sock, buf)
    decoder.reset()
    flows: list[Flow] = []
    sock.send(dump_request())
    with _gc_paused():
        while not decoder.done:
            n = sock.recv_into(buf)
            decoder.decode_flows(view, n, flows)
            if decoder.error:
                _raise_errno(decoder.error, "dump the conntrack table", netns)
    return without_repeats(flows)


def without_repeats(flows: list[Flow]) -> list[Flow]:
    """Drop entries a dump returned twice, keeping the later copy.

    A dump is not atomic: while the table changes, the kernel can return an entry again (seen in
    the burst test). The id alone cannot tell: CTA_ID is a 32-bit hash and collides between live
    entries (two pairs in a static table of 150k, measured), so an entry is (id, original tuple).
    The common case, no repeated id, costs one set of ints.
    """
    if len({flow.id for flow in flows}) == len(flows):
        return flows
    counts = collections.Counter(flow.id for flow in flows)
    repeated = {i for i, count in counts.items() if count > 1}
    out: list[Flow] = []
    index: dict[tuple[int, object, int], int] = {}
    for flow in flows:
        if flow.id in repeated:
            key = (flow.id, flow.orig, flow.zone)
            if key in index:
                out[index[key]] = flow
                continue
            index[key] = len(out)
        out.append(flow)
    return out


def _raise_errno(code: int, what: str, netns: str | None) -> None:
    if code == errno.EPERM:
        raise ConntrackPermissionError(what, netns)
    raise OSError(code, f"conntrack: cannot {what}: {errno.errorcode.get(code, code)}")


def dump(netns: str | None = None) -> list[Flow]:
    """Every conntrack entry of ``netns`` (None: ours), IPv4 and IPv6; for tools and benchmarks."""
    with open_socket(netns) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _DUMP_RCVBUF)
        return dump_socket(sock, CtDecoder(), netns)


# --------------------------------------------------------------------------------------------------
# the source


class ConntrackSource:
    """Async iterator of conntrack facts: FlowSnapshot, then FlowEvent, with snapshots as needed.

    Ordering contract (what makes "replace the table with a snapshot, then apply the events that
    follow" exact): the event socket subscribes *before* any dump, on its own socket. When a dump
    starts, events read so far are dropped (the dump already reflects them); every event read
    after that is emitted after the snapshot. Such an event may predate the dump (a replay), but
    events of one entry arrive in order, so applying them by key converges to the kernel's table:
    a replayed NEW is followed by the entry's DESTROY if it was gone. The key must be
    ``(flow.id, flow.orig, flow.zone)``: CTA_ID alone is a 32-bit hash that collides between live
    entries at 100k (see :func:`without_repeats`). On ENOBUFS the kernel lost
    events, and the messages still queued from before the loss would be replays without their
    sequel, so they are drained and discarded *before* the resync dump is requested.

    A consumer slower than the kernel first fills ``max_pending`` decoded events; reading then
    pauses, the kernel's buffer fills, and the resulting ENOBUFS costs a resync, never memory.
    """

    def __init__(
        self,
        netns: str | None = None,
        *,
        groups: int = DEFAULT_GROUPS,
        rcvbuf: int = DEFAULT_RCVBUF,
        refresh_interval: float | None = 10.0,
        max_pending: int = 50_000,
        read_batch: int = 512,
    ) -> None:
        """
        Args:
            netns: named network namespace (``ip netns``) to watch; None for the current one.
            groups: event groups, a bitmask of ``GROUP_NEW`` (1), ``GROUP_UPDATE`` (2) and
                ``GROUP_DESTROY`` (4). UPDATE is off by default: it is chatty (every TCP state
                change) and the periodic refresh already renews counters.
            rcvbuf: receive buffer of the event socket in bytes (64 MiB absorbs a 100k burst).
            refresh_interval: seconds between "refresh" dumps that renew byte counters; None: never.
            max_pending: decoded events held for a slow consumer before reading pauses.
            read_batch: messages read per wake-up before yielding to other tasks.
        """
        if groups & ~ALL_GROUPS or not groups:
            raise ValueError(f"conntrack groups must be a non-empty mask of 1, 2 and 4, not {groups!r}")
        if rcvbuf < 4096:
            raise ValueError(f"conntrack rcvbuf must be at least 4096 bytes, not {rcvbuf!r}")
        if refresh_interval is not None and refresh_interval <= 0:
            raise ValueError(f"conntrack refresh_interval must be positive or None, not {refresh_interval!r}")
        if max_pending < 1 or read_batch < 1:
            raise ValueError(
                f"max_pending and read_batch must be positive, not {max_pending!r}, {read_batch!r}"
            )
        self.netns = netns
        self.groups = groups
        self.rcvbuf = rcvbuf
        self.refresh_interval = refresh_interval
        self.max_pending = max_pending
        self.read_batch = read_batch
        self.counts: dict[str, int] = collections.Counter()
        self.granted_rcvbuf = 0
        self._events = CtDecoder()
        self._dumps = CtDecoder()
        self._pending: collections.deque[tuple[FlowEventKind, Flow]] = collections.deque()
        self._buf = bytearray(_RECV_SIZE)
        self._view = memoryview(self._buf)
        self._sock: socket.socket | None = None
        self._dump_sock: socket.socket | None = None
        self._wake = asyncio.Event()
        self._lost = False  # events were lost: a resync is due
        self._retry = False  # a dump failed: a resync is due
        self._draining = 0  # bytes still to discard after a loss (0: not draining)
        self._paused = False  # reading stopped because the consumer is behind
        self._failure: OSError | None = None

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._run()

    # the main task ---------------------------------------------------------------------------

    async def _run(self) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        self._sock, self.granted_rcvbuf = await loop.run_in_executor(
            None, open_event_socket, self.netns, self.groups, self.rcvbuf
        )
        loop.add_reader(self._sock.fileno(), self._on_readable)
        try:
            yield await self._snapshot("initial")
            next_refresh = self._next_refresh()
            while True:
                if self._failure is not None:
                    raise self._failure
                if self._lost or self._retry:
                    if self._lost:
                        message = "conntrack events were lost (receive buffer full); resynchronising"
                        yield SourceError(_SOURCE, message, dict(self.counts))
                    self._lost = self._retry = False
                    yield await self._resync()
                    next_refresh = self._next_refresh()
                elif next_refresh is not None and time.monotonic() >= next_refresh:
                    yield await self._snapshot("refresh")
                    next_refresh = self._next_refresh()
                elif self._pending:
                    kind, flow = self._pending.popleft()
                    if self._paused and len(self._pending) <= self.max_pending // 2:
                        self._resume_reading()
                    yield FlowEvent(kind, flow)
                else:
                    await self._idle(next_refresh)
        finally:
            self._close(loop)

    def _next_refresh(self) -> float | None:
        return None if self.refresh_interval is None else time.monotonic() + self.refresh_interval

    async def _idle(self, deadline: float | None) -> None:
        """Sleep until the reader has something, or the refresh is due."""
        self._wake.clear()
        if self._pending or self._lost or self._retry or self._failure:
            return
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def _resync(self) -> Event:
        """After a loss: wait until the stale queue is drained, then take a fresh dump."""
        while self._draining and self._failure is None:
            self._wake.clear()
            await self._wake.wait()
        self.counts["resyncs"] += 1
        return await self._snapshot("resync")

    async def _snapshot(self, reason: str) -> Event:
        """Dump in a worker thread; events read from now on are emitted after the snapshot."""
        self._pending.clear()  # read before the dump began: the dump reflects them
        if self._paused:
            self._resume_reading()
        loop = asyncio.get_running_loop()
        try:
            flows = await loop.run_in_executor(None, self._dump_blocking)
        except ConntrackPermissionError:
            raise
        except OSError as exc:
            self.counts["dump_errors"] += 1
            self._retry = True  # try again on the next turn: events alone cannot be trusted now
            await asyncio.sleep(1.0)
            return SourceError(_SOURCE, f"conntrack dump failed: {exc}", dict(self.counts))
        self.counts[f"snapshots_{reason}"] += 1
        return FlowSnapshot(flows, reason)

    def _dump_blocking(self) -> list[Flow]:
        """Runs in an executor thread; a failed dump closes its socket so no leftovers leak."""
        if self._dump_sock is None:
            self._dump_sock = open_socket(self.netns)
            self._dump_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _DUMP_RCVBUF)
        try:
            return dump_socket(self._dump_sock, self._dumps, self.netns)
        except BaseException:
            self._dump_sock.close()
            self._dump_sock = None
            raise

    def _close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sock is not None:
            if not self._paused and not loop.is_closed():
                loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._dump_sock is not None:
            self._dump_sock.close()
            self._dump_sock = None
        self.counts["decode_errors"] = self._events.errors + self._dumps.errors

    # the reader (event-loop callback) --------------------------------------------------------

    def _on_readable(self) -> None:
        """Read up to ``read_batch`` messages; decode them, or discard them while draining."""
        sock = self._sock
        if sock is None:
            return
        for _ in range(self.read_batch):
            try:
                n = sock.recv_into(self._buf)
            except BlockingIOError:
                self._draining = 0  # queue empty: nothing stale is left
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self._on_loss()
                    continue
                self._failure = exc
                break
            if self._draining:
                self._draining = max(0, self._draining - n)
                continue
            decoded = self._events.decode(self._view, n)
            self.counts["events"] += len(decoded)
            self._pending.extend(decoded)
            if len(self._pending) >= self.max_pending:
                self._pause_reading()
                break
        self._wake.set()

    def _on_loss(self) -> None:
        """ENOBUFS: events were dropped. Discard what is queued and resync with a dump."""
        self.counts["enobufs"] += 1
        self._lost = True
        self._pending.clear()
        self._draining = max(self.granted_rcvbuf, 1)  # at most this much was queued before the loss

    def _pause_reading(self) -> None:
        if self._sock is not None and not self._paused:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._paused = True
            self.counts["paused"] += 1

    def _resume_reading(self) -> None:
        if self._sock is not None and self._paused:
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._on_readable)
            self._paused = False
