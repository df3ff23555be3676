"""The stream hub: one encoded message, many browsers, bounded memory.

Every tick the current view and its delta are published once. The delta is encoded to SSE bytes
once and the same ``bytes`` object is handed to every client's small queue. A client whose queue
is full (a slow phone, a stalled tab) is not allowed to buffer more: its queue is emptied and it
is marked to receive a fresh snapshot when it next reads. A short ring of recent deltas lets a
reconnecting EventSource (``Last-Event-ID``) resume without a snapshot.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

HEARTBEAT = b": ping\n\n"


def encode(event: str, event_id: str, payload: Any) -> bytes:
    """SSE framing for one JSON payload (JSON has no raw newlines, so one ``data:`` line suffices)."""
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return f"id: {event_id}\nevent: {event}\ndata: {data}\n\n".encode()


class TooManyStreams(Exception):
    """The client address already holds the allowed number of event streams."""


@dataclass(eq=False, slots=True)
class Client:
    """One connected event stream."""

    address: str
    queue: asyncio.Queue[bytes | None]
    resync: bool = True  # the next thing this client gets is a snapshot
    dropped: int = 0
    scope: Any = field(default=None, repr=False)  # what the client may see (e.g. its own device only)

    def restart(self) -> None:
        """Drop the backlog and send a snapshot next (the picture was replaced, not changed)."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.resync = True
        self.queue.put_nowait(None)  # wake the reader: it sends a snapshot

    def offer(self, message: bytes) -> bool:
        """Queue a message; on overflow drop the backlog and ask for a snapshot instead."""
        if self.resync:
            return False
        try:
            self.queue.put_nowait(message)
            return True
        except asyncio.QueueFull:
            self.dropped += self.queue.qsize()
            while not self.queue.empty():
                self.queue.get_nowait()
            self.resync = True
            self.queue.put_nowait(None)  # wake the reader: it sends a snapshot
            return False


class Hub:
    """Fan-out of view updates to SSE clients with per-client and per-address bounds."""

    def __init__(self, queue_size: int = 16, history: int = 64, max_per_address: int = 8) -> None:
        if queue_size < 1 or history < 1 or max_per_address < 1:
            raise ValueError("hub queue_size, history and max_per_address must be at least 1")
        self.queue_size = queue_size
        self.max_per_address = max_per_address
        self.seq = 0
        # Event ids are "epoch.seq": after a restart sequence numbers start again, and a browser
        # resuming with an id of the previous run must get a snapshot, not the new run's deltas.
        self.epoch = os.urandom(4).hex()
        self.view: dict[str, Any] = {}
        self._snapshot: bytes | None = None
        self._history: deque[tuple[int, bytes]] = deque(maxlen=history)
        self.clients: set[Client] = set()
        self._per_address: dict[str, int] = {}
        self.stats = {"published": 0, "snapshots": 0, "dropped": 0, "refused": 0, "resumed": 0}

    # -------------------------------------------------------------------------------- publishing

    def publish(self, view: dict[str, Any], delta: dict[str, Any]) -> None:
        """Record the new full view and fan its delta out (nothing is sent for an empty delta)."""
        self.view = view
        if not delta and self.seq:
            return
        self.seq += 1
        self._snapshot = None
        message = encode(
            "delta",
            self._id(),
            {"epoch": self.epoch, "seq": self.seq, "base": self.seq - 1, "changes": delta},
        )
        self._history.append((self.seq, message))
        self.stats["published"] += 1
        for client in self.clients:
            if not client.offer(message):
                self.stats["dropped"] += 1

    def replace(self, view: dict[str, Any]) -> None:
        """Put a different picture on screen (live view <-> a recording): every client gets it as a
        fresh snapshot, and no delta across the switch is kept for resuming clients, so nothing of
        one picture is animated into the other."""
        self.view = view
        self.seq += 1
        self._snapshot = None
        self._history.clear()
        self.stats["published"] += 1
        for client in self.clients:
            client.restart()

    def _id(self) -> str:
        return f"{self.epoch}.{self.seq}"

    def snapshot(self) -> bytes:
        """The full view, encoded once per sequence number however many clients ask."""
        if self._snapshot is None:
            self._snapshot = encode(
                "snapshot", self._id(), {"epoch": self.epoch, "seq": self.seq, "view": self.view}
            )
        return self._snapshot

    # -------------------------------------------------------------------------------- clients

    def connect(self, address: str, last_event_id: str | None = None, scope: Any = None) -> Client:
        if self._per_address.get(address, 0) >= self.max_per_address:
            self.stats["refused"] += 1
            raise TooManyStreams(address)
        client = Client(address=address, queue=asyncio.Queue(self.queue_size), scope=scope)
        backlog = self._resume(last_event_id)
        if backlog is not None and len(backlog) < self.queue_size:
            client.resync = False
            for message in backlog:
                client.queue.put_nowait(message)
            self.stats["resumed"] += 1
        self.clients.add(client)
        self._per_address[address] = self._per_address.get(address, 0) + 1
        return client

    def _resume(self, last_event_id: str | None) -> list[bytes] | None:
        """Deltas after ``last_event_id`` if the ring still holds all of them, else None."""
        if not last_event_id:
            return None
        epoch, _, seq = last_event_id.partition(".")
        if epoch != self.epoch:
            return None
        try:
            last = int(seq)
        except ValueError:
            return None
        if last == self.seq:
            return []
        if last > self.seq or not self._history or self._history[0][0] > last + 1:
            return None
        return [msg for seq, msg in self._history if seq > last]

    def disconnect(self, client: Client) -> None:
        if client in self.clients:
            self.clients.discard(client)
            n = self._per_address.get(client.address, 1) - 1
            if n > 0:
                self._per_address[client.address] = n
            else:
                self._per_address.pop(client.address, None)

    async def stream(self, client: Client) -> AsyncIterator[bytes]:
        """The bytes for one client: a snapshot when needed, then deltas as they come."""
        try:
            while True:
                if client.resync:
                    while not client.queue.empty():
                        client.queue.get_nowait()
                    client.resync = False
                    self.stats["snapshots"] += 1
                    yield self.snapshot()
                    continue
                message = await client.queue.get()
                if message is not None:
                    yield message
        finally:
            self.disconnect(client)
