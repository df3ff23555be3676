"""What a flow's far end *is*, in words a visitor understands: company, country, tracker or not.

The views ask one question per (name, address) pair through a :data:`Describe` callable, so they
do not depend on which databases are installed. :func:`plain_describe` is the fallback with no
databases at all: it still groups by domain and never invents a place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Destination:
    org: str  # what the sankey's middle column shows: company, else domain, else network owner
    org_source: str  # "company" | "domain" | "asn" | "special" | "hidden" | "unknown"
    domain: str | None = None  # registrable domain of the name, if any
    country: str | None = None  # ISO 3166 alpha-2
    country_name: str | None = None
    city: str | None = None
    lat: float | None = None
    lon: float | None = None
    tracker: str | None = None  # "ads", "tracker", ... when a blocklist lists the name
    category: str | None = None  # the company's category from the overlay
    special: str | None = None  # "private network", "the gateway", ... for special ranges
    asn_org: str | None = None
    # "private-dns" | "vpn" | "private-relay" (apviz.enrich.hidden): the connection hides where the
    # device goes, and ``org`` says so instead of naming the company that runs the server.
    hidden: str | None = None
    # The overlay's company id (``criteo``) when ``org`` is a company: what a company card is keyed by.
    company: str | None = None


class Describe(Protocol):
    """What is behind a flow to ``address`` (named ``name``, on ``proto``/``dport``)?

    The port matters only for the few connections that carry something else inside (DNS over TLS
    on 853, a VPN), so callers that do not know it may leave it out.
    """

    def __call__(self, name: str | None, address: str, proto: int = 0, dport: int = 0) -> Destination: ...


def plain_describe(name: str | None, address: str, proto: int = 0, dport: int = 0) -> Destination:
    """No databases: group by the last two labels of the name, no place, no tracker flag."""
    if name:
        labels = name.rstrip(".").split(".")
        domain = ".".join(labels[-2:]) if len(labels) >= 2 else name
        return Destination(org=domain, org_source="domain", domain=domain)
    return Destination(org="unknown", org_source="unknown")
