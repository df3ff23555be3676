"""``Lab``: the virtual gateway as one object, for tests, benchmarks and ``apviz lab up``.

It glues the parts together: namespaces and links (``topology``), the fake internet's servers and
resolver, the gateway's dnsmasq (logging to a file or to a private journald), and phones that get a
DHCP lease from that dnsmasq with busybox udhcpc and then resolve and connect through the gateway.
Everything is recorded in the run directory as it is created, so ``close()``, a failing test's
teardown or a later ``apviz lab down`` can remove it all. Phones come up concurrently: most of a
phone's time is the interpreter of its helper starting, which overlaps the DHCP exchange.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from apviz.lab import ca, cleanup, dnsmasq, resolvers, topology
from apviz.lab.phone import (
    DEFAULT_PERSONAS,
    ConnectResult,
    Personas,
    Phone,
    ResolveResult,
    load_personas,
)
from apviz.lab.topology import LabError
from apviz.lab.world import World, load_world

LogMode = Literal["file", "journal"]

UDHCPC_SCRIPT = r"""#!/bin/sh
# apviz lab: udhcpc calls this with deconfig|bound|renew|leasefail|nak (see busybox's simple.script).
# It configures the phone's only interface, its default route (to the lab gateway, which routes only
# the lab's own internet) and its resolver, then writes "lease" for the lab to notice.
state="$APVIZ_PHONE_STATE"
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    rm -f "$state/lease"
    ;;
bound|renew)
    current=$(ip -4 -o addr show dev "$interface" | awk '{print $4}' | cut -d/ -f1)
    [ -n "$current" ] && [ "$current" != "$ip" ] && ip -4 addr flush dev "$interface"
    ip addr replace "$ip/${mask:-24}" dev "$interface"
    set -- $router
    [ -n "$1" ] && ip route replace default via "$1" dev "$interface"
    conf=""
    for d in $dns; do conf="${conf}nameserver $d
"; done
    # In place (not rename): ip netns exec bind-mounts this file as the namespace's /etc/resolv.conf.
    [ -n "$APVIZ_PHONE_RESOLV" ] && [ -n "$conf" ] && printf '%s' "$conf" > "$APVIZ_PHONE_RESOLV"
    printf 'ip=%s\nrouter=%s\ndns=%s\nlease=%s\n' "$ip" "$router" "$dns" "$lease" > "$state/lease.tmp"
    mv "$state/lease.tmp" "$state/lease"
    ;;
