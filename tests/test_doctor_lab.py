"""``apviz doctor`` on the lab: quiet on a healthy gateway; each broken precondition named with its fix."""

from __future__ import annotations

import json
import pwd
import subprocess
import sys

import pytest

from apviz.doctor import Check, failed, run_checks
from apviz.lab.serve import lab_config

pytestmark = pytest.mark.lab


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


@pytest.fixture
def lab(lab_factory):
    lab = lab_factory(phones=2)
    for phone in lab.phones:
        lab.phone_resolve(phone, "www.wikipedia.org")
    return lab


def test_healthy_lab_passes(lab):
    checks = run_checks(lab_config(lab, 18090))
    assert not failed(checks), [c for c in checks if c.status == "FAIL"]
    named = by_name(checks)
    for name in (
        "conntrack",
        "nf_conntrack_acct",
        "rcvbuf",
        "dnsmasq-log",
        "leases",
        "listen",
        "policy-dns",
        "policy-nft",
        "capture-nft",
    ):
        assert named[name].status == "ok", named[name]
    assert "log-queries=extra" in named["dnsmasq-log"].message
    assert "2 leases" in named["leases"].message


def test_healthy_lab_with_journal(lab_factory):
    lab = lab_factory(phones=1, log="journal")
    lab.phone_resolve(lab.phones[0], "www.wikipedia.org")
    check = by_name(run_checks(lab_config(lab, 18090)))["dnsmasq-journal"]
    assert check.status == "ok", check


def test_accounting_off_is_reported_with_its_fix(lab):
    lab.exec_in(lab.gateway_ns, ["sysctl", "-w", "net.netfilter.nf_conntrack_acct=0"])
    checks = run_checks(lab_config(lab, 18090))
    acct = by_name(checks)["nf_conntrack_acct"]
    assert acct.status == "FAIL" and failed(checks)
    assert f"ip netns exec {lab.gateway_ns} sysctl -w net.netfilter.nf_conntrack_acct=1" in acct.fix


def test_no_query_logging_is_reported(lab, tmp_path):
    assert lab.dnsmasq_log is not None
    lines = lab.dnsmasq_log.read_text().splitlines()
    without = [line for line in lines if "query[" not in line and " reply " not in line]
    assert any("DHCPACK" in line for line in without)
    log = tmp_path / "dnsmasq.log"
    log.write_text("\n".join(without) + "\n")
    check = by_name(run_checks(lab_config(lab, 18090, sources={"dnsmasq_log": str(log)})))["dnsmasq-log"]
    assert check.status == "FAIL" and "query logging is off" in check.message
    assert "log-queries=extra" in check.fix


def test_missing_leases_file_is_reported(lab, tmp_path):
    cfg = lab_config(lab, 18090, sources={"leases": str(tmp_path / "nope.leases")})
    check = by_name(run_checks(cfg))["leases"]
    assert check.status == "FAIL" and "does not exist" in check.message
    assert "dhcp-leasefile" in check.fix


def test_unreadable_leases_as_unprivileged_user(lab):
    lab.leases_file.chmod(0o000)
    user = pwd.getpwnam("nobody")
    argv = ["setpriv", "--reuid", str(user.pw_uid), "--regid", str(user.pw_gid), "--clear-groups"]
    argv += [sys.executable, "-m", "apviz.cli", "doctor", "--json", "--leases", str(lab.leases_file)]
    argv += ["--dnsmasq-log", str(lab.dnsmasq_log), "--netns", lab.gateway_ns, "--port", "18090"]
    result = subprocess.run(argv, capture_output=True, text=True, cwd="/", timeout=60)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["leases"]["status"] == "FAIL" and "not readable" in checks["leases"]["message"]
    assert "chmod 0644" in checks["leases"]["fix"]
    # Without root or the capability, the conntrack check says how to grant it.
    assert checks["conntrack"]["status"] == "FAIL" and "CAP_NET_ADMIN" in checks["conntrack"]["fix"]
    # The policy cannot be read either: a warning with the same fix, not a false "missing".
    assert checks["policy-nft"]["status"] == "warn" and "CAP_NET_ADMIN" in checks["policy-nft"]["fix"]


