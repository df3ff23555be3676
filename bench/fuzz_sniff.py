"""Coverage-guided fuzzing of the first-packet decoders (apviz/sniff) with atheris (libFuzzer).

Each decoder is fuzzed in its own child process (libFuzzer runs one target per process) until it
has taken ``--execs`` inputs (default 100,000) or ``--seconds`` passed, starting from real samples
(OpenSSL ClientHellos, the RFC 9001/9369 and aioquic Initials, dnspython answers: the builders of
tests/test_sniff_*.py). The targets:

- ``tls_records`` / ``tls_handshake``: the two ClientHello entry points, plus the safe-text rule on
  whatever name comes out;
- ``quic``: an even first byte feeds the rest to ``parse_initials`` as a datagram; an odd one
  protects the rest as the plaintext of a valid client Initial first, so the frame reader and the
  ClientHello reader behind the AEAD get fuzzed too (random ciphertext never authenticates);
- ``dns``: ``split_tcp`` on the input, then ``parse_response`` on the input and on each message.

About 1 to 2 minutes on an idle 2-core machine (QUIC and DNS are the slow ones: AES-GCM per
input, dnspython's parser); ``--seconds`` caps each decoder, and a cap reached before ``--execs``
fails the run.

Anything but the documented exceptions (TlsError, QuicError, DnsWireError) is a crash; the first
one's input goes to ``--crash-dir``. Last stdout line: ``{"bench": "fuzz_sniff", "tls_execs": ...,
"quic_execs": ..., "dns_execs": ..., "crashes": 0, "pass": true, ...}``; exit status 1 on a crash.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGETS = ("tls_records", "tls_handshake", "quic", "dns")
MAX_LEN = {"tls_records": 4096, "tls_handshake": 4096, "quic": 1500, "dns": 2048}


def seeds(target: str) -> list[bytes]:
    if target.startswith("tls"):
        from tests.test_sniff_tls import handshake_of, samples

        records = samples()
        return records if target == "tls_records" else [handshake_of(r) for r in records]
    if target == "quic":
        from tests.test_sniff_quic import samples

        datagrams = samples()
        plain = [b"\x01\x06\x00\x05hello", b"\x01\x02\x05\x00\x01\x00\x01\x02\x06\x00\x02hi" + bytes(20)]
        return [b"\x00" + d for d in datagrams] + plain
    from tests.test_sniff_dns import framed, samples

    wires = samples()
    return [*wires, framed(*wires)]


def make_check(target: str) -> Callable[[bytes], None]:
    """The function one input goes through; only the decoder's documented exception is allowed."""
    from tests.test_sniff_tls import is_safe

    if target.startswith("tls"):
        from apviz.sniff.tls import TlsError, hello_from_handshake, hello_from_records

        decode = hello_from_records if target == "tls_records" else hello_from_handshake

        def check_tls(data: bytes) -> None:
            try:
                hello = decode(data)
            except TlsError:
                return
            if hello is not None:
                assert hello.server_name is None or is_safe(hello.server_name), hello.server_name
                assert all(a.isascii() and a.isprintable() for a in hello.alpn), hello.alpn

        return check_tls
    if target == "quic":
        from apviz.sniff.quic import QuicError, parse_initials
        from apviz.sniff.tls import TlsError, hello_from_handshake
        from tests.test_sniff_quic import protect

        def check_quic(data: bytes) -> None:
            if not data:
                return
            datagram = protect(data[1:], pn=data[0]) if data[0] & 1 else data[1:]
            try:
                packets = parse_initials(datagram)
            except QuicError:
                return
            for packet in packets:
                for _, crypto in packet.crypto:
                    with contextlib.suppress(TlsError):
                        hello_from_handshake(crypto)

        return check_quic
    from apviz.sniff.dnswire import DnsWireError, parse_response, split_tcp

    def check_dns(data: bytes) -> None:
        messages, used = split_tcp(data)
        assert 0 <= used <= len(data)
        for wire in [data, *messages]:
            try:
                answer = parse_response(wire)
            except DnsWireError:
                continue
            assert is_safe(answer.name) and all(is_safe(c) for c in answer.cnames), answer

    return check_dns


