"""What the public view may show about visitors: the exhibit's modes and their rules.

The visitor network is hostile: a phone chooses its DHCP hostname, and any visitor can look up a
domain they registered themselves (``rude-word-1234.example``) and watch it appear on the kiosk. So
in the ``exhibit`` and ``classroom`` modes, enforced here on the server and not in the browser:

- a device is named by a pseudonym ("Yellow Fox", :mod:`apviz.live.pseudonyms`), never by its
  hostname, MAC, address or client id;
- a domain learnt from DNS is shown only if it is *known*: listed in the company overlay, matched
  exactly by a blocklist rule, or in the shipped list of well-known domains
  (``data/known-domains.txt``). Otherwise the organisation owning the network (ASN) is shown, else
  "unknown site". The organisation node's label, its id and its ``domains`` list all obey this.

``home`` mode shows real hostnames and every domain: the household is its own audience.

The :class:`Privacy` object is the exhibit's runtime switchboard too (mode, language, paused
screen, hidden devices), because the operator console changes exactly these and the view builder
is the one place that reads them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path

from apviz.live.destinations import Destination
from apviz.live.pseudonyms import LANGUAGES, Pseudonyms, home_label

#: The shipped list of well-known domains (one registrable domain per line, ``#`` comments).
DEFAULT_KNOWN_DOMAINS = Path(__file__).resolve().parents[2] / "data" / "known-domains.txt"

UNKNOWN_SITE = {"en": "unknown site", "de": "unbekannte Seite", "fr": "site inconnu"}


class Mode(StrEnum):
    EXHIBIT = "exhibit"  # a public screen among strangers: pseudonyms, known domains only
    CLASSROOM = "classroom"  # the same rules: pupils must not be able to name or shame each other
    HOME = "home"  # a household watching its own devices: real hostnames and domains

    @property
    def private(self) -> bool:
        return self is not Mode.HOME

    @classmethod
    def parse(cls, value: str) -> Mode:
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(m.value for m in cls)
            raise ValueError(f"exhibit.mode must be one of {known}, got {value!r}") from None


#: What the kiosk shows: the two flat views side by side, one view alone (the 3D globe too), or one
#: at a time in turn (the globe among them when the kiosk's browser draws WebGL).
LAYOUTS = ("side", "sankey", "map", "globe", "rotate")


def check_layout(layout: str, every: float) -> tuple[str, int]:
    """A layout the kiosk knows and a rotation period it accepts (5..600 s)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if not 5 <= every <= 600:
        raise ValueError(f"rotation must be 5..600 seconds, got {every!r}")
    return layout, int(every)


def check_language(lang: str) -> str:
    if lang not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, got {lang!r}")
    return lang


def load_domain_list(path: Path) -> frozenset[str]:
    """Registrable domains from a text file: one per line, ``#`` starts a comment, case folded."""
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.split("#", 1)[0].strip().lower().rstrip(".")
        if entry:
            out.add(entry)
    return frozenset(out)


class KnownDomains:
    """Decides whether a registrable domain is a safe label: an *exact* member of a curated list.

    Exact, not "has a listed parent": under a public suffix such as ``github.io`` anyone can own
    ``rude-word.github.io``, and that is the registrable domain the view would show.
    """

    def __init__(self, domains: Iterable[str] = (), also: Iterable[Callable[[str], bool]] = ()) -> None:
        self.domains = frozenset(d.lower().rstrip(".") for d in domains)
        self._also = tuple(also)

    @classmethod
    def shipped(cls, path: Path | None = None, also: Iterable[Callable[[str], bool]] = ()) -> KnownDomains:
        return cls(load_domain_list(path or DEFAULT_KNOWN_DOMAINS), also)

    def with_domains(self, domains: Iterable[str]) -> KnownDomains:
        """A copy that also knows ``domains`` (an operator's own list)."""
        return KnownDomains(self.domains | {d.lower().rstrip(".") for d in domains}, self._also)

    def __call__(self, domain: str | None) -> bool:
        if not domain:
            return False
        domain = domain.lower().rstrip(".")
        return domain in self.domains or any(check(domain) for check in self._also)