# --------------------------------------------------------------------------------------------------
# the network policy (docs/network-policy.md): on in the lab as in the shipped exhibit configuration


def test_policy_is_checked_by_asking_dnsmasq_and_reading_the_kernel(lab):
    named = by_name(run_checks(lab_config(lab, 18090, exhibit={"mode": "exhibit"})))
    dns_check, nft_check = named["policy-dns"], named["policy-nft"]
    assert dns_check.status == "ok" and f"dnsmasq at {lab.gateway_ip} answers NXDOMAIN" in dns_check.message
    assert nft_check.status == "ok" and f"port 853 from {lab.bridge}" in nft_check.message
    assert "policy" not in named  # the "policy is off" warning only comes with [names] policy = false


@pytest.mark.parametrize("mode, status", [("exhibit", "FAIL"), ("classroom", "FAIL"), ("home", "warn")])
def test_missing_policy_fails_in_exhibit_and_classroom_mode(lab_factory, mode, status):
    lab = lab_factory(phones=1, policy=False)
    lab.phone_resolve(lab.phones[0], "www.wikipedia.org")  # a logged query: the dnsmasq check passes
    checks = run_checks(lab_config(lab, 18090, exhibit={"mode": mode}))
    named = by_name(checks)
    dns_check, nft_check = named["policy-dns"], named["policy-nft"]
    assert dns_check.status == status and "mask.icloud.com -> 198.18.24.10" in dns_check.message
    assert "/etc/dnsmasq.d/apviz-policy.conf" in dns_check.fix and "policy = false" in dns_check.fix
    assert nft_check.status == status and "is not loaded" in nft_check.message
    assert "systemctl enable --now apviz-policy" in nft_check.fix
    assert failed(checks) == (status == "FAIL")


def test_policy_off_in_the_configuration_is_a_warning_of_what_phones_hide(lab_factory):
    lab = lab_factory(phones=1, policy=False)
    lab.phone_resolve(lab.phones[0], "www.wikipedia.org")
    checks = run_checks(lab_config(lab, 18090, exhibit={"mode": "exhibit"}, names={"policy": False}))
    named = by_name(checks)
    assert "policy-dns" not in named and "policy-nft" not in named
    assert named["policy"].status == "warn"
    assert "Private Relay" in named["policy"].message and "DNS over TLS" in named["policy"].message
    assert not failed(checks), [c for c in checks if c.status == "FAIL"]


def test_policy_table_removed_or_on_the_wrong_interface_is_reported(lab):
    from apviz.lab import topology

    cfg = lab_config(lab, 18090, exhibit={"mode": "exhibit"})
    assert topology.delete_table(lab.names, topology.POLICY_TABLE)  # e.g. `nft flush ruleset`
    check = by_name(run_checks(cfg))["policy-nft"]
    assert check.status == "FAIL" and "is not loaded" in check.message
    # Loaded for an interface this gateway does not have (the unit's default, wlan0, on another box).
    lab.exec_in(lab.gateway_ns, ["nft", "-D", "LAN_IF=wlan0", "-f", str(topology.POLICY_NFT)])
    check = by_name(run_checks(cfg))["policy-nft"]
    assert check.status == "warn" and "wlan0 does not exist" in check.message
    assert "/etc/default/apviz-policy" in check.fix


def test_capture_needs_nftables_only_when_on(lab):
    named = by_name(run_checks(lab_config(lab, 18090)))
    assert named["capture-nft"].status == "ok" and "nftables works" in named["capture-nft"].message
    named = by_name(run_checks(lab_config(lab, 18090, names={"capture": False})))
    assert named["capture-nft"].status == "skip"
