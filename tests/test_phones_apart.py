"""Phones told apart: distinct colours while the palette has a free one (the colour word with it),
and in home mode a phone without a DHCP name gets its maker and a short suffix, not "device"."""

from __future__ import annotations

import itertools

from apviz.live.privacy import Mode, Privacy
from apviz.live.pseudonyms import COLOURS, Pseudonyms, colour_index, free_colour, home_label
from apviz.live.publicview import ViewBuilder
from tests.test_privacy import describe_with_asn, events, state_with


def _take(wanted: int, n: int) -> list[str]:
    """``n`` public ids whose hashed colour is ``wanted`` (what gave two phones the same purple)."""
    found: list[str] = []
    for i in itertools.count():
        if colour_index(f"d{i}") == wanted:
            found.append(f"d{i}")
            if len(found) == n:
                return found
    raise AssertionError("unreachable")


def test_free_colour_takes_the_next_free_one_and_shares_only_when_all_are_taken():
    assert free_colour(3, set()) == 3
    assert free_colour(3, {3}) == 4
    assert free_colour(6, {6, 0}) == 1
    assert free_colour(2, set(range(len(COLOURS)))) == 2


def test_four_phones_with_the_same_hashed_colour_get_four_colours_and_words():
    p = Pseudonyms(salt=b"s" * 16)
    ids = _take(colour_index("d0"), 4)
    colours = [p.colour(f"02:00:00:00:00:0{i}", pid) for i, pid in enumerate(ids)]
    assert len(set(colours)) == 4, colours
    for i, (pid, colour) in enumerate(zip(ids, colours, strict=True)):
        name = p.name(f"02:00:00:00:00:0{i}", pid, "en")
        assert name.split()[0] == COLOURS[colour].en  # the word names the colour drawn
    assert len({p.name(f"02:00:00:00:00:0{i}", pid, "en").split()[0] for i, pid in enumerate(ids)}) == 4


def test_all_colours_are_used_before_any_is_shared_and_a_freed_one_is_reused():
    p = Pseudonyms(salt=b"s" * 16)
    ids = _take(colour_index("d0"), len(COLOURS) + 1)
    keys = [f"02:00:00:00:01:{i:02x}" for i in range(len(ids))]
    colours = [p.colour(k, pid) for k, pid in zip(keys, ids, strict=True)]
    assert sorted(colours[: len(COLOURS)]) == list(range(len(COLOURS)))
    assert colours[-1] in colours[:-1]  # eight phones, seven colours: now one is shared
    # Names stay unique even then: the animal differs within a colour.
    assert len({p.name(k, pid) for k, pid in zip(keys, ids, strict=True)}) == len(ids)
    # One phone leaves; a newcomer gets its colour, not a shared one.
    gone = colours[2]
    p.retain(k for i, k in enumerate(keys) if i != 2)
    assert p.colour("02:00:00:00:02:00", "d-new") == gone


def test_the_view_carries_distinct_colours_in_every_mode():
    batches = [
        events(ip=f"10.99.1.{10 + i}", mac=f"02:a5:00:00:00:{i:02x}", host=f"phone-{i}", fid=i + 1)
        for i in range(5)
    ]
    st = state_with(*batches)
    for mode in (Mode.HOME, Mode.EXHIBIT):
        view = ViewBuilder(describe=describe_with_asn, privacy=Privacy(mode)).build(st)
        colours = [d["colour"] for d in view["devices"].values()]
        assert len(colours) == 5 and len(set(colours)) == 5, (mode, colours)
        for node in view["nodes"].values():
            if node["kind"] == "device" and not node.get("other"):
                assert node["colour"] == view["devices"][node["device"]]["colour"]
        if mode is Mode.EXHIBIT:
            words = {d["label"].split()[0] for d in view["devices"].values()}
            assert words == {COLOURS[c].en for c in colours}


def test_home_mode_names_a_nameless_phone_by_maker_and_suffix():
    assert home_label("lea-ipad", "Apple", "d123abc") == "lea-ipad"
    assert home_label(None, "Apple", "d123abc") == "Apple ·abc"
    assert home_label(None, None, "d123abc") == "device ·abc"
    makers = {"00:1b:63:00:00:01": "Apple", "00:1b:63:00:00:02": "Apple"}
    batches = [
        events(ip=f"10.99.1.{10 + i}", mac=mac, host=None, fid=i + 1)  # type: ignore[arg-type]
        for i, mac in enumerate(makers)
    ]
    batches.append(events(ip="10.99.1.30", mac="02:a5:00:00:00:09", host=None, fid=9))  # private MAC
    st = state_with(*batches)
    privacy = Privacy(Mode.HOME, vendor=makers.get)
    view = ViewBuilder(describe=describe_with_asn, privacy=privacy).build(st)
    labels = sorted(d["label"] for d in view["devices"].values())
    assert len(set(labels)) == 3, labels
    assert sum(label.startswith("Apple ·") for label in labels) == 2
    assert sum(label.startswith("device ·") for label in labels) == 1
    for d in view["devices"].values():
        assert d["label"].endswith(d["id"][-3:])
        assert "00:1b:63" not in d["label"]
