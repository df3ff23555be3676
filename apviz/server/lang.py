"""Which language a phone's or an operator's page speaks: the browser's ``Accept-Language``,
decided on the server.

The server decides (and tells the page, in ``/api/me``'s ``lang``) so that the choice is one tested
function rather than a guess in each browser, and so that a page whose JavaScript is older than the
catalogues still gets a language it has. The header is visitor-controlled text: it is capped in
length and in entries, and anything malformed is skipped, never an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse

from apviz.live.pseudonyms import LANGUAGES

DEFAULT = "en"
_MAX_HEADER = 1024
_MAX_RANGES = 32


def _quality(params: list[str]) -> float | None:
    """The ``q`` of one range (1.0 when absent), or None when it is malformed."""
    for param in params:
        name, sep, value = param.strip().partition("=")
        if name.strip().lower() != "q":
            continue
        try:
            q = float(value.strip()) if sep else -1.0
        except ValueError:
            return None
        return q if 0.0 <= q <= 1.0 else None
    return 1.0


def negotiate(header: str | None, available: Sequence[str] = LANGUAGES, default: str = DEFAULT) -> str:
    """The best of ``available`` for an ``Accept-Language`` header, or ``default``.

    Ranges are tried by falling ``q`` (ties keep the header's order); a range matches a language
    exactly or by its primary subtag (``de-CH`` is ``de``); ``*`` means the default; ``q=0`` rules a
    language out even when a less specific range would allow it.
    """
    if not header:
        return default
    ranges: list[tuple[float, int, str]] = []
    excluded: set[str] = set()
    for index, part in enumerate(header[:_MAX_HEADER].split(",")[:_MAX_RANGES]):
        tag, *params = part.split(";")
        tag = tag.strip().lower()
        if not tag or len(tag) > 35:
            continue
        q = _quality(params)
        if q is None:
            continue
        primary = tag.split("-", 1)[0]
        if q == 0.0:
            if primary in available and tag == primary:
                excluded.add(primary)
            continue
        ranges.append((q, index, tag))
    for _, _, tag in sorted(ranges, key=lambda r: (-r[0], r[1])):
        candidates = [default, *available] if tag == "*" else [tag, tag.split("-", 1)[0]]
        for lang in candidates:
            if lang in available and lang not in excluded:
                return lang
    return default


def page_in_language(path: Path, request: Request, cache: str = "no-cache") -> HTMLResponse:
    """An HTML page with ``<html lang>`` set to the language negotiated for ``request``.

    The staff pages (operator console, status) speak their reader's language, not the kiosk's; their
    script reads it from ``<html lang>`` and fills in the words from that catalogue.
    """
    lang = negotiate(request.headers.get("accept-language"))
    html = path.read_text(encoding="utf-8").replace('<html lang="en">', f'<html lang="{lang}">', 1)
    return HTMLResponse(html, headers={"Cache-Control": cache, "Vary": "Accept-Language"})
