"""Bookkeeping of what a lab run created, and removal of it: on close, on a signal, or by ``lab down``.

Each run owns a directory ``/run/apviz-lab/<prefix>/`` made *before* anything else exists and removed
*after* everything else is gone. It records the owning process, every namespace and every process
(PID plus kernel start time, so a recycled PID is never mistaken for ours). Removal uses only those
records and the run's own namespaces: it kills recorded PIDs and PIDs living inside our namespaces,
never anything found by a process name. A run whose owner is still alive belongs to someone else's
test or demo, and ``lab down`` leaves it alone unless told otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from apviz.lab import topology

RUN_ROOT = Path(os.environ.get("APVIZ_LAB_RUN_ROOT", "/run/apviz-lab"))
ETC_NETNS = Path("/etc/netns")
#: Present in the run dir of a lab started by ``apviz lab up``: only those may be stopped by ``--all``
#: (a live lab without it belongs to a test run, perhaps someone else's, and is never touched).
CLI_MARK = "started-by-cli"


@dataclass(frozen=True, slots=True)
class ProcRecord:
    """A process we started: enough to find it again and be sure it is still the same one."""

    name: str
    pid: int
    start: int | None  # /proc/<pid>/stat field 22 (clock ticks since boot)


@dataclass(frozen=True, slots=True)
class LabRecord:
    """A run directory found under RUN_ROOT."""

    prefix: str
    run_dir: Path
    owner: ProcRecord | None
    live: bool  # its owner is still running
    cli: bool = False  # started by `apviz lab up` (see CLI_MARK)

    def stoppable(self, include_live: bool) -> bool:
        """May ``lab down`` remove it? Dead runs always; live ones only if asked and CLI-started."""
        return not self.live or (include_live and self.cli)


def scratch_dir(prefix: str) -> Path:
    """A per-run directory outside /run, for parts that cannot live there.

    The private journald mounts a fresh tmpfs over /run in its mount namespace, which hides any
    directory under /run it would bind from, so its files go here instead.
    """
    return Path(tempfile.gettempdir()) / f"apviz-lab-{topology.check_prefix(prefix)}"


def process_start(pid: int) -> int | None:
    """The kernel's start time of ``pid``, or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def is_alive(rec: ProcRecord) -> bool:
    start = process_start(rec.pid)
    return start is not None and (rec.start is None or start == rec.start)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def create_run_dir(prefix: str, workdir: Path | None = None) -> Path:
    """Claim a run directory for ``prefix`` (failing if it exists) and record this process as owner.

    With ``workdir`` the files live there (kept after the run) and RUN_ROOT holds a symlink to it,
    so ``lab down`` still finds the run.
    """
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    entry = RUN_ROOT / prefix
    if workdir is None:
        entry.mkdir(mode=0o755)  # FileExistsError: another run has this prefix
        run_dir = entry
    else:
        run_dir = workdir.resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        entry.symlink_to(run_dir)
    run_dir.chmod(0o755)
    (run_dir / "pids").mkdir(exist_ok=True)
    _write(run_dir / "owner", f"{os.getpid()} {process_start(os.getpid())}\n")
    return run_dir


def record_namespace(run_dir: Path, ns: str) -> None:
    with (run_dir / "namespaces").open("a") as fh:
        fh.write(ns + "\n")


def recorded_namespaces(run_dir: Path) -> list[str]:
    try:
        return [n for n in (run_dir / "namespaces").read_text().split() if n]
    except OSError:
        return []


def record_pid(run_dir: Path, name: str, pid: int) -> ProcRecord:
    rec = ProcRecord(name=name, pid=pid, start=process_start(pid))
    _write(run_dir / "pids" / f"{name}.pid", f"{rec.pid} {rec.start}\n")
    return rec


def forget_pid(run_dir: Path, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (run_dir / "pids" / f"{name}.pid").unlink()


def _read_record(path: Path, name: str) -> ProcRecord | None:
    try:
        pid, start = path.read_text().split()
        return ProcRecord(name=name, pid=int(pid), start=None if start == "None" else int(start))
    except (OSError, ValueError):
        return None


def recorded_pids(run_dir: Path) -> list[ProcRecord]:
    out = []
    for path in sorted((run_dir / "pids").glob("*.pid")):
        rec = _read_record(path, path.stem)
        if rec is not None:
            out.append(rec)
    return out


def stop_processes(records: Iterable[ProcRecord], timeout: float = 2.0) -> list[ProcRecord]:
    """SIGTERM each still-alive record, then SIGKILL what is left after ``timeout``; returns survivors."""
    todo = [r for r in records if is_alive(r)]
    for rec in todo:
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while todo and time.monotonic() < deadline:
        time.sleep(0.02)
        todo = [r for r in todo if is_alive(r)]
    for rec in todo:
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, signal.SIGKILL)
    deadline = time.monotonic() + 1.0
    while todo and time.monotonic() < deadline:
        time.sleep(0.02)
        todo = [r for r in todo if is_alive(r)]
    return todo


def namespaces_of(prefix: str) -> list[str]:
    """Existing namespaces named with ``prefix`` (found even if the record was lost)."""
    out = []
    for ns in topology.list_namespaces():
        m = topology.NS_RE.match(ns)
        if m and m.group(1) == prefix:
            out.append(ns)
    return out


