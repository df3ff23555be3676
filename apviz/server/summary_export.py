"""The session summary as files to take home: a CSV for a spreadsheet and an SVG picture.

Both are written from a rendered :class:`~apviz.live.summary.Summary`, whose labels already obey
the privacy rules. They are still treated as hostile text (a company name from a database, an
organisation named by whoever registered a network): the CSV neutralises cells a spreadsheet would
run as a formula, and the SVG escapes every string and drops characters XML cannot carry.
"""

from __future__ import annotations

import csv
import io
import re
import time
from xml.sax.saxutils import escape

from apviz.live.summary import Row, Summary

CSV_COLUMNS = ("section", "name", "detail", "connections", "bytes", "tracker_connections", "companies")
#: First characters that make a spreadsheet read a cell as a formula (or strip and re-read it).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Not allowed in XML 1.0 even when escaped: control characters, lone surrogates, U+FFFE/U+FFFF.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _local(t: float, fmt: str) -> str:
    return time.strftime(fmt, time.localtime(t))


def span(summary: Summary) -> str:
    """The session's time span in words: ``2025-05-01 10:02 to 11:40`` (local time)."""
    start = _local(summary.started, "%Y-%m-%d %H:%M")
    same_day = _local(summary.started, "%Y-%m-%d") == _local(summary.ended, "%Y-%m-%d")
    end = _local(summary.ended, "%H:%M" if same_day else "%Y-%m-%d %H:%M")
    return f"{start} to {end}"


def filename(summary: Summary, ext: str) -> str:
    """``apviz-session-2025-05-01-1002.csv``: dated by the session's start."""
    return f"apviz-session-{_local(summary.started, '%Y-%m-%d-%H%M')}.{ext}"


