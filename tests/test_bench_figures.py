"""The benchmarks' own checks can fail: the strict /metrics reader, the served process's logging,
``make bench``'s verdict over all benches, the fuzz bench without atheris, and which conntrack
entries the 100k-flow figure counts. (The soak's liveness: tests/test_soak_lab.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import pytest

from bench import _all
from bench._common import parse_metrics
from bench.soak import ERROR_LINE
from bench.steady import FLOOD_ENTRY

ROOT = Path(__file__).resolve().parents[1]
PAGE = """# HELP apviz_resyncs_total Conntrack resynchronisations after lost events
# TYPE apviz_resyncs_total counter
apviz_resyncs_total 3.0
apviz_flows 12.0
"""


def test_an_unknown_metric_name_raises_instead_of_reading_zero():
    figures = parse_metrics(PAGE)
    assert figures["apviz_resyncs_total"] == 3.0 and figures["apviz_flows"] == 12.0
    with pytest.raises(KeyError, match="apviz_resyncs_total"):  # the name steady.py used to read
        figures["apviz_resyncs"]
    with pytest.raises(TypeError):
        figures.get("apviz_resyncs", 0)


SERVED = """
import asyncio, json, logging, sys
import apviz.server.run
import bench.steady

async def fake_serve(cfg):  # what a failing view build does: log.exception in apviz.service
    logging.getLogger("apviz.service").error("building the view failed; the last view stays on screen")

apviz.server.run.serve = fake_serve
if sys.argv[2] == "bare":  # what the served bench did before: no handler at all
    bench.steady.serve_logging = lambda: None
bench.steady.serve(__import__("pathlib").Path(sys.argv[1]))
"""


def test_an_error_in_the_served_bench_process_is_seen_by_the_error_scan(tmp_path):
    from apviz.config import Config

    conf = tmp_path / "apviz.json"
    conf.write_text(json.dumps(asdict(Config())))

    def stderr(mode: str) -> str:
        argv = [sys.executable, "-c", SERVED, str(conf), mode]
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
        return proc.stderr

    logged = stderr("apviz")
    assert "ERROR apviz.service: building the view failed" in logged
    assert ERROR_LINE.search(logged)
    # Without the set-up, Python's last-resort handler prints the bare message: the scan misses it.
    bare = stderr("bare")
    assert "building the view failed" in bare and not ERROR_LINE.search(bare)


def test_make_bench_runs_every_bench_shows_every_figure_and_fails_at_the_end(tmp_path, monkeypatch, capsys):
    benches = {
        "a_ok": 'print(\'{"bench": "a_ok", "pass": true}\')',
        "b_missed": 'print(\'{"bench": "b_missed", "cpu_pct": 12.5, "pass": false}\')',
        "c_crashed": "raise SystemExit(2)",
        "d_figures": 'print(\'{"bench": "d_figures", "per_s": 9}\')',
        "e_ok_after_failures": 'print(\'{"bench": "e_ok_after_failures", "pass": true}\')',
        "_helper": "raise SystemExit('a helper is not a bench')",
    }
    for name, code in benches.items():
        (tmp_path / f"{name}.py").write_text(code + "\n")
    monkeypatch.setattr(_all, "BENCH", tmp_path)
    assert _all.main([]) == 1
    out, err = capsys.readouterr()
    shown = [json.loads(line)["bench"] for line in out.splitlines() if line.startswith("{")]
    assert shown == ["a_ok", "b_missed", "d_figures", "e_ok_after_failures"]  # every figure
    assert "failed: b_missed, c_crashed" in err
    assert _all.main(["a_ok", "d_figures"]) == 0


def test_the_fuzz_bench_fails_without_atheris():
    code = "import sys, runpy; sys.modules['atheris'] = None; sys.argv.pop(0); "
    code += "runpy.run_path(sys.argv[0], run_name='__main__')"
    argv = [sys.executable, "-c", code, str(ROOT / "bench" / "fuzz_ctdecode.py"), "--seconds", "1"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "atheris is not installed" in proc.stderr
    assert "skipped" not in proc.stdout


def test_the_100k_figure_counts_only_the_flood_entries():
    table = textwrap.dedent(
        """\
        udp      17 597 src=10.77.1.140 dst=198.18.0.1 sport=41000 dport=20000 [UNREPLIED] src=198.18.0.1 dst=10.77.255.2 sport=20000 dport=41000 mark=0 use=1
        udp      17 597 src=10.77.1.140 dst=198.18.1.144 sport=41000 dport=20249 [UNREPLIED] src=198.18.1.144 dst=10.77.255.2 sport=20249 dport=41000 mark=0 use=1
        udp      17 28 src=10.77.1.140 dst=10.77.0.1 sport=50123 dport=53 src=10.77.0.1 dst=10.77.1.140 sport=53 dport=50123 mark=0 use=1
        udp      17 590 src=10.77.1.140 dst=198.18.3.7 sport=41001 dport=443 [UNREPLIED] src=198.18.3.7 dst=10.77.255.2 sport=443 dport=41001 mark=0 use=1
        """  # noqa: E501
    )
    assert len(FLOOD_ENTRY.findall(table)) == 2  # not the DNS lookup, not the QUIC attempt
