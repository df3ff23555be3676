"""The packet path in real namespaces: nft rules, NFLOG, decoders, events, and the table's life.

A phone of a real lab opens TLS (whole and split over segments, with a hostile server name), QUIC
(aioquic writes the Initial) and plain DNS (UDP and TCP) to the lab's internet; apviz's capture
source runs on the gateway namespace and must report each connection with the right tuple and
name. The table must be gone at stop, a killed run's table replaced at the next start, and
forwarding must go on with nobody listening.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apviz.events import PrivateDnsRefused, ResolverAnswer, ServerName, ServerNameVia, SourceError
from apviz.lab.lab import Lab
from apviz.sources.capture import (
    TABLE,
    CaptureRules,
    CaptureTable,
    conntrack_accounting,
    nft_argv,
    table_exists,
)
from apviz.sources.nflog import NflogSocket
from apviz.sources.packets import parse_ip
from tests.livelab import LiveLab

pytestmark = pytest.mark.lab

SERVER = "198.18.7.7"  # any 198.18 address reaches the lab's internet server
ROOT = Path(__file__).resolve().parents[1]

# Scripts run inside a phone's namespace; each prints one JSON line with its socket's own address.
TLS_CLIENT = """
import json, socket, ssl, sys, time
host, port, name, pieces = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
raw_name = sys.argv[5] if len(sys.argv) > 5 else ""
ctx = ssl.create_default_context()
bio_in, bio_out = ssl.MemoryBIO(), ssl.MemoryBIO()
conn = ctx.wrap_bio(bio_in, bio_out, server_hostname=name)
try:
    conn.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = bio_out.read()
if raw_name:  # a hostile name of the same length, written over the real one
    hello = hello.replace(name.encode(), raw_name.encode("latin-1"))
s = socket.create_connection((host, port), timeout=5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
sport = s.getsockname()[1]
step = -(-len(hello) // pieces)
try:  # the lab's line server on 443 answers ERR to a hello and closes: the hello has left by then
    for i in range(0, len(hello), step):
        s.send(hello[i : i + step])
        if pieces > 1:
            time.sleep(0.05)  # each piece its own segment (the sink on SINK_PORT keeps reading)
    s.recv(100)
except OSError:
    pass
print(json.dumps({"sport": sport, "len": len(hello)}))
s.close()
"""

SINK_PORT = 24443  # a port no lab server uses
SINK = """
import socket, sys, threading
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])), backlog=64)
print("ready", flush=True)
def drain(c):
    with c:
        while c.recv(65536):
            pass
while True:
    c, _ = srv.accept()
    threading.Thread(target=drain, args=(c,), daemon=True).start()
"""


@pytest.fixture
def sink(lab_factory: Any) -> Iterator[Lab]:
    """A one-phone lab whose internet also runs a TCP sink on SINK_PORT (reads and discards)."""
    lab = lab_factory(phones=1)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.internet_ns, sys.executable, "-c", SINK, str(SINK_PORT)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield lab
    finally:
        proc.kill()  # our own child
        proc.wait()


QUIC_CLIENT = """
import json, socket, sys, time
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
host, name, version = sys.argv[1], sys.argv[2], int(sys.argv[3], 16)
config = QuicConfiguration(is_client=True, server_name=name, alpn_protocols=["h3"])
config.supported_versions = [version]
conn = QuicConnection(configuration=config)
conn.connect((host, 443), now=time.time())
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((host, 443))
for data, _addr in conn.datagrams_to_send(now=time.time()):
    s.send(data)
print(json.dumps({"sport": s.getsockname()[1]}))
"""

DNS_CLIENT = """
import json, socket, sys
import dns.message, dns.query
server, name, proto = sys.argv[1], sys.argv[2], sys.argv[3]
q = dns.message.make_query(name, "A")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
s.settimeout(5)
if proto == "udp":
    s.connect((server, 53))
    r = dns.query.udp(q, server, sock=s, timeout=5)
else:
    s.connect((server, 53))
    r = dns.query.tcp(q, server, sock=s, timeout=5)
addresses = [str(a) for rr in r.answer if rr.rdtype == 1 for a in rr]
print(json.dumps({"sport": s.getsockname()[1], "answer": addresses}))
"""


DOT_CLIENT = """
import json, socket, sys
try:
    socket.create_connection((sys.argv[1], 853), timeout=5)
    print(json.dumps({"error": None}))
except OSError as exc:
    print(json.dumps({"error": type(exc).__name__}))
"""


def run_in_phone(lab: Lab, script: str, *args: str) -> dict[str, Any]:
    proc = lab.exec_in(
        lab.phones[0].ns,
        ["env", f"PYTHONPATH={ROOT}", sys.executable, "-c", script, *args],
        check=False,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


async def wait_event(live: LiveLab, kind: type, timeout: float = 5.0, **fields: object) -> Any:
    def found() -> Any:
        for event in live.events:
            if isinstance(event, kind) and all(getattr(event, k) == v for k, v in fields.items()):
                return event
        return None

    return await live.wait_for(found, timeout, f"{kind.__name__} {fields}")


def world_name(lab: Lab) -> str:
    """A name the lab's upstream resolver answers with addresses (no CNAME: the test compares them)."""
    return sorted(lab.world.hosts)[0]


