"""Recordings: the file format (round trip, a cut-off last line, clear errors), the recorder's
refusals, and the player's timing (speed, loop) on a fake clock."""

import asyncio
import itertools
import json

import pytest

from apviz.live.diff import apply, diff
from apviz.replay.player import Player, marked, schedule
from apviz.replay.recorder import HomeModeRefused, Recorder, RecordingStopped
from apviz.replay.recording import (
    FORMAT,
    Recording,
    RecordingError,
    RecordingFull,
    RecordingWriter,
    read_recording,
)


class FakeClock:
    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now

    async def sleep(self, seconds):
        self.now += seconds


def view(n, mode="exhibit", **screen):
    """A small public view with n devices (and one company each)."""
    devices = {f"d{i}": {"id": f"d{i}", "label": f"Fox {i}", "bytes": 100 * i, "open": 1} for i in range(n)}
    nodes = {f"o:Org{i}": {"id": f"o:Org{i}", "kind": "org", "label": f"Org{i}"} for i in range(n)}
    return {
        "time": 1000.0 + n,
        "screen": {"mode": mode, "lang": "en", "paused": False, **screen},
        "totals": {"devices": n},
        "devices": devices,
        "nodes": nodes,
    }


def write(path, views, clock=None, step=0.5, **kw):
    clock = clock or FakeClock()
    w = RecordingWriter(path, {"mode": "exhibit", "source": "test"}, clock=clock, **kw)
    w.snapshot(views[0])
    for before, after in itertools.pairwise(views):
        clock.now += step
        w.changes(diff(before, after))
    w.close()
    return w


VIEWS = [view(0), view(1), view(2), view(3), view(1)]


# ------------------------------------------------------------------------------------------ the file


@pytest.mark.parametrize("name", ["rec.jsonl", "rec.jsonl.gz"])
def test_round_trip_gives_back_every_view_at_its_time(tmp_path, name):
    path = tmp_path / name
    write(path, VIEWS)
    rec = read_recording(path)
    assert rec.header["apviz_recording"] == FORMAT and rec.header["mode"] == "exhibit"
    assert rec.header["started"].endswith("Z")
    assert [v for _, v in rec.views()] == VIEWS
    assert [t for t, _ in rec.views()] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert rec.duration == 2.0 and rec.skipped == 0 and rec.warnings == []
    if name.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    else:
        lines = path.read_text().splitlines()
        assert len(lines) == 6 and "snapshot" in json.loads(lines[1]) and "changes" in json.loads(lines[2])


def test_a_cut_off_last_line_is_counted_and_skipped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "rec.jsonl"
    write(path, VIEWS)
    data = path.read_bytes()
    path.write_bytes(data[:-25])  # a recording killed in the middle of its last line
    rec = read_recording(path)
    assert rec.skipped == 1
    assert [v for _, v in rec.views()] == VIEWS[:-1]
    assert "last line is incomplete" in rec.warnings[0] and "4 views" in rec.warnings[0]
    assert "last line is incomplete" in caplog.text


