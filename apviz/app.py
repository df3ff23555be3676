"""Assembling a running apviz: which sources to open, the state, and the pipeline between them.

The command line (``apviz top``, ``apviz lab``, later ``apviz serve``) describes *where* the facts
are with a :class:`SourceOptions`; this module turns that into source objects. Nothing else
knows which concrete classes read conntrack, the log or the leases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from apviz.config import Config
from apviz.config import EnrichConfig as EnrichSection
from apviz.enrich.enricher import EnrichConfig, Enricher
from apviz.enrich.hidden import LABELS as HIDDEN_LABELS
from apviz.enrich.hidden import HiddenClassifier
from apviz.live.destinations import Describe, Destination
from apviz.live.pipeline import NamedSource, Pipeline
from apviz.live.state import LiveState, StateConfig, networks

if TYPE_CHECKING:
    from apviz.live.privacy import KnownDomains, Privacy
    from apviz.service import Service

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
    # Names from connections' first packets (apviz.sources.packets): off unless asked for, since it
    # adds an nftables table to the namespace; `apviz serve` and the lab take [names] capture.
    capture: bool = False
    nflog_group: int = 7400
    extra: list[NamedSource] = field(default_factory=list)
    counters: list[Callable[[], dict[str, int]]] = field(default_factory=list)  # parse-error figures


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
            must_deliver=True,  # its first dump is what "ready" means
        )
    ]
    parser = DnsmasqLogParser()
    opts.counters.append(parser.counts)
    if opts.dnsmasq_log is not None:
        from apviz.sources.logfile import DnsmasqFileSource

        path = opts.dnsmasq_log
        sources.append(NamedSource("dnsmasq-log", lambda: DnsmasqFileSource(path, parser)))
    else:
        from apviz.sources.journal import DnsmasqJournalSource

        jdir, since = opts.journal_dir, opts.journal_since
        sources.append(
            NamedSource(
                "dnsmasq-journal",
                lambda: DnsmasqJournalSource(parser, path=jdir, since_seconds=since),
            )
        )
    if opts.leases is not None:
        lease_source = LeasesSource(opts.leases)
        opts.counters.append(lambda: {"errors": lease_source.errors})
        sources.append(NamedSource("leases", lambda: lease_source))
    if opts.neighbours:
        netns = opts.netns
        sources.append(NamedSource("neighbours", lambda: NeighbourSource(netns)))
    if opts.capture:
        sources.append(capture_source(opts))
    sources.extend(opts.extra)
    return sources


def capture_source(opts: SourceOptions) -> NamedSource:
    """The packet source; one decoder for all its restarts, so its counters keep counting."""
    from apviz.sources.packets import PacketDecoder, PacketSource

    decoder = PacketDecoder()
    netns, group = opts.netns, opts.nflog_group

    def counts() -> dict[str, int]:
        figures = {f"capture_{k}": v for k, v in decoder.counts.items()}
        bad = ("malformed", "malformed_hello", "malformed_quic", "malformed_dns")
        figures["parse_errors"] = sum(decoder.counts[k] for k in bad)  # in apviz_parse_errors
        return figures

    opts.counters.append(counts)
    return NamedSource("capture", lambda: PacketSource(netns, group, decoder=decoder))


def build(opts: SourceOptions, config: StateConfig | None = None) -> tuple[LiveState, Pipeline]:
    state = LiveState(config)
    return state, Pipeline(state, build_sources(opts))


def enricher_describe(enricher: Enricher, hidden: HiddenClassifier | None = None) -> Describe:
    """Adapt the enrichment facade to the views' one question: what is behind (name, address)?

    The middle column shows, in order of preference: what the connection hides when it hides
    something (encrypted DNS, a VPN, Apple's relay: :mod:`apviz.enrich.hidden`, a safe label in
    every mode), the company from the overlay (or opt-in TrackerDB), the registrable domain the
    device asked for, the network owner from the ASN, a special-range label, or "unknown". The place
    always comes from the address, never the name. ``hidden`` None: the shipped list alone.
    """
    if hidden is None:
        hidden = HiddenClassifier.shipped()

    def describe(name: str | None, address: str, proto: int = 0, dport: int = 0) -> Destination:
        addr = enricher.describe_address(address)
        info = enricher.describe_name(name) if name else None
        geo, asn, special = addr.geo, addr.asn, addr.special
        place = {
            "country": geo.country_code if geo else None,
            "country_name": geo.country if geo else None,
            "city": geo.city if geo else None,
            "lat": geo.latitude if geo else None,
            "lon": geo.longitude if geo else None,
            "special": special.label if special else None,
            "asn_org": asn.org if asn else None,
        }
        kind = hidden.classify(name, address, proto, dport)
        if kind is not None:
            return Destination(org=HIDDEN_LABELS[kind], org_source="hidden", hidden=kind.value, **place)
        if info is not None and info.valid and not info.local:
            company = info.company
            if company is not None:
                org, source = company.name, "company"
            else:
                org, source = (info.registrable or info.name), "domain"
            return Destination(
                org=org,
                org_source=source,
                domain=info.registrable,
                tracker=info.tracker_category,
                category=company.category if company else None,
                company=company.key if company is not None and company.source == "apviz" else None,
                **place,
            )
        if asn is not None and asn.org:
            return Destination(org=asn.org, org_source="asn", **place)
        if special is not None:
            return Destination(org=special.label, org_source="special", **place)
        return Destination(org="unknown", org_source="unknown", **place)

    return describe


def hidden_classifier(cfg: Config) -> HiddenClassifier:
    """The shipped list of encrypted-DNS resolvers and relay names plus ``[names] private_dns_servers``."""
    return HiddenClassifier.shipped(private_dns_servers=cfg.names.private_dns_servers)


def default_data_dir() -> Path:
    """The checkout's ``data/`` folder (apviz is installed editable from the checkout)."""
    return Path(__file__).resolve().parents[1] / "data"


