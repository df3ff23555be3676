"""Helpers shared by the enrichers: option errors, bounded caches, address and name parsing.

Every enricher takes hostile strings (a DNS name a visitor's phone asked for, an address from a log
line) and must answer without raising, so the parsing that decides "is this even an address/name?"
lives here once, not in each module with slightly different rules.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

log = logging.getLogger("apviz.enrich")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

T = TypeVar("T")
R = TypeVar("R")

#: Longest text accepted as an address: a full IPv6 spelling with an embedded IPv4 part.
MAX_ADDRESS_TEXT = 64
#: RFC 1035: a name is at most 253 characters in dotted text, a label at most 63.
MAX_NAME = 253
MAX_LABEL = 63

DEFAULT_CACHE_SIZE = 8192


class EnrichOptionError(ValueError):
    """An enricher was configured with a value it cannot use; the message names the value.

    Raised only while constructing an enricher (operator configuration), never by a lookup.
    """


def check_cache_size(value: object, option: str = "cache_size") -> int:
    """Validate a cache size option: a positive int, so every cache stays bounded."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EnrichOptionError(f"{option} must be a positive integer, got {value!r}")
    return value


#: Keys longer than this are answered without being cached: no real name or address is this long,
#: and a cache bounded in entries must not be filled with megabytes of a hostile client's text.
MAX_CACHED_KEY = 1100


class _BoundedCache(Generic[T, R]):
    """An LRU cache around a one-argument lookup that refuses oversized or unhashable keys."""

    __slots__ = ("_cached", "_func")

    def __init__(self, func: Callable[[T], R], maxsize: int) -> None:
        self._func = func
        self._cached = functools.lru_cache(maxsize=maxsize)(func)

    def __call__(self, key: T) -> R:
        if isinstance(key, str) and len(key) > MAX_CACHED_KEY:
            return self._func(key)
        try:
            return self._cached(key)
        except TypeError:  # unhashable: not a string or an address, so the lookup says None
            return self._func(key)

    def cache_info(self) -> Any:
        return self._cached.cache_info()

    def cache_clear(self) -> None:
        self._cached.cache_clear()


def bounded_cache(func: Callable[[T], R], maxsize: int) -> Callable[[T], R]:
    """Wrap a one-argument lookup in an LRU cache of ``maxsize`` entries.

    Done per instance (not as a decorator on the method) so that each enricher owns its cache and
    its size comes from the options, and so instances can be garbage-collected.
    """
    return _BoundedCache(func, maxsize)


def optional_path(value: object, option: str) -> Path | None:
    """Turn an option into a Path (or None); reject types that cannot name a file."""
    if value is None or value == "":
        return None
    if isinstance(value, str | os.PathLike):
        return Path(value)
    raise EnrichOptionError(f"{option} must be a path, got {value!r}")


def readable_file(path: Path | None, what: str) -> Path | None:
    """Return ``path`` when it is a readable file, else log why it is not used and return None.

    A missing data file is an operator's set-up problem, not a crash: the lookup degrades.
    """
    if path is None:
        return None
    if not path.is_file():
        log.warning("%s: %s not found; %s lookups are disabled", what, path, what)
        return None
    if not os.access(path, os.R_OK):
        log.warning("%s: %s is not readable; %s lookups are disabled", what, path, what)
        return None
    return path


def parse_ip(text: object) -> IPAddress | None:
    """Parse hostile text as an IP address; IPv4-mapped IPv6 becomes IPv4. Never raises.

    A zone index (``fe80::1%wlan0``) is dropped: it names an interface of this machine, not a place.
    """
    if isinstance(text, ipaddress.IPv4Address | ipaddress.IPv6Address):
        addr: IPAddress = text
    else:
        if not isinstance(text, str) or not text or len(text) > MAX_ADDRESS_TEXT:
            return None
        text = text.strip().strip("[]").split("%", 1)[0]
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def normalise_name(name: object) -> str | None:
    """Lower-case, strip the trailing dot, IDNA-encode; None for anything that is not a DNS name.

    Accepts letters, digits, ``-`` and ``_`` (service labels such as ``_dns.resolver.arpa``) in
    labels of 1..63 characters. Non-ASCII names are converted to their ``xn--`` form with the
    standard library's IDNA codec; a name it refuses is garbage, not an error.
    """
    if not isinstance(name, str):
        return None
    name = name.strip().rstrip(".").lower()
    if not name or len(name) > MAX_NAME * 4:
        return None
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return None
    if len(name) > MAX_NAME:
        return None
    for label in name.split("."):
        if not label or len(label) > MAX_LABEL or not _LDH.issuperset(label):
            return None
    return name


def parents(name: str) -> list[str]:
    """``a.b.c.com`` -> ``["a.b.c.com", "b.c.com", "c.com", "com"]``: the keys to try, O(labels)."""
    out = [name]
    pos = name.find(".")
    while pos != -1:
        out.append(name[pos + 1 :])
        pos = name.find(".", pos + 1)
    return out
