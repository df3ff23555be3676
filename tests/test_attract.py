"""Recording over /events and attract mode, with the real service and app on uvicorn (loopback) and
a fake event feed: ``apviz record``'s stream reader writes what a kiosk browser saw; after a quiet
spell the kiosk plays that recording marked ``screen.recording``; a visitor's connection brings
the live view back (as a fresh snapshot) within a tick; a missing or damaged recording leaves the
kiosk live and says so on /healthz."""

import asyncio
import contextlib
import socket
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from apviz.events import FlowEvent, FlowEventKind
from apviz.live.pipeline import NamedSource
from apviz.live.privacy import Privacy
from apviz.live.publicview import ViewBuilder
from apviz.live.state import LiveState, StateConfig, networks
from apviz.replay.attract import Attract
from apviz.replay.recorder import Recorder
from apviz.replay.recording import read_recording
from apviz.replay.serve import replay_service
from apviz.replay.stream import follow
from apviz.server.app import create_app
from apviz.server.hub import Hub
from apviz.service import Service
from tests.sseview import ViewFollower
from tests.test_exhibit_server import Feed, describe, free_port, phone, push

IDLE = 0.8  # seconds of quiet before the recording plays (minutes in the configuration)


@contextlib.asynccontextmanager
async def running(attract: dict | None = None, service: Service | None = None):
    """The service (exhibit mode) on loopback; yields (feed, service, base URL)."""
    feed = Feed()
    if service is None:
        state = LiveState(StateConfig(lan=networks(["10.99.1.0/24"]), flow_hold=0.5))
        builder = ViewBuilder(describe=describe, privacy=Privacy("exhibit"))
        service = Service(state, [NamedSource("feed", lambda: feed)], builder, Hub())
        if attract is not None:
            service.attract = Attract(service.hub, **attract)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(service.pipeline.ready.wait(), 10)
    try:
        yield feed, service, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def following(base: str):
    """A kiosk-like SSE client; yields its ViewFollower."""
    follower = ViewFollower()
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10, read=60)) as http:
        async with http.stream("GET", "/events") as resp:
            task = asyncio.create_task(follower.follow(resp))
            try:
                yield follower
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def visitor(n: int, fid: int | None = None):
    fid = fid or n
    return phone(ip=f"10.99.1.{20 + n}", mac=f"02:a5:00:00:00:{n:02x}", name=f"www.site{n}.com", fid=fid)


def labels(view) -> set[str]:
    return {d["label"] for d in view.get("devices", {}).values()}


def recording_on(view) -> bool:
    return bool(view.get("screen", {}).get("recording"))


async def record_session(path: Path) -> dict:
    """Three phones, recorded through /events as `apviz record` does; returns the last live view."""
    async with running() as (feed, service, base):
        recorder = Recorder(path, source=base)
        task = asyncio.create_task(follow(base, recorder))
        for n in (1, 2, 3):
            await push(feed, visitor(n))
            await asyncio.sleep(0.3)
        deadline = time.monotonic() + 10
        while not (recorder.view and len(recorder.view["devices"]) == 3):
            assert time.monotonic() < deadline, "the recorder never saw three phones"
            await asyncio.sleep(0.05)
        last = service.hub.view
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        recorder.close()
        return last


def test_recorded_session_plays_when_idle_and_a_visitor_takes_the_screen_back(tmp_path):
    path = tmp_path / "session.jsonl.gz"

    async def main():
        live_end = await record_session(path)
        rec = read_recording(path)
        recorded = [v for _, v in rec.views()]
        assert labels(recorded[-1]) == labels(live_end) and len(labels(live_end)) == 3
        assert recorded[-1]["nodes"] == live_end["nodes"]
        assert rec.header["mode"] == "exhibit" and rec.duration > 0.5

        async with (
            running({"source": path, "idle_after": IDLE, "gap": 0.5}) as (feed, service, base),
            following(base) as kiosk,
            httpx.AsyncClient(base_url=base, timeout=10) as http,
        ):
            # Quiet: after IDLE seconds the recording plays, every view marked as a recording.
            await kiosk.until(
                lambda v: recording_on(v) and labels(v) == labels(live_end), 10, "the recording"
            )
            state = (await http.get("/api/state")).json()["view"]
            assert state["screen"]["recording"] is True
            assert (await http.get("/healthz")).json()["attract"]["state"] == "playing"
            assert service.live_view["devices"] == {}  # the live view is still built underneath

            # A visitor connects: the live view is back within a tick, as a fresh snapshot.
            snapshots = service.hub.stats["snapshots"]
            start = time.monotonic()
            await push(feed, visitor(9))
            _, at = await kiosk.until(
                lambda v: not recording_on(v) and len(v.get("devices", {})) == 1, 5, "the live view"
            )
            took = at - start
            print(f"\nlive view back {took * 1000:.0f} ms after the visitor's connection")
            assert took < 1.0, took
            assert service.hub.stats["snapshots"] > snapshots
            assert (await http.get("/healthz")).json()["attract"]["state"] == "waiting"

            # While the visitor's connection is open the recording stays off, however long it lasts.
            await asyncio.sleep(IDLE * 2)
            assert not recording_on(kiosk.view) and len(kiosk.view["devices"]) == 1

            # The connection ends; the phone stays known but is no longer active: the loop resumes.
            closed = visitor(9)[-1].flow
            await feed.queue.put(FlowEvent(FlowEventKind.DESTROY, closed))
            await kiosk.until(recording_on, 10, "the recording again")
            assert service.attract.plays == 2

    asyncio.run(main())


