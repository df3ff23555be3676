"""The appliance's files and plumbing: dnsmasq and hostapd configuration, the systemd unit, logging to
the journal, sd_notify, and the error a missing capability produces (no traceback)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from apviz import cli, errors, logsetup
from apviz.server.notify import Notifier, watchdog_interval
from apviz.sources.conntrack import ConntrackPermissionError

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd/apviz.service"


def conf_keys(path: Path) -> dict[str, str]:
    """key=value lines that are not comments (the last one wins, as in hostapd)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not key=value: {line!r}"
            out[key] = value
    return out


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq is not installed")
def test_dnsmasq_dropin_passes_dnsmasq_test():
    result = subprocess.run(
        ["dnsmasq", "--test", f"--conf-file={ROOT / 'dnsmasq/apviz.conf'}"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "syntax check OK" in result.stderr, result.stderr


def test_dnsmasq_dropin_has_what_apviz_reads():
    text = (ROOT / "dnsmasq/apviz.conf").read_text()
    active = [line for line in text.splitlines() if line and not line.startswith("#")]
    for needed in ("log-queries=extra", "log-dhcp", "dhcp-leasefile=/var/lib/misc/dnsmasq.leases"):
        assert needed in active
    assert any(line.startswith("dhcp-range=") for line in active)
    assert "host-record=apviz.lan,192.168.4.1" in active
    assert "#log-facility=" in text  # the file alternative is documented, the journal is the default


def test_hostapd_conf_has_sane_values():
    keys = conf_keys(ROOT / "hostapd/hostapd.conf")
    assert 1 <= len(keys["ssid"].encode()) <= 32
    assert re.fullmatch(r"[A-Z]{2}", keys["country_code"])
    assert keys["interface"] == "wlan0" and keys["driver"] == "nl80211"
    assert keys["hw_mode"] in ("g", "a")
    channel = int(keys["channel"])
    assert 1 <= channel <= 13 if keys["hw_mode"] == "g" else channel >= 36
    assert keys["ap_isolate"] == "1"
    if keys.get("wpa", "0") != "0":
        assert keys["wpa"] == "2"
        assert set(keys["wpa_key_mgmt"].split()) <= {"WPA-PSK", "SAE"}
        assert keys["rsn_pairwise"] == "CCMP"
        assert 8 <= len(keys["wpa_passphrase"]) <= 63
        if "SAE" in keys["wpa_key_mgmt"]:
            assert keys.get("ieee80211w") in ("1", "2")


def _unit_for_test(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's apviz (verify checks the binary exists)."""
    apviz = Path(shutil.which("apviz", path=str(ROOT / ".venv/bin")) or ROOT / ".venv/bin/apviz")
    unit = tmp_path / "apviz.service"
    unit.write_text(UNIT.read_text().replace("/opt/apviz/venv/bin/apviz", str(apviz)))
    return unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_verifies_without_any_warning(tmp_path):
    result = subprocess.run(
        ["systemd-analyze", "verify", str(_unit_for_test(tmp_path))], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_security_exposure_is_low(tmp_path):
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(_unit_for_test(tmp_path))],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


def test_unit_runs_unprivileged_with_only_net_admin():
    keys = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    assert keys["ExecStart"] == ["/opt/apviz/venv/bin/apviz serve --config /etc/apviz/apviz.toml"]
    assert keys["User"] == ["apviz"] and keys["Type"] == ["notify"]
    assert keys["AmbientCapabilities"] == ["CAP_NET_ADMIN"] == keys["CapabilityBoundingSet"]
    assert keys["SupplementaryGroups"] == ["systemd-journal"]
    assert keys["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]
    for key in ("ProtectSystem", "ProtectHome", "NoNewPrivileges", "PrivateTmp", "MemoryDenyWriteExecute"):
        assert key in keys
    assert "WatchdogSec" in keys


def test_logging_uses_the_journal_under_systemd():
    pytest.importorskip("systemd.journal")
    from systemd.journal import JournalHandler

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        assert isinstance(logsetup.setup_logging("INFO", env={"INVOCATION_ID": "x"}), JournalHandler)
        assert isinstance(logsetup.setup_logging("INFO", env={}), logging.StreamHandler)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_watchdog_interval_is_half_of_watchdog_usec():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None


def test_notifier_sends_to_a_path_socket_and_is_quiet_without_one(tmp_path):
    assert Notifier({}).send("READY=1") is False
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        old = os.environ.get("NOTIFY_SOCKET")
        os.environ["NOTIFY_SOCKET"] = str(path)  # systemd.daemon.notify reads the environment
        try:
            assert Notifier().send("READY=1", "STATUS=up")
        finally:
            if old is None:
                del os.environ["NOTIFY_SOCKET"]
            else:
                os.environ["NOTIFY_SOCKET"] = old
        sock.settimeout(2)
        assert sock.recv(100) == b"READY=1\nSTATUS=up"


def test_permission_error_inside_task_groups_is_one_line(capsys, monkeypatch):
    async def nested() -> None:
        async def fail() -> None:
            raise ConntrackPermissionError("dump the conntrack table", None)

        async with asyncio.TaskGroup() as outer:
            outer.create_task(asyncio.sleep(10))

            async def inner_group() -> None:
                async with asyncio.TaskGroup() as inner:
                    inner.create_task(fail())

            outer.create_task(inner_group())

    def cmd(_args: object) -> int:
        asyncio.run(nested())
        return 0

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", lambda argv: argparse.Namespace(func=cmd, log_level="WARNING"))
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("apviz: not permitted to dump the conntrack table") and "Traceback" not in err
    assert "AmbientCapabilities=CAP_NET_ADMIN" in err and "setcap" in err


def test_user_error_finds_the_leaf():
    leaf = PermissionError(errno.EPERM, "no")
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [ValueError("x"), leaf])])
    assert errors.user_error(group) is leaf
    assert errors.message(leaf) == "no"
    assert errors.user_error(ExceptionGroup("g", [ValueError("x")])) is None


# --------------------------------------------------------------------------------------------------
# the network policy's appliance files (their effect on phones: tests/test_policy_lab.py)

POLICY_UNITS = ("apviz-policy.service", "apviz-dns-redirect.service")


def _active_lines(path: Path) -> list[tuple[int, str]]:
    lines = path.read_text().splitlines()
    return [(i, line) for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq is not installed")
def test_policy_dropin_passes_dnsmasq_test():
    result = subprocess.run(
        ["dnsmasq", "--test", f"--conf-file={ROOT / 'dnsmasq/apviz-policy.conf'}"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "syntax check OK" in result.stderr, result.stderr


def test_policy_dropin_answers_the_three_names_and_says_why():
    path = ROOT / "dnsmasq/apviz-policy.conf"
    lines = path.read_text().splitlines()
    active = _active_lines(path)
    assert [line for _, line in active] == [
        "address=/use-application-dns.net/",
        "address=/mask.icloud.com/",
        "address=/mask-h2.icloud.com/",
    ]
    for i, line in active:  # every switch has its reason right above it
        assert lines[i - 1].startswith("# "), line


@pytest.mark.skipif(os.geteuid() != 0, reason="nft --check needs CAP_NET_ADMIN")
@pytest.mark.parametrize("name", ["apviz-policy.nft", "apviz-dns-redirect.nft"])
def test_nft_files_parse_with_a_lan_interface_and_say_why(name):
    path = ROOT / "nftables" / name
    result = subprocess.run(
        ["nft", "--check", "-D", "LAN_IF=wlan0", "-f", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    # Without LAN_IF, nft refuses the file (no silent default that might be the wrong interface).
    result = subprocess.run(["nft", "--check", "-f", str(path)], capture_output=True, text=True)
    assert result.returncode != 0 and "LAN_IF" in result.stderr
    lines = path.read_text().splitlines()
    for i, line in _active_lines(path):
        if line.strip() in ("}",) or line.strip().startswith(("table ", "delete table", "chain ")):
            continue
        # Each rule or hook is explained by a comment above it (possibly above a run of rules).
        above = [x.strip() for x in lines[max(0, i - 4) : i]]
        assert any(x.startswith("#") for x in above), line


def _policy_unit_for_test(tmp_path: Path, name: str) -> Path:
    """The unit with nft's path as found here (verify checks the binary exists)."""
    nft = shutil.which("nft") or "/usr/sbin/nft"
    unit = tmp_path / name
    unit.write_text((ROOT / "systemd" / name).read_text().replace("/usr/sbin/nft", nft))
    return unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("name", POLICY_UNITS)
def test_policy_units_verify_without_any_warning(tmp_path, name):
    result = subprocess.run(
        ["systemd-analyze", "verify", str(_policy_unit_for_test(tmp_path, name))],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.parametrize("name", POLICY_UNITS)
def test_policy_units_load_the_installed_file_and_remove_their_table(name):
    text = (ROOT / "systemd" / name).read_text()
    nft_file = name.replace(".service", ".nft")
    table = "apviz_policy" if name == "apviz-policy.service" else "apviz_dns_redirect"
    assert "Type=oneshot" in text and "RemainAfterExit=yes" in text
    assert f"ExecStart=/usr/sbin/nft -D LAN_IF=${{LAN_IF}} -f /etc/apviz/nftables/{nft_file}" in text
    assert f"ExecStop=-/usr/sbin/nft delete table inet {table}" in text
    assert "Environment=LAN_IF=wlan0" in text and "EnvironmentFile=-/etc/default/apviz-policy" in text
    assert f"table inet {table} {{" in (ROOT / "nftables" / nft_file).read_text()


def test_shipped_configuration_expects_the_policy_in_exhibit_mode():
    """The example the installer copies to /etc/apviz/apviz.toml: exhibit mode, policy on (doctor checks)."""
    import tomllib

    from apviz.config import from_dict

    cfg = from_dict(tomllib.loads((ROOT / "apviz.toml.example").read_text()), env={})
    assert cfg.exhibit.mode == "exhibit" and cfg.names.policy is True


DATA_UNITS = ("apviz-data-update.service", "apviz-data-update.timer")


def _data_units_for_test(tmp_path: Path) -> list[Path]:
    """Both units, the service's ExecStart pointing at this venv's apviz (verify checks it exists)."""
    apviz = Path(shutil.which("apviz", path=str(ROOT / ".venv/bin")) or ROOT / ".venv/bin/apviz")
    out = []
    for name in DATA_UNITS:
        unit = tmp_path / name
        unit.write_text(
            (ROOT / "systemd" / name).read_text().replace("/opt/apviz/venv/bin/apviz", str(apviz))
        )
        out.append(unit)
    return out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_data_update_units_verify_without_any_warning(tmp_path):
    result = subprocess.run(
        ["systemd-analyze", "verify", *map(str, _data_units_for_test(tmp_path))],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_data_update_unit_security_exposure_is_low(tmp_path):
    service = _data_units_for_test(tmp_path)[0]
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(service)],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


def _unit_keys(path: Path) -> dict[str, str]:
    """A unit file's Key=value lines (the last one wins; section headers skipped)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_data_update_runs_unprivileged_writing_only_its_data_dir_weekly():
    from apviz.config import DataConfig

    unit = _unit_keys(ROOT / "systemd/apviz-data-update.service")
    assert unit["User"] == "apviz" and unit["Type"] == "oneshot"
    assert unit["CapabilityBoundingSet"] == "" and unit["NoNewPrivileges"] == "yes"
    # Writable: only the StateDirectory, which is [data] dir's default.
    assert unit["ProtectSystem"] == "strict" and "ReadWritePaths" not in unit
    assert "/var/lib/" + unit["StateDirectory"] == DataConfig().dir
    assert (
        "IPAddressDeny" not in unit and "AF_INET6" in unit["RestrictAddressFamilies"]
    )  # it needs the internet
    timer = _unit_keys(ROOT / "systemd/apviz-data-update.timer")
    assert timer["OnCalendar"] == "weekly" and timer["Persistent"] == "true" and timer["RandomizedDelaySec"]
    assert timer["WantedBy"] == "timers.target"
