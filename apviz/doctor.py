"""``apviz doctor``: is this gateway ready for ``apviz serve``, and if not, what to do about it.

Each check looks at one precondition the way the service will meet it (the same configuration and
flags as ``serve``; the same conntrack socket, log reader and leases parser) and says ``ok``,
``warn`` or ``FAIL`` with the command or setting that fixes it. The operator is often a teacher or a
museum technician setting up a Raspberry Pi: a line that says *what to type* beats a traceback.
``FAIL`` marks what stops the exhibit from working at all (no conntrack access, no byte counters,
no DNS names, no devices, a listen address that cannot be bound, in exhibit and classroom mode no
network policy: apviz_doctor_policy); ``warn`` marks a degraded view.
The exit status is 1 when anything failed, so scripts (and ``scripts/install.sh``) can rely on it.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import grp
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from apviz import errors
from apviz.config import Config

Status = Literal["ok", "warn", "FAIL", "skip"]

#: How to give apviz the one capability it needs; every conntrack-related fix points here.
FIX_CAP = (
    "run apviz as root, or grant it CAP_NET_ADMIN: the systemd unit does (AmbientCapabilities=CAP_NET_ADMIN, "
    "see systemd/apviz.service); by hand: sudo setpriv --reuid apviz --regid apviz --init-groups "
    "--inh-caps +net_admin --ambient-caps +net_admin apviz ..."
)
FIX_QUERIES = (
    "turn on query logging in dnsmasq: log-queries=extra and log-dhcp (as in dnsmasq/apviz.conf, "
    "installed as /etc/dnsmasq.d/apviz.conf), then: sudo systemctl restart dnsmasq"
)
DATA_MAX_AGE_DAYS = 180  # DB-IP Lite and the ASN table are monthly; half a year is stale
BLOCKLIST_MAX_AGE_DAYS = 365
LOG_TAIL_BYTES = 512 * 1024
JOURNAL_SCAN = 20000  # newest dnsmasq entries looked at
JOURNAL_WINDOW = 86400.0  # ... within the last day

# dnsmasq's query line, after the "dnsmasq[pid]: " prefix: "<serial> <client>/<port> query[A] ..." with
# log-queries=extra, plain "query[A] ..." without it.
_QUERY = re.compile(r"^(?:(\d+) \S+/\d+ )?query\[")
_FILE_PREFIX = re.compile(r"dnsmasq(?:-dhcp)?\[\d+\]: ")

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Check:
    """One line of the report. ``fix`` says what to do when ``status`` is not ok."""

    name: str
    status: Status
    message: str
    fix: str = ""


# --------------------------------------------------------------------------------------------------
# helpers


def _in_netns(netns: str | None, work: Callable[[], Any]) -> Any:
    """Run ``work`` in a thread that entered ``netns`` (None: here), as sources/netns.py does.

    /proc/sys/net shows the values of the network namespace of the thread that opens it, so this is
    how the target namespace's sysctls are read without moving the process.
    """
    if netns is None:
        return work()
    out: list[Any] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            from pyroute2 import netns as pyroute2_netns

            pyroute2_netns.setns(netns, flags=0)
            out.append(work())
        except BaseException as exc:  # handed to the caller below
            failed.append(exc)

    worker = threading.Thread(target=run, name=f"apviz-doctor-{netns}", daemon=True)
    worker.start()
    worker.join()
    if failed:
        raise failed[0]
    return out[0]


def read_sysctl(name: str, netns: str | None = None) -> str | None:
    """A sysctl's value (``net.netfilter.nf_conntrack_acct``) in ``netns``; None when it does not exist."""
    path = Path("/proc/sys") / name.replace(".", "/")

    def read() -> str | None:
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            return None

    return _in_netns(netns, read)


def _where(netns: str | None) -> str:
    return f" in network namespace {netns!r}" if netns else ""


def _sysctl_fix(setting: str, netns: str | None) -> str:
    key = setting.split("=")[0]
    if netns:
        return f"sudo ip netns exec {netns} sysctl -w {setting}"
    return (
        f"sudo sysctl -w {setting}; to keep it after a reboot: echo {setting} | "
        f"sudo tee /etc/sysctl.d/90-apviz-{key.rsplit('.', 1)[-1]}.conf"
    )


