"""``apviz doctor``'s checks of the network policy that keeps phones on dnsmasq (docs/network-policy.md).

They look at the policy the way a phone meets it: dnsmasq is *asked* for the three signal names (with
dnspython, from inside the gateway's namespace) rather than its files read, and the loaded nftables
table is read back from the kernel rather than the file on disk, since either can differ from what
is installed (dnsmasq not restarted, the unit disabled, ``nft flush ruleset``). The exhibit and
classroom modes promise visitors a truthful view, so a missing policy there is ``FAIL``; at home,
or with ``[names] policy = false``, it is a ``warn`` that says what phones may then hide.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import socket
import subprocess
from typing import Any

from apviz import errors
from apviz.config import Config
from apviz.doctor import FIX_CAP, Check, Status, _in_netns, _where

#: The names dnsmasq/apviz-policy.conf answers NXDOMAIN for, and what each keeps phones from doing.
SIGNAL_NAMES = {
    "use-application-dns.net": "Firefox's canary for automatic DNS over HTTPS",
    "mask.icloud.com": "Apple's Private Relay signal",
    "mask-h2.icloud.com": "Apple's Private Relay signal, HTTP/2",
}
POLICY_TABLE = "apviz_policy"
CAPTURE_TABLE = "apviz_capture"
DNS_TIMEOUT = 2.0
NFT_TIMEOUT = 10.0

FIX_DNSMASQ = (
    "install dnsmasq/apviz-policy.conf as /etc/dnsmasq.d/apviz-policy.conf (scripts/install.sh does), then: "
    "sudo systemctl restart dnsmasq"
)
FIX_NFT = (
    "sudo systemctl enable --now apviz-policy (loads /etc/apviz/nftables/apviz-policy.nft; another Wi-Fi "
    "interface than wlan0: LAN_IF=... in /etc/default/apviz-policy)"
)
FIX_OFF = "or set [names] policy = false if you decided against it (docs/network-policy.md)"
HIDDEN = (
    "iPhones with iCloud Private Relay send their lookups and Safari's traffic through Apple's relay, "
    "Firefox may switch to DNS over HTTPS by itself and Android's Private DNS uses DNS over TLS: those "
    "phones' names are then missing or only seen in the connection"
)


def _missing_status(cfg: Config) -> Status:
    """FAIL where the exhibit promises a truthful view (exhibit, classroom); warn at home."""
    return "FAIL" if cfg.exhibit.mode in ("exhibit", "classroom") else "warn"


def _dns_servers(cfg: Config) -> list[str]:
    """Where this gateway's dnsmasq answers: its LAN address(es) first, then loopback.

    dnsmasq serves the Wi-Fi on the gateway's address there, which is what apviz is configured with
    (``server.listen``, ``state.local_addresses`` inside ``state.lan``); with ``interface=`` it also
    answers on loopback, the last resort.
    """
    lans = [ipaddress.ip_network(c, strict=False) for c in cfg.state.lan]
    found: list[str] = []
    for text in [cfg.server.listen, *cfg.state.local_addresses]:
        with contextlib.suppress(ValueError):
            addr = ipaddress.ip_address(text)
            if addr.version == 4 and any(addr in net for net in lans) and text not in found:
                found.append(text)
    return [*found, "127.0.0.1"]


def _ask(netns: str | None, server: str, name: str) -> tuple[str, list[str]]:
    """(rcode, addresses) of one A query to ``server``, sent from inside ``netns``."""
    import dns.message
    import dns.query
    import dns.rcode

    from apviz.sources.netns import socket_in

    sock = socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.setblocking(False)
        reply = dns.query.udp(dns.message.make_query(name, "A"), server, timeout=DNS_TIMEOUT, sock=sock)
    addresses = [rd.address for rrset in reply.answer for rd in rrset if hasattr(rd, "address")]
    return dns.rcode.to_text(reply.rcode()), addresses


def check_policy_dns(cfg: Config) -> Check:
    """dnsmasq answers NXDOMAIN (or no address) for each signal name."""
    import dns.exception

    netns = cfg.sources.netns or None
    tried = []
    for server in _dns_servers(cfg):
        answers: dict[str, tuple[str, list[str]]] = {}
        try:
            for name in SIGNAL_NAMES:
                answers[name] = _ask(netns, server, name)
        except (dns.exception.DNSException, OSError) as exc:
            tried.append(f"{server} ({errors.message(exc) or type(exc).__name__})")
            continue
        leaks = {n: a for n, (_, a) in answers.items() if a}
        if not leaks:
            how = ", ".join(sorted({rcode for rcode, _ in answers.values()}))
            return Check(
                "policy-dns", "ok", f"dnsmasq at {server} answers {how} for {', '.join(SIGNAL_NAMES)}"
            )
        shown = "; ".join(f"{n} -> {', '.join(a)} ({SIGNAL_NAMES[n]})" for n, a in leaks.items())
        return Check(
            "policy-dns",
            _missing_status(cfg),
            f"dnsmasq at {server} answers {shown}: those phones leave dnsmasq",
            f"{FIX_DNSMASQ}; {FIX_OFF}",
        )
    return Check(
        "policy-dns",
        "warn",
        f"no dnsmasq answered{_where(netns)} at {', '.join(tried)}: cannot check the DNS policy",
        "check that dnsmasq runs (systemctl status dnsmasq) and that server.listen or state.local_addresses "
        "holds the gateway's LAN address",
    )


def _nft(netns: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    """Run nft in ``netns``: a child forked from a thread that entered the namespace starts there."""
    argv = [shutil.which("nft") or "/usr/sbin/nft", *args]
    return _in_netns(
        netns, lambda: subprocess.run(argv, capture_output=True, text=True, timeout=NFT_TIMEOUT, check=False)
    )


def _ruleset(netns: str | None, table: str) -> list[dict[str, Any]] | None:
    """The objects of ``inet <table>`` as nft's JSON; None when it is not loaded."""
    proc = _nft(netns, "-j", "list", "table", "inet", table)
    if proc.returncode != 0:
        if "No such file" in proc.stderr or "does not exist" in proc.stderr:
            return None
        raise (
            PermissionError(proc.stderr.strip())
            if "not permitted" in proc.stderr.lower()
            else OSError(proc.stderr.strip())
        )
    return [obj for obj in json.loads(proc.stdout).get("nftables", []) if "metainfo" not in obj]