def child(target: str, execs: int, seconds: float, crash_dir: Path, corpus: Path) -> None:
    """Fuzz one target in this process and print its JSON line."""
    import atheris

    # dnspython's parsing core is instrumented too (its rdata types are not: 3x slower for little).
    include = ["apviz.sniff"] + (
        ["dns.message", "dns.name", "dns.wire", "dns.rdata"] if target == "dns" else []
    )
    with atheris.instrument_imports(include=include):
        check = make_check(target)
    stats = {"target": target, "execs": 0, "crashes": 0}
    first_crash: list[str] = []
    started = time.monotonic()

    def report() -> None:
        elapsed = time.monotonic() - started
        line = {**stats, "seconds": round(elapsed, 1), "execs_per_s": round(stats["execs"] / elapsed)}
        if first_crash:
            line["first_crash"] = first_crash[0]
        print(json.dumps(line), flush=True)

    def one_input(data: bytes) -> None:
        if stats["execs"] >= execs or time.monotonic() - started >= seconds:
            report()
            os._exit(1 if stats["crashes"] else 0)  # libFuzzer's own exit skips atexit and buffers
        stats["execs"] += 1
        try:
            check(data)
        except Exception:
            stats["crashes"] += 1
            if not first_crash:
                crash_dir.mkdir(parents=True, exist_ok=True)
                path = crash_dir / f"crash-{target}-{int(time.time())}.bin"
                path.write_bytes(data)
                first_crash.append(f"{path}: {traceback.format_exc(limit=4)}")

    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds(target)):
        (corpus / f"seed-{i}").write_bytes(seed)
    limits = [f"-max_total_time={int(seconds) + 60}", f"-max_len={MAX_LEN[target]}", "-print_final_stats=0"]
    atheris.Setup([sys.argv[0], *limits, str(corpus)], one_input)
    atheris.Fuzz()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execs", type=int, default=100_000, help="inputs per decoder (default 100,000)")
    parser.add_argument("--seconds", type=float, default=300, help="time cap per decoder (default 300)")
    parser.add_argument("--crash-dir", type=Path, default=Path(tempfile.gettempdir()) / "apviz-fuzz")
    parser.add_argument("--target", choices=TARGETS, help=argparse.SUPPRESS)  # the child's mode
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)  # the child's corpus directory
    args = parser.parse_args()
    if args.target:
        corpus = args.corpus or Path(tempfile.mkdtemp(prefix=f"apviz-fuzz-{args.target}-"))
        child(args.target, args.execs, args.seconds, args.crash_dir, corpus)
        return
    try:
        import atheris  # noqa: F401
    except ImportError:
        print(json.dumps({"bench": "fuzz_sniff", "skipped": "atheris is not installed"}))
        return

    results: dict[str, dict] = {}
    for target in TARGETS:
        cmd = [sys.executable, __file__, "--target", target, "--execs", str(args.execs)]
        cmd += ["--seconds", str(args.seconds), "--crash-dir", str(args.crash_dir)]
        with tempfile.TemporaryDirectory(prefix=f"apviz-fuzz-{target}-") as corpus:
            proc = subprocess.run([*cmd, "--corpus", corpus], capture_output=True, text=True, cwd=REPO)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if lines:
            results[target] = json.loads(lines[-1])
        else:  # the child died without reporting: that is a crash of the harness or the decoder
            results[target] = {"execs": 0, "crashes": 1, "first_crash": proc.stderr[-2000:]}
        print(json.dumps(results[target]), file=sys.stderr, flush=True)

    crashes = sum(r["crashes"] for r in results.values())
    execs = {t: results[t]["execs"] for t in TARGETS}
    line = {
        "bench": "fuzz_sniff",
        "tls_execs": min(execs["tls_records"], execs["tls_handshake"]),
        "tls_records_execs": execs["tls_records"],
        "tls_handshake_execs": execs["tls_handshake"],
        "quic_execs": execs["quic"],
        "dns_execs": execs["dns"],
        "crashes": crashes,
        "seconds": round(sum(r.get("seconds", 0) for r in results.values()), 1),
        "execs_per_s": {t: results[t].get("execs_per_s") for t in TARGETS},
        "pass": crashes == 0 and min(execs.values()) >= args.execs,
    }
    firsts = [r["first_crash"] for r in results.values() if "first_crash" in r]
    if firsts:
        line["first_crash"] = firsts[0]
    print(json.dumps(line))
    sys.exit(0 if line["pass"] else 1)


if __name__ == "__main__":
    main()
