"""Optional: company and category from Ghostery's TrackerDB (``@ghostery/trackerdb`` on npm).

The TrackerDB is licensed CC BY-NC-SA 4.0, which the project cannot require, so it is opt-in only:
nothing installs or loads it unless the operator sets ``trackerdb_path`` to the package's
``dist/trackerdb.json``, and every answer is labelled with :data:`SOURCE_LABEL` so the screen can
credit it. apviz's own overlay (``companies.py``) always wins; this only fills gaps.

The file (TrackerDB 1.0.x ``dist/trackerdb.json``) is one JSON object::

    {"categories":    {"advertising": {"name": "Advertising", "color": "#cb55cd", "description": ...}},
     "organizations": {"google": {"name": "Google", "description": ..., "country": "US", ...}},
     "patterns":      {"google_analytics": {"name": "Google Analytics", "category": "site_analytics",
                                            "organization": "google", "domains": [...], ...}},
     "domains":       {"google-analytics.com": "google_analytics", ...},
     "filters":       {"||google-analytics.com/collect": "google_analytics", ...}}

Only ``domains`` -> ``patterns`` -> ``organizations``/``categories`` is used: a gateway sees names,
not URLs, so the URL filters do not apply.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from apviz.enrich._common import (
    DEFAULT_CACHE_SIZE,
    bounded_cache,
    check_cache_size,
    normalise_name,
    optional_path,
    parents,
    readable_file,
)
from apviz.enrich.companies import CompanyInfo

log = logging.getLogger("apviz.enrich.ghostery")

SOURCE_LABEL = "Ghostery TrackerDB (CC BY-NC-SA 4.0)"

#: Ghostery category -> apviz category (see companies.CATEGORIES).
CATEGORY_MAP: dict[str, str] = {
    "advertising": "advertising",
    "pornvertising": "advertising",
    "site_analytics": "analytics",
    "social_media": "social",
    "audio_video_player": "video",
    "consent": "consent",
    "customer_interaction": "productivity",
    "hosting": "cloud/CDN",
    "utilities": "cloud/CDN",
    "extensions": "other",
    "misc": "other",
}


class TrackerDb:
    """Lookups in a TrackerDB JSON export.

    Options:
      path: ``node_modules/@ghostery/trackerdb/dist/trackerdb.json``; None (the default) means off.
        A missing or unreadable file is logged and every lookup returns None.
      cache_size: entries in the LRU cache of answers.
    """

    def __init__(self, path: str | Path | None, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self.cache_size = check_cache_size(cache_size)
        self.path = optional_path(path, "trackerdb_path")
        self._domains: dict[str, str] = {}
        self._patterns: dict[str, Mapping[str, Any]] = {}
        self._orgs: dict[str, Mapping[str, Any]] = {}
        usable = readable_file(self.path, "Ghostery TrackerDB")
        if usable is not None:
            self._load(usable)
        self.lookup = bounded_cache(self._lookup, self.cache_size)

    def __len__(self) -> int:
        return len(self._domains)

    @property
    def available(self) -> bool:
        return bool(self._domains)

    def _load(self, path: Path) -> None:
        try:
            with path.open("rb") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as exc:
            log.warning("ghostery: cannot read %s (%s); TrackerDB lookups are disabled", path, exc)
            return
        if not isinstance(data, Mapping) or not all(
            isinstance(data.get(k), Mapping) for k in ("domains", "patterns", "organizations")
        ):
            log.warning("ghostery: %s is not a TrackerDB JSON export; TrackerDB lookups are disabled", path)
            return
        self._patterns = {k: v for k, v in data["patterns"].items() if isinstance(v, Mapping)}
        self._orgs = {k: v for k, v in data["organizations"].items() if isinstance(v, Mapping)}
        for raw, pattern in data["domains"].items():
            domain = normalise_name(raw)
            if domain is not None and isinstance(pattern, str) and pattern in self._patterns:
                self._domains[domain] = pattern
        log.info("ghostery: %d domains from %s (%s)", len(self._domains), path, SOURCE_LABEL)

    def _lookup(self, name: str) -> CompanyInfo | None:
        norm = normalise_name(name)
        if norm is None or not self._domains:
            return None
        for candidate in parents(norm):
            key = self._domains.get(candidate)
            if key is not None:
                return self._info(key, candidate)
        return None

    def _info(self, key: str, domain: str) -> CompanyInfo:
        pattern = self._patterns[key]
        org_key = pattern.get("organization")
        org = self._orgs.get(org_key) if isinstance(org_key, str) else None
        name = _text(org.get("name")) if org else None
        name = name or _text(pattern.get("name")) or domain
        about = (_text(org.get("description")) if org else None) or f"{name}, as listed by Ghostery."
        country = _text(org.get("country")) if org else None
        category = CATEGORY_MAP.get(str(pattern.get("category")), "other")
        return CompanyInfo(
            key=f"ghostery:{org_key or key}",
            name=name,
            about=about,
            category=category,
            country_code=country.upper() if country and len(country) == 2 else None,
            domain=domain,
            source=SOURCE_LABEL,
        )


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None