def teardown(prefix: str, run_dir: Path | None) -> list[str]:
    """Remove everything of one run; returns problems (empty when all is gone).

    Order: recorded processes, then any process still inside our namespaces, then the namespaces,
    then per-namespace /etc/netns files, then the run directory itself (last, so an interrupted
    teardown can be finished by ``lab down``).
    """
    problems: list[str] = []
    namespaces = sorted(set(namespaces_of(prefix)) | set(recorded_namespaces(run_dir) if run_dir else []))
    if run_dir is not None:
        for rec in stop_processes(recorded_pids(run_dir)):
            problems.append(f"process {rec.name} (pid {rec.pid}) survived SIGKILL")
    inside = [
        ProcRecord(name=f"{ns}:{pid}", pid=pid, start=process_start(pid))
        for ns in namespaces
        for pid in topology.namespace_pids(ns)
    ]
    for rec in stop_processes(inside, timeout=1.0):
        problems.append(f"process {rec.pid} in {rec.name.split(':')[0]} survived SIGKILL")
    topology.delete_namespaces(namespaces)
    for ns in namespaces:
        shutil.rmtree(ETC_NETNS / ns, ignore_errors=True)
    shutil.rmtree(scratch_dir(prefix), ignore_errors=True)
    left = set(namespaces_of(prefix))
    problems += [f"namespace {ns} could not be deleted" for ns in sorted(left)]
    if not problems:
        entry = RUN_ROOT / prefix
        if entry.is_symlink():
            # A caller-chosen workdir: keep its files (logs) but drop our bookkeeping.
            if run_dir is not None:
                shutil.rmtree(run_dir / "pids", ignore_errors=True)
                for name in ("owner", "namespaces"):
                    with contextlib.suppress(FileNotFoundError):
                        (run_dir / name).unlink()
            entry.unlink()
        elif entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
    return problems


def find_labs() -> list[LabRecord]:
    """Every run directory under RUN_ROOT, with whether its owner still runs."""
    labs: list[LabRecord] = []
    if not RUN_ROOT.is_dir():
        return labs
    for entry in sorted(RUN_ROOT.iterdir()):
        if not topology.PREFIX_RE.match(entry.name):
            continue
        run_dir = entry.resolve() if entry.is_symlink() else entry
        owner = _read_record(run_dir / "owner", "owner") if run_dir.is_dir() else None
        labs.append(
            LabRecord(
                prefix=entry.name,
                run_dir=run_dir,
                owner=owner,
                live=owner is not None and is_alive(owner),
                cli=(run_dir / CLI_MARK).exists(),
            )
        )
    return labs


def find_leftovers(include_live: bool = False) -> list[str]:
    """Human-readable descriptions of what remains of runs whose owner is gone (or of all runs)."""
    out: list[str] = []
    labs = {lab.prefix: lab for lab in find_labs()}
    for lab in labs.values():
        if not lab.stoppable(include_live):
            continue
        state = f"live, owner pid {lab.owner.pid}" if lab.live and lab.owner else "owner gone"
        out.append(f"run dir {lab.run_dir} ({state})")
        if lab.run_dir.is_dir():
            out += [f"  process {r.name} pid {r.pid}" for r in recorded_pids(lab.run_dir) if is_alive(r)]
    for ns in topology.list_namespaces():
        m = topology.NS_RE.match(ns)
        if not m:
            continue
        lab = labs.get(m.group(1))
        if lab is not None and not lab.stoppable(include_live):
            continue
        pids = topology.namespace_pids(ns)
        out.append(f"namespace {ns}" + (f" (pids {' '.join(map(str, pids))})" if pids else ""))
    for prefix, path in _orphan_paths():
        lab = labs.get(prefix)
        if lab is None or lab.stoppable(include_live):
            out.append(f"directory {path}")
    return out


def _orphan_paths() -> list[tuple[str, Path]]:
    """Per-namespace /etc/netns entries and scratch dirs, with the prefix they belong to."""
    found: list[tuple[str, Path]] = []
    if ETC_NETNS.is_dir():
        for path in ETC_NETNS.iterdir():
            m = topology.NS_RE.match(path.name)
            if m:
                found.append((m.group(1), path))
    for path in Path(tempfile.gettempdir()).glob("apviz-lab-avlb*"):
        prefix = path.name.removeprefix("apviz-lab-")
        if topology.PREFIX_RE.match(prefix):
            found.append((prefix, path))
    return found


def down(include_live: bool = False, timeout: float = 5.0) -> list[str]:
    """Remove leftovers of dead runs (with ``include_live``, also stop live ``apviz lab up`` runs).

    Returns problems that remain. A live CLI owner gets SIGTERM (it tears down its own lab) and
    ``timeout`` seconds before we remove its lab ourselves. Live labs of test runs are never touched.
    """
    labs = find_labs()
    if include_live:
        owners = [
            lab.owner for lab in labs if lab.live and lab.cli and lab.owner and lab.owner.pid != os.getpid()
        ]
        for owner in owners:
            with contextlib.suppress(ProcessLookupError):
                os.kill(owner.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(is_alive(o) for o in owners) and time.monotonic() < deadline:
            time.sleep(0.05)
        labs = find_labs()
    problems: list[str] = []
    prefixes: set[str] = set()
    for lab in labs:
        if not lab.stoppable(include_live):
            continue
        prefixes.add(lab.prefix)
        problems += teardown(lab.prefix, lab.run_dir if lab.run_dir.is_dir() else None)
    live = {lab.prefix for lab in labs if not lab.stoppable(include_live)}
    orphans = [m.group(1) for m in map(topology.NS_RE.match, topology.list_namespaces()) if m]
    orphans += [prefix for prefix, _ in _orphan_paths()]
    for prefix in orphans:
        if prefix not in prefixes and prefix not in live:
            prefixes.add(prefix)
            problems += teardown(prefix, None)
    return problems