def _judge_policy_table(objects: list[dict[str, Any]]) -> tuple[list[str], set[str], set[int]]:
    """(hooks whose 853 traffic ends in a reject, interfaces named, NFLOG groups logged to)."""
    chains = {o["chain"]["name"]: o["chain"] for o in objects if "chain" in o}
    rules: dict[str, list[list[dict[str, Any]]]] = {}
    for o in objects:
        if "rule" in o:
            rules.setdefault(o["rule"]["chain"], []).append(o["rule"]["expr"])
    rejecting = {name for name, exprs in rules.items() if any("reject" in e for x in exprs for e in x)}
    interfaces: set[str] = set()
    groups: set[int] = set()
    hooks = []
    for name, chain in chains.items():
        if chain.get("hook") not in ("input", "forward"):
            continue
        for exprs in rules.get(name, []):
            text = json.dumps(exprs)
            if "853" not in text:
                continue
            jumps = {e["jump"]["target"] for e in exprs if "jump" in e}
            if any("reject" in e for e in exprs) or jumps & rejecting:
                hooks.append(chain["hook"])
            for e in exprs:
                right = e.get("match", {}).get("right")
                if e.get("match", {}).get("left") == {"meta": {"key": "iifname"}} and isinstance(right, str):
                    interfaces.add(right)
    for exprs in (x for name in rejecting for x in rules[name]):
        groups.update(int(e["log"]["group"]) for e in exprs if "log" in e and "group" in e["log"])
    return sorted(set(hooks)), interfaces, groups