def build_enricher(
    section: EnrichSection, gateway: tuple[str, ...] = (), updated_dir: str | Path | None = None
) -> Enricher:
    """Turn the ``[enrich]`` section into an :class:`Enricher`; empty keys take the installed data.

    ``updated_dir`` is ``[data] dir``: the files ``apviz data update`` keeps fresh there are asked
    before the installed ones they replace (keys the operator set in ``[enrich]`` stay as set).
    """
    from apviz.enrich.trackers import BlocklistSpec

    data_dir = Path(section.data_dir) if section.data_dir else default_data_dir()
    overrides: dict[str, object] = {"gateway": gateway}
    if section.geo_db:
        overrides["geo_paths"] = (Path(section.geo_db),)
    if section.asn_db:
        overrides["asn_mmdb"] = (Path(section.asn_db),)
    if section.asn_csv:
        csv = Path(section.asn_csv)
        overrides["asn_csv"] = tuple(sorted(csv.glob("*.csv"))) if csv.is_dir() else (csv,)
    if section.blocklists:
        specs = []
        for entry in section.blocklists:
            category, _, path = entry.partition("=")
            specs.append(BlocklistSpec(Path(path), category, Path(path).name))
        overrides["blocklists"] = tuple(specs)
    if section.companies:
        overrides["companies_path"] = Path(section.companies)
    if section.trackerdb:
        overrides["trackerdb_path"] = Path(section.trackerdb)
    config = EnrichConfig.installed(data_dir, **overrides)
    if updated_dir:
        keep = {"geo_paths": section.geo_db, "asn_mmdb": section.asn_db, "blocklists": section.blocklists}
        config = config.with_updates(updated_dir, keep=frozenset(k for k, v in keep.items() if v))
    enricher = Enricher(config)
    for lookup, ok in enricher.status().items():
        if not ok and lookup != "trackerdb":
            log.warning("enrichment: no data for %s; that part of the view is degraded", lookup)
    return enricher


def source_options(cfg: Config) -> SourceOptions:
    s = cfg.sources
    return SourceOptions(
        netns=s.netns or None,
        dnsmasq_log=Path(s.dnsmasq_log) if s.dnsmasq_log else None,
        journal_dir=Path(s.journal_dir) if s.journal_dir else None,
        journal_since=s.journal_since,
        leases=Path(s.leases) if s.leases else None,
        neighbours=s.neighbours,
        conntrack_refresh=s.conntrack_refresh,
        conntrack_rcvbuf=s.conntrack_rcvbuf,
        capture=cfg.names.capture,
        nflog_group=cfg.names.nflog_group,
    )


def state_config(cfg: Config) -> StateConfig:
    st = cfg.state
    return StateConfig(
        lan=networks(st.lan),
        local_addresses=frozenset(st.local_addresses),
        flow_hold=st.flow_hold,
        device_idle=st.device_idle,
        name_hold=st.name_hold,
        name_wait=cfg.names.name_wait,
        forget_after=cfg.exhibit.forget_after,
    )


