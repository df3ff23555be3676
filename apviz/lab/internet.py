"""The fake internet's servers, run as ``python -m apviz.lab.internet`` inside the internet namespace.

The namespace owns all of 198.18.0.0/15 (a ``local`` route on lo), so one socket per port answers
every catalogue address. The protocol is a tiny line protocol so a phone can move exactly the volume
a persona wants and a test can check the kernel's byte counters against it:

- ``GET <n>\\n``: the server sends ``n`` bytes;
- ``PUT <n>\\n`` followed by ``n`` bytes: the server answers ``OK <n>\\n`` once they arrived;
- anything that looks like HTTP gets a small HTTP/1.0 page (handy with curl), anything else ``ERR``.

Several requests can share one connection. UDP ports echo each datagram. The process exits when its
standard input closes, so it cannot outlive the lab that started it, and prints ``ready`` once every
socket is bound so the lab knows when to go on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import struct
import sys
import threading

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
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class UdpEcho:
    """Echo every datagram back to its sender (stands in for QUIC, NTP and friends).

    The socket is bound to the wildcard, so the reply must name its source explicitly: left to the
    routing table it would leave from the uplink's address, which the gateway's conntrack does not
    expect, and the phone would never see it. IP_PKTINFO gives the address the datagram was sent to.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> None:
        self.loop = loop
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_IP, IP_PKTINFO, 1)
        self.sock.bind((host, port))
        self.sock.setblocking(False)
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


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Block on stdin in a thread; EOF means the lab is gone, so stop."""
    with contextlib.suppress(Exception):
        while sys.stdin.buffer.read(4096):
            pass
    loop.call_soon_threadsafe(stop.set)


async def serve(host: str, tcp_ports: list[int], udp_ports: list[int]) -> None:
    loop = asyncio.get_running_loop()
    servers = [await asyncio.start_server(handle_tcp, host, port, backlog=1024) for port in tcp_ports]
    echoes = [UdpEcho(loop, host, port) for port in udp_ports]
    stop = asyncio.Event()
    threading.Thread(target=_watch_stdin, args=(loop, stop), daemon=True).start()
    print("ready", flush=True)
    await stop.wait()
    for server in servers:
        server.close()
    for echo in echoes:
        echo.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="apviz lab fake-internet servers (run inside the lab)")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (the namespace owns 198.18/15)")
    parser.add_argument("--tcp", type=int, action="append", help="TCP port (repeatable; default 80, 443)")
    parser.add_argument("--udp", type=int, action="append", help="UDP echo port (repeatable; default 7, 443)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.tcp or [80, 443], args.udp or [7, 443]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
