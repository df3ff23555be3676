"""The suite's skip policy (tests/conftest.py): under ``CI=true`` a skip fails; else it is summed up.

Run in a child pytest with the real conftest, so these are the hooks ``make test`` uses.
"""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py").read_text()
SKIPPING = """
import shutil
import pytest

@pytest.mark.skipif(shutil.which("no-such-tool-xyz") is None, reason="no-such-tool-xyz is not installed")
def test_marked():
    pass

def test_called():
    pytest.skip("the data set is not installed")

def test_imported():
    pytest.importorskip("no_such_module_xyz")

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False

def test_runs():
    pass
"""


@pytest.fixture
def child(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_child=SKIPPING)
    return pytester


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_every_skip_fails(child, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    result = child.runpytest_subprocess("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) == 0, result.stdout.str()
    assert outcomes.get("errors", 0) + outcomes.get("failed", 0) == 3, result.stdout.str()
    assert outcomes["passed"] == 1 and outcomes["xfailed"] == 1
    result.stdout.fnmatch_lines(["*skipped under CI=true*no-such-tool-xyz is not installed*"])
    assert result.ret != 0


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_elsewhere_the_run_ends_with_the_skips_and_why(child, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    result = child.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 0
    assert result.parseoutcomes()["skipped"] == 3
    result.stdout.fnmatch_lines(
        [
            "*- 3 tests skipped -*",
            "*1 x no-such-tool-xyz is not installed",
            "*1 x the data set is not installed",
            "*1 x could not import 'no_such_module_xyz'*",
        ],
        consecutive=False,
    )