def known_domains(enricher: Enricher, extra: str = "") -> KnownDomains:
    """Domains that may be shown by name in exhibit mode: the shipped list (plus ``extra``), the
    company overlay's domains, and domains a blocklist lists exactly (never by a parent rule:
    under a public suffix the registrable domain is whatever a visitor registered)."""
    from apviz.live.privacy import KnownDomains, load_domain_list

    listed = set(load_domain_list(Path(extra))) if extra else set()
    overlay = enricher.companies.domains

    def blocklisted(domain: str) -> bool:
        match = enricher.trackers.lookup(domain)
        return match is not None and match.rule_domain == domain

    return KnownDomains.shipped(also=(overlay.__contains__, blocklisted)).with_domains(listed)


def build_privacy(cfg: Config, enricher: Enricher) -> Privacy:
    from apviz.live.privacy import Privacy

    ex = cfg.exhibit

    def vendor(mac: str) -> str | None:
        info = enricher.describe_mac(mac)
        return info.vendor if info is not None and not info.private else None

    return Privacy(
        ex.mode,
        known_domains(enricher, ex.known_domains),
        lang=ex.language,
        forget_after=ex.forget_after,
        vendor=vendor,
    )


def attach_blocker(service: Service, enricher: Enricher, opts: SourceOptions, timeout: float = 600.0) -> None:
    """Tracker blocking: the state decides (apviz.live.blocking), the blocker applies (apviz.block).

    A tracker is a name the enrichment classifies as one (blocklists, or the overlay's category).
    Elements expire after ``timeout`` seconds, renewed by every new answer for the name.
    """
    from apviz.block.runner import Blocker
    from apviz.block.table import BlockTable
    from apviz.live.blocking import BlockDecider

    def is_tracker(name: str) -> bool:
        info = enricher.describe_name(name)
        return info is not None and info.tracker_category is not None

    blocker = Blocker(BlockTable(opts.netns, opts.nflog_group))
    decider = BlockDecider(is_tracker, blocker.queue, timeout=timeout)
    blocker.decider = decider
    service.state.blocking = decider
    service.blocker = blocker


def build_service(cfg: Config, enricher: Enricher | None = None) -> Service:
    """Everything ``apviz serve`` runs, from a checked configuration."""
    from apviz.live.publicview import ViewBuilder, ViewOptions
    from apviz.server.hub import Hub
    from apviz.service import Service

    state = LiveState(state_config(cfg))
    if enricher is None:
        enricher = build_enricher(cfg.enrich, tuple(cfg.state.local_addresses), cfg.data.dir)
    v = cfg.view
    builder = ViewBuilder(
        ViewOptions(
            top_devices=v.top_devices,
            top_orgs=v.top_orgs,
            top_countries=v.top_countries,
            gateway_lat=v.gateway_lat,
            gateway_lon=v.gateway_lon,
            gateway_label=v.gateway_label,
        ),
        enricher_describe(enricher, hidden_classifier(cfg)),
        build_privacy(cfg, enricher),
    )
    builder.credits = enricher.credits  # the screen credits the source of the files in use
    hub = Hub(queue_size=cfg.server.client_queue, max_per_address=cfg.server.max_streams_per_address)
    opts = source_options(cfg)
    sources = build_sources(opts)
    databases = {"geo": enricher.geo, "asn": enricher.asn, "lists": enricher.lists}
    for name, db in databases.items():
        if db.watched:  # a database replaced on disk is taken into use while running
            sources.append(NamedSource(f"{name}-reload", db.watch))
    service = Service(state, sources, builder, hub, tick_hz=cfg.server.tick_hz, counters=opts.counters)
    service.config = cfg
    if cfg.exhibit.blocking:
        attach_blocker(service, enricher, opts)
    if cfg.exhibit.attract_after > 0:
        from apviz.replay.attract import Attract

        service.attract = Attract(hub, Path(cfg.exhibit.attract_recording), cfg.exhibit.attract_after * 60)

    def database_replaced() -> None:
        # Places and organisations cached from the old file must go, and the screen shows the new
        # ones at once.
        enricher.describe_address.cache_clear()  # type: ignore[attr-defined]
        builder.invalidate()
        service.publish_now()

    for db in databases.values():
        db.on_reload.append(database_replaced)
    return service
