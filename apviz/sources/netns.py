"""Making a socket inside a named network namespace without moving the process there.

A socket belongs to the namespace its creator was in when it was made, and ``setns`` switches
only the calling thread. So a short-lived thread of our own switches (with pyroute2's ``setns``),
makes the socket and ends: no other thread, the event loop included, ever changes namespace.
pyroute2's ``create_socket`` forks a child instead, and a fork while other threads hold locks (an
executor busy dumping) can deadlock the child: measured here, in the conntrack burst test.
``flags=0`` keeps pyroute2 from creating a namespace that does not exist: a typo must fail.
"""

from __future__ import annotations

import errno
import socket
import threading

from pyroute2 import netns as pyroute2_netns


def socket_in(netns: str | None, family: int, type: int, proto: int = 0) -> socket.socket:
    """A new socket in ``netns`` (None: the namespace this thread is in)."""
    if netns is None:
        return socket.socket(family, type, proto)
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def in_namespace() -> None:
        try:
            pyroute2_netns.setns(netns, flags=0)
            made.append(socket.socket(family, type, proto))
        except BaseException as exc:  # handed to the caller's thread below
            failed.append(exc)

    worker = threading.Thread(target=in_namespace, name=f"apviz-netns-{netns}", daemon=True)
    worker.start()
    worker.join()
    if isinstance(failed[0] if failed else None, FileNotFoundError):
        raise FileNotFoundError(
            errno.ENOENT, f"network namespace {netns!r} does not exist (see `ip netns list`)"
        )
    if isinstance(failed[0] if failed else None, PermissionError):
        raise PermissionError(
            errno.EPERM,
            f"not permitted to enter network namespace {netns!r}: that needs root or CAP_SYS_ADMIN "
            "(or run apviz inside the namespace and leave netns unset)",
        )
    if failed:
        raise failed[0]
    return made[0]
