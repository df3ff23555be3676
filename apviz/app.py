"""Assembling a running apviz: which sources to open, the state, and the pipeline between them.

The command line (``apviz top``, ``apviz lab``, later ``apviz serve``) describes *where* the facts
are with a :class:`SourceOptions`; this module turns that into source objects. Nothing else
knows which concrete classes read conntrack, the log or the leases.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from apviz.live.pipeline import NamedSource, Pipeline
from apviz.live.state import LiveState, StateConfig

log = logging.getLogger(__name__)

DEFAULT_LEASES = Path("/var/lib/misc/dnsmasq.leases")


@dataclass(slots=True)
class SourceOptions:
    """Where apviz reads its facts. ``netns`` None means the host's own network namespace."""

    netns: str | None = None
    dnsmasq_log: Path | None = None  # a log-facility= file; None: read the systemd journal
    journal_dir: Path | None = None  # a journal directory (the lab's private journald); None: system
    journal_since: float = 300.0  # seconds of journal history read at start
    leases: Path | None = DEFAULT_LEASES
    neighbours: bool = True
    conntrack_refresh: float = 10.0
    conntrack_rcvbuf: int = 64 * 1024 * 1024
    extra: list[NamedSource] = field(default_factory=list)


def build_sources(opts: SourceOptions) -> list[NamedSource]:
    from apviz.sources.conntrack import ConntrackSource
    from apviz.sources.dnsmasq_log import DnsmasqLogParser
    from apviz.sources.leases import LeasesSource
    from apviz.sources.neighbours import NeighbourSource

    sources = [
        NamedSource(
            "conntrack",
            lambda: ConntrackSource(
                netns=opts.netns, rcvbuf=opts.conntrack_rcvbuf, refresh_interval=opts.conntrack_refresh
            ),
        )
    ]
    if opts.dnsmasq_log is not None:
        from apviz.sources.logfile import DnsmasqFileSource

        path = opts.dnsmasq_log
        sources.append(NamedSource("dnsmasq-log", lambda: DnsmasqFileSource(path, DnsmasqLogParser())))
    else:
        from apviz.sources.journal import DnsmasqJournalSource

        jdir, since = opts.journal_dir, opts.journal_since
        sources.append(
            NamedSource(
                "dnsmasq-journal",
                lambda: DnsmasqJournalSource(DnsmasqLogParser(), path=jdir, since_seconds=since),
            )
        )
    if opts.leases is not None:
        leases = opts.leases
        sources.append(NamedSource("leases", lambda: LeasesSource(leases)))
    if opts.neighbours:
        netns = opts.netns
        sources.append(NamedSource("neighbours", lambda: NeighbourSource(netns)))
    sources.extend(opts.extra)
    return sources


def build(opts: SourceOptions, config: StateConfig | None = None) -> tuple[LiveState, Pipeline]:
    state = LiveState(config)
    return state, Pipeline(state, build_sources(opts))
