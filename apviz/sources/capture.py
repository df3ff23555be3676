"""The nftables table that copies each new connection's first packets to apviz over NFLOG.

``table inet apviz_capture`` has one chain in the forward hook. There a packet still carries the LAN
device's own address in both directions (source NAT happens later, in postrouting; replies were
de-NATed in prerouting), so the copy names the device, not the gateway's WAN address. The chain
only logs: no rule drops or accepts anything, and a logged packet goes on at once whether or not
apviz is listening (fail-open). Its priority (``filter - 50``) runs it before the gateway's own
filter chain, so the policy's refusal of port 853 does not hide those packets from us either.

What is copied (the counts are conntrack's per-direction packet counters, ``ct original packets``;
they need ``net.netfilter.nf_conntrack_acct=1``, which apviz requires for byte counts anyway):

* ``apviz-tls``: TCP, original direction, any port, packets 1 to ``tcp_packets`` of a connection
  that carry a payload (pure ACKs are left out by length) **while the server has sent less than
  ``server_bytes``** (``ct reply bytes``). A client's ClientHello is its first data and goes out
  before the server can say anything but SYN-ACK and ACKs (about 60 bytes each); the server's
  answer (ServerHello and certificate, over a kilobyte) closes the window, so the request data after
  the handshake is not copied: one copy per TLS connection instead of five (measured with
  bench/names.py: 5.4 copies per lab connection before, SYN included). A hello split over several
  segments still fits. No SYN is copied: the first payload is the start of the stream (the
  hello's segments leave the phone as one burst and reach the gateway in order). A resumed session
  whose server flight is shorter than ``server_bytes`` costs a few wasted copies, never a name.
  Each rule also counts what it copied (``nft list table inet apviz_capture``).
* ``apviz-quic``: UDP, original direction, any port, packets 1 to ``quic_packets`` that are long
  header packets (first bits 11) of at least 1200 bytes (a client's Initial is always padded so),
  sent before the server's answer (``ct reply bytes``, as for TCP): the client's later Initials carry
  the server's connection id, whose keys an observer cannot derive, so they are not copied.
* ``apviz-dns``: UDP or TCP from source port 53 in the reply direction: answers of resolvers other
  than the gateway's dnsmasq (whose answers leave through the output hook and never pass here).

Without conntrack accounting: the kernel turns ``nf_conntrack_acct`` on in the namespace when a
rule reading ``ct ... packets`` is loaded (measured in tests/test_capture_lab.py), so connections
made after the table counts from then on. Older connections carry no counters, which read 0, and
the ranges start at 1: they are never copied (nothing floods apviz). apviz sets the sysctl back to
0 at stop when it found it so.

Crash safety: :meth:`CaptureTable.install` deletes a table of that name left by a killed run before
creating it again, in one ``nft -f`` transaction; :meth:`CaptureTable.remove` deletes it at stop.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from typing import Final

log = logging.getLogger(__name__)

TABLE: Final = "apviz_capture"
PREFIX_TLS: Final = "apviz-tls"
PREFIX_QUIC: Final = "apviz-quic"
PREFIX_DNS: Final = "apviz-dns"
PREFIX_DOT_REFUSED: Final = "apviz-dot-refused"  # written by the network policy's rules, same group
PREFIX_BLOCKED: Final = "apviz-blocked"  # written by tracker blocking's rules (apviz.block.table)

# A pure ACK with the timestamp option most clients use is 52 bytes (IPv6: 72). Longer TCP packets
# carry payload, or SACK blocks (rare this early, and harmless: nothing to decode). Without
# timestamps (Windows) a pure ACK is 40 bytes, and a data segment under 13 bytes is missed: no TLS
# client starts a hello with such a segment.
_PURE_ACK_MAX_V4: Final = 52
_PURE_ACK_MAX_V6: Final = 72
_SYN_SNAPLEN: Final = 128  # headers only
_DATA_SNAPLEN: Final = 16 * 1024 + 128  # a hello over 16 KiB is dropped anyway
_QUIC_SNAPLEN: Final = 2048  # a whole Initial datagram (MTU-sized)
_DNS_SNAPLEN: Final = 4096


class CaptureError(RuntimeError):
    """nft is missing or refused the table; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class CaptureRules:
    """How many first packets of each kind are copied (see the module docstring)."""

    group: int = 7400
    tcp_packets: int = 10
    server_bytes: int = 1024
    quic_packets: int = 4
    dns_packets: int = 4
    dns_tcp_packets: int = 10

    def ruleset(self) -> str:
        """The ``nft -f`` text that (re)creates the table: delete a leftover, then add it afresh."""
        g = self.group
        tcp = f"meta l4proto tcp ct direction original ct original packets 1-{self.tcp_packets}"
        quic = (
            f"meta l4proto udp ct direction original ct original packets 1-{self.quic_packets} "
            f"ct reply bytes < {self.server_bytes} udp length >= 1208 @th,64,2 3"
        )
        dns = f"ct direction reply ct reply packets 1-{self.dns_packets} udp sport 53"
        dns_tcp = f"ct direction reply ct reply packets 1-{self.dns_tcp_packets} tcp sport 53"
        data = (
            f"tcp flags & (syn | rst | fin) == 0 meta nfproto ipv4 meta length > {_PURE_ACK_MAX_V4}",
            f"tcp flags & (syn | rst | fin) == 0 meta nfproto ipv6 meta length > {_PURE_ACK_MAX_V6}",
        )
        before_answer = f"ct reply bytes < {self.server_bytes}"
        rules = [
            *(
                f'{tcp} {before_answer} {cond} counter log prefix "{PREFIX_TLS}" group {g} '
                f"snaplen {_DATA_SNAPLEN}"
                for cond in data
            ),
            f'{quic} counter log prefix "{PREFIX_QUIC}" group {g} snaplen {_QUIC_SNAPLEN}',
            f'{dns} counter log prefix "{PREFIX_DNS}" group {g} snaplen {_DNS_SNAPLEN}',
            f'{dns_tcp} tcp flags & (syn | ack) == (syn | ack) counter log prefix "{PREFIX_DNS}" group {g} '
            f"snaplen {_SYN_SNAPLEN}",
            *(
                f'{dns_tcp} {cond} counter log prefix "{PREFIX_DNS}" group {g} snaplen {_DATA_SNAPLEN}'
                for cond in data
            ),
        ]
        body = "\n".join(f"        {rule}" for rule in rules)
        return (
            f"table inet {TABLE}\n"
            f"delete table inet {TABLE}\n"
            f"table inet {TABLE} {{\n"
            "    chain forward {\n"
            "        type filter hook forward priority filter - 50; policy accept;\n"
            f"{body}\n"
            "    }\n"
            "}\n"
        )