def test_names_from_tls_quic_and_outside_dns(sink: Lab) -> None:
    asyncio.run(names_from_tls_quic_and_outside_dns(sink))


async def names_from_tls_quic_and_outside_dns(lab: Lab) -> None:
    phone = lab.phones[0].ip
    counters: list[Any] = []
    async with LiveLab(lab, capture=True, counters=counters) as live:
        assert live.pipeline.sources[-1].name == "capture"
        assert table_exists(lab.gateway_ns)

        whole = await live.call(run_in_phone, lab, TLS_CLIENT, SERVER, "443", "whole.example.org", "1")
        event = await wait_event(live, ServerName, sport=whole["sport"])
        assert event == ServerName(
            event.ts, phone, whole["sport"], SERVER, 443, 6, "whole.example.org", ServerNameVia.TLS, False, ()
        )

        before = capture_counts(counters)["tcp_segments"]
        split = await live.call(
            run_in_phone, lab, TLS_CLIENT, SERVER, str(SINK_PORT), "split.example.org", "5"
        )
        event = await wait_event(live, ServerName, sport=split["sport"])
        assert (event.client, event.server, event.dport, event.name) == (
            phone,
            SERVER,
            SINK_PORT,
            "split.example.org",
        )
        assert capture_counts(counters)["tcp_segments"] - before >= 5  # the hello came in 5 segments or more

        hostile = await live.call(
            run_in_phone,
            lab,
            TLS_CLIENT,
            SERVER,
            "443",
            "aaaaaaaaaaaaaaaaaaaa.example",
            "1",
            "<b>x</b>\x1b\xe9.evil.example.abcd",  # 28 bytes, as long as the real name
        )
        event = await wait_event(live, ServerName, sport=hostile["sport"])
        assert event.name == "\\x3cb\\x3ex\\x3c\\x2fb\\x3e\\x1b\\xe9.evil.example.abcd"

        for version in ("1", "6b3343cf"):  # QUIC v1 and v2
            sent = await live.call(
                run_in_phone, lab, QUIC_CLIENT, SERVER, f"quic{version[:2]}.example.org", version
            )
            event = await wait_event(live, ServerName, sport=sent["sport"])
            assert (event.client, event.server, event.dport, event.proto, event.via) == (
                phone, SERVER, 443, 17, ServerNameVia.QUIC,
            )  # fmt: skip
            assert event.name == f"quic{version[:2]}.example.org" and event.alpn == ("h3",)

        name = world_name(lab)
        for proto in ("udp", "tcp"):
            asked = await live.call(run_in_phone, lab, DNS_CLIENT, lab.upstream_dns, name, proto)
            assert asked["answer"], f"the lab's upstream resolver did not answer {name}"
            answer = await wait_event(live, ResolverAnswer, name=name, resolver=lab.upstream_dns)
            assert answer.client == phone
            assert sorted(answer.addresses) == sorted(asked["answer"])
            live.events.remove(answer)  # the TCP answer must be a second event

        counts = capture_counts(counters)
        assert counts["hellos"] >= 3 and counts["quic_hellos"] == 2 and counts["dns_answers"] >= 2
        assert counts.get("malformed", 0) == 0 and counts.get("enobufs", 0) == 0
    assert not table_exists(lab.gateway_ns), "the capture table must be removed at stop"


def capture_counts(counters: list[Any]) -> dict[str, int]:
    for read in counters:
        figures = read()
        if "capture_packets" in figures:
            return {k.removeprefix("capture_"): v for k, v in figures.items()}
    raise AssertionError("no capture counters registered")


KILLABLE = """
import asyncio, sys
from apviz.sources.packets import PacketSource
async def main():
    async for event in PacketSource(sys.argv[1], 7400):
        print(event, flush=True)
print("starting", flush=True)
asyncio.run(main())
"""


