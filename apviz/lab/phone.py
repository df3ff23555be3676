"""A simulated phone: run as ``python -m apviz.lab.phone`` inside the phone's network namespace.

The lab starts one such process per phone and keeps it for the phone's life, because tests ask a
phone to resolve and connect hundreds of times and a fresh interpreter each time would dominate the
run. Commands arrive as JSON lines on stdin and answers leave as JSON lines on stdout; the process
exits when stdin closes, so it cannot outlive the lab. Optionally a thread plays the phone's persona
(``data/lab/personas.toml``): real DNS queries, then connections moving bytes.

Plain DNS goes through dnspython with a source port we choose, so a test can match the exact
``client/port`` dnsmasq logs for that query. Connections to port 443 are real TLS (TCP) or QUIC (UDP)
with the server name in the ClientHello, verified against the lab's CA, as a real phone's are. How a
phone finds addresses is its persona's ``dns`` mode, modelled on real devices:

- ``dnsmasq``: ask the network's resolver (the gateway), as most devices do;
- ``relay`` (iPhone with iCloud Private Relay): ask the gateway for ``mask.icloud.com`` and
  ``mask-h2.icloud.com`` first; a negative answer (NXDOMAIN or no address, Apple's documented network
  signal) means "relay off here", so behave like ``dnsmasq``; an address means everything, lookups
  included, goes to the relay over QUIC (SNI ``mask.icloud.com``), or over TLS to mask-h2 if only that
  answers, and the gateway's resolver hears nothing more;
- ``firefox``: ask the gateway for the canary ``use-application-dns.net``; NXDOMAIN or no address keeps
  DNS over HTTPS off (plain DNS), an address turns it on: every name is then resolved by DoH at the
  persona's ``dns_server`` (Firefox's default ``mozilla.cloudflare-dns.com``), whose own address comes
  from the gateway once (Firefox's bootstrap);
- ``doh``: an app with its own DoH endpoint: always DoH, no canary;
- ``dot-auto`` (Android Private DNS "Automatic"): DNS over TLS to the network's resolver (the gateway)
  first, without checking its certificate (opportunistic, as Android does); refused or failed: plain
  DNS at the gateway, and the probe is not repeated for a minute;
- ``dot-strict`` (Android Private DNS set to a provider's host name): the host name is resolved at the
  gateway, then every lookup is DoT to it with the certificate checked; when that fails there is no
  fallback, the lookup fails and so does the connection, as on a real phone in strict mode;
- ``resolver``: plain DNS to a hard-coded address (an app's own 8.8.8.8) instead of the gateway.

Each ``ConnectResult`` says how the name was found (``resolved_via``) and which server name was sent
(``sni``), so benches and tests can count which connections a gateway could name, and how.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import ipaddress
import json
import random
import socket
import ssl
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

DEFAULT_PERSONAS = Path(__file__).resolve().parents[2] / "data" / "lab" / "personas.toml"

DNS_MODES = ("dnsmasq", "relay", "firefox", "doh", "dot-auto", "dot-strict", "resolver")
RELAY_NAMES = ("mask.icloud.com", "mask-h2.icloud.com")  # QUIC ingress, then its TLS/TCP fallback
CANARY = "use-application-dns.net"
FIREFOX_DOH = "mozilla.cloudflare-dns.com"
DOH_PATH = "/dns-query"
DOT_PORT = 853
#: How long a phone keeps what it learnt about the network (relay signal, canary, DoT probe). Real
#: devices keep it until the network changes; a minute lets a test flip a policy and see the change.
DECISION_TTL = 60.0
HISTORY = 2000  # connections remembered for the ``history`` command (bounded)


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
    """One DNS lookup a phone made, where it went and what came back."""

    name: str
    qtype: str
    rcode: str  # "NOERROR", "NXDOMAIN", ...
    addresses: list[str]
    cnames: list[str]  # the chain after ``name``, in answer order
    ttl: int | None
    client: str  # the phone's address the query left from
    sport: int  # its source port (dnsmasq logs "client/sport" with log-queries=extra); 0 if unknown
    server: str
    via: str = "dnsmasq"  # dnsmasq | doh | dot | resolver


@dataclass(frozen=True, slots=True)
class ConnectResult:
    """One connection a phone made: how it found the address, where it went and what moved."""

    name: str | None  # the name the phone meant (also through the relay, which hides it)
    address: str
    port: int
    sport: int  # local port: with the phone's address, the flow's original source in conntrack
    proto: str  # "tcp" or "udp"
    sent: int  # payload bytes written by the phone (request lines included, TLS/QUIC overhead not)
    received: int
    elapsed: float
    src: str  # the phone's address
    resolve: ResolveResult | None = None
    resolved_via: str = "none"  # dnsmasq | doh | dot | resolver | relay | none (a bare address)
    sni: str | None = None  # the server name in the ClientHello / QUIC Initial (None: plain or no SNI)
    security: str = "plain"  # tls | quic | plain


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
    address: str | None = None  # a hard-coded address: no lookup (``names`` then only give the SNI)
    tls: bool | None = None  # None: TLS/QUIC on 443, plain elsewhere


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    label: str
    think: tuple[float, float]
    habits: tuple[Habit, ...]
    dns: str = "dnsmasq"
    dns_server: str | None = None  # DoH/DoT provider name, the resolver's address, or "gateway"

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


def _address(value: object, where: str) -> str:
    try:
        ip = ipaddress.IPv4Address(str(value))
    except ValueError as exc:
        raise PersonaError(f"{where}: bad address {value!r}") from exc
    if ip not in ipaddress.IPv4Network("198.18.0.0/15"):
        raise PersonaError(f"{where}: address {ip} is outside the lab internet 198.18.0.0/15")
    return str(ip)


def _habit(h: dict, where: str, known_names: set[str] | None) -> Habit:
    names = tuple(h.get("names", []))
    address = _address(h["address"], where) if "address" in h else None
    if not names and address is None:
        raise PersonaError(f"{where}: no names (only a habit with an address may have none)")
    if known_names is not None:
        unknown = [n for n in names if n not in known_names]
        if unknown:
            raise PersonaError(f"{where}: names not in world.toml: {', '.join(unknown)}")
    proto = h.get("proto", "tcp")
    if proto not in ("tcp", "udp"):
        raise PersonaError(f"{where}: proto must be tcp or udp, not {proto!r}")
    port = h.get("port", 443)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise PersonaError(f"{where}: port must be 1..65535, not {port!r}")
    tls = h.get("tls")
    if tls is not None and not isinstance(tls, bool):
        raise PersonaError(f"{where}: tls must be true or false, not {tls!r}")
    return Habit(
        what=str(h.get("what", "")),
        weight=float(h.get("weight", 1)),
        names=names,
        down=_range(h, "down", (0, 0), where, int),
        up=_range(h, "up", (0, 0), where, int),
        burst=_range(h, "burst", (1, 1), where, int),
        proto=proto,
        port=port,
        address=address,
        tls=tls,
    )


def _dns(raw: dict, where: str, known_names: set[str] | None) -> tuple[str, str | None]:
    mode = raw.get("dns", "dnsmasq")
    if mode not in DNS_MODES:
        raise PersonaError(f"{where}: dns must be one of {', '.join(DNS_MODES)}, not {mode!r}")
    server = raw.get("dns_server")
    if server is not None and not isinstance(server, str):
        raise PersonaError(f"{where}: dns_server must be a string, not {server!r}")
    if mode == "firefox":
        server = server or FIREFOX_DOH
    elif mode == "dot-auto":
        server = server or "gateway"
    elif mode in ("doh", "dot-strict", "resolver") and not server:
        raise PersonaError(f"{where}: dns = {mode!r} needs dns_server")
    elif mode in ("dnsmasq", "relay") and server:
        raise PersonaError(f"{where}: dns = {mode!r} takes no dns_server")
    if mode == "resolver":
        server = _address(server, f"{where} dns_server")
    elif server and server != "gateway" and known_names is not None and server not in known_names:
        raise PersonaError(f"{where}: dns_server {server} is not in world.toml")
    return mode, server


def parse_personas(data: dict, known_names: set[str] | None = None) -> Personas:
    """Validate parsed TOML; with ``known_names`` every habit name must exist in the world."""
    out = Personas(default_mix=list(data.get("default_mix", [])))
    for pname, raw in data.get("persona", {}).items():
        habits = []
        for i, h in enumerate(raw.get("habit", [])):
            habits.append(_habit(h, f"persona {pname} habit #{i + 1} ({h.get('what', '?')})", known_names))
        if not habits:
            raise PersonaError(f"persona {pname}: no habits")
        think = _range(raw, "think", (1.0, 5.0), f"persona {pname}", float)
        mode, server = _dns(raw, f"persona {pname}", known_names)
        out.personas[pname] = Persona(pname, str(raw.get("label", pname)), think, tuple(habits), mode, server)
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
# The decisions a real phone takes from what the network's resolver answers (pure, unit-tested)


def relay_target(mask: ResolveResult, mask_h2: ResolveResult) -> tuple[str, str, str] | None:
    """Apple's signal: a negative answer (NXDOMAIN, or no address) for the relay's names means the
    network does not allow Private Relay. Returns (name, address, "quic"|"tls") of the ingress to use,
    QUIC first, or None for "relay off on this network"."""
    if mask.rcode == "NOERROR" and mask.addresses:
        return (mask.name, mask.addresses[0], "quic")
    if mask_h2.rcode == "NOERROR" and mask_h2.addresses:
        return (mask_h2.name, mask_h2.addresses[0], "tls")
    return None


def canary_allows_doh(answer: ResolveResult) -> bool:
    """Firefox's rule: NXDOMAIN (or SERVFAIL, or no address) for the canary keeps automatic DoH off."""
    return answer.rcode == "NOERROR" and bool(answer.addresses)


