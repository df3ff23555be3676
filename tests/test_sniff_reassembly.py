"""Stream reassembly: out-of-order, overlapping and duplicate pieces give back the stream's prefix,
and nothing grows past the limit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apviz.sniff.reassembly import Reassembly, TooLarge

STREAM = bytes(range(256)) * 8


def test_in_order_pieces_give_the_stream() -> None:
    r = Reassembly()
    for off in range(0, len(STREAM), 100):
        r.add(off, STREAM[off : off + 100])
        assert r.prefix == STREAM[: off + 100]
    assert r.nbytes == len(STREAM) and r.pieces == len(range(0, len(STREAM), 100))


def test_prefix_waits_for_offset_zero_and_gaps() -> None:
    r = Reassembly()
    r.add(10, STREAM[10:20])
    r.add(30, STREAM[30:40])
    assert r.prefix == b"" and r.nbytes == 20
    r.add(0, STREAM[0:10])
    assert r.prefix == STREAM[:20]
    r.add(20, STREAM[20:30])
    assert r.prefix == STREAM[:40] and r.nbytes == 40 and r.pieces == 4


def test_overlaps_and_duplicates_count_once() -> None:
    r = Reassembly()
    r.add(5, STREAM[5:50])
    r.add(5, STREAM[5:50])  # retransmission
    r.add(0, STREAM[0:20])  # overlaps the front
    r.add(40, STREAM[40:60])  # overlaps the back
    r.add(10, STREAM[10:15])  # inside
    assert r.prefix == STREAM[:60] and r.nbytes == 60 and r.pieces == 5


def test_a_piece_spanning_several_gaps_merges_them() -> None:
    r = Reassembly()
    for off in (10, 30, 50):
        r.add(off, STREAM[off : off + 5])
    r.add(0, STREAM[0:70])
    assert r.prefix == STREAM[:70] and r.nbytes == 70


def test_limit_and_negative_offset() -> None:
    r = Reassembly(limit=100)
    r.add(90, b"x" * 10)  # exactly up to the limit is fine
    with pytest.raises(TooLarge):
        r.add(95, b"y" * 6)
    with pytest.raises(TooLarge):
        r.add(10**12, b"z")
    with pytest.raises(ValueError):
        r.add(-1, b"z")
    assert r.pieces == 1 and r.nbytes == 10 and len(r._buf) <= 100


def test_empty_piece_is_harmless() -> None:
    r = Reassembly()
    r.add(0, b"")
    r.add(50, b"")
    assert r.prefix == b"" and r.nbytes == 0


pieces = st.lists(st.tuples(st.integers(0, 600), st.integers(0, 120)), max_size=40)


@settings(max_examples=400, deadline=None)
@given(pieces, st.randoms(use_true_random=False))
def test_matches_a_byte_by_byte_model(spec: list[tuple[int, int]], rnd) -> None:
    """Any pieces of one stream, in any order: the prefix and the counts match a plain model."""
    r = Reassembly(limit=720)
    have = [False] * 720
    rnd.shuffle(spec)
    for off, n in spec:
        r.add(off, STREAM[off : off + n])
        for i in range(off, off + n):
            have[i] = True
    contiguous = have.index(False) if False in have else len(have)
    assert r.prefix == STREAM[:contiguous]
    assert r.nbytes == sum(have)
    assert r.pieces == len(spec)
    assert len(r._ranges) <= len(spec)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 200), st.binary(max_size=60)), max_size=30))
def test_only_documented_errors(spec: list[tuple[int, bytes]]) -> None:
    r = Reassembly(limit=128)
    for off, data in spec:
        try:
            r.add(off, data)
        except TooLarge:
            assert off + len(data) > 128
        except ValueError:
            assert off < 0
        assert len(r.prefix) <= 128 and len(r._buf) <= 128