def _has_net_admin() -> bool:
    """CAP_NET_ADMIN (bit 12) in this process's effective set."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 12))
    return False


def _age_days(ts: float, now: float) -> float:
    return max(0.0, (now - ts) / 86400)


# --------------------------------------------------------------------------------------------------
# the checks


def check_conntrack(cfg: Config) -> Check:
    from apviz.sources.conntrack import dump, open_event_socket
    from apviz.sources.ctdecode import GROUP_DESTROY, GROUP_NEW

    netns = cfg.sources.netns or None
    who = "root" if os.geteuid() == 0 else ("CAP_NET_ADMIN" if _has_net_admin() else "no CAP_NET_ADMIN")
    try:
        flows = dump(netns)
        sock, _ = open_event_socket(netns, GROUP_NEW | GROUP_DESTROY, 1 << 20)
        sock.close()
    except PermissionError as exc:
        fix = FIX_CAP
        if netns:
            fix = (
                f"entering a named namespace needs root (CAP_SYS_ADMIN); run apviz inside it instead "
                f"(sudo ip netns exec {netns} ...) with sources.netns empty, or {FIX_CAP}"
            )
        return Check("conntrack", "FAIL", f"{errors.message(exc)} (running with {who})", fix)
    except FileNotFoundError as exc:
        return Check(
            "conntrack", "FAIL", errors.message(exc), "set sources.netns to a name `ip netns list` shows"
        )
    except OSError as exc:
        return Check(
            "conntrack",
            "FAIL",
            f"cannot read conntrack{_where(netns)}: {errors.message(exc)}",
            "the kernel needs conntrack and ctnetlink (nf_conntrack, nf_conntrack_netlink modules)",
        )
    return Check("conntrack", "ok", f"dump and events work{_where(netns)} ({len(flows)} connections; {who})")


def check_accounting(cfg: Config) -> list[Check]:
    netns = cfg.sources.netns or None
    out = []
    for key, what, status_off in (
        ("net.netfilter.nf_conntrack_acct", "byte counters", "FAIL"),
        ("net.netfilter.nf_conntrack_timestamp", "connection start times", "warn"),
    ):
        name = key.rsplit(".", 1)[-1]
        try:
            value = read_sysctl(key, netns)
        except OSError as exc:
            out.append(
                Check(name, "warn", f"cannot read {key}{_where(netns)}: {errors.message(exc)}", FIX_CAP)
            )
            continue
        if value is None:
            out.append(
                Check(
                    name,
                    "warn",
                    f"{key} does not exist{_where(netns)}: conntrack is not active there yet",
                    "conntrack starts tracking once a NAT or `ct state` rule needs it (a gateway's "
                    "masquerade rule does); then run apviz doctor again",
                )
            )
        elif value == "0":
            out.append(
                Check(
                    name,
                    status_off,  # type: ignore[arg-type]
                    f"{key} is 0{_where(netns)}: no {what} (volumes on screen stay at zero)"
                    if status_off == "FAIL"
                    else f"{key} is 0{_where(netns)}: no {what}",
                    _sysctl_fix(f"{key}=1", netns) + " (applies to connections made after it)",
                )
            )
        else:
            out.append(Check(name, "ok", f"{key} = {value}{_where(netns)}"))
    return out


def check_rcvbuf(cfg: Config) -> Check:
    from apviz.sources.conntrack import SO_RCVBUFFORCE, open_socket

    netns = cfg.sources.netns or None
    want = cfg.sources.conntrack_rcvbuf
    try:
        rmem_max = int(read_sysctl("net.core.rmem_max", netns) or 0)
    except (OSError, ValueError):
        rmem_max = 0
    try:
        sock = open_socket(netns)
    except OSError as exc:
        return Check("rcvbuf", "warn", f"cannot open a netlink socket{_where(netns)}: {errors.message(exc)}")
    with sock:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, want)
            forced = True
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, want)
            forced = False
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    mib = 1024 * 1024
    if forced or granted >= want:
        how = "SO_RCVBUFFORCE (CAP_NET_ADMIN)" if forced else f"net.core.rmem_max = {rmem_max}"
        return Check("rcvbuf", "ok", f"event buffer {granted // mib} MiB as configured, via {how}")
    return Check(
        "rcvbuf",
        "warn",
        f"event buffer only {granted // 1024} KiB of the configured {want // mib} MiB "
        f"(net.core.rmem_max = {rmem_max}, SO_RCVBUFFORCE not permitted): bursts of new connections "
        "will be lost and resynchronised",
        f"grant CAP_NET_ADMIN ({FIX_CAP.split(': ', 1)[0]}), or "
        + _sysctl_fix(f"net.core.rmem_max={want}", None),
    )


def _query_stats(messages: Iterator[str]) -> tuple[int, int, int, int]:
    """(lines, query lines, query lines with the ``extra`` serial, DHCP lines) of dnsmasq messages."""
    lines = queries = extra = dhcp = 0
    for message in messages:
        lines += 1
        match = _QUERY.match(message)
        if match:
            queries += 1
            extra += match.group(1) is not None
        elif "DHCP" in message:
            dhcp += 1
    return lines, queries, extra, dhcp


def _judge_queries(
    name: str, where: str, lines: int, queries: int, extra: int, dhcp: int, newest_age: float | None
) -> Check:
    if queries == 0:
        if lines == 0:
            return Check(
                name,
                "warn",
                f"no dnsmasq lines in {where} yet: cannot tell whether queries are logged",
                "let a phone join the network and run apviz doctor again; dnsmasq needs: " + FIX_QUERIES,
            )
        seen = f"{lines} dnsmasq lines" + (f", {dhcp} about DHCP" if dhcp else "")
        return Check(name, "FAIL", f"{seen} in {where} but no DNS queries: query logging is off", FIX_QUERIES)
    if extra == 0:
        return Check(
            name,
            "warn",
            f"{queries} queries in {where}, but without log-queries=extra: answers cannot always be "
            "tied to the phone that asked",
            "use log-queries=extra (not plain log-queries) in dnsmasq, then restart dnsmasq",
        )
    msg = f"{queries} queries in {where}, with log-queries=extra"
    if newest_age is not None and newest_age > 86400:
        return Check(
            name,
            "warn",
            msg + f", but nothing new for {newest_age / 86400:.1f} days",
            "check that dnsmasq runs and still logs here (systemctl status dnsmasq)",
        )
    return Check(name, "ok", msg)


def check_dnsmasq_file(path: Path) -> Check:
    name = "dnsmasq-log"
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - LOG_TAIL_BYTES))
            tail = fh.read(LOG_TAIL_BYTES).decode("utf-8", errors="replace")
            mtime = os.fstat(fh.fileno()).st_mtime
    except FileNotFoundError:
        return Check(
            name,
            "FAIL",
            f"{path} does not exist",
            f"set log-facility={path} in dnsmasq (see dnsmasq/apviz.conf), or leave sources.dnsmasq_log "
            "empty to read dnsmasq's entries from the journal",
        )
    except PermissionError:
        return Check(
            name,
            "FAIL",
            f"{path} is not readable by this user ({_user()})",
            f"sudo chgrp apviz {path} && sudo chmod 0640 {path} (the same in its logrotate `create` line)",
        )
    except OSError as exc:
        return Check(name, "FAIL", f"cannot read {path}: {errors.message(exc)}")

    def messages() -> Iterator[str]:
        for line in tail.splitlines():
            match = _FILE_PREFIX.search(line)
            if match:
                yield line[match.end() :]

    stats = _query_stats(messages())
    return _judge_queries(name, str(path), *stats, time.time() - mtime)


def check_dnsmasq_journal(journal_dir: Path | None, now: float) -> Check:
    name = "dnsmasq-journal"
    where = str(journal_dir) if journal_dir else "the system journal"
    try:
        from systemd import journal
    except ImportError:
        from apviz.sources.journal import INSTALL_HINT

        return Check(
            name, "FAIL", "systemd-python is not installed: the journal cannot be read", INSTALL_HINT
        )
    try:
        if journal_dir is not None:
            reader = journal.Reader(path=str(journal_dir))
        else:
            reader = journal.Reader(flags=journal.SYSTEM_ONLY | journal.LOCAL_ONLY)
    except OSError as exc:
        return Check(name, "FAIL", f"cannot open {where}: {errors.message(exc)}", "check sources.journal_dir")
    newest: float | None = None
    with reader:
        reader.add_match(SYSLOG_IDENTIFIER="dnsmasq")
        reader.add_match(SYSLOG_IDENTIFIER="dnsmasq-dhcp")
        reader.seek_tail()

        def messages() -> Iterator[str]:
            nonlocal newest
            for _ in range(JOURNAL_SCAN):
                entry = reader.get_previous()
                if not entry:
                    return
                ts = entry.get("__REALTIME_TIMESTAMP")
                stamp = ts.timestamp() if ts is not None else now
                if newest is None:
                    newest = stamp
                if now - stamp > JOURNAL_WINDOW:
                    return
                message = entry.get("MESSAGE", "")
                yield message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)

        lines, queries, extra, dhcp = _query_stats(messages())
    if lines == 0 and journal_dir is None and not _can_read_system_journal():
        return Check(
            name,
            "FAIL",
            f"this user ({_user()}) cannot read dnsmasq's entries in the system journal",
            "add the user to group systemd-journal (the unit does: SupplementaryGroups=systemd-journal): "
            "sudo usermod -aG systemd-journal apviz",
        )
    check = _judge_queries(name, f"{where} (last day)", lines, queries, extra, dhcp, None)
    if lines == 0:
        check.fix = "if dnsmasq logs to a file (log-facility=), set sources.dnsmasq_log to it; " + check.fix
    return check


def _user() -> str:
    with contextlib.suppress(KeyError):
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    return f"uid {os.geteuid()}"


def _can_read_system_journal() -> bool:
    if os.geteuid() == 0:
        return True
    groups = set(os.getgroups())
    for name in ("systemd-journal", "adm", "wheel"):
        with contextlib.suppress(KeyError):
            if grp.getgrnam(name).gr_gid in groups:
                return True
    return False


def check_leases(path_text: str) -> Check:
    from apviz.sources.leases import parse_leases

    name = "leases"
    if not path_text:
        return Check(name, "skip", "sources.leases is empty: devices get no names from DHCP")
    path = Path(path_text)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return Check(
            name,
            "FAIL",
            f"{path} does not exist",
            "set sources.leases to dnsmasq's dhcp-leasefile (Debian: /var/lib/misc/dnsmasq.leases) and "
            "check that dnsmasq serves DHCP (dhcp-range=, see dnsmasq/apviz.conf)",
        )
    except PermissionError:
        return Check(
            name,
            "FAIL",
            f"{path} is not readable by this user ({_user()})",
            f"dnsmasq writes it world-readable (0644): sudo chmod 0644 {path}, and make its folder "
            f"searchable: sudo chmod o+x {path.parent}",
        )
    except OSError as exc:
        return Check(name, "FAIL", f"cannot read {path}: {errors.message(exc)}")
    snapshot = parse_leases(text)
    n = len(snapshot.leases)
    if snapshot.errors:
        return Check(
            name,
            "warn",
            f"{path}: {n} leases, {snapshot.errors} lines not understood",
            "is this dnsmasq's leases file? (lines: expiry mac ip hostname client-id)",
        )
    return Check(name, "ok", f"{path}: {n} lease{'s' if n != 1 else ''}")


def _mmdb_age(path: Path, now: float) -> float | None:
    with contextlib.suppress(Exception):
        import maxminddb

        with maxminddb.open_database(str(path)) as db:
            return _age_days(float(db.metadata().build_epoch), now)
    return None


def _npm_package_age(path: Path, now: float) -> float | None:
    """ip-location-db versions end in the build date (``2.3.2026061719``); npm resets file times."""
    for parent in path.parents:
        manifest = parent / "package.json"
        if manifest.is_file():
            with contextlib.suppress(Exception):
                version = json.loads(manifest.read_text())["version"]
                stamp = time.strptime(version.rsplit(".", 1)[-1][:8], "%Y%m%d")
                return _age_days(time.mktime(stamp), now)
            return None
    return None


def check_data(cfg: Config, now: float) -> list[Check]:
    from apviz.app import build_enricher

    quiet = logging.getLogger("apviz")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # build_enricher warns about missing data; we report it below
    try:
        enricher = build_enricher(cfg.enrich, tuple(cfg.state.local_addresses), cfg.data.dir)
    finally:
        quiet.setLevel(level)
    status = enricher.status()
    config = enricher.config
    fix_install = "install the data packages: scripts/install-data.sh (or scripts/install.sh --data)"
    out = []
    labels = {
        "geo": "countries and places (DB-IP Lite)",
        "asn": "network owners (ASN)",
        "trackers": "ad and tracker lists (EasyList, EasyPrivacy)",
        "domains": "registrable domains (Public Suffix List)",
        "companies": "company overlay",
        "macvendor": "device makers (MAC vendors)",
    }
    for lookup, label in labels.items():
        if not status.get(lookup):
            out.append(
                Check(
                    f"data-{lookup}",
                    "warn",
                    f"no data for {label}: that part of the view is degraded",
                    fix_install,
                )
            )
            continue
        age: float | None = None
        limit = DATA_MAX_AGE_DAYS
        if lookup == "geo" and config.geo_paths:
            ages = [a for a in (_mmdb_age(p, now) for p in config.geo_paths if p.exists()) if a is not None]
            age = min(ages) if ages else None
        elif lookup == "asn":
            # An mmdb in use (configured, or `apviz data update`'s) answers first; else the CSV's age.
            ages = [a for a in (_mmdb_age(p, now) for p in config.asn_mmdb if p.exists()) if a is not None]
            if not ages:
                ages = [a for a in (_npm_package_age(p, now) for p in config.asn_csv) if a is not None]
            age = min(ages) if ages else None
        elif lookup == "trackers":
            limit = BLOCKLIST_MAX_AGE_DAYS
            # The files the lists were read from (an updated copy, or the installed one it falls back to).
            used = [Path(stats.path) for stats in enricher.trackers.stats if stats.domains]
            mtimes = [path.stat().st_mtime for path in used if path.exists()]
            age = _age_days(max(mtimes), now) if mtimes else None
        if age is not None and age > limit:
            out.append(
                Check(
                    f"data-{lookup}",
                    "warn",
                    f"{label}: data is {age:.0f} days old",
                    "with internet: sudo systemctl start apviz-data-update (docs/data.md); offline: "
                    "update the pinned data (data/package.json, webext-ublock-origin-firefox), "
                    "then run scripts/install-data.sh",
                )
            )
        else:
            shown = f" ({age:.0f} days old)" if age is not None else ""
            out.append(Check(f"data-{lookup}", "ok", f"{label}{shown}"))
    return out


def check_listen(cfg: Config) -> list[Check]:
    host, port = cfg.server.listen, cfg.server.port
    addr = ipaddress.ip_address(host)
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    out = []
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return [
                    Check(
                        "listen",
                        "FAIL",
                        f"{host} is not an address of this machine",
                        "set server.listen to the gateway's LAN address (see `ip -br addr`; e.g. 192.168.4.1 "
                        "on wlan0, as in dnsmasq/apviz.conf)",
                    )
                ]
            return [Check("listen", "FAIL", f"cannot bind {host}: {errors.message(exc)}")]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
            out.append(Check("listen", "ok", f"{host}:{port} is free"))
        except PermissionError:
            out.append(
                Check(
                    "listen",
                    "FAIL",
                    f"port {port} needs privileges",
                    "use a port above 1023 (server.port = 8080)",
                )
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                out.append(
                    Check(
                        "listen",
                        "warn",
                        f"{host}:{port} is in use (apviz already running?)",
                        "systemctl status apviz; or choose another server.port",
                    )
                )
            else:
                out.append(Check("listen", "FAIL", f"cannot bind {host}:{port}: {errors.message(exc)}"))
    lans = [ipaddress.ip_network(c, strict=False) for c in cfg.state.lan]
    if addr.is_unspecified:
        out.append(
            Check(
                "listen-lan",
                "warn",
                f"{host} binds every address, the uplink included",
                "set server.listen to the gateway's LAN address",
            )
        )
    elif addr.is_loopback:
        out.append(
            Check(
                "listen-lan",
                "warn",
                f"{host} is loopback: only this machine's kiosk browser can open the pages, phones cannot "
                "reach /me",
                "set server.listen to the gateway's LAN address to offer the phone page",
            )
        )
    elif not any(addr in net for net in lans if net.version == addr.version):
        out.append(
            Check(
                "listen-lan",
                "warn",
                f"{host} is not in state.lan ({', '.join(cfg.state.lan)})",
                "listen on the visitors' network, or fix state.lan",
            )
        )
    else:
        out.append(Check("listen-lan", "ok", f"{host} is on the visitors' network"))
    return out


def _processes(name: str) -> list[tuple[int, list[str]]]:
    """(pid, argv) of processes whose command name is ``name`` (read from /proc; no pgrep needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == name:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                found.append((int(entry.name), [a.decode(errors="replace") for a in argv if a]))
    return found


def check_hostapd() -> Check:
    procs = _processes("hostapd")
    if not procs:
        if shutil.which("hostapd") is None and not Path("/usr/sbin/hostapd").exists():
            return Check("hostapd", "skip", "hostapd is not installed (the Wi-Fi comes from elsewhere)")
        return Check(
            "hostapd",
            "warn",
            "hostapd is installed but not running: no Wi-Fi for visitors",
            "sudo systemctl unmask hostapd && sudo systemctl enable --now hostapd (see hostapd/README.md)",
        )
    pid, argv = procs[0]
    configs = [a for a in argv[1:] if not a.startswith("-") and a.endswith(".conf")]
    ssids = []
    for conf in configs:
        with contextlib.suppress(OSError):
            for line in Path(conf).read_text(errors="replace").splitlines():
                if line.startswith("ssid="):
                    ssids.append(line[5:].strip())
    if ssids:
        return Check("hostapd", "ok", f"hostapd runs (pid {pid}), SSID {', '.join(repr(s) for s in ssids)}")
    return Check("hostapd", "ok", f"hostapd runs (pid {pid}); its SSID is not readable by this user")


def run_checks(cfg: Config, now: float | None = None) -> list[Check]:
    """Every check, in the order a person would fix them."""
    now = time.time() if now is None else now
    checks = [check_conntrack(cfg), *check_accounting(cfg), check_rcvbuf(cfg)]
    if cfg.sources.dnsmasq_log:
        checks.append(check_dnsmasq_file(Path(cfg.sources.dnsmasq_log)))
    else:
        jdir = Path(cfg.sources.journal_dir) if cfg.sources.journal_dir else None
        checks.append(check_dnsmasq_journal(jdir, now))
    checks.append(check_leases(cfg.sources.leases))
    from apviz.doctor_policy import policy_checks

    checks += policy_checks(cfg)
    from apviz.doctor_block import check_blocking

    checks.append(check_blocking(cfg))
    checks += check_data(cfg, now)
    from apviz.doctor_data import update_checks

    checks += update_checks(cfg, now)
    checks += check_listen(cfg)
    checks.append(check_hostapd())
    return checks


# --------------------------------------------------------------------------------------------------
# output and command line


def failed(checks: list[Check]) -> bool:
    return any(c.status == "FAIL" for c in checks)


def render_text(checks: list[Check], colour: bool) -> str:
    """One line per check; a ``fix:`` line under each that is not ok. Rich markup when ``colour``."""
    width = max(len(c.name) for c in checks)
    styles = {"ok": "green", "warn": "yellow", "FAIL": "bold red", "skip": "dim"}
    lines = []
    for c in checks:
        if colour:
            from rich.markup import escape

            lines.append(f"[{styles[c.status]}]{c.status:<4}[/] {c.name:<{width}}  {escape(c.message)}")
            if c.fix and c.status != "ok":
                lines.append(f"     {'':<{width}}  [dim]fix:[/] {escape(c.fix)}")
        else:
            lines.append(f"{c.status:<4} {c.name:<{width}}  {c.message}")
            if c.fix and c.status != "ok":
                lines.append(f"     {'':<{width}}  fix: {c.fix}")
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    from apviz.cli import _config_from_args

    checks = run_checks(_config_from_args(args))
    if args.json:
        print(json.dumps({"ok": not failed(checks), "checks": [asdict(c) for c in checks]}, indent=2))
    elif sys.stdout.isatty():
        from rich.console import Console

        Console(highlight=False, soft_wrap=True).print(render_text(checks, colour=True))
    else:
        print(render_text(checks, colour=False))
    return 1 if failed(checks) else 0


def add_doctor_parser(sub: Any) -> None:
    """Register ``apviz doctor`` with the same configuration and flags as ``apviz serve``."""
    from apviz import config as config_mod
    from apviz.cli import _add_source_arguments

    p = sub.add_parser(
        "doctor",
        help="check this gateway's set-up and say how to fix what is missing",
        description="Check every precondition of `apviz serve` (with the same configuration and flags) and "
        "print one line per check: ok, warn or FAIL with its fix. Exit status 1 when something failed.",
    )
    p.add_argument(
        "--config", type=Path, metavar="FILE", help=f"configuration file (default: {config_mod.DEFAULT_PATH})"
    )
    p.add_argument("--listen", metavar="IP", help="address serve would bind")
    p.add_argument("--port", type=int, metavar="N", help="TCP port serve would use")
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="where the data packages are installed")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    _add_source_arguments(p)
    p.set_defaults(func=cmd_doctor)
