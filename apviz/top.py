"""``apviz top``: a terminal live view of devices -> names -> addresses, with bytes and counts.

Rendering is kept apart from the state (it only reads :func:`apviz.live.views.device_table`), and
every visitor-controlled string goes through :func:`apviz._text.printable` into a ``rich.Text``,
so neither markup nor terminal escapes from the network reach the screen.
"""

from __future__ import annotations

import asyncio
import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from apviz._text import printable
from apviz.live.state import LiveState
from apviz.live.views import device_table


def human_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def render(state: LiveState, title: str = "apviz top") -> Group:
    table = Table(title=title, expand=True, show_lines=False, header_style="bold")
    table.add_column("device", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("addresses", overflow="fold")
    table.add_column("conns", justify="right")
    table.add_column("up", justify="right")
    table.add_column("down", justify="right")
    rows = device_table(state)
    for dev in rows:
        who = Text(printable(dev.label, 32), style="bold cyan")
        if dev.mac:
            who.append(f"\n{dev.mac}", style="dim")
        if dev.ips:
            who.append("\n" + ", ".join(dev.ips[:2]), style="dim")
        if not dev.names:
            table.add_row(who, Text("(no traffic yet)", style="dim"), "", "", "", "")
        for i, row in enumerate(dev.names):
            name = Text(printable(row.name, 60)) if row.name else Text("(no name)", style="dim")
            if row.shared:
                name.append(" *", style="yellow")
            addrs = sorted(row.addresses)
            addr_text = ", ".join(addrs[:3]) + (f" +{len(addrs) - 3}" if len(addrs) > 3 else "")
            table.add_row(
                who if i == 0 else "",
                name,
                Text(addr_text, style="dim"),
                f"{row.open}/{row.total}",
                human_bytes(row.bytes_up),
                human_bytes(row.bytes_down),
            )
        table.add_section()
    flows = len(state.flows)
    footer = Text(
        f"{len(rows)} devices, {flows} flows  ·  conns = open/total  ·  * name from another device's lookup",
        style="dim",
    )
    return Group(table, footer)


async def run_top(
    state: LiveState,
    refresh: float = 0.5,
    plain: bool = False,
    exit_after: float | None = None,
    console: Console | None = None,
) -> None:
    """Redraw until cancelled (or ``exit_after`` seconds). ``plain`` prints frames for logs/tests."""
    console = console or Console()
    deadline = time.monotonic() + exit_after if exit_after else None
    if plain:
        while deadline is None or time.monotonic() < deadline:
            await asyncio.sleep(refresh)
            console.print(Text(f"--- frame t={time.time():.3f}", style="dim"))
            console.print(render(state))
        return
    with Live(render(state), console=console, refresh_per_second=4, screen=False) as live:
        while deadline is None or time.monotonic() < deadline:
            await asyncio.sleep(refresh)
            live.update(render(state))
