"""LogFollower and DnsmasqFileSource on real files: appends, partial lines, rename rotation with late
writes to the old file, copytruncate, delete + recreate. No line may be lost or repeated."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path

from apviz.events import DnsAnswer, DnsQuery, SourceError
from apviz.sources.dnsmasq_log import DnsmasqLogParser
from apviz.sources.logfile import DnsmasqFileSource, FollowProblem, LogFollower

POLL = 0.02
DATA = Path(__file__).parent / "data" / "dnsmasq"


class Collector:
    """Runs a follower in the background and lets the test wait for what it has seen."""

    def __init__(self, follower: LogFollower) -> None:
        self.follower = follower
        self.items: list[object] = []
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        self.task = asyncio.create_task(self._run())
        await asyncio.sleep(POLL * 3)  # let it open the file and settle at its end
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def _run(self) -> None:
        async for item in self.follower.items():
            self.items.append(item)

    @property
    def lines(self) -> list[str]:
        return [i for i in self.items if isinstance(i, str)]

    async def wait_lines(self, count: int, timeout: float = 5.0) -> list[str]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.lines) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"only {self.lines!r} after {timeout} s, wanted {count}")
            await asyncio.sleep(0.005)
        await asyncio.sleep(POLL * 4)  # and nothing more arrives
        return self.lines


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


def follower(path: Path, **kw: object) -> LogFollower:
    return LogFollower(path, poll_interval=POLL, rotate_grace=kw.pop("rotate_grace", 0.3), **kw)  # type: ignore[arg-type]


def test_starts_at_end_and_follows_appends(tmp_path):
    path = tmp_path / "dnsmasq.log"
    path.write_text("old 1\nold 2\n")

    async def main():
        async with Collector(follower(path)) as c:
            append(path, "a\n")
            append(path, "b\nc\n")
            assert await c.wait_lines(3) == ["a", "b", "c"]

    asyncio.run(main())


def test_from_start_reads_existing_lines(tmp_path):
    path = tmp_path / "dnsmasq.log"
    path.write_text("old 1\nold 2\n")

    async def main():
        async with Collector(follower(path, from_start=True)) as c:
            append(path, "new\n")
            assert await c.wait_lines(3) == ["old 1", "old 2", "new"]

    asyncio.run(main())


def test_partial_lines_wait_for_their_newline(tmp_path):
    path = tmp_path / "dnsmasq.log"
    path.write_text("")

    async def main():
        async with Collector(follower(path)) as c:
            append(path, "par")
            await asyncio.sleep(POLL * 5)
            assert c.lines == []
            append(path, "tial\r\nnext")
            assert await c.wait_lines(1) == ["partial"]
            append(path, " one\n")
            assert await c.wait_lines(2) == ["partial", "next one"]

    asyncio.run(main())


def test_invalid_utf8_is_replaced_and_long_lines_cut(tmp_path):
    path = tmp_path / "dnsmasq.log"
    path.write_bytes(b"")

    async def main():
        async with Collector(follower(path, max_line_bytes=10)) as c:
            with path.open("ab") as f:
                f.write(b"caf\xe9 \xff\n" + b"x" * 25 + b"\nshort\n")
            assert await c.wait_lines(3) == ["caf\ufffd \ufffd", "x" * 10, "short"]
            assert c.follower.overlong == 1

    asyncio.run(main())


def test_rename_rotation_loses_nothing(tmp_path):
    """logrotate's default: rename, create a new file; the writer keeps its old fd for a while."""
    path = tmp_path / "dnsmasq.log"
    path.write_text("")

    async def main():
        async with Collector(follower(path, rotate_grace=0.5)) as c:
            writer = path.open("a", encoding="utf-8", buffering=1)
            writer.write("before 1\nbefore 2\n")
            writer.write("half ")
            os.rename(path, tmp_path / "dnsmasq.log.1")
            writer.write("line\nafter rename, old fd\n")  # before the new file exists
            await asyncio.sleep(POLL * 3)
            append(path, "new 1\n")
            writer.write("late, old fd\n")  # the daemon has not reopened yet
            await asyncio.sleep(POLL * 3)
            writer.close()  # now it reopens
            append(path, "new 2\n")
            lines = await c.wait_lines(6)
            await asyncio.sleep(0.6)  # past the grace period: the old fd is closed, no repeats
            assert sorted(c.lines) == sorted(
                [
                    "before 1",
                    "before 2",
                    "half line",
                    "after rename, old fd",
                    "new 1",
                    "late, old fd",
                    "new 2",
                ]
            )
            assert lines[:4] == ["before 1", "before 2", "half line", "after rename, old fd"]
            assert c.follower.rotations == 1

    asyncio.run(main())


def test_rotated_file_unterminated_last_line_is_flushed(tmp_path):
    path = tmp_path / "dnsmasq.log"
    path.write_text("")

    async def main():
        async with Collector(follower(path, rotate_grace=0.1)) as c:
            append(path, "complete\nno newline")
            os.rename(path, tmp_path / "old.log")
            append(path, "fresh\n")
            assert sorted(await c.wait_lines(3)) == ["complete", "fresh", "no newline"]

    asyncio.run(main())