def test_a_missing_recording_leaves_the_kiosk_live_until_it_is_put_in_place(tmp_path, caplog):
    path = tmp_path / "later.jsonl"

    async def main():
        attract = {"source": path, "idle_after": 0.3, "gap": 0.5, "retry_load": 0.5}
        async with (
            running(attract) as (feed, service, base),
            following(base) as kiosk,
            httpx.AsyncClient(base_url=base, timeout=10) as http,
        ):
            deadline = time.monotonic() + 5
            while service.attract.state != "unavailable":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            health = (await http.get("/healthz")).json()
            assert health["status"] == "ok" and health["attract"]["state"] == "unavailable"
            assert "does not exist" in health["attract"]["error"]
            assert "attract recording unusable, the kiosk stays live" in caplog.text
            await push(feed, visitor(1))
            await kiosk.until(lambda v: len(v.get("devices", {})) == 1, 5, "the live device")
            await feed.queue.put(FlowEvent(FlowEventKind.DESTROY, visitor(1)[-1].flow))
            await kiosk.until(lambda v: v["totals"]["flows_open"] == 0, 5, "the connection's end")
            await asyncio.sleep(1.0)  # idle time and a reload attempt pass: still live
            assert not recording_on(kiosk.view) and not recording_on(service.hub.view)

            # A damaged file is no better; a good one is taken into use without a restart.
            path.write_text("this is not a recording\n")
            await until(lambda: "not an apviz recording" in (service.attract.error or ""))
            assert not recording_on(service.hub.view)
            path.unlink()
            rec_path = tmp_path / "good.jsonl"
            r = Recorder(rec_path, source="test")
            r.feed({"screen": {"mode": "exhibit"}, "devices": {"dx": {"id": "dx", "label": "Red Owl"}}})
            r.close()
            rec_path.rename(path)
            await kiosk.until(lambda v: recording_on(v) and labels(v) == {"Red Owl"}, 10, "the recording")
            assert (await http.get("/healthz")).json()["attract"] == {
                "state": "playing",
                "idle_after": 0.3,
                "recording": str(path),
                "error": None,
            }

    asyncio.run(main())


async def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_replay_service_serves_the_recording_from_the_first_view(tmp_path):
    path = tmp_path / "session.jsonl"

    async def main():
        live_end = await record_session(path)
        rec = read_recording(path)
        async with (
            running(service=replay_service(rec, speed=4.0)) as (_, _service, base),
            httpx.AsyncClient(base_url=base, timeout=10) as http,
        ):
            assert (await http.get("/healthz")).status_code == 200
            async with following(base) as kiosk:
                await kiosk.until(lambda v: labels(v) == labels(live_end), 10, "the end of the recording")
                assert recording_on(kiosk.view)
                assert (
                    kiosk.view["nodes"] == {k: v for k, v in live_end["nodes"].items()}
                    and kiosk.view["links"] == live_end["links"]
                )
            # Played once (no --loop): the last view stays on screen, still marked.
            await asyncio.sleep(rec.duration / 4 + 0.3)
            view = (await http.get("/api/state")).json()["view"]
            assert recording_on(view) and labels(view) == labels(live_end)

    asyncio.run(main())


def test_cli_refuses_to_overwrite_and_names_a_bad_recording(tmp_path, capsys):
    from apviz.cli import main

    existing = tmp_path / "x.jsonl"
    existing.write_text("keep")
    assert main(["record", str(existing), "--url", "http://127.0.0.1:9"]) == 2
    assert "already exists" in capsys.readouterr().err and existing.read_text() == "keep"

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["record", str(tmp_path / "y.jsonl"), "--url", f"http://127.0.0.1:{port}"]) == 2
    assert "is apviz serve running there" in capsys.readouterr().err
    assert not (tmp_path / "y.jsonl").exists()

    assert main(["replay", str(existing)]) == 2
    assert "is not an apviz recording" in capsys.readouterr().err


def test_serve_record_writes_the_live_view_only_and_closes_with_the_service(tmp_path):
    """`apviz serve --record`: the recorder follows the live view; a recording on screen (attract
    mode) is not recorded again, and stopping the service closes the file."""
    import argparse

    from apviz.replay.cli import serve_recorder

    session = tmp_path / "session.jsonl"
    live_end = asyncio.run(record_session(session))
    out = tmp_path / "serve.jsonl"
    args = argparse.Namespace(record=out, record_minutes=5.0, allow_home=False)
    with pytest.raises(ValueError, match="will not --record: the screen is in home mode"):
        serve_recorder(args, "home")
    recorder = serve_recorder(args, "exhibit")

    async def main():
        async with running({"source": session, "idle_after": 0.5, "gap": 0.5}) as (feed, service, base):
            service.taps.append(recorder)
            async with following(base) as kiosk:
                await push(feed, visitor(5))
                await kiosk.until(lambda v: len(v.get("devices", {})) == 1, 5, "the live device")
                await feed.queue.put(FlowEvent(FlowEventKind.DESTROY, visitor(5)[-1].flow))
                await kiosk.until(lambda v: recording_on(v) and labels(v) == labels(live_end), 10, "attract")

    asyncio.run(main())
    assert recorder.writer is not None and recorder.writer._raw.closed
    views = [v for _, v in read_recording(out).views()]
    assert not any(recording_on(v) for v in views)
    assert len(views[-1]["devices"]) == 1 and views[-1]["totals"]["flows_open"] == 0
    args.record = session
    with pytest.raises(ValueError, match="already exists"):
        serve_recorder(args, "exhibit")
