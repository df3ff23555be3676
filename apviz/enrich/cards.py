"""Company cards: what a company does, why it wants data, where it is based and who owns it.

A visitor who sees "Criteo" on the big screen learns nothing from the name. A card says it in four
short lines a twelve-year-old understands, in the exhibit's languages. The texts are apviz's own
words (facts from public sources listed in ``data/cards/SOURCES.md``), kept as data, one file per
language, keyed by the company id of the overlay (``data/companies.toml``)::

    [criteo]
    name  = "Criteo"                    # optional: the overlay's display name otherwise
    does  = "Shows you ads for things you looked at in online shops."
    data  = "It follows which products you look at, so its ads can bring you back to buy them."
    based = "Paris, France"
    owner = "Traded on the stock market in New York."

Every field has a length limit (:data:`LIMITS`) so a card fits the kiosk's caption box at every
screen size; the shipped files are checked in the test suite (every card in every language, within
the limits). A company without a card has none: the pages then show nothing rather than invent.

Loading is lenient like the overlay's: a bad card is logged and skipped (``strict=True`` raises).
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from apviz.enrich._common import EnrichOptionError

log = logging.getLogger("apviz.enrich.cards")

LANGUAGES = ("en", "de", "fr")
#: Required fields and their limits in characters (what the caption box is laid out for).
LIMITS: dict[str, int] = {"does": 110, "data": 120, "based": 60, "owner": 100}
#: Optional fields and their limits.
OPTIONAL: dict[str, int] = {"name": 32}
#: The caption shows all four lines; their sum is held to this too.
MAX_TOTAL = 320

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "data" / "cards"


def problems_of(key: str, entry: object) -> list[str]:
    """Why ``entry`` is not a usable card (empty list: it is)."""
    if not isinstance(entry, Mapping):
        return [f"card {key!r} is not a table"]
    out: list[str] = []
    for field, limit in {**LIMITS, **OPTIONAL}.items():
        value = entry.get(field)
        if value is None and field in OPTIONAL:
            continue
        if not isinstance(value, str) or not value.strip():
            out.append(f"card {key!r} has no {field!r}")
        elif len(value.strip()) > limit:
            out.append(f"card {key!r}: {field!r} is {len(value.strip())} characters, limit {limit}")
    unknown = set(entry) - set(LIMITS) - set(OPTIONAL)
    if unknown:
        out.append(f"card {key!r} has unknown fields {sorted(unknown)}")
    if not out:
        total = sum(len(str(entry[f]).strip()) for f in LIMITS)
        if total > MAX_TOTAL:
            out.append(f"card {key!r} is {total} characters in all, limit {MAX_TOTAL}")
    return out


class Cards:
    """The cards of every language, loaded once: ``cards.get("criteo", "de")``.

    Options:
      directory: holds ``en.toml``, ``de.toml``, ``fr.toml`` (default: the checkout's ``data/cards``).
        A missing file means no cards in that language, with a warning.
      strict: raise :class:`EnrichOptionError` on the first problem instead of skipping the card.
    """

    def __init__(self, directory: str | Path | None = DEFAULT_DIR, *, strict: bool = False) -> None:
        self.strict = strict
        self.errors: list[str] = []
        self._cards: dict[str, dict[str, dict[str, str]]] = {lang: {} for lang in LANGUAGES}
        if directory is None:
            return
        for lang in LANGUAGES:
            path = Path(directory) / f"{lang}.toml"
            try:
                with path.open("rb") as fh:
                    data = tomllib.load(fh)
            except (OSError, tomllib.TOMLDecodeError) as exc:
                self._problem(f"{path}: {exc}")
                continue
            self._load(lang, data)

    def _problem(self, message: str) -> None:
        if self.strict:
            raise EnrichOptionError(message)
        self.errors.append(message)
        log.warning("cards: %s (skipped)", message)

    def _load(self, lang: str, data: Mapping[str, Any]) -> None:
        for key, entry in data.items():
            problems = problems_of(key, entry)
            if problems:
                for problem in problems:
                    self._problem(f"{lang}: {problem}")
                continue
            self._cards[lang][key] = {f: str(v).strip() for f, v in entry.items()}

    def keys(self, lang: str) -> frozenset[str]:
        return frozenset(self._cards.get(lang, {}))

    def get(self, key: str | None, lang: str) -> dict[str, str] | None:
        """The card of company ``key`` in ``lang``, or None (no invented text)."""
        if key is None:
            return None
        return self._cards.get(lang, {}).get(key)

    def language(self, lang: str) -> dict[str, dict[str, str]]:
        """All cards in ``lang`` (empty for a language without cards): what ``/api/cards`` sends."""
        return dict(self._cards.get(lang, {}))