def test_a_killed_gzip_recording_is_readable_up_to_its_last_flushed_line(tmp_path):
    """The writer sync-flushes each line: a copy of the file taken while it is still open (no gzip
    trailer, as after a kill) holds every line written, and a cut in the stream loses only the end."""
    path = tmp_path / "rec.jsonl.gz"
    clock = FakeClock()
    w = RecordingWriter(path, {"mode": "exhibit"}, clock=clock)
    w.snapshot(VIEWS[0])
    for before, after in itertools.pairwise(VIEWS):
        w.changes(diff(before, after))
    killed = tmp_path / "killed.jsonl.gz"
    killed.write_bytes(path.read_bytes())
    w.close()
    assert [v for _, v in read_recording(killed).views()] == VIEWS
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(killed.read_bytes()[:-12])
    rec = read_recording(cut)
    assert rec.skipped == 1 and [v for _, v in rec.views()] == VIEWS[:-1]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "is empty"),
        (b"hello world\n", "is not an apviz recording (its first line is not a JSON header)"),
        (b'{"hello": 1}\n{"t": 0, "snapshot": {}}\n', 'no "apviz_recording" header'),
        (b'{"apviz_recording": 2}\n{"t": 0, "snapshot": {}}\n', "newer apviz (recording format 2)"),
        (b'{"apviz_recording": "one"}\n{"t": 0, "snapshot": {}}\n', "unknown recording format"),
        (b'{"apviz_recording": 1}\n', "holds no view after its header"),
        (b'{"apviz_recording": 1}\n{"t": 0, "changes": {}}\n', "holds no view after its header"),
        (
            b'{"apviz_recording": 1}\n{"t": 0, "snapshot": {}}\n{"t": 1, "changes": {}}\nxx\n'
            b'{"t": 2, "changes": {}}\n',
            "line 4: not a JSON object; the file is damaged before its end",
        ),
        (
            b'{"apviz_recording": 1}\n{"t": 0, "snapshot": {}}\n{"t": 1, "view": {}}\n'
            b'{"t": 2, "changes": {}}\n',
            'line 3: expected {"t": seconds, "changes": {...}}',
        ),
        (
            b'{"apviz_recording": 1}\n{"t": 0, "snapshot": {}}\n{"t": 2, "changes": {}}\n'
            b'{"t": 1, "changes": {}}\n',
            "line 4: time goes backwards",
        ),
    ],
)
def test_files_that_are_not_playable_recordings_get_a_clear_error(tmp_path, content, words):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(RecordingError) as err:
        read_recording(path)
    assert words in str(err.value) and str(path) in str(err.value)


def test_missing_file_and_directory_say_so(tmp_path):
    with pytest.raises(RecordingError, match="does not exist; make one with `apviz record`"):
        read_recording(tmp_path / "nope.jsonl")
    with pytest.raises(RecordingError, match="is a directory"):
        read_recording(tmp_path)


def test_the_writer_never_overwrites_and_keeps_to_its_limits(tmp_path):
    path = tmp_path / "rec.jsonl"
    path.write_text("precious")
    with pytest.raises(FileExistsError, match="never overwrites"):
        RecordingWriter(path, {})
    assert path.read_text() == "precious"

    small = tmp_path / "small.jsonl"
    clock = FakeClock()
    w = RecordingWriter(small, {}, max_bytes=2048, clock=clock)
    w.snapshot(view(1))
    with pytest.raises(RecordingFull, match="size limit"):
        for n in range(2, 100):
            w.changes(diff(view(n - 1), view(n)))
    w.close()
    assert small.stat().st_size <= 2048
    assert read_recording(small).skipped == 0  # stopped between lines: nothing cut

    timed = tmp_path / "timed.jsonl"
    w = RecordingWriter(timed, {}, max_seconds=10, clock=clock)
    w.snapshot(view(1))
    clock.now += 11
    with pytest.raises(RecordingFull, match="time limit"):
        w.changes(diff(view(1), view(2)))
    w.close()


# ------------------------------------------------------------------------------------------ recorder


def test_recorder_writes_snapshot_then_deltas_and_skips_clock_only_changes(tmp_path):
    path = tmp_path / "rec.jsonl"
    clock = FakeClock()
    r = Recorder(path, source="test", clock=clock)
    r.feed(VIEWS[0])
    clock.now += 1
    r.feed({**VIEWS[0], "time": 5.0})  # only the clock moved: no line
    r.feed(VIEWS[1])
    r.feed(marked(view(7)))  # a recording on screen (attract mode) is not recorded again
    clock.now += 1
    r.feed(VIEWS[2])
    r.close()
    rec = read_recording(path)
    assert [v for _, v in rec.views()] == [VIEWS[0], VIEWS[1], VIEWS[2]]
    assert [t for t, _ in rec.views()] == [0.0, 1.0, 2.0]
    assert rec.header["source"] == "test" and rec.header["mode"] == "exhibit"


