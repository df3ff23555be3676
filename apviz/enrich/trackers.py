"""Is a DNS name an ad or tracker domain? Answered from public blocklists.

A gateway sees the names devices look up, never the URLs they fetch, so only the part of a list
that speaks about whole domains can be used:

* hosts files: ``0.0.0.0 ads.example`` (any address, several names per line, ``#`` comments);
* plain domain lists: one name per line;
* Adblock Plus syntax (EasyList, EasyPrivacy): only pure domain network rules, ``||domain^``,
  optionally with ``$third-party`` / ``$3p`` (every request a gateway can attribute is third-party
  to no page, so it is taken as a match). Everything else is skipped and counted by reason:
  comments, cosmetic rules (``##``, ``#@#``, ``#?#``...), exceptions (``@@``), rules with a path,
  a wildcard or other options (``$script``, ``$domain=...``).

Each list carries a category (EasyList -> ``"ads"``, EasyPrivacy -> ``"tracker"``). A name matches
when it or any parent is listed (``a.b.tracker.com`` matches ``tracker.com``): one set probe per
label. When lists overlap, the first list given wins.

Debian's ``webext-ublock-origin-firefox`` package ships current copies of both lists (see
:data:`DEBIAN_EASYLIST` and :data:`DEBIAN_EASYPRIVACY`).
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from apviz.enrich._common import (
    DEFAULT_CACHE_SIZE,
    EnrichOptionError,
    bounded_cache,
    check_cache_size,
    normalise_name,
    parents,
    readable_file,
)
from apviz.enrich.mmdb import Identity, file_identity

log = logging.getLogger("apviz.enrich.trackers")

_UBO = Path("/usr/share/mozilla/extensions/{ec8030f7-c20a-464f-9b0e-13a3a9e97384}/uBlock0@raymondhill.net")
DEBIAN_EASYLIST = _UBO / "assets/thirdparties/easylist/easylist.txt"
DEBIAN_EASYPRIVACY = _UBO / "assets/thirdparties/easylist/easyprivacy.txt"

FORMATS = ("auto", "abp", "hosts", "domains")
#: Categories a list may carry; the kiosk maps them to its own words.
TRACKER_CATEGORIES = ("ads", "tracker", "malware", "other")

_THIRD_PARTY = frozenset({"third-party", "3p"})
#: Resource-type options: a rule limited to these still says "this whole domain serves ads or
#: tracking" (EasyPrivacy lists google-analytics.com as ``$script,third-party,xmlhttprequest``).
_TYPE_OPTIONS = (
    frozenset(
        {
            "script",
            "image",
            "xmlhttprequest",
            "xhr",
            "ping",
            "beacon",
            "stylesheet",
            "css",
            "subdocument",
            "frame",
            "media",
            "object",
            "font",
            "websocket",
            "other",
            "fetch",
        }
    )
    | _THIRD_PARTY
)
_COSMETIC = ("##", "#@#", "#?#", "#$#", "#%#", "#@$#", "#@?#")
_HOSTS_IGNORE = frozenset(
    {"localhost", "localhost.localdomain", "local", "broadcasthost", "ip6-localhost", "ip6-loopback"}
)


@dataclass(frozen=True, slots=True)
class BlocklistSpec:
    """One list to load: a file, what its entries mean (category) and a name to show.

    ``fallback`` is read when ``path`` is missing or yields no domain: ``path`` is the copy
    ``apviz data update`` keeps fresh, ``fallback`` the one installed with the software.
    """

    path: Path
    category: str
    name: str = ""
    format: str = "auto"
    fallback: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, Path):
            object.__setattr__(self, "path", Path(self.path))
        if self.fallback is not None and not isinstance(self.fallback, Path):
            object.__setattr__(self, "fallback", Path(self.fallback))
        if self.category not in TRACKER_CATEGORIES:
            raise EnrichOptionError(
                f"blocklist {self.path}: category must be one of {TRACKER_CATEGORIES}, got {self.category!r}"
            )
        if self.format not in FORMATS:
            raise EnrichOptionError(
                f"blocklist {self.path}: format must be one of {FORMATS}, got {self.format!r}"
            )
        if not self.name:
            object.__setattr__(self, "name", self.path.stem)

    @classmethod
    def parse(cls, text: str) -> BlocklistSpec:
        """``PATH:CATEGORY[:NAME]``, the form used on command lines and in config files."""
        head, sep, last = text.rpartition(":")
        if sep and head and last in TRACKER_CATEGORIES:
            return cls(Path(head), last)
        path, sep2, middle = head.rpartition(":")
        if sep and sep2 and path and middle in TRACKER_CATEGORIES:
            return cls(Path(path), middle, last)
        raise EnrichOptionError(
            f"blocklist must be PATH:CATEGORY[:NAME] with CATEGORY in {TRACKER_CATEGORIES}, got {text!r}"
        )


@dataclass(frozen=True, slots=True)
class TrackerMatch:
    """A name was found on a list: which category, which list, and the listed domain."""

    category: str
    list_name: str
    rule_domain: str


@dataclass(slots=True)
class ListStats:
    """What loading one list did: domains taken and lines skipped, by reason."""

    name: str
    path: str
    format: str = "missing"
    domains: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def parse_abp_line(line: str, accept_type_options: bool = False) -> tuple[str | None, str | None]:
    """One Adblock Plus line -> (domain, None) when usable, else (None, reason skipped).

    ``accept_type_options`` also takes ``||domain^$script,image,...`` rules (resource types and
    third-party only, none negated); off by default, where only ``$third-party`` is accepted.
    """
    line = line.strip()
    if not line:
        return None, "blank"
    if line.startswith(("!", "[")):
        return None, "comment"
    if line.startswith("@@"):
        return None, "exception"
    if any(marker in line for marker in _COSMETIC):
        return None, "cosmetic"
    if not line.startswith("||"):
        return None, "url-pattern"
    body, _, options = line[2:].partition("$")
    if options:
        opts = {o.strip().lower() for o in options.split(",")}
        allowed = _TYPE_OPTIONS if accept_type_options else _THIRD_PARTY
        if not opts <= allowed:
            return None, "options"
    if not body.endswith("^"):
        return None, "path-or-wildcard"
    host = body[:-1]
    if "*" in host or "/" in host or "^" in host or "|" in host:
        return None, "path-or-wildcard"
    domain = normalise_name(host)
    if domain is None or "." not in domain or _is_ip(domain):
        return None, "not-a-domain"
    return domain, None


def parse_hosts_line(line: str) -> tuple[list[str], str | None]:
    """One hosts-file line -> (domains, None) or ([], reason)."""
    line = line.split("#", 1)[0].strip()
    if not line:
        return [], "blank"
    fields = line.split()
    if len(fields) < 2 or not _is_ip(fields[0]):
        return [], "malformed"
    out = []
    for raw in fields[1:]:
        domain = normalise_name(raw)
        if domain is not None and domain not in _HOSTS_IGNORE and "." in domain and not _is_ip(domain):
            out.append(domain)
    return out, None if out else "not-a-domain"


def parse_domain_line(line: str) -> tuple[str | None, str | None]:
    line = line.split("#", 1)[0].strip()
    if not line:
        return None, "blank"
    domain = normalise_name(line)
    if domain is None or "." not in domain or _is_ip(domain):
        return None, "not-a-domain"
    return domain, None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def sniff_format(lines: Iterable[str]) -> str:
    """Guess a list's format from its first meaningful lines."""
    seen = 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if line.startswith("[Adblock") or line.startswith(("||", "@@", "!")):
            return "abp"
        if line.startswith("#"):
            continue
        first = line.split()[0]
        if _is_ip(first) and len(line.split()) >= 2:
            return "hosts"
        seen += 1
        if seen >= 50:
            break
    return "domains"


