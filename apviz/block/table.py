"""``table inet apviz_block``: reject a device's connections to the tracker addresses it resolved.

Why a table of apviz's own (like :mod:`apviz.sources.capture`): deleting it removes every trace at
once, at stop and at the next start after a crash, without touching the gateway's own rules.

* Two sets, ``blocked4`` (``ipv4_addr . ipv4_addr``) and ``blocked6``, of (device . tracker address)
  with ``flags timeout`` (each element expires on its own: a binding older than the name hold no
  longer proves the address is a tracker's) and a ``counter`` per element, which is how blocked
  attempts are counted per device and address without a packet copy.
* One chain in the forward hook at ``filter - 40`` (after the capture chain at ``- 50``, so the
  connection's SYN is still copied and named): TCP gets a reset, everything else an ICMP
  port-unreachable. *Reject, not drop*: an app whose SYN is dropped waits for its retransmit timer
  (seconds), one that gets a reset fails at once and moves on (measured in tests/test_block_lab.py:
  well under the 100 ms the issue asks for).
* Each rule also copies the rejected packet to NFLOG (prefix ``apviz-blocked``, the capture group)
  so a packet reader can report attempts as they happen.

Element changes are batched into one ``nft -f`` transaction per call of :meth:`BlockTable.apply`,
run by the caller off the event loop (an executor): nft takes milliseconds.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import subprocess
from collections.abc import Iterable
from typing import Final

from apviz.live.blocking import BlockAction, Op, canonical_ip
from apviz.sources.capture import PREFIX_BLOCKED, CaptureError, nft_argv, run_nft

log = logging.getLogger(__name__)

TABLE: Final = "apviz_block"
SETS: Final = {4: "blocked4", 6: "blocked6"}


def ruleset(group: int = 7400) -> str:
    """The ``nft -f`` text that (re)creates the table: delete a leftover, then add it afresh."""
    log_stmt = f'counter log prefix "{PREFIX_BLOCKED}" group {group} snaplen 128'
    return (
        f"table inet {TABLE}\n"
        f"delete table inet {TABLE}\n"
        f"table inet {TABLE} {{\n"
        "    set blocked4 { type ipv4_addr . ipv4_addr; flags timeout; counter; size 65536; }\n"
        "    set blocked6 { type ipv6_addr . ipv6_addr; flags timeout; counter; size 65536; }\n"
        "    chain forward {\n"
        "        type filter hook forward priority filter - 40; policy accept;\n"
        f"        ip saddr . ip daddr @blocked4 meta l4proto tcp {log_stmt} reject with tcp reset\n"
        f"        ip saddr . ip daddr @blocked4 {log_stmt} reject\n"
        f"        ip6 saddr . ip6 daddr @blocked6 meta l4proto tcp {log_stmt} reject with tcp reset\n"
        f"        ip6 saddr . ip6 daddr @blocked6 {log_stmt} reject\n"
        "    }\n"
        "}\n"
    )


def _family(address: str) -> int:
    return ipaddress.ip_address(address).version


def script(actions: Iterable[BlockAction], present: dict[str, set[str]]) -> str:
    """The nft lines for ``actions``. ``present`` (device -> addresses with an element) is what FLUSH
    deletes: nft cannot delete "every element whose first half is X", so the applier remembers."""
    lines: list[str] = []
    for act in actions:
        # Only canonical addresses reach nft's text (the decider checks too): an IPv6 zone such as
        # "fe80::1%x } ..." is a valid address to Python and would be nft syntax.
        if canonical_ip(act.device) != act.device or (
            act.address and canonical_ip(act.address) != act.address
        ):
            continue
        fam = _family(act.device)
        sset = SETS[fam]
        if act.op is Op.ADD:
            secs = max(1, int(act.timeout))
            elem = f"{act.device} . {act.address}"
            if act.address in present.get(act.device, set()):
                # A renewal: ``add`` leaves an existing element's timeout alone, so it is deleted and
                # added again (its counter restarts; the blocker reads a smaller count as a new one).
                # The first ``add`` makes the ``delete`` safe if the element expired meanwhile.
                lines.append(f"add element inet {TABLE} {sset} {{ {elem} }}")
                lines.append(f"delete element inet {TABLE} {sset} {{ {elem} }}")
            lines.append(f"add element inet {TABLE} {sset} {{ {elem} timeout {secs}s }}")
            present.setdefault(act.device, set()).add(act.address)
        elif act.op is Op.REMOVE:
            if act.address in present.get(act.device, set()):
                present[act.device].discard(act.address)
                # ``delete`` of an element that expired meanwhile fails the batch: add it first.
                lines.append(f"add element inet {TABLE} {sset} {{ {act.device} . {act.address} }}")
                lines.append(f"delete element inet {TABLE} {sset} {{ {act.device} . {act.address} }}")
        else:
            for address in sorted(present.pop(act.device, set())):
                lines.append(f"add element inet {TABLE} {sset} {{ {act.device} . {address} }}")
                lines.append(f"delete element inet {TABLE} {sset} {{ {act.device} . {address} }}")
    return "".join(f"{line}\n" for line in lines)


class BlockTable:
    """The table's life: :meth:`install` at start (replacing a crashed run's), :meth:`apply` element
    changes, :meth:`counters` for attempts, :meth:`remove` at stop."""

    def __init__(self, netns: str | None, group: int = 7400) -> None:
        self.netns = netns
        self.group = group
        self.present: dict[str, set[str]] = {}
        self.installed = False

    def install(self) -> None:
        run_nft(self.netns, ruleset(self.group), f"add the nftables table inet {TABLE}")
        self.present.clear()
        self.installed = True

    def apply(self, actions: Iterable[BlockAction]) -> None:
        text = script(actions, self.present)
        if text:
            run_nft(self.netns, text, "change the tracker block set")

    def remove(self) -> None:
        try:
            run_nft(self.netns, f"table inet {TABLE}\ndelete table inet {TABLE}\n", f"remove inet {TABLE}")
        except CaptureError as exc:
            log.warning("block: %s", exc)
        self.present.clear()
        self.installed = False

    def counters(self) -> dict[tuple[str, str], int]:
        """Rejected packets per (device, address) element, from the sets' per-element counters."""
        return element_counters(self.netns)


def _elements(netns: str | None) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for sset in SETS.values():
        proc = subprocess.run(
            nft_argv(netns, "-j", "list", "set", "inet", TABLE, sset),
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
        if proc.returncode != 0:
            continue
        for item in json.loads(proc.stdout).get("nftables", []):
            out.extend(item.get("set", {}).get("elem", []))
    return out


def element_counters(netns: str | None) -> dict[tuple[str, str], int]:
    """(device, address) -> packets rejected, for every element in place (none without the table)."""
    result: dict[tuple[str, str], int] = {}
    for elem in _elements(netns):
        body = elem.get("elem", elem) if isinstance(elem, dict) else elem
        value = body.get("val", body) if isinstance(body, dict) else body
        concat = value.get("concat") if isinstance(value, dict) else None
        if not concat or len(concat) != 2:
            continue
        counter = body.get("counter", {}) if isinstance(body, dict) else {}
        result[(str(concat[0]), str(concat[1]))] = int(counter.get("packets", 0))
    return result


def status(netns: str | None) -> dict[str, int] | None:
    """What is in place (for ``apviz doctor``): devices and elements; None when there is no table."""
    proc = subprocess.run(
        nft_argv(netns, "list", "table", "inet", TABLE),
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    if proc.returncode != 0:
        return None
    elems = element_counters(netns)
    return {"devices": len({d for d, _ in elems}), "elements": len(elems)}
