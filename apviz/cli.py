"""The ``apviz`` command: ``serve``, ``top``, ``lab``, ``record``, ``replay``, ``doctor``, ...

Each subcommand is a small function that turns its arguments into options and hands over to the
module that does the work; nothing here reads the network itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from apviz import __version__, errors
from apviz import config as config_mod
from apviz.app import DEFAULT_LEASES, build, source_options, state_config
from apviz.config import Config, ConfigError
from apviz.logsetup import setup_logging
from apviz.replay.cli import add_record_parsers, add_serve_record_arguments, serve_recorder

log = logging.getLogger("apviz")


def _add_source_arguments(p: argparse.ArgumentParser) -> None:
    """Where the facts are. Flags left unset keep the configuration file's value."""
    g = p.add_argument_group("where the facts are")
    g.add_argument(
        "--netns",
        metavar="NAME",
        help="read conntrack and neighbours in this named network namespace (default: the host's own)",
    )
    g.add_argument(
        "--dnsmasq-log",
        type=Path,
        metavar="FILE",
        help="dnsmasq's log-facility file; without it the systemd journal is read",
    )
    g.add_argument(
        "--journal-dir",
        type=Path,
        metavar="DIR",
        help="read this journal directory instead of the system journal",
    )
    g.add_argument(
        "--journal-since",
        type=float,
        metavar="SECONDS",
        help="seconds of journal history to read at start (default: 300)",
    )
    g.add_argument(
        "--leases",
        type=Path,
        metavar="FILE",
        help=f"dnsmasq leases file (default: {DEFAULT_LEASES})",
    )
    g.add_argument(
        "--capture",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read server names from connections' first packets (adds the nftables table inet "
        "apviz_capture while running; default from config: on)",
    )
    g.add_argument(
        "--lan",
        action="append",
        metavar="CIDR",
        help="a LAN network whose devices are shown (repeatable; default: private ranges)",
    )
    g.add_argument(
        "--local-address",
        action="append",
        metavar="IP",
        help="an address of the gateway itself; flows to it are not shown (repeatable)",
    )


def _add_top_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("display")
    g.add_argument("--refresh", type=float, default=0.5, metavar="SECONDS", help="redraw interval")
    g.add_argument("--plain", action="store_true", help="print frames one after another (for logs)")
    g.add_argument("--exit-after", type=float, metavar="SECONDS", help="stop after this many seconds")


async def _run_top(cfg: Config, args: argparse.Namespace) -> None:
    from apviz.top import run_top

    state, pipeline = build(source_options(cfg), state_config(cfg))
    pipe = asyncio.create_task(pipeline.run())
    ui = asyncio.create_task(
        run_top(state, refresh=args.refresh, plain=args.plain, exit_after=args.exit_after)
    )
    done, _ = await asyncio.wait({pipe, ui}, return_when=asyncio.FIRST_COMPLETED)
    for task in (pipe, ui):
        task.cancel()
    for task in (pipe, ui):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def cmd_top(args: argparse.Namespace) -> int:
    asyncio.run(_run_top(_config_from_args(args), args))
    return 0


def _config_from_args(args: argparse.Namespace) -> Config:
    """The TOML file, then the flags given on the command line on top (flags win)."""
    cfg = config_mod.load(getattr(args, "config", None))
    src, st, srv = cfg.sources, cfg.state, cfg.server
    if getattr(args, "listen", None) is not None:
        srv.listen = args.listen
    if getattr(args, "port", None) is not None:
        srv.port = args.port
    if args.netns is not None:
        src.netns = args.netns
    if args.dnsmasq_log is not None:
        src.dnsmasq_log = str(args.dnsmasq_log)
    if args.journal_dir is not None:
        src.journal_dir = str(args.journal_dir)
    if args.journal_since is not None:
        src.journal_since = args.journal_since
    if args.leases is not None:
        src.leases = str(args.leases)
    if getattr(args, "capture", None) is not None:
        cfg.names.capture = args.capture
    if args.lan:
        st.lan = list(args.lan)
    if args.local_address:
        st.local_addresses = list(args.local_address)
    if getattr(args, "data_dir", None) is not None:
        cfg.enrich.data_dir = str(args.data_dir)
    return cfg.check()


def cmd_serve(args: argparse.Namespace) -> int:
    from apviz.server.run import serve

    cfg = _config_from_args(args)
    recorder = serve_recorder(args, cfg.exhibit.mode)
    asyncio.run(serve(cfg, None if recorder is None else lambda service: service.taps.append(recorder)))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.doc:
        print(config_mod.reference(), end="")
    elif args.example:
        print(config_mod.example(), end="")
    else:
        cfg = config_mod.load(args.config)
        print(f"configuration OK: listen {cfg.server.listen}:{cfg.server.port}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apviz",
        description="Shows, live, which companies and countries the devices on a Wi-Fi network talk to.",
    )
    parser.add_argument("--version", action="version", version=f"apviz {__version__}")
    parser.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log verbosity"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    top = sub.add_parser(
        "top",
        help="terminal live view: devices -> names -> addresses",
        description="Terminal live view of devices, the names they looked up, and bytes moved.",
    )
    top.add_argument(
        "--config", type=Path, metavar="FILE", help=f"configuration file (default: {config_mod.DEFAULT_PATH})"
    )
    _add_source_arguments(top)
    _add_top_arguments(top)
    top.set_defaults(func=cmd_top)

    serve = sub.add_parser(
        "serve",
        help="run the web service: kiosk pages, SSE stream, JSON API, metrics",
        description="Run apviz's web service. Settings come from the TOML file; flags override it.",
    )
    serve.add_argument(
        "--config", type=Path, metavar="FILE", help=f"configuration file (default: {config_mod.DEFAULT_PATH})"
    )
    serve.add_argument("--listen", metavar="IP", help="address to bind (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, metavar="N", help="TCP port (default from config: 8080)")
    serve.add_argument("--data-dir", type=Path, metavar="DIR", help="where the data packages are installed")
    _add_source_arguments(serve)
    add_serve_record_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    cfg = sub.add_parser("config", help="check the configuration, or print its reference or an example")
    cfg.add_argument("--config", type=Path, metavar="FILE", help="file to check")
    cfg.add_argument("--doc", action="store_true", help="print the reference of every key (Markdown)")
    cfg.add_argument("--example", action="store_true", help="print a complete example file")
    cfg.set_defaults(func=cmd_config)

    from apviz.doctor import add_doctor_parser

    add_doctor_parser(sub)  # the same configuration and flags as serve

    from apviz.operator_cli import add_operator_parser

    add_operator_parser(sub)  # apviz operator hash-password

    add_record_parsers(sub)  # apviz record, apviz replay

    from apviz.dataupdate.cli import add_data_parser

    add_data_parser(sub)  # apviz data update

    from apviz.lab.cli import add_lab_parser

    add_lab_parser(sub, _add_top_arguments)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)  # the journal with structured fields under systemd, else stderr
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except PermissionError as exc:
        print(f"apviz: {errors.message(exc)}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:  # a source's error, wrapped by the task groups that ran it
        leaf = errors.user_error(group)
        if leaf is None:
            raise
        print(f"apviz: {errors.message(leaf)}", file=sys.stderr)
        return 2
    except (ConfigError, ValueError) as exc:
        print(f"apviz: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
