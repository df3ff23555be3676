"""The network policy as it ships, applied by the lab from the very same files, against real phones'
packets: dnsmasq's NXDOMAIN for the three signal names, the nftables reject of port 853 (an immediate
refusal, not a timeout), the optional DNS redirect, and the policy unit's load and unload commands.

Port 853 listeners are started by the test in the internet and gateway namespaces, so "refused" can
only come from the policy: without it the same connections succeed.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from apviz.lab import topology
from apviz.lab.lab import Lab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[1]
SIGNAL_NAMES = ("use-application-dns.net", "mask.icloud.com", "mask-h2.icloud.com")
OUTSIDE = "198.18.18.53"  # an address in the lab internet that no name points to

# Answers TCP and UDP on port 853 at the given address: TCP says "dot" and closes, UDP echoes.
LISTENER = r"""
import selectors, socket, sys
addr = sys.argv[1]
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind((addr, 853)); tcp.listen(16)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind((addr, 853))
sel = selectors.DefaultSelector()
sel.register(tcp, selectors.EVENT_READ); sel.register(udp, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        if key.fileobj is tcp:
            conn, _ = tcp.accept(); conn.sendall(b"dot"); conn.close()
        else:
            data, peer = udp.recvfrom(2048); udp.sendto(data, peer)
"""

# Tries TCP and UDP 853 to an address from a phone; prints what happened and how long it took.
PROBE = r"""
import errno, json, socket, sys, time
addr = sys.argv[1]
out = {}
t0 = time.monotonic()
try:
    with socket.create_connection((addr, 853), timeout=3) as s:
        out["tcp"] = "connected:" + s.recv(16).decode()
except ConnectionRefusedError:
    out["tcp"] = "refused"
except OSError as exc:
    out["tcp"] = type(exc).__name__
out["tcp_s"] = time.monotonic() - t0
t0 = time.monotonic()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)
u.connect((addr, 853))
try:
    u.send(b"ping"); out["udp"] = "answer:" + u.recv(16).decode()
except ConnectionRefusedError:
    out["udp"] = "refused"
except OSError as exc:
    out["udp"] = type(exc).__name__
out["udp_s"] = time.monotonic() - t0
print(json.dumps(out))
"""

# One DNS query over UDP or TCP to a given resolver, from a phone; prints rcode and addresses.
OUTSIDE_QUERY = r"""
import json, sys, dns.message, dns.query, dns.rcode
server, name, proto = sys.argv[1:4]
q = dns.message.make_query(name, "A")
r = (dns.query.udp if proto == "udp" else dns.query.tcp)(q, server, timeout=3)
print(json.dumps({"rcode": dns.rcode.to_text(r.rcode()),
                  "addresses": [a.address for rr in r.answer for a in rr if hasattr(a, "address")]}))
"""


@contextlib.contextmanager
def listening_853(lab: Lab, ns: str, address: str) -> Iterator[None]:
    """A TCP+UDP 853 service in ``ns`` for the test's duration (ended by its own PID)."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", LISTENER, address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        yield
    finally:
        proc.kill()
        proc.wait(timeout=5)


def probe(lab: Lab, address: str) -> dict:
    phone = lab.phones[0]
    out = lab.exec_in(phone.ns, [sys.executable, "-c", PROBE, address], timeout=30).stdout
    return json.loads(out)


def policy_table(lab: Lab) -> dict | None:
    """The loaded ``inet apviz_policy`` table as nft's JSON, or None when it is not loaded."""
    proc = lab.exec_in(
        lab.gateway_ns, ["nft", "-j", "list", "table", "inet", topology.POLICY_TABLE], check=False
    )
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def refused_count(lab: Lab) -> int:
    table = policy_table(lab)
    assert table is not None
    for item in table["nftables"]:
        rule = item.get("rule")
        if rule and rule["chain"] == "dot_refused":
            for expr in rule["expr"]:
                if "counter" in expr:
                    return int(expr["counter"]["packets"])
    raise AssertionError("no counter in dot_refused")


