"""Shared fixtures: labs (real namespaces, dnsmasq and conntrack) that are always torn down.

Tests marked ``lab`` need root and the lab's tools; elsewhere they are skipped with the reason, so
the unit tests still run on a laptop. Every lab is a context-managed :class:`apviz.lab.lab.Lab`
closed in fixture teardown, which pytest runs for failing tests and on Ctrl-C; SIGTERM is turned
into the same unwinding. Whatever still escapes (SIGKILL) is found by ``apviz lab down``.

A test skips only when something it needs is not installed here (root, a tool, a data set). Under
``CI=true``, where ``make test`` installs everything, every such skip is a failure instead: a set-up
step that went missing must not turn tests into silent skips. Elsewhere the run ends by saying how
many tests were skipped and why.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from apviz.lab.lab import Lab

LAB_TOOLS = ("ip", "dnsmasq", "busybox", "nft", "conntrack", "sysctl")


def _lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces)"
    missing = [tool for tool in LAB_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"lab tests need {', '.join(missing)} (make setup installs them)"
    return None


_MAIN_PID = os.getpid()


def in_ci() -> bool:
    """``CI`` set to anything but an empty, 0, false or no value (GitHub and GitLab set ``true``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (file, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    """Under CI every skip (a skipif mark, ``pytest.skip``, ``importorskip``) fails the test."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and not hasattr(report, "wasxfail") and in_ci():
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under CI=true, where make test installs everything: {_skip_reason(report)}"
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """End a person's run with the skips and their reasons: a skip is a test that did not run."""
    reasons = Counter(_skip_reason(r) for r in terminalreporter.stats.get("skipped", []))
    if not reasons:
        return
    total = sum(reasons.values())
    terminalreporter.section(f"{total} test{'s' if total > 1 else ''} skipped", sep="-", yellow=True)
    for reason, n in reasons.most_common():
        terminalreporter.write_line(f"{n:4d} x {reason}")


def _sigterm_unwinds(signum: int, frame: object) -> None:
    if os.getpid() != _MAIN_PID:
        # A fork of this process (pyroute2 forks helpers) must die as SIGTERM says, not unwind
        # into a second copy of the test run that would tear down the first one's labs.
        os._exit(128 + signum)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt("SIGTERM")


def pytest_configure(config: pytest.Config) -> None:
    # A killed test run must still tear its labs down: make SIGTERM unwind like Ctrl-C does.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_unwinds)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _lab_unavailable()
    if reason is None:
        return
    if in_ci():
        # In CI every part is installed by `make test`: a skipped lab test there would hide a failure.
        raise pytest.UsageError(f"CI must run the lab tests, but: {reason}")
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)


LabFactory = Callable[..., "Lab"]


@pytest.fixture
def lab_factory() -> Iterator[LabFactory]:
    """Build labs with any parameters (``lab_factory(phones=2, log="journal")``); all closed after."""
    from apviz.lab.lab import Lab

    labs: list[Lab] = []

    def make(**kwargs: object) -> Lab:
        kwargs.setdefault("traffic", False)
        lab = Lab(**kwargs)  # type: ignore[arg-type]
        labs.append(lab)
        return lab.start()

    yield make
    errors = []
    for lab in reversed(labs):
        try:
            lab.close()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def lab(lab_factory: LabFactory) -> Lab:
    """A fresh quiet lab with three phones (about a quarter of a second to build)."""
    return lab_factory(phones=3)


@pytest.fixture(scope="module")
def module_lab() -> Iterator[Lab]:
    """One quiet three-phone lab shared by a module's read-only tests."""
    from apviz.lab.lab import Lab

    with Lab(phones=3, traffic=False) as shared:
        yield shared
