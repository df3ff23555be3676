"""Which network (autonomous system) an address belongs to, and the organisation running it.

Two sources, the first that is configured and usable wins:

* a GeoLite2-ASN-style MaxMind DB (``autonomous_system_number`` / ``autonomous_system_organization``);
* ip-location-db's ASN CSV files (npm ``@ip-location-db/asn``: ``asn-ipv4-num.csv`` and
  ``asn-ipv6-num.csv``, or the dotted ``asn-ipv4.csv`` / ``asn-ipv6.csv``). Rows are
  ``range_start,range_end,asn,organisation``, inclusive, sorted and non-overlapping.

The CSV has about 412k IPv4 and 103k IPv6 rows. Held as Python tuples it would cost well over
100 MB, so the table is kept as parallel arrays: IPv4 starts/ends as ``array('I')``, IPv6 starts/ends
as one ``bytes`` of 16-byte big-endian keys each, an ASN and an organisation index per row, and each
distinct organisation string once. A lookup is a ``bisect`` over the starts. Parsing the CSV takes
about a second, so the arrays are also written as a binary cache file beside the CSV (or in
``cache_dir``), keyed by the CSV's size and mtime, and loaded from there in tens of milliseconds.

An mmdb replaced on disk while apviz runs is taken into use like the geo database's
(:mod:`apviz.enrich.mmdb`); the CSV table is read once, at start.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import csv
import hashlib
import ipaddress
import logging
import os
import struct
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apviz.enrich._common import (
    DEFAULT_CACHE_SIZE,
    EnrichOptionError,
    IPAddress,
    bounded_cache,
    check_cache_size,
    optional_path,
    parse_ip,
    readable_file,
)
from apviz.enrich.mmdb import RELOAD_INTERVAL, InvalidDatabaseError, MmdbFiles, ReloadingLookup

log = logging.getLogger("apviz.enrich.asn")

_U32 = "I"
assert array.array(_U32).itemsize == 4, "array('I') must be 32-bit for the ASN table"

CACHE_MAGIC = b"APVZASN2"
_HEADER = "<8s32sIIII"  # magic, sha256 of the source key, IPv4 rows, IPv6 rows, org bytes, orgs
CACHE_SUFFIX = ".apviz-cache"


@dataclass(frozen=True, slots=True)
class AsnInfo:
    """An autonomous system: its number and the organisation's registered name (may be None)."""

    asn: int
    org: str | None


class _Keys128:
    """A read-only sequence view over packed 16-byte big-endian integers, for ``bisect``.

    Keeps 103k IPv6 range starts in 1.6 MB instead of about 5 MB of Python ints.
    """

    __slots__ = ("_n", "blob")

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self._n = len(blob) // 16

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> int:
        if i < 0:
            i += self._n
        return int.from_bytes(self.blob[16 * i : 16 * i + 16], "big")


