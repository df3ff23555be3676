"""``apviz lab --view serve``: the web service on the lab, reachable from the host and the phones.

The service runs in the host's namespace and reads the gateway's conntrack through ``netns``, as
``apviz top`` does. It listens twice: on the host's loopback (for the person running the demo)
and on the gateway's LAN address inside the gateway namespace (for the lab phones' ``/me``
page), the second socket made in that namespace without moving the process there. The lab's
small mmdb gives the pretend internet real-world places and organisations.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import uvicorn

from apviz.config import Config, from_dict
from apviz.lab.lab import Lab
from apviz.sources.netns import socket_in

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080


def lab_config(lab: Lab, port: int = DEFAULT_PORT, **sections: dict[str, object]) -> Config:
    """A configuration that reads this lab (sources, LAN, the lab mmdb), plus any overrides."""
    from apviz.enrich.labdb import ensure_lab_db

    mmdb = str(ensure_lab_db())
    data: dict[str, dict[str, object]] = {
        "server": {"listen": "127.0.0.1", "port": port},
        "sources": {
            "netns": lab.gateway_ns,
            "dnsmasq_log": str(lab.dnsmasq_log or ""),
            "journal_dir": str(lab.journal_dir or ""),
            "leases": str(lab.leases_file),
            "conntrack_refresh": 2.0,
        },
        "state": {"lan": [lab.lan_cidr], "local_addresses": [lab.gateway_ip, lab.wan_ip]},
        "view": {"gateway_label": "The lab"},
        "enrich": {"geo_db": mmdb, "asn_db": mmdb},
        # The lab's phones are simulated: their hostnames are no one's, and showing them lets the lab
        # tests follow each phone. A lab run can still ask for {"exhibit": {"mode": "exhibit"}}.
        "exhibit": {"mode": "home"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return from_dict(data, env={})


def lab_sockets(lab: Lab, port: int, host: str = "127.0.0.1") -> list[socket.socket]:
    """Listening sockets: ``host`` here, and the gateway's LAN address inside its namespace."""
    out = []
    for netns, address in ((None, host), (lab.gateway_ns, lab.gateway_ip)):
        sock = socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(512)
        sock.setblocking(False)
        out.append(sock)
    return out


async def serve_lab(
    lab: Lab, port: int = DEFAULT_PORT, config: Config | None = None, duration: float | None = None
) -> None:
    """Run the web service on the lab for ``duration`` seconds, or until Ctrl-C."""
    from apviz.app import build_service
    from apviz.server.app import create_app

    cfg = config or lab_config(lab, port)
    service = build_service(cfg)
    app = create_app(service)
    sockets = lab_sockets(lab, cfg.server.port, cfg.server.listen)
    print(
        f"  kiosk:      http://{cfg.server.listen}:{cfg.server.port}/   "
        f"(phones: http://{lab.gateway_ip}:{cfg.server.port}/me)",
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2)
    )
    if duration:
        asyncio.get_running_loop().call_later(duration, setattr, server, "should_exit", True)
    try:
        await server.serve(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()


def web_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "web"
