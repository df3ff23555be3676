"""One stream's first bytes, put back in order: TCP segments of a ClientHello, QUIC CRYPTO frames.

Pieces arrive out of order, are retransmitted or overlap; the decoders need the contiguous bytes
from offset 0. The stream is bounded by ``limit`` (a ClientHello past 16 KiB is refused anyway),
so memory is one buffer of at most ``limit`` bytes plus the list of received ranges, whatever the
pieces: a flood of tiny overlapping pieces costs time proportional to their number, never more
memory than the limit. Where pieces overlap, the later one's bytes win (a conforming sender
retransmits the same bytes; a device that does not only confuses its own name).
"""

from __future__ import annotations

from bisect import bisect_left


class TooLarge(ValueError):
    """The stream would exceed its limit."""


class Reassembly:
    """Bytes of one stream from offset 0, from pieces that may arrive out of order or overlap."""

    __slots__ = ("_buf", "_nbytes", "_ranges", "limit", "pieces")

    def __init__(self, limit: int = 16 * 1024) -> None:
        self.limit = limit
        self.pieces = 0  # add() calls that were accepted
        self._buf = bytearray()
        self._ranges: list[list[int]] = []  # disjoint, sorted, non-adjacent [start, end) received
        self._nbytes = 0

    def add(self, offset: int, data: bytes) -> None:
        """Place ``data`` at ``offset``. TooLarge past the limit; ValueError for a negative offset."""
        if offset < 0:
            raise ValueError(f"negative stream offset {offset}")
        end = offset + len(data)
        if end > self.limit:
            raise TooLarge(f"stream bytes up to {end} exceed the limit of {self.limit}")
        self.pieces += 1
        if not data:
            return
        if end > len(self._buf):
            self._buf.extend(bytes(end - len(self._buf)))
        self._buf[offset:end] = data
        self._merge(offset, end)

    def _merge(self, start: int, end: int) -> None:
        ranges = self._ranges
        # First range that could touch [start, end): the one before the insertion point may reach it.
        i = bisect_left(ranges, [start])
        if i > 0 and ranges[i - 1][1] >= start:
            i -= 1
        j = i
        covered = 0
        while j < len(ranges) and ranges[j][0] <= end:
            start = min(start, ranges[j][0])
            end = max(end, ranges[j][1])
            covered += ranges[j][1] - ranges[j][0]
            j += 1
        ranges[i:j] = [[start, end]]
        self._nbytes += (end - start) - covered

    @property
    def prefix(self) -> bytes:
        """The contiguous bytes from offset 0 received so far (empty until offset 0 arrives)."""
        if not self._ranges or self._ranges[0][0] != 0:
            return b""
        return bytes(self._buf[: self._ranges[0][1]])

    @property
    def nbytes(self) -> int:
        """Distinct stream bytes received (overlaps counted once)."""
        return self._nbytes
