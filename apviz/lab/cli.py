"""``apviz lab [up|down]``: run the virtual gateway by hand, or remove what earlier runs left behind.

``up`` (the default) builds a lab, prints where everything is, and keeps it until Ctrl-C or SIGTERM,
optionally showing the live terminal view on it. ``down`` removes leftovers of runs whose owner is
gone (a killed test run, a crashed demo); ``down --check`` only lists them and fails if there are
any, which is how ``make test`` proves the suite cleaned up after itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from apviz.lab import cleanup
from apviz.lab.lab import Lab
from apviz.lab.topology import LabError


def add_lab_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``apviz lab``; the action is a positional word so ``apviz lab --phones 4`` works."""
    parser.add_argument(
        "action", nargs="?", choices=["up", "down"], default="up", help="up (default): run a lab; down: clean"
    )
    g = parser.add_argument_group("lab up")
    g.add_argument(
        "--phones", type=int, default=3, metavar="N", help="number of phones (default: %(default)s)"
    )
    g.add_argument(
        "--log",
        choices=["file", "journal"],
        default="file",
        help="where the gateway's dnsmasq logs: a file, or a private journald (default: %(default)s)",
    )
    g.add_argument(
        "--personas",
        metavar="A,B,...",
        help="personas given to the phones in turn (default: the mix in data/lab/personas.toml)",
    )
    g.add_argument("--no-traffic", action="store_true", help="bring phones up but let them stay quiet")
    g.add_argument(
        "--no-policy",
        action="store_true",
        help="without the network policy (dnsmasq/apviz-policy.conf, nftables/apviz-policy.nft): phones "
        "may use Private Relay, DoH and DNS over TLS",
    )
    g.add_argument("--seed", type=int, metavar="N", help="random seed for reproducible traffic")
    g.add_argument("--prefix", metavar="avlbXXXX", help="run prefix (default: random)")
    g.add_argument("--workdir", type=Path, metavar="DIR", help="keep the run's files (logs, leases) here")
    g.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long (default: Ctrl-C)")
    g.add_argument(
        "--view",
        choices=["top", "serve", "none"],
        default="top",
        help="show the live terminal view on the lab (default: %(default)s when available)",
    )
    g.add_argument(
        "--port", type=int, default=8080, metavar="N", help="port of --view serve (default: %(default)s)"
    )
    d = parser.add_argument_group("lab down")
    d.add_argument("--check", action="store_true", help="only list leftovers; exit 1 if there are any")
    d.add_argument(
        "--all",
        action="store_true",
        help="also stop running `apviz lab up` labs (their owner gets SIGTERM); test runs are never touched",
    )


