"""A simulated phone: run as ``python -m apviz.lab.phone`` inside the phone's network namespace.

The lab starts one such process per phone and keeps it for the phone's life, because tests ask a
phone to resolve and connect hundreds of times and a fresh interpreter each time would dominate the
run. Commands arrive as JSON lines on stdin and answers leave as JSON lines on stdout; the process
exits when stdin closes, so it cannot outlive the lab. Optionally a thread plays the phone's persona
(``data/lab/personas.toml``): real DNS queries through the gateway, then connections moving bytes.

DNS goes through dnspython to the gateway with a source port we choose, so a test can match the
exact ``client/port`` dnsmasq logs for that query.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import random
import socket
import sys
import threading
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

DEFAULT_PERSONAS = Path(__file__).resolve().parents[2] / "data" / "lab" / "personas.toml"


class PersonaError(ValueError):
    """The personas file is inconsistent; the message names the persona and habit."""


# --------------------------------------------------------------------------------------------------
# Plain data shared by the lab (parent) and this program (child)


@dataclass(slots=True, eq=False)
class Phone:
    """One simulated device as the lab sees it."""

    index: int
    ns: str
    hostname: str  # the lab's label for it (also the DHCP hostname unless dhcp_name says otherwise)
    mac: str
    persona: str | None
    state_dir: Path
    dhcp_name: str | None = None  # raw name sent in DHCP option 12 (may be hostile on purpose)
    ip: str | None = None

    def __repr__(self) -> str:
        return f"Phone({self.hostname!r}, ns={self.ns!r}, ip={self.ip!r}, mac={self.mac!r})"


@dataclass(frozen=True, slots=True)
class ResolveResult:
    """One DNS query a phone sent to the gateway, and what came back."""

    name: str
    qtype: str
    rcode: str  # "NOERROR", "NXDOMAIN", ...
    addresses: list[str]
    cnames: list[str]  # the chain after ``name``, in answer order
    ttl: int | None
    client: str  # the phone's address the query left from
    sport: int  # its UDP source port (dnsmasq logs "client/sport" with log-queries=extra)
    server: str


@dataclass(frozen=True, slots=True)
class ConnectResult:
    """One connection a phone made: what it resolved, where it went and what moved."""

    name: str | None
    address: str
    port: int
    sport: int  # local port: with the phone's address, the flow's original source in conntrack
    proto: str  # "tcp" or "udp"
    sent: int  # bytes written by the phone (request lines included)
    received: int
    elapsed: float
    src: str  # the phone's address
    resolve: ResolveResult | None = None


@dataclass(frozen=True, slots=True)
class Habit:
    what: str
    weight: float
    names: tuple[str, ...]
    down: tuple[int, int]
    up: tuple[int, int]
    burst: tuple[int, int] = (1, 1)
    proto: str = "tcp"
    port: int = 443


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    label: str
    think: tuple[float, float]
    habits: tuple[Habit, ...]

    @property
    def names(self) -> set[str]:
        return {n for h in self.habits for n in h.names}


@dataclass(slots=True)
class Personas:
    personas: dict[str, Persona] = field(default_factory=dict)
    default_mix: list[str] = field(default_factory=list)

    def pick(self, index: int) -> str:
        """The persona the default mix gives the ``index``-th phone (1-based)."""
        mix = self.default_mix or sorted(self.personas)
        return mix[(index - 1) % len(mix)]


def _range(raw: dict, key: str, default: tuple[float, float] | None, where: str, kind: type) -> tuple:
    value = raw.get(key, default)
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) for v in value)
        or not 0 <= value[0] <= value[1]
    ):
        raise PersonaError(f"{where}: {key} must be [low, high] with 0 <= low <= high, not {value!r}")
    return (kind(value[0]), kind(value[1]))


def parse_personas(data: dict, known_names: set[str] | None = None) -> Personas:
    """Validate parsed TOML; with ``known_names`` every habit name must exist in the world."""
    out = Personas(default_mix=list(data.get("default_mix", [])))
    for pname, raw in data.get("persona", {}).items():
        habits = []
        for i, h in enumerate(raw.get("habit", [])):
            where = f"persona {pname} habit #{i + 1} ({h.get('what', '?')})"
            names = tuple(h.get("names", []))
            if not names:
                raise PersonaError(f"{where}: no names")
            if known_names is not None:
                unknown = [n for n in names if n not in known_names]
                if unknown:
                    raise PersonaError(f"{where}: names not in world.toml: {', '.join(unknown)}")
            proto = h.get("proto", "tcp")
            if proto not in ("tcp", "udp"):
                raise PersonaError(f"{where}: proto must be tcp or udp, not {proto!r}")
            habits.append(
                Habit(
                    what=str(h.get("what", "")),
                    weight=float(h.get("weight", 1)),
                    names=names,
                    down=_range(h, "down", (0, 0), where, int),
                    up=_range(h, "up", (0, 0), where, int),
                    burst=_range(h, "burst", (1, 1), where, int),
                    proto=proto,
                    port=int(h.get("port", 443)),
                )
            )
        if not habits:
            raise PersonaError(f"persona {pname}: no habits")
        think = _range(raw, "think", (1.0, 5.0), f"persona {pname}", float)
        out.personas[pname] = Persona(pname, str(raw.get("label", pname)), think, tuple(habits))
    for name in out.default_mix:
        if name not in out.personas:
            raise PersonaError(f"default_mix names unknown persona {name!r}")
    return out


def load_personas(path: Path | None = None, known_names: set[str] | None = None) -> Personas:
    path = path or DEFAULT_PERSONAS
    with path.open("rb") as fh:
        try:
            return parse_personas(tomllib.load(fh), known_names)
        except tomllib.TOMLDecodeError as exc:
            raise PersonaError(f"{path}: {exc}") from exc


# --------------------------------------------------------------------------------------------------
# What runs inside the phone namespace


class Device:
    """The phone's network behaviour: DNS through the gateway, then TCP or UDP to the answer."""

    def __init__(self, gateway: str, timeout: float = 5.0, dns_port: int = 53) -> None:
        self.gateway = gateway
        self.timeout = timeout
        self.dns_port = dns_port
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()

    def resolve(self, name: str, qtype: str = "A") -> ResolveResult:
        query = dns.message.make_query(name, qtype)
        last: Exception | None = None
        for _ in range(3):
            sock = _bound_udp_socket()
            try:
                sock.connect((self.gateway, self.dns_port))
                client, sport = sock.getsockname()
                response = dns.query.udp(
                    query, self.gateway, timeout=self.timeout / 2, port=self.dns_port, sock=sock
                )
                break
            except dns.exception.Timeout as exc:
                last = exc
            finally:
                sock.close()
        else:
            raise TimeoutError(f"no answer from {self.gateway} for {name} {qtype}: {last}")
        addresses: list[str] = []
        cnames: list[str] = []
        ttl: int | None = None
        for rrset in response.answer:
            ttl = rrset.ttl if ttl is None else min(ttl, rrset.ttl)
            for rdata in rrset:
                if rrset.rdtype == dns.rdatatype.CNAME:
                    cnames.append(rdata.target.to_text(omit_final_dot=True))
                elif rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    addresses.append(rdata.address)
        return ResolveResult(
            name=name,
            qtype=qtype,
            rcode=dns.rcode.to_text(response.rcode()),
            addresses=addresses,
            cnames=cnames,
            ttl=ttl,
            client=client,
            sport=sport,
            server=self.gateway,
        )

    def connect(
        self,
        name: str | None = None,
        *,
        address: str | None = None,
        port: int = 443,
        nbytes: int = 1000,
        upload: int = 0,
        proto: str = "tcp",
        hold: float = 0.0,
    ) -> ConnectResult:
        """Resolve ``name`` (unless ``address`` is given) and move ``nbytes`` down, ``upload`` up."""
        resolved = None
        if address is None:
            if not name:
                raise ValueError("connect needs a name or an address")
            resolved = self.resolve(name)
            if not resolved.addresses:
                raise LookupError(f"{name}: {resolved.rcode}, no address")
            address = resolved.addresses[0]
        start = time.monotonic()
        if proto == "tcp":
            src, sport, sent, received = self._tcp(address, port, nbytes, upload, hold)
        elif proto == "udp":
            src, sport, sent, received = self._udp(address, port, max(nbytes, upload), hold)
        else:
            raise ValueError(f"proto must be tcp or udp, not {proto!r}")
        return ConnectResult(
            name=name,
            address=address,
            port=port,
            sport=sport,
            proto=proto,
            sent=sent,
            received=received,
            elapsed=round(time.monotonic() - start, 6),
            src=src,
            resolve=resolved,
        )

    def _tcp(
        self, address: str, port: int, nbytes: int, upload: int, hold: float
    ) -> tuple[str, int, int, int]:
        sock = socket.create_connection((address, port), timeout=self.timeout)
        try:
            src, sport = sock.getsockname()
            sent = received = 0
            if upload:
                line = b"PUT %d\n" % upload
                sock.sendall(line)
                sent += len(line) + _send_zeros(sock, upload)
                reply = _read_line(sock)
                received += len(reply)
                if reply.strip() != b"OK %d" % upload:
                    raise ConnectionError(f"server answered {reply!r} to PUT")
            if nbytes:
                line = b"GET %d\n" % nbytes
                sock.sendall(line)
                sent += len(line)
                received += _recv_exactly(sock, nbytes)
        except BaseException:
            sock.close()
            raise
        self._finish(sock, hold)
        return src, sport, sent, received

    def _udp(self, address: str, port: int, total: int, hold: float) -> tuple[str, int, int, int]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(1.0)
        try:
            sock.connect((address, port))
            src, sport = sock.getsockname()
            sent = received = 0
            remaining = max(total, 1)
            while remaining > 0:
                size = min(remaining, 1200)
                sock.send(b"\0" * size)
                sent += size
                remaining -= size
                with contextlib.suppress(TimeoutError):
                    received += len(sock.recv(65536))
        except BaseException:
            sock.close()
            raise
        self._finish(sock, hold)
        return src, sport, sent, received

    def _finish(self, sock: socket.socket, hold: float) -> None:
        """Close now, or keep the connection open ``hold`` seconds (a live flow for the test to see)."""
        if hold <= 0:
            sock.close()
            return
        with self._lock:
            self._held.append(sock)
        timer = threading.Timer(hold, self._release, args=(sock,))
        timer.daemon = True
        timer.start()

    def _release(self, sock: socket.socket) -> None:
        with self._lock:
            if sock in self._held:
                self._held.remove(sock)
        sock.close()

    def close(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for sock in held:
            sock.close()


def _bound_udp_socket() -> socket.socket:
    """A UDP socket on a random ephemeral port we pick (so it is known before the query leaves).

    Non-blocking: dnspython keeps its timeout only on such a socket; on a blocking one a lost answer
    would leave the phone waiting forever (and a phone that waits forever sends nothing again).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    for _ in range(50):
        try:
            sock.bind(("0.0.0.0", random.randint(32768, 60999)))
            return sock
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                sock.close()
                raise
    sock.bind(("0.0.0.0", 0))
    return sock


def _send_zeros(sock: socket.socket, n: int) -> int:
    chunk = b"\0" * 65536
    left = n
    while left > 0:
        piece = chunk if left >= len(chunk) else chunk[:left]
        sock.sendall(piece)
        left -= len(piece)
    return n


def _recv_exactly(sock: socket.socket, n: int) -> int:
    got = 0
    while got < n:
        data = sock.recv(min(n - got, 1 << 18))
        if not data:
            raise ConnectionError(f"server closed after {got} of {n} bytes")
        got += len(data)
    return got


def _read_line(sock: socket.socket) -> bytes:
    out = bytearray()
    while not out.endswith(b"\n"):
        data = sock.recv(1)
        if not data:
            break
        out += data
    return bytes(out)


class Traffic(threading.Thread):
    """Plays a persona until stopped: pick a habit, resolve, connect, move bytes, think, repeat."""

    def __init__(self, device: Device, persona: Persona, lease_file: Path, seed: int | None = None) -> None:
        super().__init__(name=f"traffic-{persona.name}", daemon=True)
        self.device = device
        self.persona = persona
        self.lease_file = lease_file
        self.rng = random.Random(seed)
        self.stopping = threading.Event()
        self.actions = 0
        self.errors = 0

    def run(self) -> None:
        while not self.lease_file.exists():
            if self.stopping.wait(0.1):
                return
        habits = self.persona.habits
        weights = [h.weight for h in habits]
        while not self.stopping.is_set():
            habit = self.rng.choices(habits, weights)[0]
            for _ in range(self.rng.randint(*habit.burst)):
                if self.stopping.is_set():
                    return
                self._one(habit)
                self.stopping.wait(self.rng.uniform(0.02, 0.3))
            self.stopping.wait(self.rng.uniform(*self.persona.think))

    def _one(self, habit: Habit) -> None:
        name = self.rng.choice(habit.names)
        try:
            self.device.connect(
                name,
                port=habit.port,
                proto=habit.proto,
                nbytes=self.rng.randint(*habit.down),
                upload=self.rng.randint(*habit.up) if habit.proto == "tcp" else 0,
            )
            self.actions += 1
        except Exception as exc:  # a failed action is logged, never fatal: the next one may work
            self.errors += 1
            print(f"traffic: {name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


class Program:
    """The command loop: one JSON request per line in, one JSON answer per line out."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = Device(args.gateway)
        self.traffic: Traffic | None = None

    def handle(self, req: dict[str, Any]) -> Any:
        op = req.get("op")
        if op == "ping":
            return "pong"
        if op == "resolve":
            return asdict(self.device.resolve(req["name"], req.get("qtype", "A")))
        if op == "connect":
            kwargs = {k: req[k] for k in ("address", "port", "nbytes", "upload", "proto", "hold") if k in req}
            return asdict(self.device.connect(req.get("name"), **kwargs))
        if op == "traffic":
            return self.set_traffic(bool(req.get("on", True)))
        raise ValueError(f"unknown op {op!r}")

    def set_traffic(self, on: bool) -> dict[str, Any]:
        if on and self.traffic is None:
            if not self.args.persona:
                raise ValueError("this phone has no persona")
            personas = load_personas(Path(self.args.personas) if self.args.personas else None)
            lease = Path(self.args.state) / "lease"
            self.traffic = Traffic(self.device, personas.personas[self.args.persona], lease, self.args.seed)
            self.traffic.start()
        elif not on and self.traffic is not None:
            self.traffic.stopping.set()
            self.traffic.join(timeout=15)
            stopped, self.traffic = self.traffic, None
            return {"on": False, "actions": stopped.actions, "errors": stopped.errors}
        t = self.traffic
        return {"on": t is not None, "actions": t.actions if t else 0, "errors": t.errors if t else 0}

    def run(self) -> int:
        out = sys.stdout
        out.write(json.dumps({"ok": True, "result": "ready"}) + "\n")
        out.flush()
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                req = json.loads(line)
                if req.get("op") == "quit":
                    break
                answer: dict[str, Any] = {"ok": True, "result": self.handle(req)}
            except Exception as exc:  # every failure goes back to the caller, who raises it there
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(answer) + "\n")
            out.flush()
        if self.traffic is not None:
            self.traffic.stopping.set()
        self.device.close()
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="apviz lab phone (runs inside a phone namespace)")
    parser.add_argument("--gateway", required=True, help="the gateway's LAN address (DNS server)")
    parser.add_argument("--state", required=True, help="this phone's state dir (udhcpc writes 'lease' there)")
    parser.add_argument("--persona", help="persona name from the personas file")
    parser.add_argument("--personas", help="personas TOML (default: data/lab/personas.toml)")
    parser.add_argument("--seed", type=int, help="random seed for reproducible traffic")
    return Program(parser.parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
