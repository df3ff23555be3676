"""The registrable domain (eTLD+1) of a DNS name, with the Public Suffix List.

The kiosk groups ``i.ytimg.com``, ``rr3---sn-4g5e.googlevideo.com`` and ``www.youtube.com`` by the
part a company registered (``ytimg.com``, ``googlevideo.com``, ``youtube.com``), and the company and
tracker lookups are keyed on it. The PSL comes from the ``publicsuffixlist`` package, which PyPI
republishes whenever the list changes, so ``pip install -U`` refreshes it; an operator may point
``psl_path`` at another copy (Debian's ``publicsuffix`` package has one in
``/usr/share/publicsuffix/public_suffix_list.dat``).

By default the whole list is used, private section included, so ``myapp.herokuapp.com`` is its own
registrable domain (it is a customer of Heroku, not Heroku). ``icann_only=True`` uses the ICANN
section only. Names a visitor's phone asks for are hostile text: garbage, IP literals and
single-label names give ``registrable=None``, never an exception.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
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
    parse_ip,
    readable_file,
)
from apviz.enrich.mmdb import file_identity

log = logging.getLogger("apviz.enrich.domains")

try:
    from publicsuffixlist import PublicSuffixList
except ImportError:  # pragma: no cover
    PublicSuffixList = None  # type: ignore[assignment,misc]

#: Special-use and de-facto home-network suffixes (RFC 6761, RFC 8375, RFC 6762, ICANN's
#: ``.internal``): names under them never leave the building, whatever the PSL says.
LOCAL_SUFFIXES = frozenset(
    {"localhost", "local", "home.arpa", "internal", "lan", "home", "localdomain", "intranet", "corp", "arpa"}
)


@dataclass(frozen=True, slots=True)
class DomainInfo:
    """A normalised DNS name and what the PSL says about it."""

    name: str  # lower-case ASCII (``xn--`` form), no trailing dot
    registrable: str | None  # eTLD+1, None for a bare suffix, IP literal or local name
    suffix: str | None  # the public suffix (``co.uk``), None when unknown
    local: bool = False  # under a home-network/special-use suffix (``printer.local``)

    @property
    def display(self) -> str:
        """The name in Unicode for people (``xn--mller-kva.de`` -> ``müller.de``)."""
        return to_unicode(self.name)


def to_unicode(name: str) -> str:
    """Decode ``xn--`` labels for display; a label that does not decode is kept as it is."""
    if "xn--" not in name:
        return name
    out = []
    for label in name.split("."):
        if label.startswith("xn--"):
            with contextlib.suppress(UnicodeError):
                label = label.encode("ascii").decode("idna")
        out.append(label)
    return ".".join(out)


class DomainParser:
    """Registrable domains from the Public Suffix List.

    Options:
      psl_path: a ``public_suffix_list.dat`` to use instead of the one bundled with the
        ``publicsuffixlist`` package (missing file: warning, bundled list used).
      icann_only: ignore the PSL's private section (``github.io``, ``herokuapp.com``...).
      cache_size: entries in the LRU cache of answers.
      optional: ``psl_path`` is ``apviz data update``'s copy: missing is no warning (not fetched yet),
        and it is only used when it knows ``co.uk`` (else the bundled list is).
    A file renamed over ``psl_path`` is taken into use by :meth:`prepare_reload` (see
    :mod:`apviz.enrich.reload`).
    """

    def __init__(
        self,
        psl_path: str | Path | None = None,
        *,
        icann_only: bool = False,
        cache_size: int = DEFAULT_CACHE_SIZE,
        optional: bool = False,
    ) -> None:
        self.cache_size = check_cache_size(cache_size)
        if not isinstance(icann_only, bool):
            raise EnrichOptionError(f"icann_only must be true or false, got {icann_only!r}")
        self.icann_only = icann_only
        self.psl_path = optional_path(psl_path, "psl_path")
        self._strict = optional  # the updater's copy must be the real PSL; an operator's may be custom
        self.reloads = 0  # replaced lists taken into use
        self.reload_failures = 0  # replaced lists that did not parse: the old list stayed
        self._seen = file_identity(self.psl_path) if self.psl_path is not None else None
        self.source = "none"
        self._psl: Any = None
        if PublicSuffixList is None:
            log.warning("domains: the publicsuffixlist package is missing; registrable domains are off")
        else:
            path = self.psl_path
            if path is not None and optional and not path.exists():
                log.info("domains: %s is not there (yet); using the bundled list", path)
            elif path is not None and readable_file(path, "public suffix list") is not None:
                self._psl = self._read(path)
                if self._psl is not None:
                    self.source = str(path)
            if self._psl is None:
                self._psl = PublicSuffixList(only_icann=icann_only)
                self.source = "publicsuffixlist (bundled)"
        self.info = bounded_cache(self._info, self.cache_size)

    def _read(self, path: Path) -> Any:
        """A parsed list from ``path``, or None (and a warning) when it cannot be read or is not a PSL."""
        try:
            with path.open("rb") as fh:
                psl = PublicSuffixList(fh, only_icann=self.icann_only)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            log.warning("domains: cannot read %s (%s)", path, exc)
            return None
        # An empty or foreign file parses to a list that knows nothing: every name would look registrable.
        if self._strict and psl.publicsuffix("example.co.uk") != "co.uk":
            log.warning("domains: %s does not look like the Public Suffix List (no co.uk)", path)
            return None
        return psl

    def prepare_reload(self) -> Callable[[], bool] | None:
        """Parse ``psl_path`` again if the file changed (may run on a worker thread); None when it did
        not, or when the new file is unusable (the old list stays, counted in ``reload_failures``).
        The returned ``commit`` takes the new list into use."""
        if self.psl_path is None or PublicSuffixList is None:
            return None
        ident = file_identity(self.psl_path)
        if ident == self._seen:
            return None
        self._seen = ident
        if ident is None:
            log.warning("domains: %s disappeared; its list stays in use", self.psl_path)
            return None
        psl = self._read(self.psl_path)
        if psl is None:
            self.reload_failures += 1
            return None
        path = self.psl_path

        def commit() -> bool:
            self._psl, self.source = psl, str(path)
            self.info.cache_clear()  # type: ignore[attr-defined]
            self.reloads += 1
            log.info("domains: replaced: using %s", path)
            return True

        return commit

    @property
    def available(self) -> bool:
        return self._psl is not None

    def registrable(self, name: object) -> str | None:
        """The eTLD+1 of ``name``, or None."""
        info = self.info(name) if isinstance(name, str) else None
        return info.registrable if info is not None else None

    def _info(self, name: str) -> DomainInfo | None:
        norm = normalise_name(name)
        if norm is None:
            return None
        if "." not in norm or parse_ip(norm) is not None:
            # A single label or an IP literal written as a name (``1.2.3.4``): no registrable part.
            return DomainInfo(norm, None, None, local="." not in norm)
        local = _is_local(norm)
        if local or self._psl is None:
            return DomainInfo(norm, None, None, local=local)
        suffix = self._psl.publicsuffix(norm)
        registrable = self._psl.privatesuffix(norm)
        return DomainInfo(norm, registrable, suffix)


def _is_local(name: str) -> bool:
    pos = -1
    while True:
        if name[pos + 1 :] in LOCAL_SUFFIXES:
            return True
        pos = name.find(".", pos + 1)
        if pos == -1:
            return False
