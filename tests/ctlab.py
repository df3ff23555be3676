"""A throw-away network namespace where conntrack tracks traffic, for the conntrack tests and bench.

Everything created here is named ``avct`` + 4 random hex digits and removed on exit, even after a
failure. Traffic stays inside the namespace: 198.18.0.0/15 (the "internet" of the lab) is routed
as local addresses on its loopback, so a UDP ``sendto`` to any of them creates one conntrack entry
and goes nowhere else.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from types import TracebackType

PREFIX = "avct"

FLOOD_SCRIPT = """
import socket, struct, sys
n, base = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ntoa, pack, send = socket.inet_ntoa, struct.pack, s.sendto
for i in range(base, base + n):  # entry i: address 198.18.0.1 + i // 250, port 1024 + i % 250
    send(b"x", (ntoa(pack("!I", 0xC6120001 + i // 250)), 1024 + i % 250))
"""


def run(*cmd: str, check: bool = True, input: str | None = None) -> str:
    """Run a command, return its stdout; a failure shows the command and its stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class CtNamespace:
    """``with CtNamespace() as ns:`` a namespace with conntrack on, counters and timestamps too."""

    acct: bool = True
    timestamp: bool = True
    name: str = field(default_factory=lambda: PREFIX + secrets.token_hex(2))

    def __enter__(self) -> CtNamespace:
        run("ip", "netns", "add", self.name)
        try:
            self.setup()
        except BaseException:
            self.delete()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.delete()

    def setup(self) -> None:
        self.ip("link", "set", "lo", "up")
        self.ip("route", "add", "local", "198.18.0.0/15", "dev", "lo")
        self.sysctl("net.netfilter.nf_conntrack_acct", int(self.acct))
        self.sysctl("net.netfilter.nf_conntrack_timestamp", int(self.timestamp))
        self.sysctl("net.netfilter.nf_conntrack_udp_timeout", 600)  # outlive a slow test
        # conntrack only tracks a namespace once some rule needs it
        self.nft("add table inet avct")
        self.nft("add chain inet avct out { type filter hook output priority 0 ; }")
        self.nft("add rule inet avct out ct state new counter")

    def delete(self) -> None:
        run("ip", "netns", "del", self.name, check=False)

    def exec(self, *cmd: str, check: bool = True, input: str | None = None) -> str:
        return run("ip", "netns", "exec", self.name, *cmd, check=check, input=input)

    def ip(self, *args: str) -> str:
        return run("ip", "-n", self.name, *args)

    def sysctl(self, key: str, value: object) -> None:
        self.exec("sysctl", "-q", "-w", f"{key}={value}")

    def nft(self, command: str) -> None:
        self.exec("nft", command)

    def python(self, code: str, *args: str) -> str:
        return self.exec(sys.executable, "-c", code, *args)

    def python_cmd(self, code: str, *args: str) -> list[str]:
        """The command line to run ``code`` in the namespace (for asyncio subprocesses)."""
        return ["ip", "netns", "exec", self.name, sys.executable, "-c", code, *args]

    def flood(self, n: int, base: int = 0) -> None:
        """Create ``n`` UDP conntrack entries (distinct for distinct ``base`` ranges)."""
        self.python(FLOOD_SCRIPT, str(n), str(base))

    def flood_cmd(self, n: int, base: int = 0) -> list[str]:
        return self.python_cmd(FLOOD_SCRIPT, str(n), str(base))

    def conntrack(self, *args: str) -> str:
        return self.exec("conntrack", *args, check=False)

    def listing(self) -> dict[int, CtLine]:
        """``conntrack -L -o extended,id`` parsed, by id: the reference the decoder must match."""
        out = self.exec("conntrack", "-L", "-f", "ipv4", "-o", "extended,id")
        out += self.exec("conntrack", "-L", "-f", "ipv6", "-o", "extended,id")
        lines = [parse_line(line) for line in out.splitlines() if line.strip()]
        return {line.id: line for line in lines}


@dataclass
class CtTuple:
    proto: int
    src: str
    dst: str
    sport: int = 0
    dport: int = 0
    icmp_id: int | None = None
    packets: int | None = None
    bytes: int | None = None


@dataclass
class CtLine:
    """One line of ``conntrack -L -o extended,id``."""

    family: int
    proto: int
    timeout: int
    state: str | None
    orig: CtTuple
    reply: CtTuple
    flags: set[str]
    mark: int = 0
    zone: int = 0
    id: int = 0
    extra: dict[str, str] = field(default_factory=dict)


_FAMILY = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}


def parse_line(line: str) -> CtLine:
    words = line.split()
    family, proto, timeout = _FAMILY[words[0]], int(words[3]), int(words[4])
    rest = words[5:]
    state = None
    if rest and "=" not in rest[0] and not rest[0].startswith("["):
        state, rest = rest[0], rest[1:]
    tuples: list[dict[str, str]] = []
    top: dict[str, str] = {}
    flags: set[str] = set()
    for word in rest:
        if word.startswith("["):
            flags.add(word.strip("[]"))
            continue
        key, _, value = word.partition("=")
        if key == "src":
            tuples.append({})
        in_tuple = key in _TUPLE_KEYS or (key == "id" and proto in (1, 58))
        target = tuples[-1] if tuples and in_tuple and key not in tuples[-1] else top
        target[key] = value
    orig, reply = (_tuple(proto, t) for t in tuples[:2])
    return CtLine(
        family=family,
        proto=proto,
        timeout=timeout,
        state=state,
        orig=orig,
        reply=reply,
        flags=flags,
        mark=int(top.get("mark", 0)),
        zone=int(top.get("zone", 0)),
        id=int(top["id"]),
        extra=top,
    )


_TUPLE_KEYS = {"src", "dst", "sport", "dport", "type", "code", "packets", "bytes"}


def _tuple(proto: int, kv: dict[str, str]) -> CtTuple:
    def num(key: str) -> int | None:
        return int(kv[key]) if key in kv else None

    return CtTuple(
        proto=proto,
        src=kv["src"],
        dst=kv["dst"],
        sport=num("sport") or 0,
        dport=num("dport") or 0,
        icmp_id=num("id"),
        packets=num("packets"),
        bytes=num("bytes"),
    )


def ids_from_conntrack(text: str) -> set[int]:
    return {int(m) for m in re.findall(r"\bid=(\d+)", text)}


def is_root() -> bool:
    return os.geteuid() == 0
