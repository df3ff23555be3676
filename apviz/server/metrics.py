"""Prometheus metrics, read from the running service at scrape time.

A custom collector reads the counters the state, sources and hub already keep, so the hot path
pays nothing for metrics and no label ever carries a connection, an address or a device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

Reader = Callable[[], dict[str, Any]]

GAUGES = [
    ("apviz_flows", "Flows in the live state (open and recently ended)", "flows"),
    ("apviz_flows_open", "Open flows in the live state", "flows_open"),
    ("apviz_devices", "Devices in the live state", "devices"),
    ("apviz_sse_clients", "Connected event-stream clients", "sse_clients"),
    ("apviz_queue_depth", "Events waiting to be applied", "queue_depth"),
    ("apviz_events_per_second", "Events applied per second (last tick)", "eps"),
]
COUNTERS = [
    ("apviz_events", "Source events applied", "events"),
    ("apviz_flows_new", "Connections of LAN devices the state began to follow", "flows_new"),
    ("apviz_dns_answers", "DNS answers read from the resolver's log", "dns_answers"),
    ("apviz_dropped_events", "Updates a slow client missed (it got a snapshot instead)", "dropped"),
    ("apviz_parse_errors", "Log or lease lines that could not be parsed", "parse_errors"),
    ("apviz_resyncs", "Conntrack resynchronisations after lost events", "resyncs"),
    ("apviz_sse_refused", "Event streams refused by the per-address limit", "refused"),
    ("apviz_updates_published", "View deltas published", "published"),
]


class ServiceCollector(Collector):
    """Turns a dict of figures (see :meth:`apviz.service.Service.figures`) into metric families."""

    def __init__(self, read: Reader) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        f = self.read()
        for name, help_text, key in GAUGES:
            yield GaugeMetricFamily(name, help_text, f[key])
        for name, help_text, key in COUNTERS:
            yield CounterMetricFamily(name, help_text, f[key])


def make_registry(read: Reader) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(read))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
