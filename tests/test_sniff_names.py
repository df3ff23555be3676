"""The one text rule for names read off the wire: plain ASCII, lower case, everything else escaped
as ``\\xNN`` (reversibly), capped at 255 bytes with a ``...`` mark."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from apviz.sniff.names import MAX_NAME, TRUNCATED, safe_labels, safe_name, safe_token
from tests.test_sniff_tls import is_safe


def unescape(text: str) -> bytes:
    return re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), text).encode("latin-1")


def test_plain_names_pass_lower_cased() -> None:
    assert safe_name(b"WWW.Example-Site_1.COM") == "www.example-site_1.com"
    assert safe_labels((b"Mask", b"iCloud", b"com")) == "mask.icloud.com"
    assert safe_token(b"h3") == "h3"


def test_markup_controls_and_non_ascii_are_escaped() -> None:
    assert safe_name(b"<img src=x onerror=alert(1)>") == (
        "\\x3cimg\\x20src\\x3dx\\x20onerror\\x3dalert\\x281\\x29\\x3e"
    )
    assert safe_name(b"\x1b]0;title\x07") == "\\x1b\\x5d0\\x3btitle\\x07"
    assert safe_name("\u202eevil".encode()) == "\\xe2\\x80\\xaeevil"  # a bidi override, as bytes
    assert safe_labels((b"a.b", b"c")) == "a\\x2eb.c"  # a dot inside a label is data
    assert safe_labels(()) == "."


def test_cap() -> None:
    assert safe_name(b"a" * MAX_NAME) == "a" * MAX_NAME
    assert safe_name(b"a" * (MAX_NAME + 1)) == "a" * MAX_NAME + TRUNCATED
    long = safe_labels(tuple([b"x" * 63] * 5))
    assert long.endswith(TRUNCATED) and len(unescape(long[: -len(TRUNCATED)])) <= MAX_NAME


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=MAX_NAME))
def test_escaping_is_reversible_and_safe(raw: bytes) -> None:
    text = safe_name(raw)
    assert is_safe(text)
    assert unescape(text) == raw.lower()  # bytes.lower() only folds ASCII letters


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=63), max_size=6))
def test_labels_are_safe(labels: list[bytes]) -> None:
    text = safe_labels(tuple(labels))
    assert is_safe(text)
    if sum(len(label) + 1 for label in labels) <= MAX_NAME + 1 and labels:
        assert [unescape(part) for part in text.split(".")] == [label.lower() for label in labels]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_tokens_are_printable_ascii(raw: bytes) -> None:
    text = safe_token(raw)
    assert text.isascii() and text.isprintable() and not set(text) & set("<>&\"' ")
