"""A private systemd-journald for the lab and the tests.

The development machines (and CI containers) run no systemd, yet apviz must be tested against a
real journald because that is where dnsmasq's log lands on the appliance. journald can be started
by hand, but it insists on fixed paths (``/run/systemd/journal/*`` for its sockets,
``/run/log/journal`` for volatile files, ``/dev/log`` for syslog clients). To run it without
touching the host, it gets its own mount namespace in which:

* ``/run`` is a fresh tmpfs (so the host's ``/run`` is neither needed nor changed; the workdir
  may still live under the host's ``/run``),
* ``/run/systemd/journal`` is a bind mount of ``<workdir>/run`` (its sockets become host-visible),
* ``/run/log`` is a bind mount of ``<workdir>/log`` (its journal files become host-visible),
* a drop-in in ``/run/systemd/journald.conf.d`` sets ``Storage=volatile``, turns off every forward
  and kmsg/audit reading (we want only what our clients log) and rate limiting (tests log in bursts).

Clients reach it by the syslog socket ``dev_log`` (a path socket, so it works from any network
namespace). :meth:`PrivateJournald.wrap` builds a command line that runs a program in yet another
private mount namespace where ``/dev/log`` is that socket, which is what dnsmasq (and glibc's
``syslog()``) write to. Everything is torn down with the processes: no mount outlives them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

JOURNALD_CANDIDATES = ("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald")

_JOURNALD_CONF = """\
# Written by apviz.lab.journald: a throw-away journald for tests and the lab.
[Journal]
Storage=volatile
Compress=no
Seal=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
ReadKMsg=no
Audit=no
RateLimitIntervalSec=0
RateLimitBurst=0
RuntimeMaxUse=64M
"""

# Runs as root in the fresh mount namespace, then becomes journald (same PID: unshare and sh exec).
# The new /run is assembled on a staging tmpfs and moved into place last, so that the workdir may
# itself live under /run (a tmpfs mounted straight onto /run would hide the bind sources).
_START_SCRIPT = """\
set -e
run="$1"; log="$2"; conf="$3"; stage="$4"; journald="$5"
mount -n -t tmpfs -o mode=0755,nosuid,nodev apviz-run "$stage"
mkdir -p "$stage/systemd/journal" "$stage/log" "$stage/systemd/journald.conf.d"
mount -n --bind "$run" "$stage/systemd/journal"
mount -n --bind "$log" "$stage/log"
cp "$conf" "$stage/systemd/journald.conf.d/zz-apviz-private.conf"
mount -n --move "$stage" /run
exec "$journald"
"""

# Runs the wrapped program with /dev/log pointing at our journald. When the host has a /dev/log
# (any systemd machine) a bind mount over it is enough. When it has none (containers, this VM),
# bind mounts need an existing target and creating one would change the shared devtmpfs, so a
# minimal tmpfs /dev is assembled from the host's nodes instead, with /dev/log as a symlink.
_WRAP_SCRIPT = """\
set -e
devlog="$1"; nsdev="$2"; shift 2
if [ -e /dev/log ] || [ -L /dev/log ]; then
    mount -n --bind "$devlog" /dev/log
else
    mount -n -t tmpfs -o mode=0755,nosuid apviz-dev "$nsdev"
    for n in null zero full random urandom tty; do
        if [ -e "/dev/$n" ]; then : > "$nsdev/$n"; mount -n --bind "/dev/$n" "$nsdev/$n"; fi
    done
    for d in pts shm mqueue net; do
        if [ -d "/dev/$d" ]; then mkdir "$nsdev/$d"; mount -n --rbind "/dev/$d" "$nsdev/$d"; fi
    done
    ln -s /proc/self/fd "$nsdev/fd"
    ln -s /proc/self/fd/0 "$nsdev/stdin"
    ln -s /proc/self/fd/1 "$nsdev/stdout"
    ln -s /proc/self/fd/2 "$nsdev/stderr"
    ln -s pts/ptmx "$nsdev/ptmx"
    ln -s "$devlog" "$nsdev/log"
    mount -n --move "$nsdev" /dev