def test_recorder_refuses_home_mode_unless_allowed(tmp_path):
    path = tmp_path / "home.jsonl"
    r = Recorder(path, source="test")
    with pytest.raises(HomeModeRefused, match=r"home mode.*--allow-home"):
        r.feed(view(2, mode="home"))
    assert not path.exists()  # nothing at all reached the disk

    # The operator switches a recorded exhibit to home mode: the recording stops, and what was
    # recorded before stays readable.
    path = tmp_path / "switched.jsonl"
    r = Recorder(path, source="test")
    r.feed(view(1))
    with pytest.raises(HomeModeRefused):
        r.feed(view(2, mode="home"))
    with pytest.raises(RecordingStopped):
        r.feed(view(3))
    assert [v for _, v in read_recording(path).views()] == [view(1)]

    allowed = tmp_path / "allowed.jsonl"
    r = Recorder(allowed, source="test", allow_home=True)
    r.feed(view(2, mode="home"))
    r.close()
    assert read_recording(allowed).header["mode"] == "home"


def test_the_service_tap_never_raises(tmp_path, caplog):
    r = Recorder(tmp_path / "tap.jsonl", source="apviz serve")
    r.live(view(1, mode="home"), {})
    r.live(view(2), {})
    assert "stopped" in caplog.text and r.stopped


# ------------------------------------------------------------------------------------------ player


def recording(times):
    views = [view(i + 1) for i in range(len(times))]
    rec = Recording(header={"apviz_recording": 1}, snapshot=views[0], start=times[0])
    for before, after, t in zip(views, views[1:], times[1:], strict=False):
        rec.frames.append((t, diff(before, after)))
    return rec, views


def test_schedule_scales_by_speed_and_loops_with_a_gap():
    rec, views = recording([5.0, 6.0, 9.0])  # the snapshot's t is the start
    once = list(schedule(rec, speed=2.0))
    assert [f.at for f in once] == [0.0, 0.5, 2.0]
    assert [f.first for f in once] == [True, False, False]
    assert all(f.view["screen"]["recording"] is True for f in once)
    assert [{**f.view, "screen": views[0]["screen"]} for f in once] == views
    assert "recording" not in views[0]["screen"]  # the recording itself is not changed

    looped = schedule(rec, speed=2.0, loop=True, gap=3.0)
    frames = [next(looped) for _ in range(7)]
    assert [f.at for f in frames] == [0.0, 0.5, 2.0, 5.0, 5.5, 7.0, 10.0]
    assert [f.first for f in frames] == [True, False, False, True, False, False, True]

    with pytest.raises(ValueError, match="speed"):
        schedule(rec, speed=0)
    with pytest.raises(ValueError, match="pause between passes"):
        schedule(rec, loop=True, gap=0)


def test_player_shows_each_view_when_due_on_a_fake_clock():
    rec, views = recording([0.0, 1.0, 4.0])
    clock = FakeClock(50.0)
    shown = []

    async def main():
        player = Player(rec, speed=0.5, clock=clock, sleep=clock.sleep)
        await player.play(lambda v, first: shown.append((clock.now - 50.0, first, v)))

    asyncio.run(main())
    assert [(t, first) for t, first, _ in shown] == [(0.0, True), (2.0, False), (8.0, False)]
    replayed = [v for _, _, v in shown]
    base = {}
    for v in replayed:
        base = apply(base, diff(base, v))
    assert base["devices"] == views[-1]["devices"] and base["screen"]["recording"] is True


def test_attract_configuration_is_checked():
    from apviz.config import ConfigError, from_dict

    cfg = from_dict({"exhibit": {"attract_after": 5, "attract_recording": "/x.jsonl"}}, env={})
    assert cfg.exhibit.attract_after == 5.0
    assert from_dict({}, env={}).exhibit.attract_after == 0  # off unless the operator turns it on
    with pytest.raises(ConfigError, match=r"attract_after needs exhibit\.attract_recording"):
        from_dict({"exhibit": {"attract_after": 5}}, env={})
    with pytest.raises(ConfigError, match=r"exhibit\.attract_after must be between"):
        from_dict({"exhibit": {"attract_after": -1, "attract_recording": "/x"}}, env={})


def test_the_service_tap_survives_an_unwritable_file(tmp_path, caplog):
    r = Recorder(tmp_path / "gone" / "tap.jsonl", source="apviz serve")
    r.live(view(1), {})
    r.live(view(2), {})
    assert "cannot write" in r.stopped and "recording to" in caplog.text
