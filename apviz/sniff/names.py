"""The one rule for names read off the wire (TLS server names, DNS names, ALPN ids).

These bytes are chosen by whoever is on the visitor network, and go on to logs, JSON, a terminal
and, for known domains, a public screen. So the text that comes out is conservative ASCII:

- ASCII letters are lower-cased (names compare case-insensitively); letters, digits, ``-`` and
  ``_`` stay as they are, and ``.`` separates labels;
- every other byte (markup ``<>&"'``, space, controls, ``\\``, a ``.`` inside a DNS label, any
  non-ASCII byte) becomes ``\\xNN`` (two lower-case hex digits), so the mapping is reversible and
  ``<script>`` arrives as ``\\x3cscript\\x3e``;
- at most ``MAX_NAME`` (255, the DNS wire limit) bytes are kept; a longer name keeps its first
  255 bytes and ends with ``...`` (three dots: empty labels, which no real name has).

So a name is at most 4 * 255 + 3 characters and never raises, whatever the bytes.
"""

from __future__ import annotations

MAX_NAME = 255
TRUNCATED = "..."

_KEEP = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_")
_UPPER = range(0x41, 0x5B)


def _table(keep: bytes, lower: bool) -> tuple[str, ...]:
    """One precomputed string per byte value: the per-byte cost is a tuple lookup."""
    out = []
    for b in range(256):
        if b in _KEEP or b in keep:
            out.append(chr(b))
        elif b in _UPPER:
            out.append(chr(b + 0x20) if lower else chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return tuple(out)


_LABEL = _table(b"", lower=True)  # inside one DNS label: a "." is data, so escaped
_HOST = _table(b".", lower=True)
_TOKEN = _table(b"./", lower=False)  # ALPN ids ("h2", "http/1.1") are case-sensitive bytes


def _clean(raw: bytes, table: tuple[str, ...]) -> str:
    text = "".join(table[b] for b in raw[:MAX_NAME])
    return text + TRUNCATED if len(raw) > MAX_NAME else text


def safe_name(raw: bytes) -> str:
    """A dotted host name as it appears in a TLS server_name (``.`` separates labels)."""
    plain = raw.isascii() and raw.replace(b".", b"").replace(b"-", b"").replace(b"_", b"").isalnum()
    if plain and len(raw) <= MAX_NAME:  # the common case: already a plain host name
        return raw.decode("ascii").lower()
    return _clean(raw, _HOST)


def safe_labels(labels: tuple[bytes, ...]) -> str:
    """A DNS name from its wire labels (no root label): a ``.`` inside a label is escaped.

    The root name (no labels) is ``"."``. Labels past ``MAX_NAME`` raw bytes are cut off (a name
    dnspython accepted is never that long; the rule holds for any caller).
    """
    if not labels:
        return "."
    parts: list[str] = []
    used = 0
    for label in labels:
        room = MAX_NAME - used
        if len(label) > room:
            if room > 0:
                parts.append(_clean(label[:room], _LABEL))
            return ".".join(parts) + TRUNCATED
        parts.append(_clean(label, _LABEL))
        used += len(label) + 1
    return ".".join(parts)


def safe_token(raw: bytes) -> str:
    """An ALPN protocol id (``h2``, ``http/1.1``): like a host name, but ``/`` and case kept."""
    return _clean(raw, _TOKEN)
