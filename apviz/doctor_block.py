"""``apviz doctor``'s line about tracker blocking: what apviz has put in the kernel, read back from it.

The table ``inet apviz_block`` exists only while apviz runs with ``[exhibit] blocking = true`` (it is
removed at stop and a crashed run's is replaced at the next start), so the line says how many devices
and elements are in place right now, or that nothing is. A table found while blocking is off in the
configuration is a leftover of an earlier run with it on: the next start does not remove what it does
not install, so the fix says how to delete it.
"""

from __future__ import annotations

import subprocess

from apviz.block.table import TABLE, status
from apviz.config import Config
from apviz.doctor import FIX_CAP, Check, _where


def check_blocking(cfg: Config) -> Check:
    name = "blocking"
    netns = cfg.sources.netns or None
    try:
        found = status(netns)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return Check(name, "warn", f"cannot read nftables{_where(netns)}: {exc}", FIX_CAP)
    if not cfg.exhibit.blocking:
        if found is None:
            return Check(name, "skip", "[exhibit] blocking = false: apviz blocks nothing")
        fix = f"nft delete table inet {TABLE}" + (f" (inside: ip netns exec {netns})" if netns else "")
        return Check(name, "warn", f"table inet {TABLE} left by an earlier run{_where(netns)}", fix)
    if found is None:
        return Check(name, "ok", f"no table inet {TABLE}{_where(netns)} yet: apviz adds it when it starts")
    return Check(
        name,
        "ok",
        f"table inet {TABLE}{_where(netns)}: {found['devices']} devices, {found['elements']} blocked "
        "addresses in place (removed at stop)",
    )