def outside_query(lab: Lab, server: str, name: str, proto: str = "udp") -> dict:
    phone = lab.phones[0]
    argv = [sys.executable, "-c", OUTSIDE_QUERY, server, name, proto]
    return json.loads(lab.exec_in(phone.ns, argv, timeout=30).stdout)


def gateway_log_has(lab: Lab, name: str, client: str) -> bool:
    assert lab.dnsmasq_log is not None
    pattern = re.compile(rf" {re.escape(client)}/\d+ query\[A\] {re.escape(name)} from ")
    return any(pattern.search(line) for line in lab.dnsmasq_log.read_text().splitlines())


# --------------------------------------------------------------------------------------------------
# dnsmasq/apviz-policy.conf


def test_policy_names_get_nxdomain_from_the_gateway(lab_factory):
    lab = lab_factory(phones=1)
    assert lab.policy
    phone = lab.phones[0]
    for name in SIGNAL_NAMES:
        for qtype in ("A", "AAAA", "HTTPS"):
            answer = lab.phone_resolve(phone, name, qtype)
            assert answer.rcode == "NXDOMAIN" and answer.addresses == [], (name, qtype, answer)
    # address=/name/ covers every name under it too (dnsmasq's documented domain match).
    for name in ("x.mask.icloud.com", "a.b.mask-h2.icloud.com", "sub.use-application-dns.net"):
        assert lab.phone_resolve(phone, name).rcode == "NXDOMAIN", name
    # ... and nothing beside it: icloud.com and its other names still resolve.
    for name in ("icloud.com", "gateway.icloud.com", "www.wikipedia.org"):
        answer = lab.phone_resolve(phone, name)
        assert answer.rcode == "NOERROR" and answer.addresses, (name, answer)
    # Answered by the gateway itself: the lab internet's resolver never saw the signal names.
    upstream_log = (lab.run_dir / "internet" / "dnsmasq.log").read_text()
    assert "gateway.icloud.com" in upstream_log
    for name in SIGNAL_NAMES:
        assert f"query[A] {name} " not in upstream_log


def test_without_policy_the_signal_names_resolve(lab_factory):
    lab = lab_factory(phones=1, policy=False)
    phone = lab.phones[0]
    for name in SIGNAL_NAMES:
        answer = lab.phone_resolve(phone, name)
        assert answer.rcode == "NOERROR" and answer.addresses, (name, answer)
    assert policy_table(lab) is None


# --------------------------------------------------------------------------------------------------
# nftables/apviz-policy.nft


def test_port_853_is_refused_at_once_through_and_to_the_gateway(lab_factory):
    lab = lab_factory(phones=1)
    with (
        listening_853(lab, lab.internet_ns, OUTSIDE),
        listening_853(lab, lab.gateway_ns, lab.gateway_ip),
    ):
        before = refused_count(lab)
        for address in (OUTSIDE, lab.gateway_ip):
            result = probe(lab, address)
            # TCP: a reset, so connect() fails with "connection refused" at once (not a 3 s timeout).
            assert result["tcp"] == "refused" and result["tcp_s"] < 0.5, (address, result)
            # UDP: an ICMP port unreachable, which a connected socket reports as ECONNREFUSED.
            assert result["udp"] == "refused" and result["udp_s"] < 0.5, (address, result)
        assert refused_count(lab) >= before + 4
        # Other ports are untouched: the same phone still gets its DNS and web traffic through.
        assert lab.phone_connect(lab.phones[0], "www.wikipedia.org", nbytes=2000).received >= 2000


def test_without_policy_port_853_gets_through(lab_factory):
    lab = lab_factory(phones=1, policy=False)
    with (
        listening_853(lab, lab.internet_ns, OUTSIDE),
        listening_853(lab, lab.gateway_ns, lab.gateway_ip),
    ):
        for address in (OUTSIDE, lab.gateway_ip):
            result = probe(lab, address)
            assert result["tcp"] == "connected:dot" and result["udp"] == "answer:ping", (address, result)


