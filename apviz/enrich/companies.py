"""Which company is behind a domain, in words a twelve-year-old understands.

The data is apviz's own overlay, ``data/companies.toml``: a few hundred registrable domains that
phones, TVs and laptops contact most, each tied to a company with a display name, its home country
and a one-sentence description, and to a category from :data:`CATEGORIES`. The format::

    [companies.google]
    name = "Google"
    country = "US"                      # ISO 3166-1 alpha-2 of the headquarters
    about = "Makes Android, Search, YouTube and Maps. Most of its money comes from ads."

    [domains]
    "doubleclick.net" = { company = "google", category = "advertising",
                          about = "Google's ad system: it picks which ads you see." }
    "push.apple.com"  = { company = "apple", category = "push" }   # a host can override its parent

A name matches its most specific listed parent (``a.b.doubleclick.net`` -> ``doubleclick.net``),
found in O(labels) dictionary probes. A domain without ``about`` shows its company's.

Loading is lenient by default: a bad entry is logged and skipped so a typo in an operator's copy
cannot stop the kiosk; ``strict=True`` (used by the tests on the shipped file) raises instead.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apviz.enrich._common import (
    DEFAULT_CACHE_SIZE,
    EnrichOptionError,
    bounded_cache,
    check_cache_size,
    normalise_name,
    optional_path,
    parents,
    readable_file,
)
from apviz.enrich._countries import COUNTRY_NAMES, country_name

log = logging.getLogger("apviz.enrich.companies")

#: The categories a domain can have, with the short label the kiosk shows.
CATEGORIES: dict[str, str] = {
    "advertising": "Ads",
    "analytics": "Tracking & measuring",
    "social": "Social media",
    "video": "Video",
    "music": "Music & audio",
    "messaging": "Messaging",
    "search": "Search",
    "shopping": "Shopping",
    "games": "Games",
    "cloud/CDN": "Cloud & delivery",
    "os-updates": "System & updates",
    "app-store": "App store",
    "maps": "Maps & location",
    "email": "Email",
    "news": "News",
    "learning": "Learning",
    "tv": "Smart TV",
    "smart-home": "Smart home",
    "push": "Notifications",
    "crash-reports": "Crash reports",
    "consent": "Cookie pop-ups",
    "productivity": "Work & school apps",
    "ai": "AI assistant",
    "security": "Security checks",
    "connectivity": "Internet check",
    "other": "Other",
}

#: Where the shipped overlay lives (a source checkout; installs pass ``path`` explicitly).
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "data" / "companies.toml"


@dataclass(frozen=True, slots=True)
class CompanyInfo:
    """What the kiosk says about the company behind a domain."""

    key: str  # stable id of the company (``google``)
    name: str  # display name (``Google``)
    about: str  # one plain sentence
    category: str  # a key of CATEGORIES (or of the source's own vocabulary, see ``source``)
    country_code: str | None  # headquarters
    domain: str  # the listed domain that matched
    source: str = "apviz"  # "apviz" or a labelled third-party source (e.g. Ghostery TrackerDB)

    @property
    def country(self) -> str | None:
        return country_name(self.country_code)

    @property
    def category_label(self) -> str:
        return CATEGORIES.get(self.category, self.category)


@dataclass(frozen=True, slots=True)
class _Company:
    name: str
    about: str
    country_code: str | None


class CompanyMap:
    """The curated overlay: domain -> company.

    Options:
      path: the TOML file (default: ``data/companies.toml`` of the source tree). Missing file:
        warning, every lookup returns None.
      strict: raise :class:`EnrichOptionError` on the first bad entry instead of skipping it.
      cache_size: entries in the LRU cache of answers.
    """

    def __init__(
        self,
        path: str | Path | None = DEFAULT_PATH,
        *,
        strict: bool = False,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.cache_size = check_cache_size(cache_size)
        self.strict = strict
        self.path = optional_path(path, "companies path")
        self.errors: list[str] = []
        self._companies: dict[str, _Company] = {}
        self._domains: dict[str, tuple[str, str, str | None]] = {}  # domain -> (company, category, about)
        usable = readable_file(self.path, "companies")
        if usable is not None:
            try:
                with usable.open("rb") as fh:
                    data = tomllib.load(fh)
            except (OSError, tomllib.TOMLDecodeError) as exc:
                self._problem(f"{usable}: {exc}")
            else:
                self._load(data)
        self.lookup = bounded_cache(self._lookup, self.cache_size)

    def __len__(self) -> int:
        return len(self._domains)

    @property
    def companies(self) -> Mapping[str, _Company]:
        return self._companies

    @property
    def domains(self) -> Mapping[str, tuple[str, str, str | None]]:
        return self._domains

    def _problem(self, message: str) -> None:
        if self.strict:
            raise EnrichOptionError(message)
        self.errors.append(message)
        log.warning("companies: %s (entry skipped)", message)

    def _load(self, data: Mapping[str, Any]) -> None:
        companies = data.get("companies", {})
        domains = data.get("domains", {})
        if not isinstance(companies, Mapping) or not isinstance(domains, Mapping):
            self._problem("the file needs a [companies.*] section and a [domains] table")
            return
        for key, entry in companies.items():
            if not isinstance(entry, Mapping):
                self._problem(f"company {key!r} is not a table")
                continue
            name, about, country = entry.get("name"), entry.get("about"), entry.get("country")
            if not isinstance(name, str) or not name.strip():
                self._problem(f"company {key!r} has no name: {name!r}")
                continue
            if not isinstance(about, str) or not about.strip():
                self._problem(f"company {key!r} has no about text: {about!r}")
                continue
            if country is not None and (not isinstance(country, str) or country.upper() not in COUNTRY_NAMES):
                self._problem(f"company {key!r} has an unknown country code {country!r}")
                continue
            self._companies[key] = _Company(name.strip(), about.strip(), country.upper() if country else None)
        for raw, entry in domains.items():
            domain = normalise_name(raw)
            if domain is None or domain != raw:
                self._problem(f"domain {raw!r} is not a lower-case DNS name")
                continue
            if not isinstance(entry, Mapping):
                self._problem(f"domain {raw!r} is not a table")
                continue
            company, category, about = entry.get("company"), entry.get("category"), entry.get("about")
            if company not in self._companies:
                self._problem(f"domain {raw!r} names an unknown company {company!r}")
                continue
            if category not in CATEGORIES:
                self._problem(f"domain {raw!r} has an unknown category {category!r}")
                continue
            if about is not None and (not isinstance(about, str) or not about.strip()):
                self._problem(f"domain {raw!r} has an empty about text")
                continue
            if domain in self._domains:
                self._problem(f"domain {raw!r} is listed twice")
                continue
            self._domains[domain] = (company, category, about.strip() if about else None)

    def _lookup(self, name: str) -> CompanyInfo | None:
        norm = normalise_name(name)
        if norm is None:
            return None
        for candidate in parents(norm):
            hit = self._domains.get(candidate)
            if hit is not None:
                key, category, about = hit
                company = self._companies[key]
                return CompanyInfo(
                    key, company.name, about or company.about, category, company.country_code, candidate
                )
        return None
