"""DnsmasqJournalSource against a real journald (PrivateJournald) fed by logger and by a real dnsmasq
in a network namespace: history, then live entries, identifier filtering, rotation and vacuum."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from apviz.events import DhcpEvent, DnsAnswer, DnsAnswerKind, DnsQuery
from apviz.lab.journald import PrivateJournald
from apviz.sources.journal import INSTALL_HINT, DnsmasqJournalSource, JournalUnavailable

pytestmark = pytest.mark.lab

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"
)


@pytest.fixture
def journald(tmp_path):
    prefix = "avdn" + secrets.token_hex(2)
    instance = PrivateJournald(tmp_path, prefix)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def netns():
    name = "avdn" + secrets.token_hex(2)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def log(journald: PrivateJournald, ident: str, message: str) -> None:
    """Straight to the syslog socket, as dnsmasq would write it."""
    subprocess.run(["logger", "-u", str(journald.dev_log), "-t", ident, message], check=True)


class Events:
    """Consumes a source in the background; tests wait for what they expect."""

    def __init__(self, source: DnsmasqJournalSource) -> None:
        self.source = source
        self.items: list[object] = []
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Events:
        self.task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def _run(self) -> None:
        async for event in self.source:
            self.items.append(event)

    async def wait(self, count: int, timeout: float = 8.0) -> list[object]:
        deadline = time.monotonic() + timeout
        while len(self.items) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.items!r} after {timeout} s, wanted {count}")
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # nothing more (no duplicates) arrives
        return self.items


def test_missing_systemd_python_names_the_fix(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "systemd" or name.startswith("systemd."):
            raise ImportError("No module named 'systemd'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(JournalUnavailable) as info:
        DnsmasqJournalSource(path="/nonexistent")
    assert "pip install systemd-python" in str(info.value)
    assert "libsystemd-dev" in INSTALL_HINT


@needs_root
def test_private_journald_starts_fast_and_stops(tmp_path):
    instance = PrivateJournald(tmp_path, "avdn" + secrets.token_hex(2))
    started = time.monotonic()
    instance.start()
    try:
        assert time.monotonic() - started < 1.0
        assert instance.dev_log.is_socket()
        assert any(instance.journal_dir.glob("*.journal"))
        pid = instance.pid
    finally:
        instance.stop()
    assert not instance.running
    assert not Path(f"/proc/{pid}").exists()


@needs_root
def test_history_then_live_filtered_by_identifier(journald):
    log(journald, "dnsmasq", "1 10.99.1.133/5 query[A] old.example from 10.99.1.133")
    log(journald, "sshd", "query[A] not.dnsmasq from 10.99.1.133")
    log(journald, "dnsmasq-dhcp", "77 DHCPACK(br0) 10.99.1.164 02:00:00:00:00:02 phone-2")
    journald.sync()

    async def main():
        source = DnsmasqJournalSource(path=journald.journal_dir, since_seconds=300, poll_interval=0.5)
        async with Events(source) as events:
            history = await events.wait(2)
            assert [type(e) for e in history] == [DnsQuery, DhcpEvent]
            assert history[0].name == "old.example"
            assert history[1] == DhcpEvent(
                history[1].ts, 77, "DHCPACK", "br0", "10.99.1.164", "02:00:00:00:00:02", "phone-2"
            )
            assert abs(history[0].ts - time.time()) < 60  # __REALTIME_TIMESTAMP, in seconds

            # live, and through wrap(): /dev/log in a private mount namespace
            subprocess.run(
                journald.wrap(
                    ["logger", "-t", "dnsmasq", "2 10.99.1.133/6 cached new.example is 198.18.0.7"]
                ),
                check=True,
            )
            log(journald, "other", "cached ignored.example is 1.2.3.4")
            items = await events.wait(3)
            assert items[2] == DnsAnswer(
                items[2].ts, 2, "10.99.1.133", DnsAnswerKind.CACHED, "new.example", address="198.18.0.7"
            )
            assert len(items) == 3
            assert source.entries == 3  # the sshd/other lines never left the journal
            assert source.parser.counts()["unparsed"] == 0

    asyncio.run(main())


@needs_root
def test_since_zero_skips_history(journald):
    log(journald, "dnsmasq", "query[A] old.example from 10.0.0.1")
    journald.sync()

    async def main():
        source = DnsmasqJournalSource(path=journald.journal_dir, since_seconds=0, poll_interval=0.5)
        async with Events(source) as events:
            await asyncio.sleep(0.3)
            log(journald, "dnsmasq", "query[A] new.example from 10.0.0.1")
            items = await events.wait(1)
            assert [e.name for e in items] == ["new.example"]

    asyncio.run(main())


@needs_root
def test_follows_across_rotation_and_vacuum(journald):
    async def main():
        source = DnsmasqJournalSource(path=journald.journal_dir, since_seconds=0, poll_interval=0.5)
        async with Events(source) as events:
            await asyncio.sleep(0.3)
            names = []
            for round_ in range(3):
                name = f"r{round_}.example"
                names.append(name)
                log(journald, "dnsmasq", f"query[A] {name} from 10.0.0.1")
                await events.wait(len(names))
                journald.rotate()  # journalctl --rotate cannot reach a journald in another namespace
                await asyncio.sleep(0.2)
            vacuum = subprocess.run(
                ["journalctl", f"--directory={journald.journal_dir}", "--vacuum-files=1"],
                capture_output=True,
                text=True,
            )
            assert vacuum.returncode == 0, vacuum.stderr
            assert not list(journald.journal_dir.glob("system@*.journal"))  # archives are gone
            log(journald, "dnsmasq", "query[A] after.vacuum from 10.0.0.1")
            items = await events.wait(4)
            assert [e.name for e in items] == [*names, "after.vacuum"]
            assert source.invalidations >= 1

    asyncio.run(main())


@needs_root
@pytest.mark.parametrize("order", ["netns-then-wrap", "wrap-then-netns"])
def test_real_dnsmasq_in_a_netns_logs_through_wrap(journald, netns, tmp_path, order):
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(
        "\n".join(
            [
                "port=53",
                "listen-address=127.0.0.1",
                "bind-interfaces",
                "user=root",
                "no-resolv",
                "no-hosts",
                "keep-in-foreground",
                "local=/lan/",
                "host-record=printer.lan,10.99.1.10",
                "log-queries=extra",
                f"pid-file={tmp_path / 'dnsmasq.pid'}",
                "dhcp-leasefile=" + str(tmp_path / "leases"),
            ]
        )
        + "\n"
    )
    dnsmasq = ["dnsmasq", f"--conf-file={conf}"]
    netns_exec = ["ip", "netns", "exec", netns]
    argv = (
        [*netns_exec, *journald.wrap(dnsmasq)]
        if order == "netns-then-wrap"
        else journald.wrap([*netns_exec, *dnsmasq])
    )
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def ask(name: str) -> None:
        subprocess.run(
            [*netns_exec, "busybox", "nslookup", name, "127.0.0.1"], capture_output=True, timeout=10
        )

    async def main():
        deadline = time.monotonic() + 5
        while not (tmp_path / "dnsmasq.pid").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        ask("printer.lan")  # before the source starts: history
        journald.sync()
        source = DnsmasqJournalSource(path=journald.journal_dir, since_seconds=60, poll_interval=0.5)
        async with Events(source) as events:
            await events.wait(2)
            await asyncio.to_thread(ask, "nope.lan")  # live
            deadline = time.monotonic() + 8
            while not any(
                getattr(e, "name", None) == "nope.lan" and isinstance(e, DnsAnswer) for e in events.items
            ):
                assert time.monotonic() < deadline, events.items
                await asyncio.sleep(0.05)
        queries = [e for e in events.items if isinstance(e, DnsQuery)]
        answers = [e for e in events.items if isinstance(e, DnsAnswer)]
        assert {(q.name, q.client) for q in queries} >= {
            ("printer.lan", "127.0.0.1"),
            ("nope.lan", "127.0.0.1"),
        }
        printer = next(a for a in answers if a.name == "printer.lan" and a.address)
        assert (printer.kind, printer.address, printer.client) == (
            DnsAnswerKind.CONFIG,
            "10.99.1.10",
            "127.0.0.1",
        )
        assert printer.serial == next(q.serial for q in queries if q.name == "printer.lan")
        nope = next(a for a in answers if a.name == "nope.lan" and a.rcode)
        assert nope.rcode == "NXDOMAIN"

    try:
        asyncio.run(main())
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