def check_policy_nft(cfg: Config) -> Check:
    """The ``inet apviz_policy`` table is loaded and rejects 853 on input and forward."""
    netns = cfg.sources.netns or None
    name = "policy-nft"
    if shutil.which("nft") is None:
        return Check(
            name, _missing_status(cfg), "nft is not installed", "sudo apt install nftables; " + FIX_NFT
        )
    try:
        objects = _ruleset(netns, POLICY_TABLE)
    except PermissionError as exc:
        return Check(name, "warn", f"cannot read nftables{_where(netns)}: {errors.message(exc)}", FIX_CAP)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return Check(name, "warn", f"cannot read nftables{_where(netns)}: {exc}", FIX_NFT)
    if objects is None:
        return Check(
            name,
            _missing_status(cfg),
            f"table inet {POLICY_TABLE} is not loaded{_where(netns)}: phones may use DNS over TLS (port 853)",
            f"{FIX_NFT}; {FIX_OFF}",
        )
    hooks, interfaces, groups = _judge_policy_table(objects)
    if hooks != ["forward", "input"]:
        return Check(
            name,
            _missing_status(cfg),
            f"table inet {POLICY_TABLE} does not reject port 853 on both input and forward "
            f"(only: {', '.join(hooks) or 'none'})",
            "reload the shipped rules: sudo systemctl restart apviz-policy",
        )
    where = ", ".join(sorted(interfaces)) or "?"
    missing = [i for i in sorted(interfaces) if not _has_interface(netns, i)]
    if missing:
        return Check(
            name,
            "warn",
            f"table inet {POLICY_TABLE} rejects port 853 from {where}, but {', '.join(missing)} does not "
            f"exist{_where(netns)}",
            "set LAN_IF to the visitors' Wi-Fi interface in /etc/default/apviz-policy, then: "
            "sudo systemctl restart apviz-policy",
        )
    if groups and cfg.names.nflog_group not in groups:
        return Check(
            name,
            "warn",
            f"table inet {POLICY_TABLE} logs refusals to NFLOG group {', '.join(map(str, sorted(groups)))}, "
            f"apviz listens on {cfg.names.nflog_group}: phones are not told why their names are missing",
            "use the same group in nftables/apviz-policy.nft and [names] nflog_group",
        )
    return Check(name, "ok", f"table inet {POLICY_TABLE} rejects TCP and UDP port 853 from {where}")


def _has_interface(netns: str | None, ifname: str) -> bool:
    def look() -> bool:
        try:
            socket.if_nametoindex(ifname)
        except OSError:
            return False
        return True

    return bool(_in_netns(netns, look))


def check_capture_nft(cfg: Config) -> Check:
    """nftables works here, for the table apviz adds itself when ``[names] capture`` is on."""
    netns = cfg.sources.netns or None
    name = "capture-nft"
    if not cfg.names.capture:
        return Check(name, "skip", "[names] capture = false: server names come only from dnsmasq")
    fix = (
        "sudo apt install nftables (the kernel needs nf_tables and nfnetlink_log), or set [names] capture "
        "= false"
    )
    if shutil.which("nft") is None:
        return Check(name, "warn", "nft is not installed: no server names from the connections", fix)
    try:
        proc = _nft(netns, "list", "tables")
    except (OSError, subprocess.SubprocessError) as exc:
        return Check(name, "warn", f"cannot run nft{_where(netns)}: {exc}", fix)
    if proc.returncode != 0:
        err = proc.stderr.strip()
        return Check(
            name,
            "warn",
            f"nft cannot list tables{_where(netns)}: {err}",
            FIX_CAP if "not permitted" in err.lower() else fix,
        )
    loaded = f"inet {CAPTURE_TABLE}" in proc.stdout
    state = "loaded (apviz runs)" if loaded else "not loaded now (apviz adds it when it starts)"
    return Check(name, "ok", f"nftables works{_where(netns)}; table inet {CAPTURE_TABLE} {state}")


def policy_checks(cfg: Config) -> list[Check]:
    """The policy's checks, or with ``[names] policy = false`` one warning of what phones may hide."""
    checks = []
    if cfg.names.policy:
        checks += [check_policy_dns(cfg), check_policy_nft(cfg)]
    else:
        checks.append(
            Check(
                "policy",
                "warn",
                f"[names] policy = false: {HIDDEN}",
                "set [names] policy = true and install the policy (scripts/install.sh; see "
                "docs/network-policy.md)",
            )
        )
    checks.append(check_capture_nft(cfg))
    return checks
