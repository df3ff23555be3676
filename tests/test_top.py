"""The terminal view renders the state, and hostile names stay inert text."""

import io
import socket

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from apviz._text import printable
from apviz.events import (
    DnsAnswer,
    DnsAnswerKind,
    DnsQuery,
    Flow,
    FlowEvent,
    FlowEventKind,
    FlowTuple,
    Lease,
    LeaseSnapshot,
)
from apviz.live.state import LiveState, StateConfig, networks
from apviz.top import render


def _state(hostname, name):
    s = LiveState(StateConfig(lan=networks(["10.99.1.0/24"])))
    s.apply(LeaseSnapshot((Lease(0, "02:a5:00:00:00:01", "10.99.1.101", hostname, None),)))
    s.apply(DnsQuery(s.clock(), 1, "10.99.1.101", "A", name))
    s.apply(DnsAnswer(s.clock(), 1, "10.99.1.101", DnsAnswerKind.REPLY, name, "198.18.0.10"))
    f = Flow(
        1,
        socket.AF_INET,
        FlowTuple(6, "10.99.1.101", "198.18.0.10", 40000, 443),
        FlowTuple(6, "198.18.0.10", "10.99.255.2", 443, 40000),
        orig_bytes=1200,
        reply_bytes=45000,
        orig_packets=3,
    )
    s.apply(FlowEvent(FlowEventKind.NEW, f))
    return s


def _text(state):
    buf = io.StringIO()
    Console(file=buf, width=160, color_system=None).print(render(state))
    return buf.getvalue()


def test_render_shows_device_name_address_and_bytes():
    out = _text(_state("phone-1", "graph.facebook.com"))
    assert "phone-1" in out and "02:a5:00:00:00:01" in out
    assert "graph.facebook.com" in out and "198.18.0.10" in out
    assert "1.2 kB" in out and "45.0 kB" in out and "1/1" in out


def test_markup_and_escapes_in_names_are_shown_as_text():
    out = _text(_state("[bold red]x[/]", "evil\x1b[2J\u202eexample.com"))
    assert "[bold red]x[/]" in out  # rich markup was not interpreted
    assert "\x1b" not in out and "\u202e" not in out
    assert "evil\\x1b[2j\\u202eexample.com" in out  # DNS names are compared lower-case


@given(st.text(max_size=300))
def test_printable_never_lets_control_or_bidi_through(s):
    out = printable(s, limit=100)
    assert len(out) <= 100 * 6 + 1
    bidi = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in bidi for c in out)
