"""Making hostile text safe to show in a terminal.

DHCP hostnames and DNS names are chosen by whoever is on the visitor network. In a terminal,
control characters can move the cursor or recolour the screen, and bidi overrides can reverse
what is read. Rich's markup is avoided by always passing ``Text`` objects; this module handles
the characters.
"""

from __future__ import annotations

import unicodedata

_BIDI = {"\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"}


def printable(value: str, limit: int = 80) -> str:
    """Replace control, format and bidi characters with visible escapes and cap the length."""
    out = []
    for ch in value[: limit + 1]:
        if ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"):
            out.append(f"\\u{ord(ch):04x}" if ord(ch) > 0xFF else f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    text = "".join(out)
    return text if len(value) <= limit else text[:limit] + "…"
