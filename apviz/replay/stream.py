"""``apviz record``'s reader: follows a running apviz's ``/events`` as any browser on the kiosk
does, and hands every resulting view to a :class:`~apviz.replay.recorder.Recorder`.

It reads nothing a kiosk browser could not: the public, already anonymised stream. When the
stream breaks (server restart, network hiccup) it reconnects; the new snapshot becomes one more
delta in the recording, so the file keeps a single snapshot.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from apviz.live.diff import View, apply
from apviz.replay.recorder import Recorder

log = logging.getLogger(__name__)


class StreamError(Exception):
    """The stream cannot be read at all; the message says what to check."""


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event name, JSON data) for each SSE message; heartbeats and comments are skipped."""
    fields: dict[str, str] = {}
    async for line in lines:
        if line:
            if not line.startswith(":"):
                key, _, value = line.partition(":")
                fields[key] = value.removeprefix(" ")
            continue
        if "data" in fields:
            yield fields.get("event", "message"), json.loads(fields["data"])
        fields = {}


async def follow(url: str, recorder: Recorder, retry: float = 1.0) -> None:
    """Record ``url``'s event stream until cancelled or the recorder stops (its exception is raised).

    The first connection must succeed (a wrong address is better reported than retried for ever);
    after that, breaks are retried every ``retry`` seconds.
    """
    import httpx

    events_url = url.rstrip("/") + "/events"
    connected = False
    timeout = httpx.Timeout(10.0, read=60.0)  # the server sends a heartbeat every 15 s
    async with httpx.AsyncClient(timeout=timeout) as http:
        while True:
            try:
                async with http.stream("GET", events_url, headers={"Accept": "text/event-stream"}) as resp:
                    if resp.status_code != 200:
                        body = (await resp.aread()).decode(errors="replace")[:200]
                        raise StreamError(f"{events_url} answered {resp.status_code}: {body}")
                    connected = True
                    await _record(resp.aiter_lines(), recorder)
                    log.warning("the stream from %s ended; reconnecting", events_url)
            except httpx.HTTPError as exc:
                if not connected:
                    raise StreamError(
                        f"cannot read {events_url}: {exc or type(exc).__name__}; is apviz serve running "
                        "there (check --url)?"
                    ) from None
                log.warning("the stream from %s broke (%s); reconnecting", events_url, exc)
            await asyncio.sleep(retry)


async def _record(lines: AsyncIterator[str], recorder: Recorder) -> None:
    """Keep the view a browser would have and feed each version to the recorder. Returns when the
    stream ends or stops making sense (a delta that does not continue what we hold)."""
    view: View | None = None
    seq = -1
    epoch = None
    async for event, data in _events(lines):
        if event == "snapshot":
            view, seq, epoch = data["view"], data["seq"], data.get("epoch")
        elif event == "delta":
            if view is None or data.get("base") != seq or data.get("epoch", epoch) != epoch:
                return  # reconnect: the next snapshot starts over
            view = apply(view, data["changes"])
            seq = data["seq"]
        else:
            continue
        recorder.feed(view)