def public_destination(d: Destination, known: Callable[[str | None], bool], lang: str = "en") -> Destination:
    """``d`` as the public screen may show it: no visitor-chosen domain in ``org`` or ``domain``."""
    if d.org_source == "domain" and not known(d.domain):
        if d.asn_org:
            return dataclasses.replace(d, org=d.asn_org, org_source="asn", domain=None)
        if d.special:
            return dataclasses.replace(d, org=d.special, org_source="special", domain=None)
        label = UNKNOWN_SITE.get(lang, UNKNOWN_SITE["en"])
        return dataclasses.replace(d, org=label, org_source="unknown", domain=None)
    if d.domain and not known(d.domain):
        # A company's name is curated, but the domain under it need not be (``x.github.io``).
        return dataclasses.replace(d, domain=None)
    return d


class Privacy:
    """The exhibit's mode, language, pause and hidden devices, read by the view builder.

    Hidden devices (a visitor's "forget me", the operator's "hide") stay off the public view while
    they are present and for ``forget_after`` seconds after they were last seen, then the entry
    itself is dropped: the list of people who asked to be forgotten is not kept either.
    """

    def __init__(
        self,
        mode: Mode | str = Mode.EXHIBIT,
        known: Callable[[str | None], bool] | None = None,
        lang: str = "en",
        forget_after: float = 600.0,
        salt: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
        vendor: Callable[[str], str | None] | None = None,
    ) -> None:
        self.mode = Mode.parse(mode) if isinstance(mode, str) else mode
        self.known = known if known is not None else KnownDomains.shipped()
        self.lang = check_language(lang)
        self.forget_after = forget_after
        self.paused = False
        # None until the operator chooses: the kiosk's own URL options (?layout=rotate) apply.
        self.layout: tuple[str, int] | None = None
        self.pseudonyms = Pseudonyms(salt)
        self.clock = clock
        # MAC -> maker ("Apple"), for home mode's label of a device without a DHCP name.
        self.vendor = vendor
        self._hidden: dict[str, float] = {}  # device key -> when it was last seen present
        self._cache: dict[tuple[Destination, str], Destination] = {}

    # ------------------------------------------------------------------ settings (operator)

    def set_mode(self, mode: Mode | str) -> None:
        self.mode = Mode.parse(mode) if isinstance(mode, str) else mode
        self._cache.clear()

    def set_language(self, lang: str) -> None:
        self.lang = check_language(lang)
        self._cache.clear()

    # ------------------------------------------------------------------ devices

    def device_label(self, key: str, hostname: str | None, public_id: str, mac: str | None = None) -> str:
        if self.mode.private:
            return self.pseudonyms.name(key, public_id, self.lang)
        maker = self.vendor(mac) if (self.vendor is not None and mac and not hostname) else None
        return home_label(hostname, maker, public_id)

    def device_colour(self, key: str, public_id: str) -> int:
        """The device's palette index, in every mode (distinct while the palette has a free one)."""
        return self.pseudonyms.colour(key, public_id)

    def hide(self, key: str) -> None:
        self._hidden[key] = self.clock()
        self.pseudonyms.forget(key)

    def hidden(self, key: str) -> bool:
        return key in self._hidden

    @property
    def hidden_count(self) -> int:
        return len(self._hidden)

    def sweep(self, present: Iterable[str]) -> None:
        """Called on every build with the devices in the state: keeps hidden devices hidden while
        they stay, drops them ``forget_after`` seconds after they left, and frees the names of
        devices that are gone."""
        keys = set(present)
        now = self.clock()
        for key in list(self._hidden):
            if key in keys:
                self._hidden[key] = now
            elif now - self._hidden[key] >= self.forget_after:
                del self._hidden[key]
        self.pseudonyms.retain(k for k in keys if k not in self._hidden)

    def forget_all(self) -> None:
        """The operator's reset: every pseudonym goes, so whoever is still here comes back under a new
        name. Hidden devices stay hidden: a reset must not undo someone's "forget me"."""
        self.pseudonyms.clear()

    # ------------------------------------------------------------------ destinations

    def destination(self, d: Destination) -> Destination:
        if not self.mode.private:
            return d
        hit = self._cache.get((d, self.lang))
        if hit is None:
            hit = public_destination(d, self.known, self.lang)
            if len(self._cache) > 16384:
                self._cache.clear()
            self._cache[(d, self.lang)] = hit
        return hit

    def screen(self) -> dict[str, object]:
        """The view's ``screen`` section: what the kiosk needs to know about the exhibit's state."""
        screen: dict[str, object] = {"mode": self.mode.value, "lang": self.lang, "paused": self.paused}
        if self.layout is not None:
            screen["layout"], screen["rotate_every"] = self.layout
        return screen
