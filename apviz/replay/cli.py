"""``apviz record`` and ``apviz replay``, and the ``--record`` options of ``apviz serve``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from apviz.replay.recording import DEFAULT_MAX_BYTES, RecordingError, read_recording

if TYPE_CHECKING:
    from apviz.replay.recorder import Recorder

DEFAULT_URL = "http://127.0.0.1:8080"


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _size(text: str) -> int:
    value = int(text)
    if value < 1024:
        raise argparse.ArgumentTypeError(f"must be at least 1024 bytes, got {text}")
    return value


def add_record_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    rec = sub.add_parser(
        "record",
        help="record a running apviz's public view to a file (for replay and attract mode)",
        description="Record what a running apviz's kiosk shows (its /events stream: the anonymised "
        "public view, never raw names or addresses) to a JSON Lines file, optionally gzip (OUT ending "
        "in .gz). Stops after --minutes, at --max-bytes, or on Ctrl-C; the file is readable at any "
        "moment. Refuses a server in home mode (real device names) unless --allow-home.",
    )
    rec.add_argument("out", type=Path, metavar="OUT", help="the recording to create (never overwritten)")
    rec.add_argument("--url", default=DEFAULT_URL, help="the apviz to record (default: %(default)s)")
    rec.add_argument(
        "--minutes", type=_positive, default=30.0, metavar="N", help="stop after N minutes (default: 30)"
    )
    rec.add_argument(
        "--max-bytes",
        type=_size,
        default=DEFAULT_MAX_BYTES,
        metavar="N",
        help=f"stop before the file's lines exceed N bytes, uncompressed (default: {DEFAULT_MAX_BYTES})",
    )
    rec.add_argument(
        "--allow-home",
        action="store_true",
        help="record a server in home mode too (it shows real device names: only if every device is yours)",
    )
    rec.set_defaults(func=cmd_record)

    rep = sub.add_parser(
        "replay",
        help="serve the kiosk driven by a recording, marked as a recording",
        description="Serve the kiosk (same pages, stream and API as apviz serve) from a recording made "
        "by apviz record; every view carries screen.recording = true.",
    )
    rep.add_argument("recording", type=Path, metavar="FILE", help="a file made by apviz record")
    rep.add_argument(
        "--listen", default="127.0.0.1", metavar="IP", help="address to bind (default: %(default)s)"
    )
    rep.add_argument("--port", type=int, default=8080, metavar="N", help="TCP port (default: %(default)s)")
    rep.add_argument(
        "--loop", action="store_true", help="start again after the end (default: stay on the end)"
    )
    rep.add_argument(
        "--speed", type=_positive, default=1.0, metavar="X", help="play X times as fast (0.1 to 100)"
    )
    rep.set_defaults(func=cmd_replay)


def add_serve_record_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("recording (off unless asked for: nothing about visitors is written by default)")
    g.add_argument(
        "--record",
        type=Path,
        metavar="FILE",
        help="record the public view to FILE while serving (what `apviz record` would get)",
    )
    g.add_argument(
        "--record-minutes", type=_positive, default=60.0, metavar="N", help="stop recording after N minutes"
    )
    g.add_argument(
        "--allow-home",
        action="store_true",
        help="allow --record in home mode (real device names: only if every device is yours)",
    )


def serve_recorder(args: argparse.Namespace, mode: str) -> Recorder | None:
    """The recorder ``apviz serve --record`` attaches to its service, or None without ``--record``."""
    from apviz.replay.recorder import HOME_REFUSED, Recorder

    if args.record is None:
        return None
    if mode == "home" and not args.allow_home:
        raise ValueError(f"will not --record: {HOME_REFUSED}")
    if args.record.exists():
        raise ValueError(f"{args.record} already exists; a recording never overwrites a file")
    if not args.record.parent.is_dir():
        raise ValueError(f"cannot --record to {args.record}: {args.record.parent} is not a directory")
    return Recorder(
        args.record, source="apviz serve", allow_home=args.allow_home, max_seconds=args.record_minutes * 60
    )


def cmd_record(args: argparse.Namespace) -> int:
    from apviz.replay.recorder import HomeModeRefused, Recorder, RecordingStopped
    from apviz.replay.stream import StreamError, follow

    if args.out.exists():
        print(f"apviz: {args.out} already exists; a recording never overwrites a file", file=sys.stderr)
        return 2
    recorder = Recorder(
        args.out,
        source=args.url,
        allow_home=args.allow_home,
        max_bytes=args.max_bytes,
        max_seconds=args.minutes * 60,
    )

    async def main() -> str:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            async with asyncio.timeout(args.minutes * 60):
                await follow(args.url, recorder)
        except TimeoutError:
            return f"{args.minutes:g} minutes are up"
        except asyncio.CancelledError:
            return "stopped"
        return "the stream ended"

    try:
        why = asyncio.run(main())
    except HomeModeRefused as exc:
        print(f"apviz: {args.url}: {exc}", file=sys.stderr)
        return 2
    except RecordingStopped as exc:
        why = str(exc)
    except StreamError as exc:
        print(f"apviz: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"apviz: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    finally:
        recorder.close()
    if recorder.writer is None:
        print(f"apviz: nothing recorded ({why}): the server sent no live view", file=sys.stderr)
        return 1
    print(f"recorded {recorder.views} views, {recorder.writer.written} bytes, to {args.out} ({why})")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from apviz.replay.serve import replay

    try:
        ipaddress.ip_address(args.listen)
    except ValueError:
        raise ValueError(f"--listen must be an IP address, got {args.listen!r}") from None
    try:
        rec = read_recording(args.recording)
    except RecordingError as exc:
        print(f"apviz: {exc}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(replay(rec, args.listen, args.port, loop=args.loop, speed=args.speed))
    return 0
