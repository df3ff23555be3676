"""scripts/install.sh in a scratch root (DESTDIR) and as a dry run: never on this machine's /."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts/install.sh"
FAST = ["--no-apt", "--no-data", "--no-venv"]  # no network, no 200 MB copy: the layout is what is tested
# The network policy's files: (in the source tree, installed path below the root).
POLICY = [
    ("dnsmasq/apviz-policy.conf", "etc/dnsmasq.d/apviz-policy.conf"),
    ("nftables/apviz-policy.nft", "etc/apviz/nftables/apviz-policy.nft"),
    ("nftables/apviz-dns-redirect.nft", "etc/apviz/nftables/apviz-dns-redirect.nft"),
    ("systemd/apviz-policy.service", "etc/systemd/system/apviz-policy.service"),
    ("systemd/apviz-dns-redirect.service", "etc/systemd/system/apviz-dns-redirect.service"),
]


def install(destdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DESTDIR": str(destdir)}
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)


def test_install_upgrade_uninstall_purge(tmp_path):
    result = install(tmp_path, *FAST)
    assert result.returncode == 0, result.stderr
    conf = tmp_path / "etc/apviz/apviz.toml"
    assert conf.read_text() == (ROOT / "apviz.toml.example").read_text()
    assert oct(conf.stat().st_mode & 0o777) == "0o640"
    unit = (tmp_path / "etc/systemd/system/apviz.service").read_text()
    assert "ExecStart=/opt/apviz/venv/bin/apviz serve --config /etc/apviz/apviz.toml" in unit
    app = tmp_path / "opt/apviz/app"
    assert (
        (app / "apviz/cli.py").is_file()
        and (app / "web").is_dir()
        and (app / "data/companies.toml").is_file()
    )
    assert not list(app.rglob("__pycache__"))
    # The network policy, byte for byte as shipped; its optional redirect installed, not enabled.
    for src, dest in POLICY:
        assert (tmp_path / dest).read_bytes() == (ROOT / src).read_bytes(), dest
        assert oct((tmp_path / dest).stat().st_mode & 0o777) == "0o644"
    assert "+ useradd" not in result.stdout and "+ systemctl" not in result.stdout  # not in a DESTDIR

    conf.write_text("[server]\nport = 9000\n")  # the operator's edit survives an upgrade
    result = install(tmp_path, *FAST)
    assert result.returncode == 0 and "kept /etc/apviz/apviz.toml" in result.stdout
    assert conf.read_text() == "[server]\nport = 9000\n"

    result = install(tmp_path, "--uninstall")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "opt/apviz").exists()
    assert not (tmp_path / "etc/systemd/system/apviz.service").exists()
    for _, dest in POLICY:  # the policy goes with apviz
        assert not (tmp_path / dest).exists(), dest
    assert not (tmp_path / "etc/apviz/nftables").exists()
    assert conf.exists()
    assert install(tmp_path, "--uninstall", "--purge").returncode == 0
    assert not (tmp_path / "etc/apviz").exists()


def test_upgrade_keeps_a_policy_file_the_operator_edited_or_deleted(tmp_path):
    assert install(tmp_path, *FAST).returncode == 0
    dropin = tmp_path / "etc/dnsmasq.d/apviz-policy.conf"
    edited = dropin.read_text().replace(
        "address=/use-application-dns.net/", "#address=/use-application-dns.net/"
    )
    dropin.write_text(edited)
    redirect = tmp_path / "etc/apviz/nftables/apviz-dns-redirect.nft"
    redirect.unlink()
    (tmp_path / "etc/apviz/nftables/apviz-policy.nft").write_text("stale copy\n")  # an old, unedited...
    (tmp_path / "opt/apviz/app/nftables/apviz-policy.nft").write_text("stale copy\n")  # ...as shipped then
    for _ in range(2):  # and again: the decision sticks
        result = install(tmp_path, *FAST)
        assert result.returncode == 0, result.stderr
        assert "kept your edited /etc/dnsmasq.d/apviz-policy.conf" in result.stdout
        assert "kept /etc/apviz/nftables/apviz-dns-redirect.nft deleted" in result.stdout
        assert dropin.read_text() == edited and not redirect.exists()
    # An unedited file is replaced by the new shipped one.
    nft = ROOT / "nftables/apviz-policy.nft"
    assert (tmp_path / "etc/apviz/nftables/apviz-policy.nft").read_text() == nft.read_text()


def test_prefix_is_written_into_the_unit(tmp_path):
    assert install(tmp_path, *FAST, "--prefix", "/srv/apviz").returncode == 0
    unit = (tmp_path / "etc/systemd/system/apviz.service").read_text()
    assert "ExecStart=/srv/apviz/venv/bin/apviz serve" in unit
    assert (tmp_path / "srv/apviz/app/apviz").is_dir()


def test_dry_run_prints_every_step_and_changes_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DESTDIR"}
    result = subprocess.run([str(SCRIPT), "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for step in (
        "apt-get install",
        "usermod -aG systemd-journal apviz",
        "-m venv /opt/apviz/venv",
        "[journal]",
    ):
        assert step in out
    assert "systemctl enable apviz.service" in out
    assert "systemctl enable apviz-policy.service" in out
    assert "enable apviz-dns-redirect" not in out  # optional: never turned on by the installer
    assert (
        "install -m 0644 " + str(ROOT / "dnsmasq/apviz-policy.conf") + " /etc/dnsmasq.d/apviz-policy.conf"
        in out
    )
    assert "/etc/apviz/nftables/apviz-policy.nft" in out and "systemctl try-restart dnsmasq.service" in out
    assert not Path("/opt/apviz").exists() and not Path("/etc/systemd/system/apviz.service").exists()
    assert not Path("/etc/dnsmasq.d/apviz-policy.conf").exists() and not Path("/etc/apviz/nftables").exists()
    result = subprocess.run(
        [str(SCRIPT), "--dry-run", "--uninstall"], env=env, capture_output=True, text=True, timeout=60
    )
    assert (
        result.returncode == 0 and "rm -rf /opt/apviz" in result.stdout and "kept /etc/apviz" in result.stdout
    )
    for _, dest in POLICY:
        assert f"rm -f /{dest}" in result.stdout


def test_bad_option_is_refused():
    result = subprocess.run([str(SCRIPT), "--bogus"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "unknown option" in result.stderr


def test_data_update_timer_is_installed_with_the_prefix_and_removed_by_uninstall(tmp_path):
    result = install(tmp_path, *FAST, "--prefix", "/srv/apviz")
    assert result.returncode == 0, result.stderr
    units = tmp_path / "etc/systemd/system"
    service = (units / "apviz-data-update.service").read_text()
    assert "ExecStart=/srv/apviz/venv/bin/apviz data update --config /etc/apviz/apviz.toml" in service
    assert "ReadOnlyPaths=/etc/apviz /srv/apviz" in service and "/opt/apviz" not in service.split("[Unit]")[1]
    assert (units / "apviz-data-update.timer").read_text() == (
        ROOT / "systemd/apviz-data-update.timer"
    ).read_text()
    data = tmp_path / "var/lib/apviz/data"
    data.mkdir(parents=True)  # what the timer's first run creates (StateDirectory=)
    (data / "easylist.txt").write_text("||ads.example^\n")
    result = install(tmp_path, "--uninstall", "--prefix", "/srv/apviz")
    assert result.returncode == 0, result.stderr
    assert (
        not (units / "apviz-data-update.service").exists()
        and not (units / "apviz-data-update.timer").exists()
    )
    assert not (tmp_path / "var/lib/apviz").exists()  # the downloaded data goes with apviz


def test_dry_run_enables_the_data_timer_and_uninstall_disables_it():
    env = {k: v for k, v in os.environ.items() if k != "DESTDIR"}
    result = subprocess.run([str(SCRIPT), "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "systemctl enable apviz-data-update.timer" in result.stdout
    assert "apviz-data-update.service > /etc/systemd/system/apviz-data-update.service" in result.stdout
    result = subprocess.run(
        [str(SCRIPT), "--dry-run", "--uninstall"], env=env, capture_output=True, text=True, timeout=60
    )
    for unit in ("apviz-data-update.service", "apviz-data-update.timer"):
        assert f"rm -f /etc/systemd/system/{unit}" in result.stdout
    assert not Path("/etc/systemd/system/apviz-data-update.timer").exists()
