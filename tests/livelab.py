"""A lab with apviz's real sources and live state running against it, for integration tests.

The pipeline runs on the test's own event loop; lab calls (which block on a phone's helper) go
through ``asyncio.to_thread`` so the sources keep reading meanwhile. ``events`` records every
source event the state applied, so tests can count lines and leases, not only outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection
from typing import Any

from apviz.app import SourceOptions, build
from apviz.events import Event
from apviz.lab.lab import Lab
from apviz.live.model import Change, FlowRecord
from apviz.live.names import OWN, NameSource
from apviz.live.state import StateConfig, networks


class LiveLab:
    def __init__(self, lab: Lab, **source_overrides: Any) -> None:
        self.lab = lab
        opts = SourceOptions(
            netns=lab.gateway_ns,
            dnsmasq_log=lab.dnsmasq_log,
            journal_dir=lab.journal_dir,
            journal_since=60.0,
            leases=lab.leases_file,
            conntrack_refresh=2.0,
        )
        for key, value in source_overrides.items():
            setattr(opts, key, value)
        config = StateConfig(
            lan=networks([lab.lan_cidr]), local_addresses=frozenset({lab.gateway_ip, lab.wan_ip})
        )
        self.state, self.pipeline = build(opts, config)
        self.events: list[Event] = []
        self.changes: list[tuple[float, Change, str | None]] = []
        apply = self.state.apply

        def tap(event: Event) -> None:
            self.events.append(event)
            apply(event)

        self.state.apply = tap  # type: ignore[method-assign]
        self.state.observers.append(
            lambda c: self.changes.append((time.monotonic(), c, c.flow and c.flow.name))
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveLab:
        self._task = asyncio.create_task(self.pipeline.run())
        await asyncio.wait_for(self.pipeline.ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._task.done() and not self._task.cancelled() and self._task.exception():
            raise self._task.exception()  # type: ignore[misc]

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
            await asyncio.sleep(0.02)

    def flow(self, client: str, sport: int, dport: int = 443, dst: str | None = None) -> FlowRecord | None:
        """The flow from ``client:sport`` (the kernel reuses a source port towards another address:
        give ``dst`` when a test makes many connections)."""
        for rec in self.state.flows.values():
            if rec.client == client and rec.sport == sport and rec.dport == dport and dst in (None, rec.dst):
                return rec
        return None

    async def named_flow(
        self,
        client: str,
        sport: int,
        timeout: float = 5.0,
        dst: str | None = None,
        sources: Collection[NameSource] = OWN,
    ) -> FlowRecord:
        """The flow, once it has a name of its own device (or the timeout): by default any of
        ``names.OWN``, its server name, its lookup at dnsmasq or at another resolver, since a phone
        that speaks TLS is named from its connection when capture is on."""

        def ready() -> FlowRecord | None:
            rec = self.flow(client, sport, dst=dst)
            return rec if rec is not None and rec.name_source in sources else None

        return await self.wait_for(ready, timeout, f"a named flow from {client}:{sport}")