class TrackerClassifier:
    """Tracker/ad category of a DNS name from a set of blocklists.

    Options:
      lists: :class:`BlocklistSpec` entries (or ``"PATH:CATEGORY[:NAME]"`` strings), first wins.
        A missing list is logged and skipped.
      accept_type_options: also take ABP domain rules limited to resource types (``$script``...),
        which adds google-analytics.com and similar; off by default (pure domain rules only).
      cache_size: entries in the LRU cache of answers.
    """

    def __init__(
        self,
        lists: Sequence[BlocklistSpec | str] = (),
        *,
        accept_type_options: bool = False,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.cache_size = check_cache_size(cache_size)
        if not isinstance(accept_type_options, bool):
            raise EnrichOptionError(f"accept_type_options must be true or false, got {accept_type_options!r}")
        self.accept_type_options = accept_type_options
        if isinstance(lists, str | Path):
            raise EnrichOptionError(f"lists must be a list of blocklists, got {lists!r}")
        self.specs = [s if isinstance(s, BlocklistSpec) else BlocklistSpec.parse(s) for s in lists]
        self.reloads = 0  # replaced lists taken into use
        self.reload_failures = 0  # replaced lists that yielded nothing: the old domains stayed
        self._seen = [_identities(spec) for spec in self.specs]
        self._sets: list[set[str]] = []
        self.stats: list[ListStats] = []
        for spec in self.specs:
            stats, domains = self._load(spec)
            self.stats.append(stats)
            self._sets.append(domains)
        self._domains = _merge(self._sets)  # domain -> index into self.specs, first list wins
        self.lookup = bounded_cache(self._lookup, self.cache_size)

    def __len__(self) -> int:
        return len(self._domains)

    @property
    def available(self) -> bool:
        return bool(self._domains)

    def _load(self, spec: BlocklistSpec) -> tuple[ListStats, set[str]]:
        """The list's domains from ``spec.path``, else (missing, or nothing usable in it) the fallback."""
        if spec.fallback is not None and not spec.path.exists():
            return self._parse(spec, spec.fallback)
        stats, domains = self._parse(spec, spec.path)
        if not domains and spec.fallback is not None:
            log.warning("trackers: %s gave no domain; using %s", spec.path, spec.fallback)
            return self._parse(spec, spec.fallback)
        return stats, domains

    def _parse(self, spec: BlocklistSpec, path: Path) -> tuple[ListStats, set[str]]:
        stats = ListStats(spec.name, str(path))
        domains: set[str] = set()
        if readable_file(path, f"blocklist {spec.name}") is None:
            return stats, domains
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            log.warning("trackers: cannot read %s (%s); skipped", path, exc)
            return stats, domains
        lines = text.splitlines()
        fmt = spec.format if spec.format != "auto" else sniff_format(lines[:500])
        stats.format = fmt
        for line in lines:
            if fmt == "abp":
                domain, reason = parse_abp_line(line, self.accept_type_options)
                found = [domain] if domain else []
            elif fmt == "hosts":
                found, reason = parse_hosts_line(line)
            else:
                domain, reason = parse_domain_line(line)
                found = [domain] if domain else []
            if reason is not None:
                stats.skipped[reason] += 1
            for domain in found:
                stats.domains += 1
                domains.add(domain)
        log.info(
            "trackers: %s: %d domains from %s (%s), skipped %s",
            spec.name, stats.domains, path, fmt, dict(stats.skipped),
        )  # fmt: skip
        return stats, domains

    def prepare_reload(self) -> Callable[[], bool] | None:
        """Re-read the lists whose files changed since last looked at; None when none did.

        Slow (about 0.5 s for EasyList and EasyPrivacy), so it may run on a worker thread; it
        changes nothing in use. The returned ``commit`` swaps the new domains in (on the thread
        that asks the lookups) and says whether anything changed. A list that now yields no
        domain where it had some keeps its old domains (counted in ``reload_failures``).
        """
        changed = False
        sets, stats = list(self._sets), list(self.stats)
        for index, spec in enumerate(self.specs):
            ident = _identities(spec)
            if ident == self._seen[index]:
                continue
            self._seen[index] = ident
            if spec.path.exists() or spec.fallback is None:
                # A replacement that gives nothing is a broken update: keep what we have, even when
                # the fallback (the installed copy) would give something, but older.
                new_stats, domains = self._parse(spec, spec.path)
            else:
                new_stats, domains = self._parse(spec, spec.fallback)
            if not domains and self._sets[index]:
                self.reload_failures += 1
                log.warning(
                    "trackers: %s changed but gave no domain; keeping its %d domains",
                    spec.name, len(self._sets[index]),
                )  # fmt: skip
                continue
            sets[index], stats[index] = domains, new_stats
            changed = True
        if not changed:
            return None
        merged = _merge(sets)

        def commit() -> bool:
            self._sets, self.stats, self._domains = sets, stats, merged
            self.lookup.cache_clear()  # type: ignore[attr-defined]
            self.reloads += 1
            log.info("trackers: now %d domains from %s", len(merged), ", ".join(s.path for s in stats))
            return True

        return commit

    def _lookup(self, name: str) -> TrackerMatch | None:
        norm = normalise_name(name)
        if norm is None or not self._domains:
            return None
        for candidate in parents(norm):
            index = self._domains.get(candidate)
            if index is not None:
                spec = self.specs[index]
                return TrackerMatch(spec.category, spec.name, candidate)
        return None


def _identities(spec: BlocklistSpec) -> tuple[Identity | None, Identity | None]:
    return file_identity(spec.path), file_identity(spec.fallback) if spec.fallback else None


def _merge(sets: Sequence[set[str]]) -> dict[str, int]:
    """domain -> index of the first list that names it."""
    merged: dict[str, int] = {}
    for index, domains in enumerate(sets):
        for domain in domains:
            merged.setdefault(domain, index)
    return merged