def test_copytruncate_restarts_at_zero(tmp_path):
    path = tmp_path / "dnsmasq.log"
    path.write_text("")

    async def main():
        async with Collector(follower(path)) as c:
            append(path, "a\nb\n")
            await c.wait_lines(2)
            shutil.copy(path, tmp_path / "dnsmasq.log.1")
            with path.open("r+") as f:
                f.truncate(0)
            await asyncio.sleep(POLL * 4)  # the follower notices the size went down
            append(path, "c\n")
            assert await c.wait_lines(3) == ["a", "b", "c"]
            assert c.follower.truncations == 1
            assert c.follower.rotations == 0

    asyncio.run(main())


def test_delete_and_recreate(tmp_path):
    path = tmp_path / "dnsmasq.log"
    path.write_text("")

    async def main():
        async with Collector(follower(path)) as c:
            writer = path.open("a", encoding="utf-8", buffering=1)
            writer.write("a\n")
            await c.wait_lines(1)
            path.unlink()
            writer.write("to the deleted file\n")  # still readable through our descriptor
            await asyncio.sleep(POLL * 4)
            writer.close()
            path.write_text("recreated 1\n")
            append(path, "recreated 2\n")
            assert await c.wait_lines(4) == ["a", "to the deleted file", "recreated 1", "recreated 2"]

    asyncio.run(main())


def test_waits_for_the_file_to_appear(tmp_path):
    path = tmp_path / "later.log"

    async def main():
        async with Collector(follower(path)) as c:
            await asyncio.sleep(POLL * 3)
            assert c.items == [FollowProblem(f"waiting for {path} to appear")]
            path.write_text("first\n")  # a file that appears is read from its start
            assert await c.wait_lines(1) == ["first"]
            assert c.items[-2:] == [FollowProblem(None), "first"]

    asyncio.run(main())


def test_many_lines_through_repeated_rotations(tmp_path):
    """A writer that rotates every 200 lines (rename, reopen): every line exactly once.

    Rotations are spaced by a few poll intervals: a file created and rotated away again between
    two polls is never seen by any path-polling follower (tail -F included)."""
    path = tmp_path / "dnsmasq.log"
    path.write_text("")
    total = 2000

    async def main():
        async with Collector(follower(path, rotate_grace=0.2)) as c:
            writer = path.open("a", encoding="utf-8")
            for i in range(total):
                writer.write(f"line {i}\n")
                if i % 200 == 199:
                    writer.flush()
                    os.rename(path, tmp_path / f"dnsmasq.log.{i}")
                    await asyncio.sleep(0.001)
                    writer.close()
                    writer = path.open("a", encoding="utf-8")
                    await asyncio.sleep(POLL * 3)
                if i % 50 == 0:
                    writer.flush()
                    await asyncio.sleep(0.002)
            writer.close()
            lines = await c.wait_lines(total, timeout=10)
            await asyncio.sleep(0.3)
            assert sorted(c.lines, key=lambda s: int(s.split()[1])) == [f"line {i}" for i in range(total)]
            assert len(lines) == total

    asyncio.run(main())


def test_dnsmasq_file_source_yields_events(tmp_path):
    path = tmp_path / "dnsmasq.log"
    lines = (DATA / "extra.log").read_text(encoding="utf-8").splitlines()
    clock = iter(range(1000, 100000))

    async def main():
        source = DnsmasqFileSource(
            path, DnsmasqLogParser(), poll_interval=POLL, clock=lambda: float(next(clock))
        )
        events = []

        async def consume():
            async for event in source:
                events.append(event)

        task = asyncio.create_task(consume())
        await asyncio.sleep(POLL * 3)
        path.write_text("")  # appears after start: read from the beginning
        query = next(i for i, line in enumerate(lines) if "query[A] ads.example" in line)
        append(path, "\n".join(lines[query : query + 3]) + "\n")
        for _ in range(200):
            if len(events) >= 4:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert isinstance(events[0], SourceError)
        assert events[0].source == "dnsmasq-log"
        assert isinstance(events[1], DnsQuery)
        assert events[1].name == "ads.example"
        assert isinstance(events[3], DnsAnswer)
        assert events[3].address == "198.18.0.12"
        assert events[3].ts > events[1].ts >= 1000.0
        assert source.parser.parsed == 3

    asyncio.run(main())


def test_backlog_reads_recent_complete_lines_only(tmp_path):
    import asyncio as _asyncio

    from apviz.sources.logfile import LogFollower

    path = tmp_path / "dnsmasq.log"
    path.write_bytes(b"".join(b"line-%04d\n" % i for i in range(1000)))  # 10 bytes per line

    async def first_lines():
        follower = LogFollower(path, backlog_bytes=55, poll_interval=0.01)
        out = []
        async for line in follower:
            out.append(line)
            if line == "line-0999":
                return out

    # 55 bytes back from the end cuts into line 994; 995..999 are complete and read back.
    assert _asyncio.run(_asyncio.wait_for(first_lines(), 5)) == [f"line-{i:04d}" for i in range(995, 1000)]

    async def exact():
        follower = LogFollower(path, backlog_bytes=50, poll_interval=0.01)
        async for line in follower:
            return line

    assert _asyncio.run(_asyncio.wait_for(exact(), 5)) == "line-0995"  # a cut at a line start loses nothing
