"""systemd readiness and watchdog for ``apviz serve``, and a service that fails stopping the server.

``Type=notify`` makes systemd wait for ``READY=1``, so ``systemctl start apviz`` returns (and units
ordered after it start) only once the sources are up and the port is open. ``WatchdogSec=`` makes
systemd restart a service that stops sending ``WATCHDOG=1``; the pings come from the event loop
and only while the state owner task is alive, so a wedged loop or a dead owner both stop them.

The service (sources -> state -> hub) runs as a task beside uvicorn; if it dies, say because
conntrack refused us for lack of CAP_NET_ADMIN, the web server would go on serving a frozen
screen. :func:`supervise` notices, stops the server and re-raises the leaf error so the command
line prints its one-line fix and exits non-zero (systemd then shows the reason in the status).

``systemd.daemon.notify`` (systemd-python) does the sending; it is a no-op without
``NOTIFY_SOCKET``. Where systemd-python is not installed a few lines of our own do the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from apviz.errors import leaves, user_error

if TYPE_CHECKING:
    import uvicorn

    from apviz.service import Service

log = logging.getLogger(__name__)

OWNER_TASK = "apviz-owner"  # the name Pipeline gives the task that applies events to the state
READY_GRACE = 15.0  # seconds after which a quiet source no longer holds back READY=1


class Notifier:
    """Sends sd_notify messages when systemd asked for them (``NOTIFY_SOCKET`` set)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.socket_path = env.get("NOTIFY_SOCKET") or None
        self.watchdog_interval = watchdog_interval(env)
        self.sent: list[str] = []  # what was sent, for tests and the log

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields as one datagram; False when not under systemd or on error."""
        if self.socket_path is None:
            return False
        state = "\n".join(fields)
        try:
            ok = _notify(state, self.socket_path)
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.socket_path, exc)
            return False
        if ok:
            self.sent.append(state)
        return ok


def watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between pings: half of ``WATCHDOG_USEC``, as sd_watchdog_enabled(3) advises.

    ``WATCHDOG_PID``, when set, names the process the watchdog is meant for; a child that inherited
    the environment must not ping in its parent's name.
    """
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid.strip() != str(os.getpid())):
        return None
    return usec / 2e6


def _notify(state: str, path: str) -> bool:
    try:
        from systemd import daemon
    except ImportError:
        return _notify_socket(state, path)
    return bool(daemon.notify(state))


def _notify_socket(state: str, path: str) -> bool:
    """sd_notify without libsystemd: one datagram to the socket (``@`` is the abstract namespace)."""
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(state.encode(), address)
    return True


def owner_alive() -> bool:
    """Is the task that applies events to the live state running (and so the view current)?"""
    return any(t.get_name() == OWNER_TASK and not t.done() for t in asyncio.all_tasks())


def _status(service: Service, server: uvicorn.Server) -> str:
    config = server.config
    figures = service.figures()
    shown = f"{figures['devices']} devices, {figures['flows']} flows"
    return f"STATUS=serving on {config.host}:{config.port}: {shown}"


async def _watch(
    server: uvicorn.Server,
    service: Service,
    notifier: Notifier,
    failures: list[BaseException],
    ready_grace: float,
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    ready_sent = False
    next_ping = 0.0
    step = min(0.2, notifier.watchdog_interval or 0.2)
    while True:
        task = service.task
        if task is not None and task.done():
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                failures.append(exc)
                first = leaves(exc)[0]
                notifier.send(f"STATUS=failed: {first}"[:200])
                server.should_exit = True
                return
        now = loop.time()
        if not ready_sent and server.started and task is not None and not task.done():
            quiet_too_long = now - started >= ready_grace
            if service.pipeline.ready.is_set() or quiet_too_long:
                notifier.send("READY=1", _status(service, server))
                ready_sent = True
        if ready_sent and notifier.watchdog_interval and now >= next_ping and owner_alive():
            notifier.send("WATCHDOG=1")
            next_ping = now + notifier.watchdog_interval
        await asyncio.sleep(step)


async def supervise(
    server: uvicorn.Server,
    service: Service,
    notifier: Notifier | None = None,
    ready_grace: float = READY_GRACE,
    **serve_kwargs: Any,
) -> None:
    """Run ``server.serve()`` with readiness/watchdog notifications; re-raise a failed service's error.

    The server's lifespan starts the service. A failure of the service stops the server, and the
    error re-raised is the leaf the user can act on (see :func:`apviz.errors.user_error`).
    """
    notifier = notifier or Notifier()
    failures: list[BaseException] = []
    stopping: list[bool] = []

    def stop_requested() -> None:
        if not stopping:
            stopping.append(True)
            notifier.send("STOPPING=1")

    handle_exit = server.handle_exit

    def on_signal(sig: int, frame: Any) -> None:
        # uvicorn re-raises SIGTERM after its graceful shutdown, so the process ends inside serve():
        # tell systemd now, when the stop is asked for (it is what STOPPING=1 means anyway).
        stop_requested()
        handle_exit(sig, frame)

    server.handle_exit = on_signal  # type: ignore[method-assign]  # read by uvicorn's capture_signals
    watcher = asyncio.create_task(_watch(server, service, notifier, failures, ready_grace))
    try:
        await server.serve(**serve_kwargs)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        stop_requested()
    if failures:
        raise user_error(failures[0]) or failures[0]
