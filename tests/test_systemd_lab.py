"""``apviz serve`` run the way systemd/apviz.service runs it, on the lab gateway.

An unprivileged user with only CAP_NET_ADMIN (ambient, bounding set reduced to it: what the unit's
AmbientCapabilities= and CapabilityBoundingSet= give), with MemoryDenyWriteExecute's effect applied
by ``prctl(PR_SET_MDWE)``, a notify socket and a watchdog. Reading conntrack of a *named* namespace
needs setns (CAP_SYS_ADMIN), so, like a real gateway where apviz runs in the namespace it watches,
the service runs inside the lab's gateway namespace with ``sources.netns`` empty. The notify socket
is a path socket: an abstract one would belong to the host's network namespace only.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from apviz import config as config_mod
from apviz.config import Config
from apviz.lab.lab import Lab
from apviz.lab.serve import lab_config
from apviz.sources.netns import socket_in

pytestmark = pytest.mark.lab

USER = "nobody"
PORT = 18089
WATCHDOG_USEC = 1_000_000
# The process applies what MemoryDenyWriteExecute=yes would (PR_SET_MDWE = 65, REFUSE_EXEC_GAIN = 1),
# then runs the apviz command line in the same interpreter.
MDWE_MAIN = (
    "import ctypes, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.prctl(65, 1, 0, 0, 0) != 0: sys.exit('PR_SET_MDWE failed: %d' % ctypes.get_errno())\n"
    "from apviz.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def config_toml(cfg: Config) -> str:
    """A Config written back as TOML (every key), for the process started below."""
    out = []
    for section in dataclasses.fields(cfg):
        obj = getattr(cfg, section.name)
        out.append(f"[{section.name}]")
        out += [f"{f.name} = {config_mod._toml_value(getattr(obj, f.name))}" for f in dataclasses.fields(obj)]
    return "\n".join(out) + "\n"


def open_to_others(lab: Lab) -> None:
    """Let the unprivileged user reach the lab's dnsmasq log and leases (the run dir is root's)."""
    for path in (lab.run_dir, lab.run_dir / "gateway"):
        path.chmod(path.stat().st_mode | 0o005)
    for path in (lab.leases_file, lab.dnsmasq_log):
        assert path is not None
        path.chmod(path.stat().st_mode | 0o004)


def setpriv(with_cap: bool) -> list[str]:
    user = pwd.getpwnam(USER)
    argv = ["setpriv", "--reuid", str(user.pw_uid), "--regid", str(user.pw_gid), "--clear-groups"]
    if with_cap:
        argv += [
            "--inh-caps",
            "+net_admin",
            "--ambient-caps",
            "+net_admin",
            "--bounding-set",
            "-all,+net_admin",
        ]
    else:
        argv += ["--inh-caps", "-all", "--bounding-set", "-all"]
    return argv


@pytest.fixture
def served(lab_factory):
    lab = lab_factory(phones=2)
    open_to_others(lab)
    for phone in lab.phones:
        lab.phone_connect(phone, "www.wikipedia.org", nbytes=20000)
    # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, out of the unprivileged user's reach.
    work = Path(tempfile.mkdtemp(prefix="apviz-systemd-"))
    work.chmod(0o755)
    cfg = lab_config(lab, PORT, server={"listen": lab.gateway_ip}, sources={"netns": ""})
    conf = work / "apviz.toml"
    conf.write_text(config_toml(cfg))
    conf.chmod(0o644)
    yield lab, work, conf
    shutil.rmtree(work, ignore_errors=True)


def run_apviz(lab: Lab, conf: Path, with_cap: bool, env: dict[str, str]) -> subprocess.Popen:
    argv = ["ip", "netns", "exec", lab.gateway_ns, *setpriv(with_cap)]
    argv += [sys.executable, "-c", MDWE_MAIN, "serve", "--config", str(conf)]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("APVIZ_", "NOTIFY_", "WATCHDOG_"))}
    clean.pop("INVOCATION_ID", None)
    clean.pop("JOURNAL_STREAM", None)
    return subprocess.Popen(
        argv,
        env={**clean, "HOME": "/nonexistent", **env},
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def get(lab: Lab, path: str) -> tuple[int, dict]:
    """GET from inside the gateway namespace, where the service listens."""
    sock = socket_in(lab.gateway_ns, socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect((lab.gateway_ip, PORT))
    conn = http.client.HTTPConnection(lab.gateway_ip, PORT, timeout=5)
    conn.sock = sock
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def count(log: list[str], want: str) -> int:
    return "\n".join(log).split("\n").count(want)


def receive(
    sock: socket.socket,
    want: str,
    timeout: float,
    log: list[str],
    proc: subprocess.Popen | None = None,
    times: int = 1,
) -> None:
    """Read notify datagrams into ``log`` until ``want`` was received ``times`` times in all."""
    deadline = time.monotonic() + timeout
    while count(log, want) < times:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"apviz exited with {proc.returncode} before {want}; got {log}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {want} within {timeout} s; got {log}")
        sock.settimeout(min(left, 0.5))
        try:
            log.append(sock.recv(4096).decode())
        except TimeoutError:
            continue


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM to our own child, by PID: `ip netns exec` and setpriv exec() into apviz
    try:
        return proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate(timeout=5)


def test_venv_is_usable_by_the_unprivileged_user():
    result = subprocess.run(
        [*setpriv(False), sys.executable, "-c", "import apviz.cli, systemd.daemon; print('ok')"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert result.stdout.strip() == "ok", (
        f"{USER} cannot run {sys.executable} (build the venv with /usr/bin/python3 in a world-readable "
        f"path): {result.stderr}"
    )


def test_serve_as_unprivileged_user_with_cap_net_admin(served):
    lab, work, conf = served
    notify_path = work / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify_path.chmod(0o666)
        env = {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        proc = run_apviz(lab, conf, True, env)
        messages: list[str] = []
        try:
            receive(notify, "READY=1", 30, messages, proc)
            t0 = time.monotonic()
            # Pings come every WATCHDOG_USEC / 2: three more within two watchdog periods.
            receive(
                notify,
                "WATCHDOG=1",
                2 * WATCHDOG_USEC / 1e6,
                messages,
                proc,
                count(messages, "WATCHDOG=1") + 3,
            )
            assert time.monotonic() - t0 < 2 * WATCHDOG_USEC / 1e6
            status, health = get(lab, "/healthz")
            assert (status, health["status"]) == (200, "ok")
            deadline = time.monotonic() + 10
            while True:
                status, state = get(lab, "/api/state")
                totals = state["view"].get("totals", {})
                if totals.get("devices", 0) >= 2 and totals.get("connections", 0) >= 2:
                    break
                assert time.monotonic() < deadline, f"the lab phones never showed up: {totals}"
                time.sleep(0.3)
            assert proc.poll() is None
        except AssertionError as exc:
            _, err = stop(proc)
            raise AssertionError(f"{exc}\napviz said: {err}") from None
        finally:
            _, err = stop(proc)
        # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught: systemd counts a stop that
        # ends by SIGTERM as clean (STOPPING=1 below shows the graceful path ran).
        assert proc.returncode in (0, -15), err
        assert "Traceback" not in err, err
        with_stopping = "\n".join(messages)
        notify.settimeout(1)
        with_stopping += "".join(_drain(notify))
        assert "STOPPING=1" in with_stopping


def _drain(sock: socket.socket) -> list[str]:
    out = []
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except (TimeoutError, BlockingIOError):
        return out


def test_serve_without_the_capability_fails_with_the_fix(served):
    lab, _work, conf = served
    proc = run_apviz(lab, conf, False, {})
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        _, err = stop(proc)
        raise AssertionError(f"apviz kept running without CAP_NET_ADMIN: {err}") from None
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "ExceptionGroup" not in err, err
    assert "CAP_NET_ADMIN" in err and "AmbientCapabilities=CAP_NET_ADMIN" in err and "setcap" in err, err
    assert err.strip().splitlines()[-1].startswith("apviz: not permitted"), err
