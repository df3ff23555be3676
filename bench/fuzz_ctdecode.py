"""Coverage-guided fuzzing of the ctnetlink decoder with atheris (libFuzzer) for N seconds.

The property tests (tests/test_fuzz_parsers.py) try shapes a person thought of; libFuzzer mutates
towards new branches of the decoder by itself. Every input goes through a fresh decoder twice (so
the learned-template fast path runs too) and through both entry points; anything escaping the
decoder, or the two entry points disagreeing, is a crash. Crashes are counted and the run goes on;
the first one's input is written to ``--crash-dir`` so it can become a regression test.

Prints one JSON line, ``{"bench": "fuzz_ctdecode", "execs": ..., "crashes": 0, "pass": ...}``;
the exit status is 1 when anything crashed. atheris is in the ``dev`` extra (``make setup``
installs it; a binary wheel, no clang needed on x86_64). Without it the bench fails (exit status 2)
rather than report a fuzzing run that did not happen.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def seeds() -> list[bytes]:
    """Well-formed messages to start from: the synthetic ones the unit tests build."""
    from tests.test_ctdecode import sample_messages

    messages = sample_messages()
    return [*messages, b"".join(messages)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30, help="how long to fuzz (default 30)")
    parser.add_argument("--crash-dir", type=Path, default=Path(tempfile.gettempdir()) / "apviz-fuzz")
    args = parser.parse_args()
    try:
        import atheris
    except ImportError:
        sys.exit("fuzz_ctdecode: atheris is not installed (it is in the dev extra: make setup)")

    with atheris.instrument_imports(include=["apviz.sources.ctdecode"]):
        from apviz.sources.ctdecode import CtDecoder

    stats = {"execs": 0, "crashes": 0, "flows": 0, "errors": 0}
    first_crash: list[str] = []
    started = time.monotonic()

    def one_input(data: bytes) -> None:
        if time.monotonic() - started >= args.seconds:
            report()
            os._exit(1 if stats["crashes"] else 0)  # libFuzzer's own exit skips atexit and buffers
        stats["execs"] += 1
        try:
            decoder = CtDecoder()
            n = len(decoder.decode(data))
            stats["errors"] += decoder.errors
            stats["flows"] += n
            for _ in range(2):
                if len(decoder.decode(data)) != n or len(decoder.decode_flows(memoryview(data))) != n:
                    raise AssertionError("decode and decode_flows disagree on the same bytes")
        except Exception:
            stats["crashes"] += 1
            if not first_crash:
                args.crash_dir.mkdir(parents=True, exist_ok=True)
                path = args.crash_dir / f"crash-{int(time.time())}.bin"
                path.write_bytes(data)
                first_crash.append(f"{path}: {traceback.format_exc(limit=3)}")

    def report() -> None:
        elapsed = time.monotonic() - started
        line = {
            "bench": "fuzz_ctdecode",
            "seconds": round(elapsed, 1),
            **stats,
            "execs_per_s": round(stats["execs"] / elapsed) if elapsed else 0,
            "pass": stats["crashes"] == 0 and stats["execs"] > 0,
        }
        if first_crash:
            line["first_crash"] = first_crash[0]
        print(json.dumps(line), flush=True)

    corpus = Path(tempfile.mkdtemp(prefix="apviz-fuzz-corpus-"))
    for i, seed in enumerate(seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)
    limits = [f"-max_total_time={args.seconds + 60}", "-max_len=4096", "-print_final_stats=0"]
    fuzzer_args = [sys.argv[0], *limits]
    atheris.Setup([*fuzzer_args, str(corpus)], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
