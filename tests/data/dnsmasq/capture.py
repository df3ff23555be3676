"""Re-capture the dnsmasq log fixtures from a real dnsmasq (run as root: ``python capture.py``).

Topology (all names carry a fresh ``avdnXXXX`` prefix and are deleted at the end, even on error)::

    <p>c (phone)  eth0 10.99.1.133 fd00:99::5 ──veth── lan0 ⊂ br0 10.99.1.1 fd00:99::1  <p>g (gateway)
                                                        wan0 198.18.0.1 ──veth── eth0 198.18.0.53  <p>i

The gateway runs dnsmasq twice with the same zone data:

* ``extra.log``: ``log-queries=extra`` + ``log-dhcp``, written by dnsmasq itself (``log-facility=``);
* ``plain-short.log`` / ``plain-iso.log``: plain ``log-queries``, logged through a private journald
  and exported with ``journalctl -o short`` / ``-o short-iso-precise`` (syslog-file shapes).

The phone asks a fixed list of questions (ask.py) of a deterministic upstream (upstream.py) and
takes DHCP leases with busybox udhcpc under several hostnames, hostile ones included. Timestamps,
PIDs, ports and xids change from one capture to the next: after re-capturing, update the exact
expectations in tests/test_dnsmasq_log.py.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO))

from apviz.lab.journald import PrivateJournald  # noqa: E402

PYTHON = str(REPO / ".venv" / "bin" / "python")
WORK = Path("/tmp/apviz-dnsmasq-capture")  # fixed so the addn-hosts path in fixtures is stable

QUESTIONS = [
    "ads.example/A",
    "ads.example/A",  # cached
    "ads.example/AAAA",  # NODATA-IPv6 from upstream
    "ads.example/HTTPS",
    "ads.example/MX",  # NODATA (no type suffix)
    "www.shop.example/A",  # CNAME chain from upstream
    "tracker.example/TXT",
    "nx.example/A",
    "servfail.example/A",
    "refused.example/A",
    "printer.lan/A",  # host-record
    "printer.lan/AAAA",  # NODATA-IPv6 from config
    "nope.lan/A",  # NXDOMAIN from local=/lan/
    "photos.lan/A",  # cname=
    "clock.lan/A",  # addn-hosts
    "phone-2.lan/A",  # DHCP lease name
    "10.1.99.10.in-addr.arpa/PTR",
    "we<ir>d.example/A",  # hostile but printable
    r"a\032b.example/A",  # a space inside a label
    r"\007bell.example/A",  # unprintable: dnsmasq logs <name unprintable>
    ("x" * 60 + ".") * 4 + "example/A",  # 248 characters
    "video.example/TYPE65534",
]
QUESTIONS_V6 = ["video.example/AAAA", "video.example/A"]

DHCP_CLIENTS = [  # (mac, hostname sent, release on exit)
    ("02:00:00:00:00:02", "phone-2", False),
    ("02:00:00:00:00:03", "<b>x</b>", True),  # illegal first label: dnsmasq drops it silently
    ("02:00:00:00:00:04", "tab.<b>x</b>", True),  # legal first label: logged raw
    ("02:00:00:00:00:05", "caf\u00e9.x", True),  # non-ASCII first label: dropped
    ("02:00:00:00:00:06", 'ok.caf\u00e9\u2615 "q" & <i>', True),  # logged raw (UTF-8)
]

# udhcpc calls this; the leased address must exist on eth0 for the unicast DHCPRELEASE to leave.
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  bound|renew) ip addr replace "$ip/24" dev "$interface"; touch "${0%/*}/udhcpc.bound" ;;
esac
exit 0
"""


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