def test_policy_reload_is_idempotent_and_logs_to_the_nflog_group(lab_factory):
    lab = lab_factory(phones=1)
    first = policy_table(lab)
    assert first is not None
    topology.load_nft_file(lab.names, topology.POLICY_NFT)
    topology.load_nft_file(lab.names, topology.POLICY_NFT)
    again = policy_table(lab)
    assert again is not None
    rules = [i["rule"] for i in again["nftables"] if "rule" in i]
    assert len(rules) == len([i for i in first["nftables"] if "rule" in i]) == 6
    log = [e["log"] for r in rules for e in r["expr"] if "log" in e]
    assert log == [{"prefix": "apviz-dot-refused", "group": 7400}]
    # The interface is the lab's bridge, given with -D LAN_IF=, as the unit gives wlan0.
    assert all(lab.bridge in json.dumps(r) for r in rules if r["chain"] in ("input", "forward"))
    assert probe(lab, lab.gateway_ip)["tcp"] == "refused"


def test_refusals_reach_nflog_group_7400_with_the_prefix(lab_factory):
    """What apviz's NFLOG reader gets: tcpdump reads the same group (fail-open: nobody else listens)."""
    lab = lab_factory(phones=1)
    pcap = lab.run_dir / "nflog.pcap"
    argv = ["ip", "netns", "exec", lab.gateway_ns, "tcpdump", "-i", "nflog:7400", "-U", "-c", "2"]
    tcpdump = subprocess.Popen([*argv, "-w", str(pcap)], stderr=subprocess.PIPE, text=True)
    try:
        assert tcpdump.stderr is not None
        assert "listening on nflog:7400" in tcpdump.stderr.readline()
        result = probe(lab, OUTSIDE)
        assert result["tcp"] == "refused" and result["udp"] == "refused", result
        tcpdump.wait(timeout=10)
    finally:
        if tcpdump.poll() is None:
            tcpdump.kill()
            tcpdump.wait(timeout=5)
    assert pcap.read_bytes().count(b"apviz-dot-refused") == 2
    text = subprocess.run(["tcpdump", "-nr", str(pcap)], capture_output=True, text=True, check=True).stdout
    phone = lab.phones[0].ip
    assert re.search(rf"IP {re.escape(str(phone))}\.\d+ > {re.escape(OUTSIDE)}\.853: Flags \[S\]", text), text
    assert re.search(rf"IP {re.escape(str(phone))}\.\d+ > {re.escape(OUTSIDE)}\.853: UDP", text), text


def _unit_commands(unit: Path, lan_if: str) -> dict[str, list[str]]:
    """ExecStart/ExecStop of a policy unit, made runnable here: ${LAN_IF} set, the repo's nft files."""
    out = {}
    for line in unit.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("ExecStart", "ExecStop"):
            value = value.replace("${LAN_IF}", lan_if).replace("/etc/apviz/nftables", str(ROOT / "nftables"))
            out[key] = value.split()
    return out


def test_policy_unit_loads_and_its_stop_removes_the_table(lab_factory):
    lab = lab_factory(phones=1, policy=False)
    cmds = _unit_commands(ROOT / "systemd/apviz-policy.service", lab.bridge)
    assert policy_table(lab) is None
    lab.exec_in(lab.gateway_ns, cmds["ExecStart"])
    lab.exec_in(lab.gateway_ns, cmds["ExecStart"])  # systemctl restart: the same table, not two
    assert policy_table(lab) is not None
    assert probe(lab, lab.gateway_ip)["tcp"] == "refused"
    stop = cmds["ExecStop"]
    assert stop[0].startswith("-")  # a table already gone must not fail the stop
    stop = [stop[0][1:], *stop[1:]]
    lab.exec_in(lab.gateway_ns, stop)
    assert policy_table(lab) is None
    assert lab.exec_in(lab.gateway_ns, stop, check=False).returncode != 0  # gone: hence the "-"


