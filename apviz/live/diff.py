"""Keyed diffs between two computed views, so browsers receive only what changed.

A view is ``{section: {item_id: item}}`` (plus plain values). The delta of a section lists the
items that are new or changed (``upsert``) and the ids that disappeared (``remove``); a plain
value that changed is sent whole. Items are compared by value, so recomputing an unchanged item
costs nothing on the wire.
"""

from __future__ import annotations

from typing import Any

View = dict[str, Any]


def diff(old: View, new: View) -> View:
    """The changes that turn ``old`` into ``new`` (empty dict when nothing changed)."""
    out: View = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict) and _is_keyed(value) and _is_keyed(before):
            upsert = [item for k, item in value.items() if before.get(k) != item]
            remove = [k for k in before if k not in value]
            if upsert or remove:
                out[key] = {"upsert": upsert, "remove": remove}
        elif before != value:
            out[key] = {"set": value}
    for key in old:
        if key not in new:
            out[key] = {"set": None}
    return out


def apply(view: View, delta: View) -> View:
    """Apply a delta to a view (what the browser does; used by tests and the replay tool)."""
    out = dict(view)
    for key, change in delta.items():
        if "set" in change:
            if change["set"] is None:
                out.pop(key, None)
            else:
                out[key] = change["set"]
            continue
        section = dict(out.get(key) or {})
        for k in change.get("remove", ()):
            section.pop(k, None)
        for item in change.get("upsert", ()):
            section[item["id"]] = item
        out[key] = section
    return out


def _is_keyed(section: dict[str, Any]) -> bool:
    """A keyed section maps ids to dicts that carry the same ``id`` (empty sections count)."""
    return all(isinstance(v, dict) and v.get("id") == k for k, v in section.items())