@contextmanager
def topology(prefix: str) -> Iterator[tuple[str, str, str]]:
    gw, phone, inet = f"{prefix}g", f"{prefix}c", f"{prefix}i"
    try:
        for ns in (gw, phone, inet):
            run("ip", "netns", "add", ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", gw, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", gw, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", phone)
        run("ip", "-n", gw, "link", "set", "lan0", "master", "br0")
        run("ip", "-n", gw, "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", inet)
        run("ip", "-n", gw, "addr", "add", "10.99.1.1/24", "dev", "br0")
        run("ip", "-n", gw, "addr", "add", "fd00:99::1/64", "dev", "br0", "nodad")
        run("ip", "-n", gw, "addr", "add", "198.18.0.1/15", "dev", "wan0")
        run("ip", "-n", phone, "link", "set", "eth0", "address", DHCP_CLIENTS[0][0])
        run("ip", "-n", phone, "addr", "add", "10.99.1.133/24", "dev", "eth0")
        run("ip", "-n", phone, "addr", "add", "fd00:99::5/64", "dev", "eth0", "nodad")
        run("ip", "-n", inet, "addr", "add", "198.18.0.53/15", "dev", "eth0")
        for ns, dev in ((gw, "br0"), (gw, "lan0"), (gw, "wan0"), (phone, "eth0"), (inet, "eth0")):
            run("ip", "-n", ns, "link", "set", dev, "up")
        yield gw, phone, inet
    finally:
        for ns in (gw, phone, inet):
            run("ip", "netns", "del", ns, check=False)


@contextmanager
def process(argv: list[str], ready: str | None = None) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        if ready is not None:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if ready not in line:
                raise RuntimeError(f"{argv[:6]} did not start: {line!r}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def dnsmasq_conf(name: str, extra: bool) -> Path:
    lines = [
        "port=53",
        "user=root",
        "no-resolv",
        "no-hosts",
        "keep-in-foreground",
        "interface=br0",
        "bind-interfaces",
        "server=198.18.0.53",
        "local=/lan/",
        "domain=lan",
        "host-record=printer.lan,10.99.1.10",
        "host-record=nas.lan,10.99.1.11,fd00:99::11",
        "cname=photos.lan,nas.lan",
        f"addn-hosts={WORK / 'lab.hosts'}",
        "dhcp-range=10.99.1.100,10.99.1.199,255.255.255.0,1h",
        "dhcp-authoritative",
        "no-ping",
        f"dhcp-leasefile={WORK / (name + '.leases')}",
        f"pid-file={WORK / (name + '.pid')}",
    ]
    if extra:
        lines += ["log-queries=extra", "log-dhcp", f"log-facility={WORK / 'extra.log'}"]
    else:
        lines += ["log-queries"]
    path = WORK / f"{name}.conf"
    path.write_text("\n".join(lines) + "\n")
    run("dnsmasq", "--test", f"--conf-file={path}")
    return path


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


def exercise(gw: str, phone: str) -> None:
    """DHCP first (so the lease name resolves), then the questions, from IPv4 and IPv6."""
    for mac, hostname, release in DHCP_CLIENTS:
        run("ip", "-n", phone, "link", "set", "eth0", "address", mac)
        bound = WORK / "udhcpc.bound"
        bound.unlink(missing_ok=True)
        argv = ["ip", "netns", "exec", phone, "busybox", "udhcpc", "-i", "eth0", "-f", "-n"]
        argv += [
            "-t",
            "3",
            "-T",
            "1",
            "-s",
            str(WORK / "udhcpc.sh"),
            "-x",
            f"hostname:{hostname}",
            *(["-R"] if release else []),
        ]
        with process(argv):  # SIGTERM on leaving: with -R, udhcpc sends DHCPRELEASE first
            wait_for(bound.exists)
    run("ip", "-n", phone, "link", "set", "eth0", "address", DHCP_CLIENTS[0][0])
    ask = [PYTHON, str(HERE / "ask.py")]
    run("ip", "netns", "exec", phone, *ask, "10.99.1.1", "10.99.1.133", *QUESTIONS)
    run("ip", "netns", "exec", phone, *ask, "fd00:99::1", "fd00:99::5", *QUESTIONS_V6)


def main() -> None:
    prefix = "avdn" + secrets.token_hex(2)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    (WORK / "lab.hosts").write_text("10.99.1.12 clock.lan\n")
    (WORK / "udhcpc.sh").write_text(UDHCPC_SCRIPT)
    (WORK / "udhcpc.sh").chmod(0o755)
    journald = PrivateJournald(WORK, prefix)
    try:
        with topology(prefix) as (gw, phone, inet):
            upstream = ["ip", "netns", "exec", inet, PYTHON, str(HERE / "upstream.py"), "198.18.0.53"]
            with process(upstream, ready="ready"):
                extra_conf = dnsmasq_conf("extra", extra=True)
                argv = ["ip", "netns", "exec", gw, "dnsmasq", f"--conf-file={extra_conf}"]
                with process(argv):
                    wait_for(lambda: "started" in _read(WORK / "extra.log"))
                    exercise(gw, phone)
                time.sleep(0.2)
                shutil.copyfile(WORK / "extra.log", HERE / "extra.log")  # not dnsmasq's 0640 mode

                journald.start()
                plain_conf = dnsmasq_conf("plain", extra=False)
                argv = ["ip", "netns", "exec", gw, *journald.wrap(["dnsmasq", f"--conf-file={plain_conf}"])]
                with process(argv):
                    time.sleep(0.3)
                    exercise(gw, phone)
                journald.sync()
                for fmt, name in (("short", "plain-short.log"), ("short-iso-precise", "plain-iso.log")):
                    argv = ["journalctl", f"--directory={journald.journal_dir}", "-o", fmt, "--no-pager"]
                    out = run(*argv, "-t", "dnsmasq", "-t", "dnsmasq-dhcp").stdout
                    (HERE / name).write_text(out)
    finally:
        journald.stop()
        with suppress(OSError):
            shutil.rmtree(WORK)
    print("captured:", ", ".join(p.name for p in sorted(HERE.glob("*.log"))))


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


if __name__ == "__main__":
    main()