def nft_argv(netns: str | None, *args: str) -> list[str]:
    """``nft ARGS``, inside ``netns`` through ``ip netns exec`` when one is given."""
    nft = shutil.which("nft") or "nft"
    return [*(["ip", "netns", "exec", netns] if netns else []), nft, *args]


def run_nft(netns: str | None, script: str, what: str) -> None:
    """Apply an ``nft -f -`` script; a failure raises :class:`CaptureError` with the reason."""
    if shutil.which("nft") is None:
        raise CaptureError(
            "nft (nftables) is not installed: apviz needs it to read server names from connections "
            "(apt install nftables), or set [names] capture = false"
        )
    if netns and shutil.which("ip") is None:
        raise CaptureError("ip (iproute2) is not installed: it is needed to run nft in the namespace")
    try:
        proc = subprocess.run(
            nft_argv(netns, "-f", "-"), input=script, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CaptureError(f"cannot {what}: {exc}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        where = f" in network namespace {netns!r}" if netns else ""
        if "Operation not permitted" in detail or "Permission denied" in detail:
            raise CaptureError(
                f"not permitted to {what}{where}: apviz needs CAP_NET_ADMIN to add its nftables table "
                f"(systemd/apviz.service grants it). nft said: {detail}"
            )
        raise CaptureError(f"cannot {what}{where}: nft said: {detail}")


def conntrack_accounting(netns: str | None) -> bool | None:
    """``net.netfilter.nf_conntrack_acct`` of the namespace; None if it cannot be read."""
    argv = [
        *(["ip", "netns", "exec", netns] if netns else []),
        "cat",
        "/proc/sys/net/netfilter/nf_conntrack_acct",
    ]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = proc.stdout.strip()
    return None if proc.returncode or value not in ("0", "1") else value == "1"


class CaptureTable:
    """The table's life: :meth:`install` at start (replacing a crashed run's), :meth:`remove` at stop."""

    def __init__(self, netns: str | None, rules: CaptureRules) -> None:
        self.netns = netns
        self.rules = rules
        self.installed = False
        self.acct_was_off = False  # the sysctl was 0 before install: set it back at remove

    def install(self) -> None:
        self.acct_was_off = conntrack_accounting(self.netns) is False
        if self.acct_was_off:
            log.warning(
                "capture: net.netfilter.nf_conntrack_acct was 0%s; loading the capture rules turns it on "
                "(the kernel does for rules that count packets) and apviz sets it back at stop. "
                "Connections opened before carry no counters and are not read. apviz needs it on for "
                "byte counts anyway: set it to 1 (apviz doctor)",
                f" in {self.netns}" if self.netns else "",
            )
        run_nft(self.netns, self.rules.ruleset(), f"add the nftables table inet {TABLE}")
        self.installed = True

    def remove(self) -> None:
        """Delete the table (also one this object did not make: a leftover is removed just the same)."""
        script = f"table inet {TABLE}\ndelete table inet {TABLE}\n"
        try:
            run_nft(self.netns, script, f"remove the nftables table inet {TABLE}")
        except CaptureError as exc:
            log.warning("capture: %s", exc)
        self.installed = False
        if self.acct_was_off:
            set_conntrack_accounting(self.netns, False)
            self.acct_was_off = False


def set_conntrack_accounting(netns: str | None, on: bool) -> None:
    """Write ``net.netfilter.nf_conntrack_acct`` of the namespace (failures are logged)."""
    argv = [*(["ip", "netns", "exec", netns] if netns else []), "sysctl", "-q", "-w"]
    argv.append(f"net.netfilter.nf_conntrack_acct={int(on)}")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("capture: cannot restore nf_conntrack_acct: %s", exc)
        return
    if proc.returncode:
        log.warning("capture: cannot restore nf_conntrack_acct: %s", proc.stderr.strip())


def logged_packets(netns: str | None) -> int:
    """Packets the table's rules have copied so far (their counters), 0 without the table."""
    proc = subprocess.run(
        nft_argv(netns, "-j", "list", "table", "inet", TABLE), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return 0
    total = 0
    for item in json.loads(proc.stdout).get("nftables", []):
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                total += int(expr["counter"].get("packets", 0))
    return total


def table_exists(netns: str | None) -> bool:
    """Whether ``inet apviz_capture`` is present (for tests and ``apviz doctor``)."""
    proc = subprocess.run(
        nft_argv(netns, "list", "table", "inet", TABLE), capture_output=True, text=True, check=False
    )
    return proc.returncode == 0