class AsnTable:
    """The compact in-memory form of the ASN CSV; build with :meth:`from_csv` or :meth:`load`."""

    def __init__(self) -> None:
        self.v4_start = array.array(_U32)
        self.v4_end = array.array(_U32)
        self.v4_asn = array.array(_U32)
        self.v4_org = array.array(_U32)
        self._v6_start_buf = bytearray()  # filled while building, then frozen into _v6_starts
        self._v6_end_buf = bytearray()
        self.v6_end = b""
        self.v6_asn = array.array(_U32)
        self.v6_org = array.array(_U32)
        # Organisation names: while building a list + index; afterwards one UTF-8 blob and the
        # offsets of each name in it (75k names as Python strings would cost about 5 MB more).
        self._orgs: list[str] = [""]  # index 0 = no organisation
        self._org_index: dict[str, int] = {"": 0}
        self.org_blob = b""
        self.org_offsets = array.array(_U32, [0])
        self._v6_starts: _Keys128 | None = None
        self.skipped = 0

    # -- building ---------------------------------------------------------------------------

    def _org(self, name: str) -> int:
        idx = self._org_index.get(name)
        if idx is None:
            idx = self._org_index[name] = len(self._orgs)
            self._orgs.append(name)
        return idx

    def org_name(self, idx: int) -> str | None:
        """The organisation with index ``idx`` (None for the empty one)."""
        name = self.org_blob[self.org_offsets[idx] : self.org_offsets[idx + 1]].decode("utf-8", "replace")
        return name or None

    @property
    def org_count(self) -> int:
        return len(self.org_offsets) - 1

    def add_csv(self, path: Path) -> None:
        """Append the rows of one CSV file (either family, numeric or dotted addresses)."""
        v6_hint = "ipv6" in path.name.lower()
        with path.open("r", encoding="utf-8", newline="") as fh:
            for row in csv.reader(fh):
                if len(row) < 3:
                    self.skipped += 1
                    continue
                try:
                    start, end, family = _parse_range(row[0], row[1], v6_hint)
                    asn = int(row[2])
                except ValueError:
                    self.skipped += 1
                    continue
                if not 0 <= asn < 2**32 or end < start:
                    self.skipped += 1
                    continue
                org = self._org(row[3].strip() if len(row) > 3 else "")
                if family == 4:
                    self.v4_start.append(start)
                    self.v4_end.append(end)
                    self.v4_asn.append(asn)
                    self.v4_org.append(org)
                else:
                    self._v6_start_buf += start.to_bytes(16, "big")
                    self._v6_end_buf += end.to_bytes(16, "big")
                    self.v6_asn.append(asn)
                    self.v6_org.append(org)
        self._v6_starts = None

    def finish(self) -> None:
        """Sort each family by range start (the files are sorted; this guards concatenations)."""
        if any(self.v4_start[i] > self.v4_start[i + 1] for i in range(len(self.v4_start) - 1)):
            order = sorted(range(len(self.v4_start)), key=self.v4_start.__getitem__)
            for name in ("v4_start", "v4_end", "v4_asn", "v4_org"):
                old = getattr(self, name)
                setattr(self, name, array.array(_U32, (old[i] for i in order)))
        s, e = bytes(self._v6_start_buf), bytes(self._v6_end_buf)
        starts = _Keys128(s)
        if any(starts[i] > starts[i + 1] for i in range(len(starts) - 1)):
            order = sorted(range(len(starts)), key=starts.__getitem__)
            s = b"".join(s[16 * i : 16 * i + 16] for i in order)
            e = b"".join(e[16 * i : 16 * i + 16] for i in order)
            self.v6_asn = array.array(_U32, (self.v6_asn[i] for i in order))
            self.v6_org = array.array(_U32, (self.v6_org[i] for i in order))
        self._v6_starts = _Keys128(s)
        self.v6_end = e
        self._v6_start_buf = bytearray()
        self._v6_end_buf = bytearray()
        encoded = [name.encode("utf-8") for name in self._orgs]
        offsets = array.array(_U32, [0])
        total = 0
        for item in encoded:
            total += len(item)
            offsets.append(total)
        self.org_blob = b"".join(encoded)
        self.org_offsets = offsets
        self._orgs = []
        self._org_index = {}

    @classmethod
    def from_csv(cls, paths: Sequence[Path]) -> AsnTable:
        table = cls()
        for path in paths:
            table.add_csv(path)
        table.finish()
        return table

    # -- lookups ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.v4_start) + len(self.v6_asn)

    def lookup(self, addr: IPAddress) -> AsnInfo | None:
        value = int(addr)
        if addr.version == 4:
            i = bisect.bisect_right(self.v4_start, value) - 1
            if i < 0 or value > self.v4_end[i]:
                return None
            asn, org = self.v4_asn[i], self.v4_org[i]
        else:
            starts = self._v6_starts
            if starts is None:
                return None
            i = bisect.bisect_right(starts, value) - 1
            if i < 0 or value > int.from_bytes(self.v6_end[16 * i : 16 * i + 16], "big"):
                return None
            asn, org = self.v6_asn[i], self.v6_org[i]
        if asn == 0:  # "not routed" rows some builds carry
            return None
        return AsnInfo(asn, self.org_name(org))

    # -- binary cache ---------------------------------------------------------------------------

    def save(self, path: Path, key: bytes) -> None:
        """Write the arrays to ``path`` atomically; ``key`` identifies the source CSVs."""
        starts = self._v6_starts.blob if self._v6_starts is not None else b""
        header = struct.pack(
            _HEADER, CACHE_MAGIC, hashlib.sha256(key).digest(), len(self.v4_start), len(self.v6_asn),
            len(self.org_blob), self.org_count,
        )  # fmt: skip
        fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(header)
                for arr in (self.v4_start, self.v4_end, self.v4_asn, self.v4_org, self.v6_asn, self.v6_org):
                    arr.tofile(fh)
                self.org_offsets.tofile(fh)
                fh.write(starts)
                fh.write(self.v6_end)
                fh.write(self.org_blob)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: Path, key: bytes) -> AsnTable | None:
        """Read a cache written by :meth:`save`; None when absent, stale or damaged."""
        try:
            data = path.read_bytes()
        except OSError:
            return None
        head = struct.calcsize(_HEADER)
        if len(data) < head:
            return None
        magic, digest, n4, n6, org_bytes, n_orgs = struct.unpack_from(_HEADER, data)
        if magic != CACHE_MAGIC or digest != hashlib.sha256(key).digest():
            return None
        if len(data) != head + 16 * n4 + 8 * n6 + 4 * (n_orgs + 1) + 32 * n6 + org_bytes:
            return None
        table = cls()
        view = memoryview(data)
        pos = head
        columns = [("v4_start", n4), ("v4_end", n4), ("v4_asn", n4), ("v4_org", n4)]
        columns += [("v6_asn", n6), ("v6_org", n6), ("org_offsets", n_orgs + 1)]
        for name, n in columns:
            arr = array.array(_U32)
            arr.frombytes(view[pos : pos + 4 * n])
            setattr(table, name, arr)
            pos += 4 * n
        table._v6_starts = _Keys128(bytes(view[pos : pos + 16 * n6]))
        pos += 16 * n6
        table.v6_end = bytes(view[pos : pos + 16 * n6])
        pos += 16 * n6
        table.org_blob = bytes(view[pos:])
        table._orgs = []
        table._org_index = {}
        offsets_ok = table.org_offsets[-1] == org_bytes
        if not offsets_ok or (n4 and max(table.v4_org) >= n_orgs) or (n6 and max(table.v6_org) >= n_orgs):
            return None
        return table