fi
exec "$@"
"""


class JournaldError(RuntimeError):
    """The private journald could not be started (the message says what is missing)."""


def _machine_id() -> str:
    """journald names its directory after the machine id; without one it refuses to start."""
    try:
        machine_id = Path("/etc/machine-id").read_text().strip()
    except OSError as exc:
        raise JournaldError("/etc/machine-id is missing: create it with `systemd-machine-id-setup`") from exc
    if len(machine_id) != 32:
        raise JournaldError(f"/etc/machine-id holds {machine_id!r}, not a 32-hex-digit id")
    return machine_id


def _find_journald() -> str:
    for candidate in JOURNALD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    raise JournaldError("systemd-journald not found (Debian package: systemd)")


class PrivateJournald:
    """A systemd-journald of our own, for one lab or one test.

    ``workdir`` holds everything (sockets, journal files, its config and its own stderr log, in a
    subdirectory named after ``prefix`` so several instances can share a workdir). ``stop()`` ends
    only the process ``start()`` created; the files stay for inspection until the workdir goes.
    """

    def __init__(self, workdir: Path, prefix: str) -> None:
        self.root = Path(workdir).resolve() / f"{prefix}-journald"
        self.prefix = prefix
        self.run_dir = self.root / "run"
        self.log_root = self.root / "log"
        self.config_path = self.root / "journald.conf"
        self.stderr_path = self.root / "journald.stderr"
        self._nsdev = self.root / "nsdev"
        self._stage = self.root / "stage"
        self._machine_id = _machine_id()
        self._proc: subprocess.Popen[bytes] | None = None

    # -- where things are, as seen from the host -------------------------------------------------

    @property
    def journal_dir(self) -> Path:
        """Directory of the .journal files; ``systemd.journal.Reader(path=journal_dir)`` reads it."""
        return self.log_root / "journal" / self._machine_id

    @property
    def dev_log(self) -> Path:
        """journald's syslog datagram socket (what ``/dev/log`` is on a normal system)."""
        return self.run_dir / "dev-log"

    @property
    def native_socket(self) -> Path:
        """journald's native-protocol socket (``systemd.journal.send`` can't be pointed at it)."""
        return self.run_dir / "socket"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise JournaldError("journald is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- life cycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 5.0) -> None:
        """Start journald and return once it accepts log lines (typically 20-50 ms)."""
        if self.running:
            return
        journald = _find_journald()
        for directory in (self.run_dir, self.log_root, self._nsdev, self._stage):
            directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(_JOURNALD_CONF)
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            # Its own messages go to stderr (our file), not back into itself via a socket.
            "SYSTEMD_LOG_TARGET": "console",
            "SYSTEMD_LOG_LEVEL": "info",
        }
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            _START_SCRIPT,
            "sh",
            str(self.run_dir),
            str(self.log_root),
            str(self.config_path),
            str(self._stage),
            journald,
        ]
        with self.stderr_path.open("ab") as stderr:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, env=env, close_fds=True
            )
        deadline = time.monotonic() + timeout
        while not (self.dev_log.is_socket() and self.native_socket.is_socket() and self.journal_dir.is_dir()):
            if self._proc.poll() is not None:
                self._proc = None
                raise JournaldError(f"journald exited at start: {self._tail_stderr()}")
            if time.monotonic() > deadline:
                self.stop()
                raise JournaldError(f"journald did not come up within {timeout} s: {self._tail_stderr()}")
            time.sleep(0.005)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the journald we started (and only it), then SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def rotate(self) -> None:
        """Ask journald to archive its active files and start new ones (``journalctl --rotate``
        talks to /run/systemd/journal of the host's namespace, so it cannot reach this one)."""
        os.kill(self.pid, signal.SIGUSR2)

    def sync(self, timeout: float = 2.0) -> None:
        """Ask journald to write everything it has received (SIGRTMIN+1) and wait for it.

        journald acknowledges a sync by touching ``/run/systemd/journal/synced``.
        """
        marker = self.run_dir / "synced"
        before = marker.stat().st_mtime_ns if marker.exists() else 0
        os.kill(self.pid, signal.SIGRTMIN + 1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                if marker.stat().st_mtime_ns != before:
                    return
            time.sleep(0.005)

    def remove_files(self) -> None:
        """Delete the workdir subtree (after stop()); the lab calls this on teardown."""
        if self.running:
            raise JournaldError("stop() journald before removing its files")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- clients ---------------------------------------------------------------------------------

    def wrap(self, argv: list[str]) -> list[str]:
        """Return a command line running ``argv`` with ``/dev/log`` connected to this journald.

        Works in both orders with ``ip netns exec`` (path sockets cross network namespaces):
        ``["ip", "netns", "exec", ns, *j.wrap(cmd)]`` and ``j.wrap(["ip", "netns", "exec", ns, *cmd])``.
        The wrapped program gets a private mount namespace (so it must run as root); its PID is
        the Popen's PID because unshare and sh both exec.
        """
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            _WRAP_SCRIPT,
            "sh",
            str(self.dev_log),
            str(self._nsdev),
            *argv,
        ]

    def _tail_stderr(self, limit: int = 2000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-limit:].strip()
        except OSError:
            return "(no stderr)"

    def __enter__(self) -> PrivateJournald:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
