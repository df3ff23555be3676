"""The lab itself: catalogue and personas (unit), then a real gateway in namespaces (``lab`` marker).

If these fail, every integration test built on the lab is suspect, so they check the facts the
others rely on: leases with hostnames, DNS answers as the catalogue says, flows in the gateway's
conntrack with NAT and byte counters, dnsmasq's log lines, and that nothing outlives a lab.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from apviz.lab import cleanup, topology
from apviz.lab.phone import Device, load_personas, parse_personas
from apviz.lab.world import WorldError, load_world, parse_world

# --------------------------------------------------------------------------------------------------
# unit: the catalogue and the personas


def test_world_catalogue_is_consistent():
    world = load_world()
    assert len(world.names) >= 60
    internet = ipaddress.ip_network("198.18.0.0/15")
    for host in world.hosts.values():
        for address in host.addresses:
            assert ipaddress.ip_address(address) in internet
            block = world.block_for(address)
            assert block is not None and block.asn > 0 and len(block.country) == 2
    apple = world.resolve("www.apple.com")
    assert apple.chain == ("www.apple.com.edgekey.net", "e6858.dscx.akamaiedge.net")
    assert world.resolve("nope.invalid") is None
    # CDN sharing: a tracker and a search engine on one front-end address.
    assert {"googleads.g.doubleclick.net", "www.google.com"} <= set(world.names_at("198.18.2.10"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"host": [{"name": "a.example", "address": "8.8.8.8"}]}, "outside"),
        ({"block": [], "host": [{"name": "a.example", "address": "198.18.9.9"}]}, "no [[block]]"),
        ({"cname": [{"name": "a.example", "target": "b.example"}]}, "no address"),
        (
            {
                "cname": [
                    {"name": "a.example", "target": "b.example"},
                    {"name": "b.example", "target": "a.example"},
                ]
            },
            "loop",
        ),
    ],
)
def test_world_rejects_bad_entries(data, message):
    with pytest.raises(WorldError, match=re.escape(message)):
        parse_world(data)


def test_personas_only_use_catalogue_names():
    world = load_world()
    personas = load_personas(known_names=set(world.names))
    assert {"android-phone", "iphone", "laptop", "smart-tv"} <= set(personas.personas)
    with pytest.raises(ValueError, match=r"not in world\.toml"):
        parse_personas({"persona": {"x": {"habit": [{"names": ["nope.invalid"]}]}}}, set(world.names))


def test_names_fit_interface_limits():
    names = topology.Names(topology.new_prefix())
    for ifname in (names.bridge, names.wan, names.uplink, names.phone_if, names.phone_port(99999)):
        assert len(ifname) <= 15
    assert topology.phone_mac(258) == "02:a5:00:00:01:02"


# --------------------------------------------------------------------------------------------------
# helpers for the lab tests


def conntrack_entries(lab, *filters: str) -> list[dict]:
    """``conntrack -L`` in the gateway, parsed: orig/reply key=value halves of each line."""
    out = lab.exec_in(lab.gateway_ns, ["conntrack", "-L", *filters], check=False).stdout
    entries = []
    for line in out.splitlines():
        pairs = re.findall(r"(\w+)=(\S+)", line)
        orig: dict[str, str] = {}
        reply: dict[str, str] = {}
        for key, value in pairs:
            (orig if key not in orig else reply).setdefault(key, value)
        entries.append({"line": line, "orig": orig, "reply": reply})
    return entries


def wait_for(predicate, timeout: float = 5.0, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


# --------------------------------------------------------------------------------------------------
# the lab


@pytest.mark.lab
def test_bring_up_gives_every_phone_a_lease(module_lab):
    lab = module_lab
    assert lab.timings["total"] < 5.0
    leases = lab.leases_file.read_text().splitlines()
    lan = ipaddress.ip_network(lab.lan_cidr)
    assert len(lab.phones) == 3
    for phone in lab.phones:
        assert ipaddress.ip_address(phone.ip) in lan
        assert any(line.split()[1:4] == [phone.mac, phone.ip, phone.hostname] for line in leases), leases


@pytest.mark.lab
def test_the_lab_is_sealed(module_lab):
    lab = module_lab
    assert "default" not in lab.exec_in(lab.gateway_ns, ["ip", "route"]).stdout
    assert "default" not in lab.exec_in(lab.internet_ns, ["ip", "route"]).stdout
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert lab.prefix not in host_links
    phone_routes = lab.exec_in(lab.phones[0].ns, ["ip", "route"]).stdout
    assert f"default via {lab.gateway_ip}" in phone_routes
    assert (
        lab.exec_in(lab.phones[0].ns, ["cat", "/etc/resolv.conf"]).stdout == f"nameserver {lab.gateway_ip}\n"
    )


@pytest.mark.lab
@pytest.mark.parametrize(
    "name",
    [
        "graph.facebook.com",
        "googleads.g.doubleclick.net",
        "www.apple.com",
        "www.netflix.com",
        "www.wikipedia.org",
    ],
)
def test_phone_resolves_as_the_catalogue_says(module_lab, name):
    want = module_lab.world.resolve(name)
    got = module_lab.phone_resolve(module_lab.phones[0], name)
    assert got.rcode == "NOERROR"
    assert sorted(got.addresses) == sorted(want.addresses)
    assert got.cnames == list(want.chain)
    assert got.client == module_lab.phones[0].ip


@pytest.mark.lab
def test_shared_addresses_cname_chains_and_nxdomain(module_lab):
    lab, phone = module_lab, module_lab.phones[1]
    ads = lab.phone_resolve(phone, "googleads.g.doubleclick.net")
    search = lab.phone_resolve(phone, "www.google.com")
    assert ads.addresses == search.addresses == ["198.18.2.10"]
    netflix = lab.phone_resolve(phone, "www.netflix.com")
    assert netflix.cnames == ["www.geo.netflix.com"]
    apple = lab.phone_resolve(phone, "www.apple.com")
    assert apple.cnames == ["www.apple.com.edgekey.net", "e6858.dscx.akamaiedge.net"]
    samsung = lab.phone_resolve(phone, "www.samsung.com")
    assert samsung.addresses == apple.addresses  # two brands behind one Akamai edge
    missing = lab.phone_resolve(phone, "not-in-the-catalogue.example")
    assert missing.rcode == "NXDOMAIN" and missing.addresses == []


@pytest.mark.lab
def test_tcp_connection_shows_in_conntrack_with_nat_and_bytes(module_lab):
    lab, phone = module_lab, module_lab.phones[0]
    result = lab.phone_connect(phone, "www.netflix.com", nbytes=250_000, upload=4_000)
    # received/sent count the protocol lines too ("OK 4000\n", "PUT 4000\n", "GET 250000\n").
    assert result.received == 250_000 + len("OK 4000\n") and result.sent == 4_000 + len(
        "PUT 4000\nGET 250000\n"
    )
    assert result.address == "198.18.6.11" and result.src == phone.ip
    entries = conntrack_entries(
        lab, "-p", "tcp", "--orig-src", phone.ip, "--orig-port-src", str(result.sport)
    )
    assert len(entries) == 1, entries
    orig, reply = entries[0]["orig"], entries[0]["reply"]
    assert (orig["src"], orig["dst"], orig["dport"]) == (phone.ip, result.address, "443")
    assert reply["dst"] == lab.wan_ip  # masquerade: the reply comes back to the WAN address
    assert int(reply["bytes"]) >= 250_000
    assert int(orig["bytes"]) >= 4_000


@pytest.mark.lab
def test_held_connection_is_established(module_lab):
    lab, phone = module_lab, module_lab.phones[2]
    result = lab.phone_connect(phone, "graph.facebook.com", nbytes=10, hold=5.0)
    entries = conntrack_entries(lab, "-p", "tcp", "--orig-port-src", str(result.sport))
    assert entries and "ESTABLISHED" in entries[0]["line"]


@pytest.mark.lab
def test_udp_echo_and_quic(module_lab):
    """UDP 443 is QUIC (tests/test_lab_names.py has the details); other UDP ports echo datagrams."""
    lab = module_lab
    echo = lab.phone_connect(lab.phones[1], "spclient.wg.spotify.com", nbytes=5_000, proto="udp", port=7)
    assert echo.sent == echo.received == 5_000 and echo.security == "plain"
    quic = lab.phone_connect(lab.phones[1], "spclient.wg.spotify.com", nbytes=5_000, proto="udp")
    assert quic.received == 5_000 and quic.security == "quic"
    for result in (echo, quic):
        entries = conntrack_entries(lab, "-p", "udp", "--orig-port-src", str(result.sport))
        assert entries and entries[0]["reply"]["dst"] == lab.wan_ip


@pytest.mark.lab
def test_dnsmasq_log_has_query_with_serial_and_client(module_lab):
    lab = module_lab
    phone = lab.phones[2]
    res = lab.phone_resolve(phone, "app-measurement.com")
    pattern = re.compile(
        rf"dnsmasq\[\d+\]: (\d+) {re.escape(phone.ip)}/{res.sport} query\[A\] app-measurement\.com "
        rf"from {re.escape(phone.ip)}$",
        re.M,
    )
    text = wait_for(lambda: pattern.search(lab.dnsmasq_log.read_text()) and lab.dnsmasq_log.read_text())
    assert text, "query line missing from dnsmasq log"
    serial = pattern.search(text).group(1)
    assert re.search(
        rf": {serial} {re.escape(phone.ip)}/{res.sport} \w+ app-measurement\.com is 198\.18\.2\.10", text
    )
    dhcp = re.compile(
        rf"DHCPACK\({re.escape(lab.bridge)}\) {re.escape(phone.ip)} {phone.mac} {phone.hostname}$", re.M
    )
    assert dhcp.search(text)


@pytest.mark.lab
def test_many_connections_are_quick(module_lab):
    lab = module_lab
    start = time.monotonic()
    ports = {lab.phone_connect(lab.phones[0], "ib.adnxs.com", nbytes=100).sport for _ in range(100)}
    assert len(ports) == 100
    assert time.monotonic() - start < 10.0


@pytest.mark.lab
def test_add_and_remove_phone(lab):
    phone = lab.add_phone("tablet", persona="iphone", traffic=False)
    assert phone.ip and f"{phone.mac} {phone.ip} tablet" in lab.leases_file.read_text()
    assert lab.phone_connect(phone, "icloud.com", nbytes=1000).received == 1000
    lab.remove_phone(phone)
    assert phone.mac not in lab.leases_file.read_text()  # released, not just forgotten
    assert phone.ns not in topology.list_namespaces()
    assert phone not in lab.phones


@pytest.mark.lab
def test_gateway_keeps_its_address_while_phones_come_and_go(lab):
    """A bridge takes its lowest port's MAC unless told one, and changes it when that phone leaves:
    the other phones' ARP entries then pointed nowhere, their next DNS query and DHCP release were
    lost, and in an hour-long soak every phone fell silent. The gateway has one fixed MAC."""

    def bridge_mac() -> str:
        out = lab.exec_in(lab.gateway_ns, ["ip", "-j", "link", "show", lab.names.bridge])
        return json.loads(out.stdout)[0]["address"]

    stay = lab.phones[0]
    assert lab.phone_resolve(stay, "icloud.com").addresses  # its ARP entry for the gateway is warm
    assert bridge_mac() == topology.GATEWAY_MAC
    others = [lab.add_phone(f"guest{i}", traffic=False) for i in range(4)]
    for phone in others:
        lab.remove_phone(phone)
        assert bridge_mac() == topology.GATEWAY_MAC
        assert phone.mac not in lab.leases_file.read_text()  # the release reached the gateway
    started = time.monotonic()
    assert lab.phone_resolve(stay, "icloud.com").addresses == ["198.18.4.20"]
    assert time.monotonic() - started < 2.0  # the first try: nothing was lost


def test_phone_dns_gives_up_when_the_answer_is_lost():
    """A lost answer is a timeout and a retry, as on a real phone, never a wait for ever."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    device = Device("127.0.0.1", timeout=0.4, dns_port=silent.getsockname()[1])
    outcome: list[BaseException] = []

    def ask() -> None:
        try:
            device.resolve("icloud.com")
        except BaseException as exc:  # what it raised is the result
            outcome.append(exc)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    asker.join(timeout=5)
    silent.close()
    assert not asker.is_alive(), "the phone waited for ever for a lost DNS answer"
    assert len(outcome) == 1 and isinstance(outcome[0], TimeoutError), outcome