def add_lab_parser(
    subparsers: Any, add_view_arguments: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.ArgumentParser:
    """Register ``lab`` on the main parser's subparsers (``add_view_arguments``: the top view's options)."""
    parser = subparsers.add_parser(
        "lab",
        help="run the virtual gateway (namespaces, real dnsmasq, simulated phones), or clean up after it",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_lab_arguments(parser)
    if add_view_arguments is not None:
        add_view_arguments(parser)
    parser.set_defaults(func=lab_command, lab_view_available=add_view_arguments is not None)
    return parser


def lab_command(args: argparse.Namespace) -> int:
    """Entry point of ``apviz lab``; returns the exit status."""
    if args.action == "down":
        return _down(check=args.check, include_live=args.all)
    if args.check or args.all:
        print("apviz lab: --check and --all belong to `apviz lab down`", file=sys.stderr)
        return 2
    return _up(args)


def _down(check: bool, include_live: bool) -> int:
    leftovers = cleanup.find_leftovers(include_live=include_live)
    if check:
        for line in leftovers:
            print(line)
        if leftovers:
            print(f"apviz lab: {len(leftovers)} leftover item(s); run `apviz lab down`", file=sys.stderr)
            return 1
        return 0
    problems = cleanup.down(include_live=include_live)
    for line in leftovers:
        print(f"removed {line.strip()}")
    for line in problems:
        print(f"apviz lab: {line}", file=sys.stderr)
    remaining = cleanup.find_leftovers(include_live=include_live)
    for line in remaining:
        print(f"still there: {line}", file=sys.stderr)
    return 1 if problems or remaining else 0


def _install_signal_handlers() -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so the ``with Lab`` block removes everything.

    After the first signal further ones are ignored: a second Ctrl-C must not interrupt the cleanup.

    Only in this process: pyroute2 forks a short-lived child to open a socket in a namespace and
    SIGTERMs it when done. A child that unwound like Ctrl-C would run the copy of our event loop's
    shutdown and unregister the loop's wake-up socket from the epoll instance it shares with us: our
    loop then never woke again (``apviz lab --duration`` hung at exit, about one run in five under
    load). The child ends as the signal says instead.
    """
    main_pid = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != main_pid:
            os._exit(128 + signum)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def describe(lab: Lab) -> str:
    """What a person needs to look at the running lab from another terminal."""
    lines = [
        f"apviz lab {lab.prefix} up in {lab.timings.get('total', 0):.2f} s",
        f"  gateway namespace  {lab.gateway_ns}  (LAN {lab.lan_cidr} on {lab.bridge}, at {lab.gateway_ip})",
        f"  internet namespace {lab.internet_ns}  (198.18.0.0/15, resolver {lab.upstream_dns})",
        f"  leases             {lab.leases_file}",
        f"  network policy     {'on' if lab.policy else 'off (--no-policy)'}",
    ]
    if lab.dnsmasq_log:
        lines.append(f"  dnsmasq log        {lab.dnsmasq_log}")
    if lab.journal_dir:
        lines.append(f"  journal            {lab.journal_dir}")
    lines.append(f"  run dir            {lab.run_dir}")
    for p in lab.phones:
        lines.append(f"  {p.hostname:<18} {p.ip or '-':<15} {p.mac}  {p.persona or '':<14} ns {p.ns}")
    source = f"--dnsmasq-log {lab.dnsmasq_log}" if lab.dnsmasq_log else f"--journal-dir {lab.journal_dir}"
    lines += [
        f"  conntrack:  ip netns exec {lab.gateway_ns} conntrack -L",
        f"  live view:  apviz top --netns {lab.gateway_ns} {source} --leases {lab.leases_file} "
        f"--lan {lab.lan_cidr} --local-address {lab.gateway_ip} --local-address {lab.wan_ip}",
    ]
    return "\n".join(lines)


async def _view(lab: Lab, args: argparse.Namespace) -> None:
    """The terminal live view on this lab (the same pipeline as ``apviz top``)."""
    from apviz.app import build, source_options, state_config
    from apviz.lab.serve import lab_config
    from apviz.top import run_top

    cfg = lab_config(lab)
    state, pipeline = build(source_options(cfg), state_config(cfg))
    exit_after = getattr(args, "exit_after", None) or args.duration
    tasks = {
        asyncio.create_task(pipeline.run()),
        asyncio.create_task(
            run_top(
                state,
                refresh=getattr(args, "refresh", 0.5),
                plain=getattr(args, "plain", False),
                exit_after=exit_after,
            )
        ),
    }
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _serve(lab: Lab, args: argparse.Namespace) -> None:
    """The web service on this lab, for ``--duration`` seconds or until Ctrl-C."""
    from apviz.lab.serve import serve_lab

    await serve_lab(lab, port=args.port, duration=args.duration)


def _up(args: argparse.Namespace) -> int:
    personas = [p.strip() for p in args.personas.split(",") if p.strip()] if args.personas else None
    _install_signal_handlers()
    try:
        lab = Lab(
            phones=args.phones,
            log=args.log,
            personas=personas,
            traffic=not args.no_traffic,
            workdir=args.workdir,
            prefix=args.prefix,
            seed=args.seed,
            policy=not args.no_policy,
        )
    except (LabError, ValueError) as exc:
        print(f"apviz lab: {exc}", file=sys.stderr)
        return 2
    try:
        with lab:
            (lab.run_dir / cleanup.CLI_MARK).write_text(f"{' '.join(sys.argv)}\n")
            print(describe(lab), flush=True)
            if args.view == "top" and getattr(args, "lab_view_available", False):
                asyncio.run(_view(lab, args))
            elif args.view == "serve":
                asyncio.run(_serve(lab, args))
            else:
                print("press Ctrl-C to stop", flush=True)
                deadline = time.monotonic() + args.duration if args.duration else None
                while deadline is None or time.monotonic() < deadline:
                    time.sleep(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
    except KeyboardInterrupt:
        print(f"\napviz lab {lab.prefix}: stopped, everything removed", flush=True)
        return 0
    except LabError as exc:
        print(f"apviz lab: {exc}", file=sys.stderr)
        return 1
    return 0