esac
exit 0
"""


class _Helper:
    """The parent's end of a phone's long-lived ``apviz.lab.phone`` process (JSON lines both ways)."""

    def __init__(self, proc: subprocess.Popen, label: str) -> None:
        self.proc = proc
        self.label = label
        self.buf = b""
        self.lock = threading.Lock()
        self.ready = False

    def _readline(self, timeout: float) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LabError(f"{self.label}: no answer within {timeout:.1f} s")
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise LabError(f"{self.label}: helper exited (code {self.proc.poll()})")
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def _answer(self, timeout: float) -> Any:
        reply = json.loads(self._readline(timeout))
        if not reply.get("ok"):
            raise LabError(f"{self.label}: {reply.get('error')}")
        return reply.get("result")

    def wait_ready(self, timeout: float = 20.0) -> None:
        with self.lock:
            if not self.ready:
                self._answer(timeout)
                self.ready = True

    def request(self, req: dict[str, Any], timeout: float = 30.0) -> Any:
        self.wait_ready(timeout)
        with self.lock:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(json.dumps(req).encode() + b"\n")
                self.proc.stdin.flush()
            except BrokenPipeError as exc:
                raise LabError(f"{self.label}: helper is gone") from exc
            return self._answer(timeout)

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()


def _result(cls: type, data: dict[str, Any]) -> Any:
    if cls is ConnectResult and data.get("resolve") is not None:
        data = {**data, "resolve": ResolveResult(**data["resolve"])}
    return cls(**data)


class Lab:
    """A gateway, a fake internet and N phones in network namespaces, with a real dnsmasq and conntrack.

    Use as a context manager (``with Lab(phones=3) as lab:``) or call ``start()`` and ``close()``.
    ``log="journal"`` makes the gateway's dnsmasq log through a private journald instead of a file.
    ``policy`` (default on, as the exhibit ships) applies the appliance's network policy files: the
    dnsmasq drop-in and the nftables table (docs/network-policy.md).
    """

    def __init__(
        self,
        phones: int = 3,
        log: LogMode = "file",
        personas: Sequence[str] | None = None,
        traffic: bool = True,
        workdir: Path | str | None = None,
        prefix: str | None = None,
        world: World | None = None,
        personas_file: Path | None = None,
        seed: int | None = None,
        policy: bool = True,
    ) -> None:
        if log not in ("file", "journal"):
            raise LabError(f"log must be 'file' or 'journal', not {log!r}")
        if phones < 0:
            raise LabError(f"phones must be >= 0, not {phones}")
        self.log: LogMode = log
        self.traffic = traffic
        self.seed = seed
        self.policy = policy
        self.world = world or load_world()
        self.personas_file = personas_file or DEFAULT_PERSONAS
        self.persona_book: Personas = load_personas(self.personas_file, set(self.world.names))
        for name in personas or []:
            if name not in self.persona_book.personas:
                known = ", ".join(sorted(self.persona_book.personas))
                raise LabError(f"unknown persona {name!r} (known: {known})")
        self._persona_mix = list(personas) if personas else None
        self._initial_phones = phones
        self._workdir = Path(workdir) if workdir is not None else None
        self.prefix = topology.check_prefix(prefix) if prefix else ""
        self.names = topology.Names(self.prefix)
        self.lan_cidr = str(topology.LAN)
        self.gateway_ip = topology.GATEWAY_IP
        self.wan_ip = topology.WAN_GATEWAY_IP  # the masquerade address phones' flows leave with
        self.upstream_dns = self.world.upstream
        self.run_dir = Path()
        self.dnsmasq_log: Path | None = None
        self.journal_dir: Path | None = None
        self.journald: Any = None
        self.leases_file = Path()
        self.ca: ca.LabCA | None = None  # made at start: phones trust it, the internet serves with it
        self.phones: list[Phone] = []
        self.timings: dict[str, float] = {}
        self._helpers: dict[str, _Helper] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._next_index = 1
        self._gw_ready = threading.Event()
        self._resolvers_started = 0.0
        self._started = False
        self._closed = False

    # ----------------------------------------------------------------------------------------------
    # naming conveniences

    @property
    def gateway_ns(self) -> str:
        return self.names.gateway_ns

    @property
    def internet_ns(self) -> str:
        return self.names.internet_ns

    @property
    def bridge(self) -> str:
        return self.names.bridge

    @property
    def wan(self) -> str:
        return self.names.wan

    @property
    def namespaces(self) -> list[str]:
        return [self.gateway_ns, self.internet_ns, *(p.ns for p in self.phones)]

    # ----------------------------------------------------------------------------------------------
    # life cycle

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Lab:
        """Bring the whole lab up; on any failure, remove what was made and re-raise."""
        if self._started:
            return self
        self._started = True
        try:
            self._start()
        except BaseException:
            with contextlib.suppress(Exception):
                self.close()
            raise
        return self

    def _claim_run_dir(self) -> None:
        for _ in range(20):
            if not self.prefix:
                self.prefix = topology.new_prefix()
            try:
                self.run_dir = cleanup.create_run_dir(self.prefix, self._workdir)
                break
            except FileExistsError:
                if self._workdir is not None or self.names.prefix:
                    raise LabError(f"a lab with prefix {self.prefix} already exists") from None
                self.prefix = ""
        else:
            raise LabError("could not find a free lab prefix")
        self.names = topology.Names(self.prefix)
        atexit.register(self.close)

    def _start(self) -> None:
        t0 = time.monotonic()
        self._claim_run_dir()
        for sub in ("logs", "gateway", "internet", "phones"):
            (self.run_dir / sub).mkdir(exist_ok=True)
        self.ca = ca.make_ca(self.run_dir / "ca", self.world.names, self.world.addresses)
        self.leases_file = self.run_dir / "gateway" / "dnsmasq.leases"
        script = self.run_dir / "udhcpc.script"
        script.write_text(UDHCPC_SCRIPT)
        script.chmod(0o755)
        cleanup.record_namespace(self.run_dir, self.gateway_ns)
        cleanup.record_namespace(self.run_dir, self.internet_ns)
        topology.create_core(self.names, self.upstream_dns)
        if self.policy:
            topology.load_nft_file(self.names, topology.POLICY_NFT)
        t1 = time.monotonic()
        self.timings["topology"] = t1 - t0

        server = self._spawn(
            "net-server",
            self.internet_ns,
            [
                sys.executable,
                "-m",
                "apviz.lab.internet",
                "--cert",
                str(self.ca.cert),
                "--key",
                str(self.ca.key),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._start_upstream()
        self._start_resolvers()
        if self.log == "journal":
            self._start_journald()
        self._start_gateway_dnsmasq()
        with ThreadPoolExecutor(max_workers=max(1, self._initial_phones)) as pool:
            futures = [
                pool.submit(self._add_phone, None, None, None, False) for _ in range(self._initial_phones)
            ]
            self._wait_file(self.run_dir / "gateway" / "dnsmasq.pid", "gateway dnsmasq", "gw-dnsmasq")
            self._gw_ready.set()
            self._wait_file(self.run_dir / "internet" / "dnsmasq.pid", "internet dnsmasq", "net-dnsmasq")
            self._wait_server(server)
            self._wait_resolvers()
            t2 = time.monotonic()
            self.timings["services"] = t2 - t1
            phones = [f.result() for f in futures]
        t3 = time.monotonic()
        self.timings["phones"] = t3 - t2
        self.timings["total"] = t3 - t0
        if self.traffic:
            for phone in phones:
                if phone.persona:
                    self.set_traffic(phone, True)
        self._write_summary()

    def close(self) -> None:
        """Stop every process, delete every namespace and the run directory. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        if not self.prefix or not self.run_dir.parts:
            return
        for helper in self._helpers.values():
            helper.close()
        cleanup.stop_processes(cleanup.recorded_pids(self.run_dir))
        for proc in self._procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        if self.journald is not None:
            with contextlib.suppress(Exception):
                self.journald.stop()
        problems = cleanup.teardown(self.prefix, self.run_dir)
        if problems:
            raise LabError(f"lab {self.prefix} teardown left: " + "; ".join(problems))

    # ----------------------------------------------------------------------------------------------
    # processes

    def _spawn(
        self,
        name: str,
        ns: str,
        argv: Sequence[str],
        *,
        stdin: int = subprocess.DEVNULL,
        stdout: int | None = None,
        env: dict[str, str] | None = None,
        wrap: Callable[[list[str]], list[str]] | None = None,
    ) -> subprocess.Popen:
        """Start ``argv`` inside ``ns`` in its own session (a Ctrl-C reaches us, not it) and record it."""
        full = ["ip", "netns", "exec", ns, *argv]
        if wrap is not None:
            full = list(wrap(full))
        log = (self.run_dir / "logs" / f"{name}.log").open("ab")
        try:
            proc = subprocess.Popen(
                full,
                stdin=stdin,
                stdout=stdout if stdout is not None else log,
                stderr=log,
                env={**os.environ, **(env or {})},
                start_new_session=True,
                close_fds=True,
                bufsize=0,
            )
        finally:
            log.close()
        cleanup.record_pid(self.run_dir, name, proc.pid)
        self._procs[name] = proc
        return proc

    def _stop(self, name: str, timeout: float = 3.0) -> None:
        proc = self._procs.pop(name, None)
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        cleanup.forget_pid(self.run_dir, name)

    def _log_tail(self, name: str, lines: int = 8) -> str:
        with contextlib.suppress(OSError):
            text = (self.run_dir / "logs" / f"{name}.log").read_text(errors="replace")
            return " | ".join(text.strip().splitlines()[-lines:])
        return ""

    def _wait_file(self, path: Path, what: str, proc_name: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        proc = self._procs.get(proc_name)
        while not path.exists():
            if proc is not None and proc.poll() is not None:
                raise LabError(f"{what} exited with {proc.returncode}: {self._log_tail(proc_name)}")
            if time.monotonic() > deadline:
                raise LabError(f"{what} not ready after {timeout} s: {self._log_tail(proc_name)}")
            time.sleep(0.005)

    def _wait_server(self, server: subprocess.Popen) -> None:
        helper = _Helper(server, "internet server")
        line = helper._readline(10.0)
        if line.strip() != b"ready":
            raise LabError(f"internet server said {line!r}: {self._log_tail('net-server')}")

    def _start_upstream(self) -> None:
        conf = self.run_dir / "internet" / "dnsmasq.conf"
        conf.write_text(
            dnsmasq.upstream_config(
                self.world,
                pid_file=self.run_dir / "internet" / "dnsmasq.pid",
                log_file=self.run_dir / "internet" / "dnsmasq.log",
            )
        )
        self._spawn("net-dnsmasq", self.internet_ns, dnsmasq.argv(conf))

    def _start_resolvers(self) -> None:
        """The resolvers phones use instead of the gateway's (``apviz.lab.resolvers``): dnsdist for
        DoH and DoT, and a second plain dnsmasq per ``plain_dns`` address, all in the internet."""
        assert self.ca is not None
        self._resolvers_started = time.monotonic()
        net = self.run_dir / "internet"
        plain = self.world.service_addresses("plain_dns")
        if plain:  # dnsmasq's bind-interfaces wants the address on an interface, not just routed
            topology.ip_batch(self.internet_ns, [f"addr add {a}/32 dev lo" for a in plain])
        for i, address in enumerate(plain, 1):
            conf = net / f"dns{i}.conf"
            pid = net / f"dns{i}.pid"
            conf.write_text(
                resolvers.plain_dns_config(self.world, address, pid_file=pid, log_file=net / f"dns{i}.log")
            )
            self._spawn(f"net-dns{i}", self.internet_ns, dnsmasq.argv(conf))
        if resolvers.dnsdist_listeners(self.world):
            conf = net / "dnsdist.conf"
            conf.write_text(resolvers.dnsdist_config(self.world, cert=self.ca.cert, key=self.ca.key))
            self._spawn("net-dnsdist", self.internet_ns, resolvers.dnsdist_argv(conf))

    def _wait_resolvers(self, timeout: float = 10.0) -> None:
        for i, _address in enumerate(self.world.service_addresses("plain_dns"), 1):
            self._wait_file(self.run_dir / "internet" / f"dns{i}.pid", "second resolver", f"net-dns{i}")
        want = resolvers.dnsdist_listeners(self.world)
        proc = self._procs.get("net-dnsdist")
        deadline = time.monotonic() + timeout
        while proc is not None and not want <= resolvers.tcp_listening(proc.pid):
            if proc.poll() is not None:
                raise LabError(f"dnsdist exited with {proc.returncode}: {self._log_tail('net-dnsdist')}")
            if time.monotonic() > deadline:
                raise LabError(f"dnsdist not listening after {timeout} s: {self._log_tail('net-dnsdist')}")
            time.sleep(0.005)
        # From their start (beside the other services) until dnsdist listens: its cost to start-up.
        self.timings["resolvers"] = time.monotonic() - self._resolvers_started

    def _start_journald(self) -> None:
        try:
            from apviz.lab.journald import PrivateJournald
        except ImportError as exc:
            raise LabError(f"journal mode needs apviz.lab.journald.PrivateJournald: {exc}") from exc
        self.journald = PrivateJournald(cleanup.scratch_dir(self.prefix), self.prefix)
        self.journald.start()
        self.journal_dir = Path(self.journald.journal_dir)
        # journald lives in the host's network namespace: only this record lets `lab down` find it.
        with contextlib.suppress(Exception):
            cleanup.record_pid(self.run_dir, "journald", int(self.journald.pid))

    def _start_gateway_dnsmasq(self) -> None:
        gw = self.run_dir / "gateway"
        self.dnsmasq_log = gw / "dnsmasq.log" if self.log == "file" else None
        conf = gw / "dnsmasq.conf"
        conf.write_text(
            dnsmasq.gateway_config(
                self.names,
                leases_file=self.leases_file,
                pid_file=gw / "dnsmasq.pid",
                log_file=self.dnsmasq_log,
                upstream=self.upstream_dns,
                policy_conf=topology.POLICY_DNSMASQ if self.policy else None,
            )
        )
        wrap = self.journald.wrap if self.journald is not None else None
        self._spawn("gw-dnsmasq", self.gateway_ns, dnsmasq.argv(conf), wrap=wrap)

    def restart_dnsmasq(self) -> None:
        """Stop and start the gateway's dnsmasq (leases survive in the leases file, as on a real box)."""
        self._stop("gw-dnsmasq")
        pid_file = self.run_dir / "gateway" / "dnsmasq.pid"
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        self._start_gateway_dnsmasq()
        self._wait_file(pid_file, "gateway dnsmasq", "gw-dnsmasq")

    def set_wan(self, up: bool) -> None:
        """Take the gateway's WAN link down or bring it back (an uplink outage, a cable pulled).

        The kernel drops the route to the internet with the link, and nothing puts it back when the
        link returns (on a real box the DHCP client or ifupdown would), so ``up`` restores it too.
        """
        lines = [f"link set {self.wan} {'up' if up else 'down'}"]
        if up:
            lines.append(f"route replace {topology.INTERNET} via {topology.WAN_INTERNET_IP}")
        topology.ip_batch(self.gateway_ns, lines)

    def flush_conntrack(self) -> None:
        """Empty the gateway's connection tracking table (``conntrack -F``, as an admin might)."""
        self.exec_in(self.gateway_ns, ["conntrack", "-F"])

    def renew_lease(self, phone: Phone | str) -> None:
        """Make the phone's DHCP client renew its lease now (SIGUSR1 to busybox udhcpc); returns at
        once: the new lease shows in the leases file and dnsmasq's log a moment later."""
        phone = self.phone(phone)
        proc = self._procs.get(f"p{phone.index}-udhcpc")
        if proc is None or proc.poll() is not None:
            raise LabError(f"{phone.hostname} has no running DHCP client")
        proc.send_signal(signal.SIGUSR1)  # `ip netns exec` execs udhcpc: this PID is udhcpc itself

    # ----------------------------------------------------------------------------------------------
    # phones

    def add_phone(
        self,
        hostname: str | None = None,
        persona: str | None = None,
        traffic: bool = True,
        dhcp_name: str | None = None,
    ) -> Phone:
        """Plug a new phone into the bridge, wait for its lease, optionally start its persona traffic.

        ``dhcp_name`` is the raw DHCP hostname to send when it should differ from ``hostname`` (e.g. a
        hostile name for a test); ``hostname`` stays the lab's label for the phone.
        """
        if not self._started or self._closed:
            raise LabError("the lab is not running")
        return self._add_phone(hostname, persona, dhcp_name, traffic)

    def _add_phone(
        self, hostname: str | None, persona: str | None, dhcp_name: str | None, traffic: bool
    ) -> Phone:
        with self._lock:
            index = self._next_index
            self._next_index += 1
        hostname = hostname or f"phone-{index}"
        if persona is None:
            persona = self._persona_mix[(index - 1) % len(self._persona_mix)] if self._persona_mix else None
            persona = persona or self.persona_book.pick(index)
        elif persona not in self.persona_book.personas:
            raise LabError(f"unknown persona {persona!r}")
        ns = self.names.phone_ns(index)
        state = self.run_dir / "phones" / f"p{index}"
        state.mkdir(parents=True, exist_ok=True)
        phone = Phone(
            index=index,
            ns=ns,
            hostname=hostname,
            mac=topology.phone_mac(index),
            persona=persona,
            state_dir=state,
            dhcp_name=dhcp_name,
        )
        cleanup.record_namespace(self.run_dir, ns)
        topology.create_phone(self.names, index, phone.mac)
        resolv = cleanup.ETC_NETNS / ns / "resolv.conf"
        resolv.parent.mkdir(parents=True, exist_ok=True)
        resolv.write_text(f"nameserver {self.gateway_ip}\n")
        argv = [sys.executable, "-m", "apviz.lab.phone", "--gateway", self.gateway_ip, "--state", str(state)]
        argv += ["--persona", persona, "--personas", str(self.personas_file)]
        if self.ca is not None:
            argv += ["--ca", str(self.ca.ca_cert)]
        if self.seed is not None:
            argv += ["--seed", str(self.seed + index)]
        proc = self._spawn(f"p{index}-helper", ns, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._helpers[ns] = _Helper(proc, f"{hostname} ({ns})")
        script = self.run_dir / "udhcpc.script"
        if not self._gw_ready.wait(timeout=15):
            raise LabError("gateway dnsmasq never became ready")
        udhcpc = ["busybox", "udhcpc", "-f", "-R", "-i", self.names.phone_if, "-s", str(script)]
        # Option 12 as raw hex ("12:" is numeric, so busybox sends the bytes as they are): its
        # "hostname:" form splits on spaces and drops names it finds invalid, hostile tests need both.
        sent_name = (dhcp_name if dhcp_name is not None else hostname).encode()[:255]
        udhcpc += ["-x", f"12:{sent_name.hex()}", "-t", "20", "-T", "1"]
        env = {"APVIZ_PHONE_STATE": str(state), "APVIZ_PHONE_RESOLV": str(resolv)}
        self._spawn(f"p{index}-udhcpc", ns, udhcpc, env=env)
        phone.ip = self._wait_lease(phone)
        self._helpers[ns].wait_ready()
        with self._lock:
            self.phones.append(phone)
            self.phones.sort(key=lambda p: p.index)
        if traffic:
            self.set_traffic(phone, True)
            self._write_summary()
        return phone

    def _wait_lease(self, phone: Phone, timeout: float = 15.0) -> str:
        lease = phone.state_dir / "lease"
        self._wait_file(lease, f"DHCP lease for {phone.hostname}", f"p{phone.index}-udhcpc", timeout)
        fields = dict(line.split("=", 1) for line in lease.read_text().splitlines() if "=" in line)
        return fields["ip"]

    def remove_phone(self, phone: Phone | str) -> None:
        """Release the phone's lease (udhcpc -R on SIGTERM), stop its processes, delete its namespace."""
        phone = self.phone(phone)
        self._stop(f"p{phone.index}-udhcpc")
        helper = self._helpers.pop(phone.ns, None)
        if helper is not None:
            helper.close()
            self._stop(f"p{phone.index}-helper")
        deadline = time.monotonic() + 2.0
        while phone.mac in self._read_leases() and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in topology.namespace_pids(phone.ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        topology.delete_namespaces([phone.ns])
        shutil.rmtree(cleanup.ETC_NETNS / phone.ns, ignore_errors=True)
        with self._lock:
            self.phones = [p for p in self.phones if p is not phone]
        self._write_summary()

    def _read_leases(self) -> str:
        try:
            return self.leases_file.read_text()
        except OSError:
            return ""

    def phone(self, which: Phone | str | int) -> Phone:
        """Find a phone by object, hostname, namespace or index."""
        for p in self.phones:
            if which is p or which in (p.hostname, p.ns, p.index):
                return p
        raise LabError(f"no phone {which!r} in lab {self.prefix}")

    def set_traffic(self, phone: Phone | str, on: bool) -> dict[str, Any]:
        """Start or stop the phone's persona traffic; returns its counters."""
        phone = self.phone(phone)
        return self._helpers[phone.ns].request({"op": "traffic", "on": on})

    def phone_resolve(self, phone: Phone | str, name: str, qtype: str = "A") -> ResolveResult:
        """Send one DNS query from the phone to the gateway (a line in dnsmasq's log)."""
        phone = self.phone(phone)
        data = self._helpers[phone.ns].request({"op": "resolve", "name": name, "qtype": qtype})
        return _result(ResolveResult, data)

    def phone_connect(
        self,
        phone: Phone | str,
        name: str | None = None,
        nbytes: int = 1000,
        port: int = 443,
        *,
        upload: int = 0,
        address: str | None = None,
        proto: str = "tcp",
        hold: float = 0.0,
        sni: str | None = None,
        tls: bool | None = None,
        timeout: float = 60.0,
    ) -> ConnectResult:
        """Resolve ``name`` through the gateway from the phone and make one connection moving bytes.

        ``nbytes`` come down from the server, ``upload`` go up. ``address`` skips the lookup.
        ``hold`` keeps the connection open that many seconds after the transfer (an ESTABLISHED flow
        for the test to look at) while this call returns at once. The phone finds the address as its
        persona does (plain DNS at the gateway for most; DoH, DoT, a hard-coded resolver or the relay
        for some: ``ConnectResult.resolved_via`` says which); on 443 TCP is TLS and UDP is QUIC with
        ``sni`` (default: the name) unless ``tls`` says otherwise.
        """
        phone = self.phone(phone)
        req = {"op": "connect", "name": name, "nbytes": nbytes, "port": port, "upload": upload}
        req |= {"address": address, "proto": proto, "hold": hold, "sni": sni, "tls": tls}
        return _result(ConnectResult, self._helpers[phone.ns].request(req, timeout=timeout))

    def phone_lookup(self, phone: Phone | str, name: str) -> ResolveResult:
        """Find ``name`` the way the phone's persona does (DoH, DoT, ... or the gateway)."""
        phone = self.phone(phone)
        return _result(ResolveResult, self._helpers[phone.ns].request({"op": "lookup", "name": name}))

    def phone_history(self, phone: Phone | str) -> list[ConnectResult]:
        """Every connection the phone made (persona traffic included) since the last call, oldest first
        (the phone remembers at most 2000)."""
        phone = self.phone(phone)
        return [_result(ConnectResult, d) for d in self._helpers[phone.ns].request({"op": "history"})]

    # ----------------------------------------------------------------------------------------------
    # misc

    def exec_in(
        self,
        ns: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float | None = 60.0,
    ) -> subprocess.CompletedProcess:
        """Run a command inside one of this lab's namespaces and capture its output (text)."""
        if ns not in self.namespaces and ns not in cleanup.namespaces_of(self.prefix):
            raise LabError(f"{ns!r} is not a namespace of lab {self.prefix}")
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def summary(self) -> dict[str, Any]:
        """What other tools need to attach to this lab (also written to ``lab.json``)."""
        return {
            "prefix": self.prefix,
            "owner_pid": os.getpid(),
            "gateway_ns": self.gateway_ns,
            "internet_ns": self.internet_ns,
            "bridge": self.bridge,
            "wan": self.wan,
            "lan_cidr": self.lan_cidr,
            "gateway_ip": self.gateway_ip,
            "wan_ip": self.wan_ip,
            "upstream_dns": self.upstream_dns,
            "log": self.log,
            "policy": self.policy,
            "run_dir": str(self.run_dir),
            "dnsmasq_log": str(self.dnsmasq_log) if self.dnsmasq_log else None,
            "journal_dir": str(self.journal_dir) if self.journal_dir else None,
            "leases_file": str(self.leases_file),
            "ca_cert": str(self.ca.ca_cert) if self.ca else None,
            "phones": [
                {k: str(v) if isinstance(v, Path) else v for k, v in asdict(p).items()} for p in self.phones
            ],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }

    def _write_summary(self) -> None:
        if self._closed or not self.run_dir.parts:
            return
        tmp = self.run_dir / "lab.json.tmp"
        tmp.write_text(json.dumps(self.summary(), indent=2) + "\n")
        tmp.replace(self.run_dir / "lab.json")