def test_a_killed_runs_table_is_replaced_at_start_and_forwarding_never_needs_apviz(lab_factory: Any) -> None:
    lab = lab_factory(phones=1)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, lab.gateway_ns],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while not table_exists(lab.gateway_ns):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the capture table never appeared"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert table_exists(lab.gateway_ns), "a killed run leaves its table behind (what the next start cleans)"

    # Nobody listens on the group now: the logged packets must still be forwarded, at full speed.
    result = lab.phone_connect(lab.phones[0], address=SERVER, nbytes=20000, port=80)
    assert result.received == 20000

    # A marker rule shows whether the next start really replaced the table rather than kept it.
    marker = f"add chain inet {TABLE} leftover_marker\n"
    subprocess.run(nft_argv(lab.gateway_ns, "-f", "-"), input=marker, text=True, check=True)

    async def run_once() -> None:
        async with LiveLab(lab, capture=True) as live:
            listing = subprocess.run(
                nft_argv(lab.gateway_ns, "list", "table", "inet", TABLE),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "leftover_marker" not in listing and "apviz-tls" in listing
            sent = await live.call(run_in_phone, lab, TLS_CLIENT, SERVER, "443", "after.example.org", "1")
            await wait_event(live, ServerName, sport=sent["sport"], name="after.example.org")

    asyncio.run(run_once())
    assert not table_exists(lab.gateway_ns)


def test_refused_private_dns_packets_become_events(lab_factory: Any) -> None:
    """The network policy logs refused port-853 packets to the same group with its own prefix; a
    stand-in rule here writes them as it will (its real rules are tested with the policy)."""
    asyncio.run(refused_private_dns(lab_factory(phones=1)))


async def refused_private_dns(lab: Lab) -> None:
    rule = (
        "table inet avlbtest_policy {\n chain forward {\n  type filter hook forward priority filter - 10;\n"
        '  tcp dport 853 log prefix "apviz-dot-refused" group 7400 reject with tcp reset\n }\n}\n'
    )
    subprocess.run(nft_argv(lab.gateway_ns, "-f", "-"), input=rule, text=True, check=True)
    async with LiveLab(lab, capture=True) as live:
        refused = await live.call(run_in_phone, lab, DOT_CLIENT, "198.18.0.99")
        assert refused["error"] == "ConnectionRefusedError"
        event = await wait_event(live, PrivateDnsRefused, server="198.18.0.99")
        assert (event.client, event.proto, event.dport) == (lab.phones[0].ip, 6, 853)


def test_without_conntrack_accounting_the_table_turns_it_on_until_stop(
    lab_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The rules count packets with conntrack's accounting. With the sysctl off, loading them turns
    it on (the kernel does so for ``ct packets`` rules): new connections are read as usual, a
    connection older than the table is not (no counters: never every packet), and apviz puts the
    sysctl back at stop."""
    lab = lab_factory(phones=1)
    lab.exec_in(lab.gateway_ns, ["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_acct=0"])
    # A connection opened before the table, whose hello goes out only once the table is there.
    late = TLS_CLIENT.replace("sport = s.getsockname()[1]", "sport = s.getsockname()[1]; time.sleep(2)")
    argv = [
        "ip",
        "netns",
        "exec",
        lab.phones[0].ns,
        sys.executable,
        "-c",
        late,
        SERVER,
        "443",
        "old.example",
        "1",
    ]
    old = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)  # connected by now
    sock = NflogSocket(7400, lab.gateway_ns)
    table = CaptureTable(lab.gateway_ns, CaptureRules())
    try:
        with caplog.at_level(logging.WARNING, logger="apviz.sources.capture"):
            table.install()
        assert "nf_conntrack_acct was 0" in caplog.text
        assert conntrack_accounting(lab.gateway_ns) is True
        new = run_in_phone(lab, TLS_CLIENT, SERVER, "443", "acct.example.org", "1")
        out, _ = old.communicate(timeout=10)
        old_sport = json.loads(out.strip().splitlines()[-1])["sport"]
        time.sleep(0.3)  # past the kernel's batching timeout
        sports = {parse_ip(p.payload).sport for p in sock.read()}
        assert new["sport"] in sports and old_sport not in sports
    finally:
        if old.poll() is None:
            old.kill()  # our own child
        old.wait()
        sock.close()
        table.remove()
    assert conntrack_accounting(lab.gateway_ns) is False


def test_without_nft_the_rest_of_apviz_runs_and_says_why(
    lab_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    lab = lab_factory(phones=1)

    async def main() -> None:
        async with LiveLab(lab, capture=True) as live:  # ready although the capture cannot start
            error = await wait_event(live, SourceError, source="capture")
            assert "apt install nftables" in error.message
            sent = await live.call(
                lab.phone_connect, lab.phones[0], address=SERVER, nbytes=100, hold=3.0, port=80
            )
            await live.wait_for(
                lambda: live.flow(sent.src, sent.sport, dport=80), 5, "the flow from conntrack"
            )

    with monkeypatch.context() as m:
        m.setenv("PATH", str(tmp_path))  # an empty directory: no nft
        asyncio.run(main())
    assert not table_exists(lab.gateway_ns)


def test_a_group_taken_by_another_program_is_reported(lab_factory: Any) -> None:
    lab = lab_factory(phones=1)
    other = NflogSocket(7400, lab.gateway_ns)  # ulogd, or another apviz, got there first

    async def main() -> None:
        async with LiveLab(lab, capture=True) as live:
            error = await wait_event(live, SourceError, source="capture")
            assert "NFLOG group 7400" in error.message and "already taken" in error.message

    try:
        asyncio.run(main())
    finally:
        other.close()
    assert not table_exists(lab.gateway_ns)
