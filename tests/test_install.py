"""scripts/install.sh in a scratch root (DESTDIR) and as a dry run: never on this machine's /."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts/install.sh"
FAST = ["--no-apt", "--no-data", "--no-venv"]  # no network, no 200 MB copy: the layout is what is tested


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
    assert "+ useradd" not in result.stdout and "+ systemctl" not in result.stdout  # not in a DESTDIR

    conf.write_text("[server]\nport = 9000\n")  # the operator's edit survives an upgrade
    result = install(tmp_path, *FAST)
    assert result.returncode == 0 and "kept /etc/apviz/apviz.toml" in result.stdout
    assert conf.read_text() == "[server]\nport = 9000\n"

    result = install(tmp_path, "--uninstall")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "opt/apviz").exists()
    assert not (tmp_path / "etc/systemd/system/apviz.service").exists()
    assert conf.exists()
    assert install(tmp_path, "--uninstall", "--purge").returncode == 0
    assert not (tmp_path / "etc/apviz").exists()


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
    assert not Path("/opt/apviz").exists() and not Path("/etc/systemd/system/apviz.service").exists()
    result = subprocess.run(
        [str(SCRIPT), "--dry-run", "--uninstall"], env=env, capture_output=True, text=True, timeout=60
    )
    assert (
        result.returncode == 0 and "rm -rf /opt/apviz" in result.stdout and "kept /etc/apviz" in result.stdout
    )


def test_bad_option_is_refused():
    result = subprocess.run([str(SCRIPT), "--bogus"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "unknown option" in result.stderr
