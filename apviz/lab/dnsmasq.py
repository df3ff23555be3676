"""Configuration of the lab's two dnsmasq instances: the gateway's and the fake internet's resolver.

The gateway's configuration mirrors what the appliance runs (DHCP plus a forwarding cache with
``log-queries=extra``), so the parsers are tested against the real thing. Each option carries its
reason, because most of them exist to make the lab fast or deterministic.
"""

from __future__ import annotations

from pathlib import Path

from apviz.lab import topology
from apviz.lab.world import World


def gateway_config(
    names: topology.Names,
    *,
    leases_file: Path,
    pid_file: Path,
    log_file: Path | None,
    upstream: str,
    lease_time: str = "12h",
    policy_conf: Path | None = None,
) -> str:
    """The gateway's dnsmasq: DHCP on the bridge, DNS forwarded to the internet's resolver.

    ``log_file`` None means syslog (journal mode: the process runs with /dev/log bound to a private
    journald). ``policy_conf`` is the appliance's own policy drop-in (``dnsmasq/apviz-policy.conf``),
    included as it ships, so the lab tests prove the file the gateway installs.
    """
    first, last = topology.DHCP_RANGE
    netmask = topology.LAN.netmask
    lines = [
        "# apviz lab gateway dnsmasq (generated)",
        f"interface={names.bridge}",  # LAN only (plus lo inside the gateway namespace)
        "bind-interfaces",  # never a wildcard socket: nothing answers on the WAN side
        "no-resolv",  # /etc/resolv.conf is the host's; the lab's upstream is below
        "no-hosts",  # the host's /etc/hosts must not leak into answers
        f"server={upstream}",
        "domain-needed",  # plain names (no dot) stay local, as on a real gateway
        "bogus-priv",
        "log-queries=extra",  # serial + client on every line: what attribution needs
        "log-dhcp",
        # log-async is deliberately absent: lines must reach the log as the query happens.
        f"dhcp-range={first},{last},{netmask},{lease_time}",
        f"dhcp-option=option:router,{topology.GATEWAY_IP}",
        f"dhcp-option=option:dns-server,{topology.GATEWAY_IP}",
        f"dhcp-leasefile={leases_file}",
        "dhcp-authoritative",  # answer clients whose lease we forgot (e.g. after a restart)
        "no-ping",  # otherwise about 3 s per lease probing the address first
        f"pid-file={pid_file}",
    ]
    if log_file is not None:
        lines.append(f"log-facility={log_file}")
    if policy_conf is not None:
        lines.append(f"conf-file={policy_conf}")
    return "\n".join(lines) + "\n"


def upstream_config(world: World, *, pid_file: Path, log_file: Path) -> str:
    """The internet's resolver: answers the catalogue, NXDOMAIN for everything else."""
    lines = [
        "# apviz lab internet resolver (generated from data/lab/world.toml)",
        f"listen-address={world.upstream}",
        "bind-interfaces",
        "no-resolv",
        "no-hosts",
        "local=/#/",  # every name not configured below is NXDOMAIN, never forwarded
        "log-queries",
        f"log-facility={log_file}",
        f"pid-file={pid_file}",
        *world.dnsmasq_records(),
    ]
    return "\n".join(lines) + "\n"


def argv(conf_file: Path) -> list[str]:
    """Foreground dnsmasq reading only our file, so its PID is the one we started."""
    return ["dnsmasq", "--keep-in-foreground", f"--conf-file={conf_file}"]