@pytest.mark.lab
def test_dhcp_name_is_sent_raw(lab):
    # A name busybox's "hostname:" option would split or drop goes out byte for byte (option 12 as hex).
    odd = lab.add_phone("odd", traffic=False, dhcp_name="Bobs_iPhone")
    assert wait_for(lambda: "client provides name: Bobs_iPhone" in lab.dnsmasq_log.read_text())
    assert f"{odd.mac} {odd.ip} Bobs_iPhone" in lab.leases_file.read_text()
    # dnsmasq 2.90 neither logs nor keeps a name it finds illegal; the phone still gets its lease.
    evil = lab.add_phone("evil", traffic=False, dhcp_name="<b>Bob's</b> phone")
    assert f"{evil.mac} {evil.ip} * " in lab.leases_file.read_text()


@pytest.mark.lab
def test_restart_dnsmasq_keeps_serving(lab):
    lab.restart_dnsmasq()
    assert lab.phone_resolve(lab.phones[0], "icloud.com").addresses == ["198.18.4.20"]


@pytest.mark.lab
def test_persona_traffic_moves_bytes(lab_factory):
    lab = lab_factory(phones=2, traffic=True, seed=7, personas=["android-phone", "smart-tv"])
    for phone in lab.phones:
        assert wait_for(lambda p=phone: conntrack_entries(lab, "-p", "tcp", "--orig-src", p.ip), timeout=15)
        stats = lab.set_traffic(phone, False)
        assert stats["actions"] >= 1 and stats["on"] is False


