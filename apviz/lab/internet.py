"""The fake internet's servers, run as ``python -m apviz.lab.internet`` inside the internet namespace.

The namespace owns all of 198.18.0.0/15 (a ``local`` route on lo), so one socket per port answers
every catalogue address. The protocol is a tiny line protocol so a phone can move exactly the volume
a persona wants and a test can check the kernel's byte counters against it:

- ``GET <n>\\n``: the server sends ``n`` bytes;
- ``PUT <n>\\n`` followed by ``n`` bytes: the server answers ``OK <n>\\n`` once they arrived;
- anything that looks like HTTP gets a small HTTP/1.0 page (handy with curl), anything else ``ERR``.

Several requests can share one connection. With a certificate (the lab CA's, see ``apviz.lab.ca``)
TCP 443 speaks the same protocol inside TLS and UDP 443 inside QUIC streams (``apviz.lab.quic``), so
phones send real ClientHellos and QUIC Initials with their server names; other TCP ports stay plain and
other UDP ports echo each datagram. The TLS listener sets SO_REUSEPORT so the lab's DoH resolver
(dnsdist) can bind 443 on its own few addresses: the kernel prefers the exact address over our wildcard.
The process exits when its standard input closes, so it cannot outlive the lab that started it, and
prints ``ready`` once every socket is bound so the lab knows when to go on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import socket
import ssl
import struct
import sys
import threading
from pathlib import Path
from typing import Any

MAX_TRANSFER = 1 << 31
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; the constant is missing before Python 3.13
PKTINFO = struct.Struct("I4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr
CHUNK = bytes(range(256)) * 256  # 64 KiB of a recognisable pattern
HTTP_PAGE = b"<html><body>apviz lab internet</body></html>\n"
HTTP_HEAD = b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(HTTP_PAGE)
HTTP_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")


async def _send(writer: asyncio.StreamWriter, n: int) -> None:
    while n > 0:
        piece = CHUNK if n >= len(CHUNK) else CHUNK[:n]
        writer.write(piece)
        n -= len(piece)
        await writer.drain()


async def _receive(reader: asyncio.StreamReader, n: int) -> None:
    while n > 0:
        data = await reader.read(min(n, 1 << 16))
        if not data:
            raise ConnectionError("client closed during PUT")
        n -= len(data)


async def handle_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve requests on one connection until the client closes it."""
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit() and int(parts[1]) <= MAX_TRANSFER:
                n = int(parts[1])
                if parts[0] == b"GET":
                    await _send(writer, n)
                    continue
                if parts[0] == b"PUT":
                    await _receive(reader, n)
                    writer.write(b"OK %d\n" % n)
                    await writer.drain()
                    continue
            if parts and parts[0] in (b"GET", b"HEAD", b"POST") and line.rstrip().endswith(HTTP_VERSIONS):
                writer.write(HTTP_HEAD + (HTTP_PAGE if parts[0] != b"HEAD" else b""))
                await writer.drain()
                break
            writer.write(b"ERR\n")
            await writer.drain()
            break
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class UdpEcho:
    """Echo every datagram back to its sender (stands in for NTP, a video call's RTP and friends).

    The socket is bound to the wildcard, so the reply must name its source explicitly: left to the
    routing table it would leave from the uplink's address, which the gateway's conntrack does not
    expect, and the phone would never see it. IP_PKTINFO gives the address the datagram was sent to.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.loop = loop
        self.sock = sock
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data, ancillary, _flags, addr = self.sock.recvmsg(65535, socket.CMSG_SPACE(PKTINFO.size))
            except (BlockingIOError, InterruptedError):
                return
            cmsg = []
            for level, kind, cdata in ancillary:
                if level == socket.SOL_IP and kind == IP_PKTINFO and len(cdata) >= PKTINFO.size:
                    _ifindex, _spec_dst, dst = PKTINFO.unpack(cdata[: PKTINFO.size])
                    cmsg = [(socket.SOL_IP, IP_PKTINFO, PKTINFO.pack(0, dst, bytes(4)))]
            with contextlib.suppress(OSError):
                self.sock.sendmsg([data], cmsg, 0, addr)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


def udp_socket(host: str, port: int) -> socket.socket:
    """A bound, non-blocking UDP socket that learns each datagram's destination (IP_PKTINFO)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_IP, IP_PKTINFO, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Block on stdin in a thread; EOF means the lab is gone, so stop."""
    with contextlib.suppress(Exception):
        while sys.stdin.buffer.read(4096):
            pass
    loop.call_soon_threadsafe(stop.set)


TLS_PORTS = (443,)
QUIC_PORTS = (443,)


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    ctx.set_alpn_protocols(["h2", "http/1.1"])  # what a browser offers; the payload stays the line protocol
    return ctx


async def serve(
    host: str, tcp_ports: list[int], udp_ports: list[int], cert: Path | None = None, key: Path | None = None
) -> None:
    loop = asyncio.get_running_loop()
    ctx = tls_context(cert, key) if cert is not None and key is not None else None
    servers = []
    for port in tcp_ports:
        secure = {"ssl": ctx, "ssl_handshake_timeout": 10.0} if ctx is not None and port in TLS_PORTS else {}
        servers.append(
            await asyncio.start_server(handle_tcp, host, port, backlog=1024, reuse_port=True, **secure)  # type: ignore[arg-type]
        )
    udp: list[Any] = []
    quic_sockets = []
    for port in udp_ports:
        sock = udp_socket(host, port)
        if ctx is not None and cert is not None and key is not None and port in QUIC_PORTS:
            quic_sockets.append(sock)
        else:
            udp.append(UdpEcho(loop, sock))
    stop = asyncio.Event()
    threading.Thread(target=_watch_stdin, args=(loop, stop), daemon=True).start()
    # Every socket is bound: phones may start. aioquic takes ~0.2 s to import, so it loads after
    # "ready"; an Initial arriving meanwhile waits in its socket's buffer.
    print("ready", flush=True)
    if quic_sockets:
        quic = await loop.run_in_executor(None, importlib.import_module, "apviz.lab.quic")
        config = quic.server_configuration(cert, key)
        udp += [quic.QuicServer(loop, sock, config) for sock in quic_sockets]
    await stop.wait()
    for server in servers:
        server.close()
    for endpoint in udp:
        endpoint.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="apviz lab fake-internet servers (run inside the lab)")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (the namespace owns 198.18/15)")
    parser.add_argument("--tcp", type=int, action="append", help="TCP port (repeatable; default 80, 443)")
    parser.add_argument("--udp", type=int, action="append", help="UDP port (repeatable; default 7 443 3478)")
    parser.add_argument("--cert", type=Path, help="certificate chain (PEM): TLS on TCP 443, QUIC on UDP 443")
    parser.add_argument("--key", type=Path, help="its private key (PEM)")
    args = parser.parse_args(argv)
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    asyncio.run(serve(args.host, args.tcp or [80, 443], args.udp or [7, 443, 3478], args.cert, args.key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
