"""The resolvers phones use *instead of* the gateway's dnsmasq, as configuration for the lab to start.

Real visitors' phones often skip the network's resolver: Firefox asks Cloudflare over HTTPS, Android's
Private DNS asks dns.google over TLS, apps hard-code 8.8.8.8. The lab runs the real thing for each, on
the catalogue addresses ``[services]`` in world.toml names:

- **dnsdist** (Debian's 1.7.3) for DNS over HTTPS (443, ``/dns-query``) and DNS over TLS (853), with
  the lab CA's certificate, forwarding to the internet's dnsmasq: the answers are the catalogue's;
- a **second dnsmasq** answering plain DNS (53) with the same records, for hard-coded resolvers.

dnsdist binds 443 with SO_REUSEPORT beside the internet server's wildcard listener (which sets it
too): Linux gives a connection to the most specific bound address, so DoH addresses reach dnsdist and
every other address the line-protocol server.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from apviz.lab import dnsmasq
from apviz.lab.world import World

DOH_PATH = "/dns-query"
DOH_PORT = 443
DOT_PORT = 853
DNSDIST_CONSOLE = "127.0.0.1:5300"  # its plain listener, inside the internet namespace only


def _lua(text: str) -> str:
    """A Lua string literal (paths and addresses are ours, but quote them properly anyway)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dnsdist_config(world: World, *, cert: Path, key: Path) -> str:
    """dnsdist's Lua configuration: DoH and DoT listeners, one forced-up backend (the upstream)."""
    lines = [
        "-- apviz lab DoH/DoT resolver (generated from data/lab/world.toml)",
        'setSecurityPollSuffix("")',  # no version polling: the lab reaches nothing outside itself
        f"setLocal({_lua(DNSDIST_CONSOLE)})",  # the default 127.0.0.1:53 is fine too, but say it
        'setACL({"0.0.0.0/0"})',  # only the lab's own namespaces can reach it
        # Forced up: no health-check queries every second in the upstream's log.
        f"newServer({{address={_lua(world.upstream + ':53')}}}):setUp()",
    ]
    tls = f"{_lua(str(cert))}, {_lua(str(key))}"
    for address in world.service_addresses("dot"):
        lines.append(f"addTLSLocal({_lua(f'{address}:{DOT_PORT}')}, {tls}, {{reusePort=true}})")
    for address in world.service_addresses("doh"):
        listen = _lua(f"{address}:{DOH_PORT}")
        lines.append(f"addDOHLocal({listen}, {tls}, {_lua(DOH_PATH)}, {{reusePort=true}})")
    return "\n".join(lines) + "\n"


def dnsdist_argv(conf: Path) -> list[str]:
    """Foreground, logging to stderr (the lab's log file), no console: its PID is the one we start."""
    return ["dnsdist", "--supervised", "--disable-syslog", "-C", str(conf)]


def dnsdist_listeners(world: World) -> set[tuple[str, int]]:
    """Every (address, port) dnsdist must be listening on before the lab calls it ready."""
    out = {(a, DOT_PORT) for a in world.service_addresses("dot")}
    return out | {(a, DOH_PORT) for a in world.service_addresses("doh")}


def plain_dns_config(world: World, address: str, *, pid_file: Path, log_file: Path) -> str:
    """A second dnsmasq on ``address`` with the upstream's records (the same answers, another door)."""
    return dnsmasq.upstream_config(
        dataclasses.replace(world, upstream=address), pid_file=pid_file, log_file=log_file
    )


def tcp_listening(pid: int) -> set[tuple[str, int]]:
    """IPv4 TCP sockets in LISTEN state in ``pid``'s network namespace (from /proc/<pid>/net/tcp).

    Reading the process's own view needs no command inside the namespace, so waiting costs nothing.
    """
    out: set[tuple[str, int]] = set()
    try:
        text = Path(f"/proc/{pid}/net/tcp").read_text()
    except OSError:
        return out
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A":
            hex_addr, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_addr)[::-1]  # little-endian on every machine the lab runs on
            out.add((".".join(str(b) for b in raw), int(hex_port, 16)))
    return out