# --------------------------------------------------------------------------------------------------
# nftables/apviz-dns-redirect.nft (optional, off by default)


def test_dns_redirect_sends_outside_queries_to_the_gateway_dnsmasq(lab_factory):
    lab = lab_factory(phones=1)
    phone = lab.phones[0]
    outside_resolver = lab.upstream_dns  # a 198.18 resolver that is not the gateway
    assert phone.ip is not None
    # Off by default: the phone's query goes to the outside resolver, dnsmasq never sees it.
    assert outside_query(lab, outside_resolver, "www.wikipedia.org")["addresses"]
    time.sleep(0.1)
    assert not gateway_log_has(lab, "www.wikipedia.org", phone.ip)
    topology.load_nft_file(lab.names, topology.DNS_REDIRECT_NFT)
    topology.load_nft_file(lab.names, topology.DNS_REDIRECT_NFT)  # reload: still one rule
    try:
        for proto, name in (("udp", "www.youtube.com"), ("tcp", "www.netflix.com")):
            # The answer comes back under the outside resolver's address (dnspython checks the source).
            answer = outside_query(lab, outside_resolver, name, proto)
            assert answer["rcode"] == "NOERROR" and answer["addresses"], (proto, answer)
            deadline = time.monotonic() + 2
            while not gateway_log_has(lab, name, phone.ip) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert gateway_log_has(lab, name, phone.ip), (proto, name)
        # The redirect also carries the policy: the signal names are NXDOMAIN even "from 198.18.0.53".
        assert outside_query(lab, outside_resolver, "mask.icloud.com")["rcode"] == "NXDOMAIN"
        listed = lab.exec_in(lab.gateway_ns, ["nft", "list", "table", "inet", topology.DNS_REDIRECT_TABLE])
        assert listed.stdout.count(" redirect\n") == 1
    finally:
        assert topology.delete_table(lab.names, topology.DNS_REDIRECT_TABLE)
    # Unloaded: outside queries go outside again.
    assert outside_query(lab, outside_resolver, "www.reddit.com")["addresses"]
    time.sleep(0.1)
    assert not gateway_log_has(lab, "www.reddit.com", phone.ip)


# --------------------------------------------------------------------------------------------------
# apviz lab --no-policy


@pytest.mark.parametrize("flag, shown", [([], "on"), (["--no-policy"], "off (--no-policy)")])
def test_lab_command_applies_the_policy_unless_told_not_to(flag, shown):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "apviz.cli",
            "lab",
            "--phones",
            "0",
            "--view",
            "none",
            "--duration",
            "0.2",
            *flag,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(rf"^  network policy +{re.escape(shown)}$", out.stdout, flags=re.M), out.stdout


@pytest.mark.lab
def test_phones_that_hide_their_dns_fall_back_to_dnsmasq_under_the_policy(lab_factory) -> None:
    """The shipped policy, applied from the shipped files, turns the relay, Firefox's DoH and Android's
    automatic DoT off: those phones ask dnsmasq (so apviz sees their names); a strict-mode phone
    cannot resolve at all (the phone page tells its owner why)."""
    personas = ["iphone-relay", "firefox-doh", "android-private-dns", "android-strict-dns"]
    lab = lab_factory(phones=len(personas), personas=personas, policy=True)
    by = {p.persona: p for p in lab.phones}
    for persona in ("iphone-relay", "firefox-doh", "android-private-dns"):
        result = lab.phone_connect(by[persona], "graph.facebook.com", 1_000)
        assert (result.resolved_via, result.sni, result.security) == ("dnsmasq", "graph.facebook.com", "tls")
    assert "query[A] graph.facebook.com from " + by["iphone-relay"].ip in lab.dnsmasq_log.read_text()
    with pytest.raises(Exception, match="strict mode"):
        lab.phone_connect(by["android-strict-dns"], "graph.facebook.com", 1_000)
