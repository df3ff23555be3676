"""Benchmark: tracker blocking with the lab phones' own traffic: collateral, time to fail, to count.

Run as root from the repository root: ``.venv/bin/python bench/block.py [--phones 4] [--window 30]``.

A lab whose phones run their personas' traffic (real lookups through the gateway, DoH/DoT for some,
TLS and QUIC connections to the lab's internet, trackers among them as the personas have them);
apviz's sources, state and blocker run with blocking on for everyone. After ``--window`` seconds:

* ``collateral``: addresses the rule in force blocks although the device also resolved a
  non-tracker name to them (target 0), beside ``collateral_naive``, what "block every address of a
  tracker answer" would have blocked so (Google's front end is such an address in the lab world);
* ``fail_ms_p50/p95``: one phone connects ``--attempts`` times to addresses blocked for it (plain
  TCP, port 80): the time until the reset arrives (target ≤ 100 ms);
* ``count_s_p95``: from such an attempt until the blocker has counted it (target ≤ 1 s with the
  kiosk's 0.25 s tick on top).

Progress goes to stderr; the last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import percentile, say  # noqa: E402

CONNECT = """
import json, socket, sys, time
t0 = time.monotonic()
try:
    socket.create_connection((sys.argv[1], 80), timeout=5).close()
    ok = True
except OSError:
    ok = False
print(json.dumps({"ok": ok, "elapsed": time.monotonic() - t0}))
"""


async def run(phones: int, window: float, attempts: int) -> dict[str, object]:
    from apviz.app import SourceOptions, build, build_enricher
    from apviz.block.runner import Blocker
    from apviz.block.table import BlockTable, element_counters
    from apviz.config import EnrichConfig
    from apviz.lab.lab import Lab
    from apviz.live.blocking import BlockDecider
    from apviz.live.state import StateConfig, networks

    enricher = build_enricher(EnrichConfig())

    def is_tracker(name: str) -> bool:
        info = enricher.describe_name(name)
        return info is not None and info.tracker_category is not None

    with Lab(phones=phones, traffic=True) as lab:
        opts = SourceOptions(
            netns=lab.gateway_ns,
            dnsmasq_log=lab.dnsmasq_log,
            journal_dir=lab.journal_dir,
            journal_since=60.0,
            leases=lab.leases_file,
            conntrack_refresh=2.0,
        )
        config = StateConfig(
            lan=networks([lab.lan_cidr]), local_addresses=frozenset({lab.gateway_ip, lab.wan_ip})
        )
        state, pipeline = build(opts, config)
        blocker = Blocker(BlockTable(lab.gateway_ns))
        decider = BlockDecider(is_tracker, blocker.queue)
        blocker.decider = decider
        state.blocking = decider
        decider.allowed = True
        decider.set_everyone(True)
        tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(blocker.run())]
        try:
            say(f"blocking on for everyone; {window:.0f} s of persona traffic on {phones} phones")
            await asyncio.sleep(window)
            devices = [p.ip for p in lab.phones]
            naive = sum(decider.collateral(d)["naive"] for d in devices)
            rule = sum(decider.collateral(d)["rule"] for d in devices)
            elements = element_counters(lab.gateway_ns)
            persona_attempts = sum(decider.attempts.values())
            target = next((p for p in lab.phones if any(d == p.ip for d, _ in elements)), None)
            fails: list[float] = []
            counts: list[float] = []
            if target is not None:
                addresses = sorted(a for d, a in elements if d == target.ip)
                with contextlib.suppress(Exception):
                    lab.set_traffic(target, False)  # its own traffic would move the count meanwhile
                await asyncio.sleep(0.5)
                for i in range(attempts):
                    address = addresses[i % len(addresses)]
                    before = decider.attempts.get(target.ip, 0)
                    t0 = time.monotonic()
                    proc = await asyncio.to_thread(
                        lab.exec_in, target.ns, [sys.executable, "-c", CONNECT, address]
                    )
                    result = json.loads(proc.stdout)
                    if result["ok"]:
                        say(f"{address} was not refused (element expired or removed meanwhile)")
                        continue
                    fails.append(result["elapsed"] * 1000)
                    while decider.attempts.get(target.ip, 0) <= before and time.monotonic() - t0 < 5:
                        await asyncio.sleep(0.005)
                    counts.append(time.monotonic() - t0)
            return {
                "phones": phones,
                "window_s": window,
                "devices_blocking": len({d for d, _ in elements}),
                "elements": len(elements),
                "persona_attempts_blocked": persona_attempts,
                "collateral": rule,
                "collateral_naive": naive,
                "attempts": len(fails),
                "fail_ms_p50": round(percentile(fails, 0.5), 2) if fails else None,
                "fail_ms_p95": round(percentile(fails, 0.95), 2) if fails else None,
                "count_s_p95": round(percentile(counts, 0.95), 3) if counts else None,
                "nft_batches": blocker.counts["batches"],
                "nft_errors": blocker.counts["errors"],
            }
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phones", type=int, default=4)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--attempts", type=int, default=30)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.phones, args.window, args.attempts))))


if __name__ == "__main__":
    main()