def _lab_gone(prefix: str, run_dir: Path, pids: list[cleanup.ProcRecord]) -> None:
    assert not [ns for ns in topology.list_namespaces() if ns.startswith(prefix)]
    assert prefix not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not [rec for rec in pids if cleanup.is_alive(rec)]
    assert not run_dir.exists()
    assert not (cleanup.RUN_ROOT / prefix).exists()
    assert not list(cleanup.ETC_NETNS.glob(f"{prefix}-*"))


@pytest.mark.lab
def test_close_removes_everything():
    from apviz.lab.lab import Lab

    with Lab(phones=2, traffic=True) as lab:
        prefix, run_dir = lab.prefix, lab.run_dir
        pids = cleanup.recorded_pids(run_dir)
        assert len(pids) >= 7  # two dnsmasq, the server, two phones x (udhcpc, helper)
        assert all(cleanup.is_alive(rec) for rec in pids)
    _lab_gone(prefix, run_dir, pids)


@pytest.mark.lab
def test_failure_inside_the_lab_still_cleans_up():
    from apviz.lab.lab import Lab

    lab = Lab(phones=1, traffic=False)
    with pytest.raises(RuntimeError, match="boom"), lab:
        pids = cleanup.recorded_pids(lab.run_dir)
        raise RuntimeError("boom")
    _lab_gone(lab.prefix, lab.run_dir, pids)


