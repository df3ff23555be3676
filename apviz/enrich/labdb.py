"""Build the lab's MaxMind DB, so the lab's pretend internet shows real-world places and companies.

The lab (``apviz lab``) gives every fake server an address in 198.18.0.0/15, which no public
database locates. Its catalogue, ``data/lab/world.toml``, says for each address block which
real-world operator and place it stands for; this module turns those blocks into one small mmdb
with ``mmdb-writer``. Each record holds both a GeoLite2-City-style nested place and the
GeoLite2-ASN keys, so the same file serves :class:`~apviz.enrich.geo.GeoLookup` and
:class:`~apviz.enrich.asn.AsnLookup`::

    [[block]]
    cidr = "198.18.2.0/24"      # IPv4 or IPv6 network
    org = "Google LLC"          # -> autonomous_system_organization
    asn = 15169                 # -> autonomous_system_number (uint32)
    city = "Mountain View"      # -> city.names.en
    country = "US"              # -> country.iso_code (+ country.names.en)
    lat = 37.3861               # -> location.latitude
    lon = -122.0839             # -> location.longitude

Other tables of the catalogue (``[dns]``, hosts, aliases) are ignored here. The database is an
IPv6 tree with IPv4 mapped at ``::/96`` (as MaxMind's own files), so blocks of either family work.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apviz.enrich._common import EnrichOptionError
from apviz.enrich._countries import COUNTRY_NAMES

log = logging.getLogger("apviz.enrich.labdb")

DEFAULT_WORLD = Path(__file__).resolve().parents[2] / "data" / "lab" / "world.toml"
DATABASE_TYPE = "apviz-Lab-City-ASN"
#: Lab places are exact by construction, but a city is what they stand for: say so.
ACCURACY_KM = 20


@dataclass(frozen=True, slots=True)
class LabBlock:
    """One ``[[block]]`` of the catalogue, validated."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    org: str
    asn: int
    city: str
    country: str
    lat: float
    lon: float

    def record(self) -> dict[str, Any]:
        """The mmdb record: GeoLite2-City nested place plus GeoLite2-ASN keys."""
        from mmdb_writer import MmdbF64, MmdbU16, MmdbU32

        return {
            "city": {"names": {"en": self.city}},
            "country": {"iso_code": self.country, "names": {"en": COUNTRY_NAMES[self.country]}},
            "location": {
                "latitude": MmdbF64(self.lat),
                "longitude": MmdbF64(self.lon),
                "accuracy_radius": MmdbU16(ACCURACY_KM),
            },
            "autonomous_system_number": MmdbU32(self.asn),
            "autonomous_system_organization": self.org,
        }


def read_blocks(world: Mapping[str, Any] | Path | str) -> list[LabBlock]:
    """The ``[[block]]`` entries of a catalogue (a path or parsed TOML); errors name the block."""
    if isinstance(world, str | Path):
        with Path(world).open("rb") as fh:
            world = tomllib.load(fh)
    raw_blocks = world.get("block", [])
    if not isinstance(raw_blocks, list):
        raise EnrichOptionError(f"[[block]] must be an array of tables, got {raw_blocks!r}")
    blocks = []
    for i, raw in enumerate(raw_blocks):
        where = f"block #{i + 1}"
        if not isinstance(raw, Mapping):
            raise EnrichOptionError(f"{where} is not a table: {raw!r}")
        try:
            network = ipaddress.ip_network(str(raw["cidr"]), strict=True)
        except KeyError:
            raise EnrichOptionError(f"{where} has no cidr") from None
        except ValueError:
            raise EnrichOptionError(f"{where}: cidr {raw['cidr']!r} is not a network") from None
        where = f"block {network}"
        org, asn, city, country = raw.get("org"), raw.get("asn"), raw.get("city"), raw.get("country")
        lat, lon = raw.get("lat"), raw.get("lon")
        if not isinstance(org, str) or not org.strip():
            raise EnrichOptionError(f"{where}: org must be a non-empty string, got {org!r}")
        if not isinstance(asn, int) or isinstance(asn, bool) or not 0 < asn < 2**32:
            raise EnrichOptionError(f"{where}: asn must be 1..4294967295, got {asn!r}")
        if not isinstance(city, str) or not city.strip():
            raise EnrichOptionError(f"{where}: city must be a non-empty string, got {city!r}")
        if not isinstance(country, str) or country not in COUNTRY_NAMES:
            raise EnrichOptionError(f"{where}: country must be an ISO 3166 code like 'US', got {country!r}")
        for name, value, limit in (("lat", lat, 90), ("lon", lon, 180)):
            if not isinstance(value, int | float) or isinstance(value, bool) or not -limit <= value <= limit:
                raise EnrichOptionError(f"{where}: {name} must be a number within ±{limit}, got {value!r}")
        blocks.append(LabBlock(network, org.strip(), asn, city.strip(), country, float(lat), float(lon)))  # type: ignore[arg-type]
    for i, a in enumerate(blocks):
        for b in blocks[i + 1 :]:
            if a.network.version == b.network.version and a.network.overlaps(b.network):  # type: ignore[arg-type]
                raise EnrichOptionError(f"blocks {a.network} and {b.network} overlap")
    return blocks


def build_lab_db(blocks: Sequence[LabBlock], out: Path | str) -> Path:
    """Write the blocks to an mmdb at ``out`` (atomically: a running reader never sees half a file)."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    out = Path(out)
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=DATABASE_TYPE,
        languages=["en"],
        description={"en": "apviz lab: places and organisations of the lab's pretend internet"},
    )
    for block in blocks:
        writer.insert_network(IPSet([str(block.network)]), block.record())
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name, suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        writer.to_db_file(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("labdb: wrote %d blocks to %s", len(blocks), out)
    return out


def ensure_lab_db(world: Path | str = DEFAULT_WORLD, out: Path | str | None = None) -> Path:
    """Build the lab mmdb from the catalogue unless an up-to-date one exists; returns its path.

    Default output: ``lab.mmdb`` beside the catalogue's directory under ``build/``
    (``data/lab/build/lab.mmdb``), which ``.gitignore`` keeps out of the repository.
    """
    world = Path(world)
    out = Path(out) if out is not None else world.parent / "build" / "lab.mmdb"
    if out.is_file() and out.stat().st_mtime_ns >= world.stat().st_mtime_ns:
        return out
    return build_lab_db(read_blocks(world), out)