def _parse_range(a: str, b: str, v6_hint: bool) -> tuple[int, int, int]:
    """Range start/end as ints and the family; numeric rows use the file name as the family hint."""
    if a.isdigit() and b.isdigit():
        start, end = int(a), int(b)
        family = 6 if v6_hint or end >= 2**32 else 4
        if end >= 2**128:
            raise ValueError(b)
        return start, end, family
    lo = ipaddress.ip_address(a)
    hi = ipaddress.ip_address(b)
    if lo.version != hi.version:
        raise ValueError(f"{a},{b}")
    return int(lo), int(hi), lo.version


def csv_cache_key(paths: Sequence[Path]) -> bytes:
    """Identify CSV contents cheaply: names, sizes and modification times."""
    parts = []
    for p in paths:
        st = p.stat()
        parts.append(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}")
    return "\n".join(parts).encode()


class AsnLookup(ReloadingLookup):
    """ASN and organisation for an address.

    Options:
      mmdb_path: a GeoLite2-ASN-style database, or a list of them (the lab database, then a real
        one); asked first, in order.
      csv_paths: ip-location-db ASN CSV files (IPv4 and IPv6); asked when the mmdb has no answer.
      cache_dir: where to keep the binary form of the CSV table. Default: beside the first CSV;
        when that directory is not writable the table is rebuilt from the CSV at each start.
      cache_size: entries in the LRU cache of answers.
      reload_interval: least seconds between two looks for a replaced mmdb (0: never look).
      optional: mmdb paths that may be missing without a warning (``apviz data update``'s files).
    Missing or broken files are logged and skipped; with none usable every lookup returns None.
    """

    def __init__(
        self,
        mmdb_path: str | Path | Sequence[str | Path] | None = None,
        csv_paths: Sequence[str | Path] = (),
        *,
        cache_dir: str | Path | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        reload_interval: float = RELOAD_INTERVAL,
        optional: Sequence[Path] = (),
    ) -> None:
        self.cache_size = check_cache_size(cache_size)
        if isinstance(csv_paths, str | Path):
            raise EnrichOptionError(f"csv_paths must be a list of paths, got {csv_paths!r}")
        self._table: AsnTable | None = None
        self._csv_source: list[str] = []
        self.load_seconds = 0.0
        if mmdb_path is None or isinstance(mmdb_path, str | os.PathLike):
            mmdb_path = [] if mmdb_path is None else [mmdb_path]
        mmdbs = [p for p in (optional_path(x, "mmdb_path") for x in mmdb_path) if p is not None]
        csvs = [p for p in (optional_path(x, "csv_paths") for x in csv_paths) if p is not None]
        cdir = optional_path(cache_dir, "cache_dir")
        self.lookup = bounded_cache(self._lookup, self.cache_size)
        self.files = self.watch_files(
            MmdbFiles(mmdbs, "asn", reload_interval=reload_interval, optional=frozenset(optional))
        )
        usable = [p for p in csvs if readable_file(p, "asn") is not None]
        if usable:
            self._load_csv(usable, cdir)
        if not self.sources:
            log.warning("asn: no usable ASN database; organisation lookups are disabled")

    @property
    def available(self) -> bool:
        return bool(self.sources)

    @property
    def sources(self) -> list[str]:
        """The mmdb files in use and the CSV files the table came from."""
        return self.files.labels + self._csv_source

    @property
    def table(self) -> AsnTable | None:
        return self._table

    def _load_csv(self, paths: list[Path], cache_dir: Path | None) -> None:
        t0 = time.perf_counter()
        key = csv_cache_key(paths)
        cache = (cache_dir or paths[0].parent) / (paths[0].stem + CACHE_SUFFIX)
        table = AsnTable.load(cache, key)
        how = "cache"
        if table is None:
            how = "csv"
            try:
                table = AsnTable.from_csv(paths)
            except (OSError, UnicodeDecodeError, csv.Error) as exc:
                log.warning("asn: cannot read %s (%s); the CSV source is disabled", paths, exc)
                return
            try:
                table.save(cache, key)
            except OSError as exc:
                log.info(
                    "asn: cannot write the table cache %s (%s); the CSV is parsed each start", cache, exc
                )
        self._table = table
        self.load_seconds = time.perf_counter() - t0
        names = ", ".join(p.name for p in paths)
        self._csv_source = [names]
        log.info("asn: %d ranges from %s (%s) in %.2f s", len(table), names, how, self.load_seconds)

    def _lookup(self, ip: str | IPAddress) -> AsnInfo | None:
        addr = parse_ip(ip)
        if addr is None:
            return None
        for db in self.files.in_use:
            info = self._from_mmdb(db.reader, addr)
            if info is not None:
                return info
        if self._table is not None:
            return self._table.lookup(addr)
        return None

    @staticmethod
    def _from_mmdb(reader: Any, addr: IPAddress) -> AsnInfo | None:
        try:
            record = reader.get(addr)
        except (ValueError, InvalidDatabaseError):
            return None
        if not isinstance(record, dict):
            return None
        asn = record.get("autonomous_system_number")
        if not isinstance(asn, int) or isinstance(asn, bool) or asn <= 0:
            return None
        org = record.get("autonomous_system_organization")
        return AsnInfo(asn, (org.strip() or None) if isinstance(org, str) else None)

    def close(self) -> None:
        self.files.close()
        self.lookup.cache_clear()  # type: ignore[attr-defined]


def iter_default_csvs(asn_dir: Path) -> Iterator[Path]:
    """The CSVs of an installed ``@ip-location-db/asn`` package, numeric form preferred (faster)."""
    for family in ("ipv4", "ipv6"):
        for name in (f"asn-{family}-num.csv", f"asn-{family}.csv"):
            if (asn_dir / name).is_file():
                yield asn_dir / name
                break