def human_bytes(n: int) -> str:
    """``12.3 MB``: decimal units, as phones and operators count them."""
    if n < 1000:
        return f"{n} bytes"
    value = n / 1000
    for unit in ("kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            break
        value /= 1000
    return f"{value:.1f} {unit}"


# ------------------------------------------------------------------------------------- CSV


def safe_cell(value: object) -> object:
    """A cell a spreadsheet shows as text: a string that starts like a formula gets a leading ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def to_csv(summary: Summary) -> str:
    """One table (``section`` says which list a row belongs to), a header row, UTF-8 with a BOM so
    spreadsheet programs pick the right encoding."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)

    def put(section: str, row: Row) -> None:
        companies = "" if row.companies is None else row.companies
        cells = (section, row.name, row.detail, row.connections, row.bytes, row.trackers, companies)
        writer.writerow([safe_cell(c) for c in cells])

    total = Row(span(summary), summary.total.connections, summary.total.bytes, summary.total.trackers)
    total.detail, total.companies = f"{summary.mode} mode", summary.total.companies
    put("session", total)
    for section, rows in (
        ("company", summary.companies),
        ("tracker", summary.trackers),
        ("country", summary.countries),
        ("device", summary.devices),
    ):
        for row in rows:
            put(section, row)
    return out.getvalue()


# ------------------------------------------------------------------------------------- SVG

WIDTH = 1000
LABEL_X, BAR_X, BAR_MAX = 24, 300, 320
ROW_H, HEAD_H, GAP = 26, 40, 24
TOP = 10
MAX_DEVICE_ROWS = 60
COLOURS = {"company": "#3b6fb6", "tracker": "#c0392b", "country": "#2e8b57", "device": "#7d5ba6"}
EMPTY = {"tracker": "no ads or trackers seen"}


def _text(value: str, limit: int = 38) -> str:
    """Escaped element text, cut to ``limit`` characters."""
    value = _NOT_XML.sub("", value)
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return escape(value)


def _panel(title: str, rows: list[Row], kind: str, measure: str, y: int) -> tuple[list[str], int]:
    """One bar chart starting at ``y``: its SVG elements and the ``y`` after it."""
    colour = COLOURS[kind]
    parts = [f'<text x="{LABEL_X}" y="{y + 26}" font-size="19" font-weight="bold">{_text(title, 80)}</text>']
    y += HEAD_H
    if not rows:
        parts.append(f'<text x="{LABEL_X}" y="{y + 17}" fill="#555">{EMPTY.get(kind, "nothing yet")}</text>')
        return parts, y + ROW_H + GAP
    peak = max((getattr(r, measure) for r in rows), default=0) or 1
    for row in rows:
        value = getattr(row, measure)
        width = max(2, round(BAR_MAX * value / peak)) if value else 0
        parts.append(f'<text x="{LABEL_X}" y="{y + 17}">{_text(row.name)}</text>')
        if width:
            parts.append(
                f'<rect x="{BAR_X}" y="{y + 4}" width="{width}" height="{ROW_H - 8}" rx="3" fill="{colour}"/>'
            )
            if kind == "device" and row.trackers and row.connections:
                # The part of a device's connections that went to ads and trackers, in their colour.
                part = max(2, round(width * min(row.trackers, row.connections) / row.connections))
                parts.append(
                    f'<rect x="{BAR_X + width - part}" y="{y + 4}" width="{part}" height="{ROW_H - 8}" '
                    f'rx="3" fill="{COLOURS["tracker"]}"/>'
                )
        caption = _text(caption_for(row, kind), 60)
        parts.append(
            f'<text x="{BAR_X + width + 8}" y="{y + 17}" fill="#333" font-size="14">{caption}</text>'
        )
        y += ROW_H
    return parts, y + GAP


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def caption_for(row: Row, kind: str) -> str:
    """The words beside a bar."""
    conns = _count(row.connections, "connection", "connections")
    if kind == "tracker":
        return f"{conns} ({row.detail})" if row.detail else conns
    if kind == "device":
        return f"{conns}, {_count(row.companies or 0, 'company', 'companies')}, {row.trackers} to trackers"
    return f"{human_bytes(row.bytes)}, {conns}"


def to_svg(summary: Summary) -> str:
    """Bar charts of the top companies, trackers and countries and of every device's counts."""
    total = summary.total
    subtitle = (
        f"{span(summary)} · {_count(len(summary.devices), 'device', 'devices')} · "
        f"{_count(total.connections, 'connection', 'connections')} · "
        f"{human_bytes(total.bytes)} · {total.trackers} to ads and trackers"
    )
    body: list[str] = [
        f'<text x="{LABEL_X}" y="44" font-size="26" font-weight="bold">What our devices talked to</text>',
        f'<text x="{LABEL_X}" y="72" fill="#555">{_text(subtitle, 140)}</text>',
    ]
    y = 92
    devices = summary.devices[:MAX_DEVICE_ROWS]
    for title, rows, kind, measure in (
        (f"Companies (top {TOP}, by data)", summary.companies[:TOP], "company", "bytes"),
        (f"Ads and trackers (top {TOP}, by connections)", summary.trackers[:TOP], "tracker", "connections"),
        (f"Countries (top {TOP}, by data)", summary.countries[:TOP], "country", "bytes"),
        ("Devices (numbered in order of arrival)", devices, "device", "connections"),
    ):
        parts, y = _panel(title, rows, kind, measure, y)
        body += parts
    if len(summary.devices) > len(devices):
        more = len(summary.devices) - len(devices)
        body.append(f'<text x="{LABEL_X}" y="{y}" fill="#555">and {more} more devices</text>')
        y += ROW_H
    height = y + 8
    title = _text(f"apviz session summary, {span(summary)}", 120)
    return "\n".join(
        [
            '<?xml version="1.0" encoding="UTF-8"?>',
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" role="img">',
            f"<title>{title}</title>",
            f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
            # Presentation attributes, not a <style> element: the server's CSP forbids inline style,
            # and the picture must look the same opened from the console as from a file.
            '<g font-family="sans-serif" font-size="15" fill="#222">',
            *body,
            "</g>",
            "</svg>",
            "",
        ]
    )