# --------------------------------------------------------------------------------------------------
# What runs inside the phone namespace


def _answer(response: dns.message.Message) -> tuple[list[str], list[str], int | None]:
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
    return addresses, cnames, ttl


def _result(
    name: str, qtype: str, response: dns.message.Message, client: str, sport: int, server: str, via: str
) -> ResolveResult:
    addresses, cnames, ttl = _answer(response)
    rcode = dns.rcode.to_text(response.rcode())
    return ResolveResult(name, qtype, rcode, addresses, cnames, ttl, client, sport, server, via)


class Device:
    """The phone's network behaviour: find addresses as its persona does, then TLS, QUIC or plain."""

    def __init__(
        self,
        gateway: str,
        timeout: float = 5.0,
        dns_port: int = 53,
        *,
        ca: Path | None = None,
        dns_mode: str = "dnsmasq",
        dns_server: str | None = None,
    ) -> None:
        if dns_mode not in DNS_MODES:
            raise ValueError(f"unknown dns mode {dns_mode!r}")
        self.gateway = gateway
        self.timeout = timeout
        self.dns_port = dns_port
        self.ca = ca
        self.dns_mode = dns_mode
        self.dns_server = dns_server
        # Verified TLS (the lab CA only: nothing else is trusted) and Android's opportunistic DoT.
        self.tls = ssl.create_default_context(cafile=str(ca)) if ca is not None else _unverified()
        self.tls_opportunistic = _unverified()
        self.counters: collections.Counter[str] = collections.Counter()
        self.history: collections.deque[ConnectResult] = collections.deque(maxlen=HISTORY)
        self._held: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._decisions: dict[str, tuple[float, Any]] = {}  # what the phone learnt, and when
        self._doh_client: Any = None  # an httpx.Client kept open, as browsers keep their DoH connection
        self._doh_lock = threading.Lock()

    # ---------------------------------------------------------------------------------------- DNS

    def resolve(
        self, name: str, qtype: str = "A", server: str | None = None, via: str = "dnsmasq"
    ) -> ResolveResult:
        """One plain DNS query over UDP, to the gateway unless ``server`` says otherwise."""
        server = server or self.gateway
        query = dns.message.make_query(name, qtype)
        last: Exception | None = None
        for _ in range(3):
            sock = _bound_udp_socket()
            try:
                sock.connect((server, self.dns_port))
                client, sport = sock.getsockname()
                response = dns.query.udp(
                    query, server, timeout=self.timeout / 2, port=self.dns_port, sock=sock
                )
                break
            except dns.exception.Timeout as exc:
                last = exc
            finally:
                sock.close()
        else:
            raise TimeoutError(f"no answer from {server} for {name} {qtype}: {last}")
        return _result(name, qtype, response, client, sport, server, via)

    def lookup(self, name: str) -> ResolveResult:
        """Find ``name``'s address the way this phone's persona does (see the module docstring)."""
        mode = self.dns_mode
        if mode == "firefox":
            mode = (
                "doh" if self._learn("canary", lambda: canary_allows_doh(self.resolve(CANARY))) else "dnsmasq"
            )
        if mode == "dot-auto":
            if self._learn("dot-probe", lambda: True):
                try:
                    return self._dot(name, self._dot_server(), verify=False)
                except (OSError, dns.exception.DNSException) as exc:
                    self.counters["dot_failed"] += 1
                    self._decisions["dot-probe"] = (time.monotonic(), False)
                    print(f"private DNS (automatic): {type(exc).__name__}: {exc}; plain DNS", file=sys.stderr)
            return self.resolve(name)
        if mode == "dot-strict":
            try:
                return self._dot(name, self._dot_server(), verify=True)
            except (OSError, dns.exception.DNSException) as exc:
                self.counters["dot_failed"] += 1
                raise LookupError(f"private DNS {self.dns_server} unreachable (strict mode): {exc}") from exc
        if mode == "doh" and self.dns_mode == "firefox":
            try:
                return self._doh(name)
            except (OSError, LookupError, ValueError) as exc:  # Firefox's default mode falls back
                self.counters["doh_failed"] += 1
                print(f"DoH failed ({type(exc).__name__}: {exc}); plain DNS", file=sys.stderr)
                return self.resolve(name)
        if mode == "doh":
            return self._doh(name)
        if mode == "resolver":
            assert self.dns_server is not None
            return self.resolve(name, server=self.dns_server, via="resolver")
        return self.resolve(name)

    def _learn(self, what: str, ask: Callable[[], Any]) -> Any:
        """A network fact this phone checks once and keeps for DECISION_TTL seconds."""
        now = time.monotonic()
        known = self._decisions.get(what)
        if known is None or now - known[0] > DECISION_TTL:
            known = (now, ask())
            self._decisions[what] = known
        return known[1]

    def _bootstrap(self, host: str) -> str:
        """A resolver's own address, from the network's DNS (what Firefox and Android do first)."""

        def ask() -> str:
            answer = self.resolve(host)
            if not answer.addresses:
                raise LookupError(f"cannot find the resolver {host}: {answer.rcode}")
            return answer.addresses[0]

        return self._learn(f"bootstrap {host}", ask)

    def _dot_server(self) -> tuple[str, str | None]:
        if self.dns_server in (None, "gateway"):
            return (self.gateway, None)
        return (self._bootstrap(self.dns_server), self.dns_server)

    def _dot(self, name: str, server: tuple[str, str | None], *, verify: bool) -> ResolveResult:
        address, host = server
        raw = socket.create_connection((address, DOT_PORT), timeout=self.timeout)
        try:
            ctx = self.tls if verify else self.tls_opportunistic
            sock = ctx.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
        with sock:
            client, sport = sock.getsockname()
            query = dns.message.make_query(name, "A")
            response = dns.query.tls(query, address, timeout=self.timeout, port=DOT_PORT, sock=sock)
        self.counters["dot"] += 1
        return _result(name, "A", response, client, sport, address, "dot")

    def _doh(self, name: str) -> ResolveResult:
        """RFC 8484 POST over one kept-open HTTPS connection (httpx), the SNI the provider's name."""
        host = self.dns_server or FIREFOX_DOH
        address = self._bootstrap(host)
        query = dns.message.make_query(name, "A")
        query.id = 0  # RFC 8484 4.1: 0 keeps answers cacheable
        headers = {
            "content-type": "application/dns-message",
            "accept": "application/dns-message",
            "host": host,
        }
        with self._doh_lock:
            import httpx  # only DoH personas pay for the import (once; later it is a dict look-up)

            if self._doh_client is None:
                self._doh_client = httpx.Client(verify=self.tls, timeout=self.timeout)
            try:
                reply = self._doh_client.post(
                    f"https://{address}{DOH_PATH}",
                    content=query.to_wire(),
                    headers=headers,
                    extensions={"sni_hostname": host},
                )
                reply.raise_for_status()
            except httpx.HTTPError as exc:  # not an OSError: say it as one, like the other transports
                raise ConnectionError(f"DoH to {host} ({address}): {type(exc).__name__}: {exc}") from exc
        self.counters["doh"] += 1
        return _result(name, "A", dns.message.from_wire(reply.content), "", 0, address, "doh")

    def _relay(self) -> tuple[str, str, str] | None:
        return self._learn("relay", lambda: relay_target(*(self.resolve(n) for n in RELAY_NAMES)))

    # ----------------------------------------------------------------------------------- connect

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
        sni: str | None = None,
        tls: bool | None = None,
    ) -> ConnectResult:
        """Find ``name``'s address (unless ``address`` is given) and move ``nbytes`` down, ``upload`` up.

        On 443 TCP is TLS and UDP is QUIC (``tls`` overrides), with ``sni`` (default: the name) as
        server name. A relay phone with the relay on sends it all to the relay instead.
        """
        if proto not in ("tcp", "udp"):
            raise ValueError(f"proto must be tcp or udp, not {proto!r}")
        resolved = None
        via = "none"
        relay = self._relay() if address is None and self.dns_mode == "relay" else None
        if relay is not None:
            sni, address, transport = relay
            via, port, tls = "relay", 443, True
            proto = "udp" if transport == "quic" else "tcp"
        elif address is None:
            if not name:
                raise ValueError("connect needs a name or an address")
            resolved = self.lookup(name)
            if not resolved.addresses:
                raise LookupError(f"{name}: {resolved.rcode}, no address")
            address, via = resolved.addresses[0], resolved.via
            sni = sni or name
        else:
            sni = sni or name
        secure = port == 443 if tls is None else tls
        security = ("tls" if proto == "tcp" else "quic") if secure else "plain"
        start = time.monotonic()
        if security == "quic":
            from apviz.lab import quic  # aioquic loads in ~0.1 s: only phones that use QUIC pay it

            ex = quic.exchange(
                address,
                port,
                server_name=sni or address,
                ca=self.ca,
                nbytes=nbytes,
                upload=upload,
                timeout=self.timeout,
            )
            src, sport, sent, received = ex.src, ex.sport, ex.sent, ex.received
            self._finish(ex.close, hold)
        elif proto == "tcp":
            src, sport, sent, received = self._tcp(
                address, port, nbytes, upload, hold, sni if secure else None, secure
            )
        else:
            src, sport, sent, received = self._udp(address, port, max(nbytes, upload), hold)
        result = ConnectResult(
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
            resolved_via=via,
            sni=sni if secure else None,
            security=security,
        )
        self.history.append(result)
        return result

    def _tcp(
        self, address: str, port: int, nbytes: int, upload: int, hold: float, sni: str | None, secure: bool
    ) -> tuple[str, int, int, int]:
        sock: socket.socket = socket.create_connection((address, port), timeout=self.timeout)
        try:
            if secure:
                # No SNI to a bare address (Python sends none for an IP; the cert's IP SAN is checked).
                sock = self.tls.wrap_socket(sock, server_hostname=sni or address)
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
        self._finish(sock.close, hold)
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
        self._finish(sock.close, hold)
        return src, sport, sent, received

    def _finish(self, close: Callable[[], None], hold: float) -> None:
        """Close now, or keep the connection open ``hold`` seconds (a live flow for the test to see)."""
        if hold <= 0:
            close()
            return
        with self._lock:
            self._held.append(close)
        timer = threading.Timer(hold, self._release, args=(close,))
        timer.daemon = True
        timer.start()

    def _release(self, close: Callable[[], None]) -> None:
        with self._lock:
            if close not in self._held:
                return
            self._held.remove(close)
        with contextlib.suppress(OSError):
            close()

    def take_history(self) -> list[ConnectResult]:
        """The connections made since the last call (at most HISTORY), oldest first."""
        with self._lock:
            out = list(self.history)
            self.history.clear()
        return out

    def close(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for close in held:
            with contextlib.suppress(OSError):
                close()
        if self._doh_client is not None:
            self._doh_client.close()


def _unverified() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


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
        name = self.rng.choice(habit.names) if habit.names else None
        try:
            self.device.connect(
                name,
                address=habit.address,
                port=habit.port,
                proto=habit.proto,
                nbytes=self.rng.randint(*habit.down),
                upload=self.rng.randint(*habit.up),
                tls=habit.tls,
            )
            self.actions += 1
        except Exception as exc:  # a failed action is logged, never fatal: the next one may work
            self.errors += 1
            print(f"traffic: {name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


class Program:
    """The command loop: one JSON request per line in, one JSON answer per line out."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.persona: Persona | None = None
        if args.persona:
            personas = load_personas(Path(args.personas) if args.personas else None)
            self.persona = personas.personas[args.persona]
        mode = self.persona.dns if self.persona else "dnsmasq"
        server = self.persona.dns_server if self.persona else None
        ca = Path(args.ca) if args.ca else None
        self.device = Device(args.gateway, ca=ca, dns_mode=mode, dns_server=server)
        self.traffic: Traffic | None = None

    def handle(self, req: dict[str, Any]) -> Any:
        op = req.get("op")
        if op == "ping":
            return "pong"
        if op == "resolve":
            return asdict(self.device.resolve(req["name"], req.get("qtype", "A")))
        if op == "lookup":
            return asdict(self.device.lookup(req["name"]))
        if op == "connect":
            keys = ("address", "port", "nbytes", "upload", "proto", "hold", "sni", "tls")
            kwargs = {k: req[k] for k in keys if k in req}
            return asdict(self.device.connect(req.get("name"), **kwargs))
        if op == "history":
            return [asdict(r) for r in self.device.take_history()]
        if op == "traffic":
            return self.set_traffic(bool(req.get("on", True)))
        raise ValueError(f"unknown op {op!r}")

    def set_traffic(self, on: bool) -> dict[str, Any]:
        if on and self.traffic is None:
            if self.persona is None:
                raise ValueError("this phone has no persona")
            lease = Path(self.args.state) / "lease"
            self.traffic = Traffic(self.device, self.persona, lease, self.args.seed)
            self.traffic.start()
        elif not on and self.traffic is not None:
            self.traffic.stopping.set()
            self.traffic.join(timeout=15)
            stopped, self.traffic = self.traffic, None
            return {"on": False, "actions": stopped.actions, "errors": stopped.errors, **self.device.counters}
        t = self.traffic
        counts = {"actions": t.actions if t else 0, "errors": t.errors if t else 0}
        return {"on": t is not None, **counts, **self.device.counters}

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
    parser.add_argument("--ca", help="the lab CA (PEM): the only authority this phone trusts")
    return Program(parser.parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