@pytest.mark.lab
def test_lab_down_removes_a_killed_run():
    code = (
        "from apviz.lab.lab import Lab; import sys, time\n"
        "lab = Lab(phones=2, traffic=False).start()\n"
        "print(lab.prefix, lab.run_dir, flush=True)\n"
        "time.sleep(120)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        prefix, run_dir = child.stdout.readline().split()
        pids = cleanup.recorded_pids(Path(run_dir))
        assert any(lab.prefix == prefix and lab.live for lab in cleanup.find_labs())
        assert not any(prefix in line for line in cleanup.find_leftovers())  # live: not a leftover
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert any(prefix in line for line in cleanup.find_leftovers())
    assert cleanup.down() == []
    assert not any(prefix in line for line in cleanup.find_leftovers())
    _lab_gone(prefix, Path(run_dir), pids)


@pytest.mark.lab
def test_journal_mode(lab_factory):
    pytest.importorskip("apviz.lab.journald")
    if not any(
        os.access(p, os.X_OK) for p in ("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald")
    ):
        pytest.skip("systemd-journald not installed")
    lab = lab_factory(phones=1, log="journal")
    assert lab.dnsmasq_log is None and lab.journal_dir is not None
    phone = lab.phones[0]
    res = lab.phone_resolve(phone, "www.apple.com")

    def journal_text() -> str:
        lab.journald.sync()
        argv = ["journalctl", "-D", str(lab.journal_dir), "-o", "cat", "SYSLOG_IDENTIFIER=dnsmasq"]
        argv += ["+", "SYSLOG_IDENTIFIER=dnsmasq-dhcp"]
        return subprocess.run(argv, capture_output=True, text=True).stdout

    want = f"{phone.ip}/{res.sport} query[A] www.apple.com from {phone.ip}"
    text = wait_for(lambda: (t := journal_text()) and want in t and t, timeout=5)
    assert text and want in text
    assert f"DHCPACK({lab.bridge}) {phone.ip} {phone.mac} {phone.hostname}" in text


@pytest.mark.lab
def test_two_labs_side_by_side(lab_factory):
    first, second = lab_factory(phones=1), lab_factory(phones=1)
    assert first.prefix != second.prefix
    for lab in (first, second):
        result = lab.phone_connect(lab.phones[0], "yandex.ru", nbytes=2_000)
        assert result.received == 2_000 and result.src == lab.phones[0].ip
    summary = json.loads((first.run_dir / "lab.json").read_text())
    assert summary["gateway_ns"] == first.gateway_ns and summary["phones"][0]["ip"] == first.phones[0].ip


@pytest.mark.lab
def test_connect_to_unknown_name_fails_clearly(module_lab):
    with pytest.raises(topology.LabError, match="NXDOMAIN"):
        module_lab.phone_connect(module_lab.phones[0], "no-such-name.example")


def test_a_forked_child_ends_on_sigterm_without_unwinding(tmp_path):
    """pyroute2 forks a child to open a socket in a namespace and SIGTERMs it. If the child unwound
    like Ctrl-C it would run its copy of our event loop's shutdown and unregister the loop's wake-up
    socket from the epoll instance the two share: ``apviz lab`` then hung at exit. The child must end
    at once, running none of our code."""
    marker = tmp_path / "unwound"
    code = f"""
import os, signal, time
from apviz.lab.cli import _install_signal_handlers
_install_signal_handlers()
pid = os.fork()
if pid == 0:
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    finally:
        open({str(marker)!r}, "w").write("unwound")
    os._exit(0)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=root)
    assert out.stdout.strip() == str(128 + signal.SIGTERM), out
    assert not marker.exists()
