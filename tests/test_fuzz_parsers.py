"""Hostile input for every parser: dnsmasq log lines, the leases file, the configuration and the
ctnetlink decoder. Each must take anything without raising, count what it could not use, and still
read the valid input exactly.

The parser modules have their own example and fuzz tests (test_dnsmasq_log, test_leases,
test_config, test_ctdecode); this file adds the adversarial strategies: control characters,
bidirectional overrides, undecodable bytes, over-long names, real line shapes with mutated fields,
and for the decoder real kernel messages cut short, bit-flipped and given lying attribute lengths.
"""

from __future__ import annotations

import ipaddress
import math
import struct
import subprocess
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from apviz.config import ConfigError, from_dict, load
from apviz.events import (
    DhcpClientName,
    DhcpEvent,
    DnsAnswer,
    DnsAnswerKind,
    DnsForwarded,
    DnsQuery,
    Lease,
)
from apviz.sources.ctdecode import NLMSG_DONE, CtDecoder
from apviz.sources.dnsmasq_log import MAX_HOSTNAME, MAX_NAME, MAX_TOKEN, MAX_VALUE, DnsmasqLogParser
from apviz.sources.leases import LeasesSource, parse_lease_line, parse_leases
from tests.ctlab import CtNamespace
from tests.test_ctdecode import TRAFFIC, capture_dump, nla, sample_messages

TS = 1700000000.25
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------------------------------
# hostile text

TRICKY = "\x00\x01\x07\x08\t\x0b\x0c\x1b\x7f\x85\u200e\u200f\u202a\u202b\u202d\u202e\u2066\u2067\u2068\u2069"
TRICKY += "\u2028\u2029\ufeff\ufffd \u00a0:[]()/#.%<>=,;'\"\\"


def decoded(errors: str) -> st.SearchStrategy[str]:
    """Bytes from the wire decoded as a reader would: replacement characters, or lone surrogates."""
    return st.binary(max_size=300).map(lambda b: b.decode("utf-8", errors))


hostile_text = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.sampled_from(TRICKY), max_size=80),
    st.text(alphabet=st.sampled_from(TRICKY + "abc019."), min_size=1, max_size=40),
    decoded("replace"),
    decoded("surrogateescape"),
    st.text(min_size=MAX_NAME, max_size=2000),  # longer than any DNS name or DHCP hostname
    st.integers(MAX_NAME - 2, 4000).map(lambda n: ("a." * n)[:n]),
)

# --------------------------------------------------------------------------------------------------
# dnsmasq log lines

FRAMES = [
    "Nov 22 02:25:18 gw {ident}[123]: ",
    "Nov  2 02:25:18 {ident}[9]: ",  # log-facility=/file: no host
    "<30>2024-11-22T02:25:18.123456+01:00 gw {ident}[1]: ",
    "2024-11-22 02:25:18 {ident}: ",
]
DNS_TEMPLATES = [
    "query[{qtype}] {name} from {client}",
    "{serial} {client}/{port} query[{qtype}] {name} from {client}",
    "forwarded {name} to {server}",
    "{serial} {client}/{port} forwarded {name} to {server}#53",
    "reply {name} is {value}",
    "{serial} {client}/{port} cached {name} is {value}",
    "{serial} {client}/{port} reply {name} is {value} (EDE: {name})",
    "config {name} is {value}",
    "/etc/hosts {name} is {value}",
    "{serial} {client}/{port} validation {name} is {value}",
]
DHCP_TEMPLATES = [
    "{serial} DHCPACK({iface}) {client} {mac} {name}",
    "DHCPDISCOVER({iface}) {mac}",
    "{serial} DHCPREQUEST({iface}) {client} {mac}",
    "{serial} client provides name: {name}",
    "{serial} DHCPNAK({iface}) {client} {mac} {name}",
]

ips = st.ip_addresses().map(str)
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02X}" for x in b))
valid_fields = {
    "qtype": st.sampled_from(["A", "AAAA", "HTTPS", "TXT", "PTR", "type=65"]),
    "name": st.sampled_from(["example.org", "a.b.c.example", "xn--bcher-kva.example", "."]),
    "client": ips,
    "server": ips,
    "serial": st.integers(0, 2**32).map(str),
    "port": st.integers(0, 65535).map(str),
    "value": st.one_of(ips, st.sampled_from(["<CNAME>", "NXDOMAIN", "NODATA-IPv6", "SERVFAIL", "v=spf1"])),
    "iface": st.sampled_from(["br0", "wlan0", ""]),
    "mac": macs,
}


@st.composite
def mutated_lines(draw: st.DrawFn) -> tuple[str, str | None]:
    """A real dnsmasq line shape with each field either plausible or hostile, framed some way."""
    dhcp = draw(st.booleans())
    template = draw(st.sampled_from(DHCP_TEMPLATES if dhcp else DNS_TEMPLATES))
    fields = {
        key: draw(st.one_of(strategy, hostile_text) if draw(st.booleans()) else strategy)
        for key, strategy in valid_fields.items()
    }
    message = template.format(**fields)
    ident = "dnsmasq-dhcp" if dhcp else "dnsmasq"
    how = draw(st.sampled_from(["bare", "ident", "frame"]))
    if how == "ident":
        return message, ident
    if how == "frame":
        return draw(st.sampled_from(FRAMES)).format(ident=ident) + message, None
    return message, None


def parse_one(parser: DnsmasqLogParser, line: str, ident: str | None) -> object:
    """Parse one line; check that exactly one of parsed/ignored/unparsed moved and that what came
    out respects the length caps."""
    before = parser.counts()
    event = parser.parse(line, TS, ident)
    after = parser.counts()
    moved = {key for key in ("parsed", "ignored", "unparsed") if after[key] != before[key]}
    assert len(moved) == 1 and after[moved.pop()] == before_plus_one(before, after)
    assert (event is not None) == (after["parsed"] == before["parsed"] + 1)
    if isinstance(event, DnsQuery):
        assert len(event.name) <= MAX_NAME and len(event.qtype) <= MAX_TOKEN
    elif isinstance(event, DnsForwarded):
        assert len(event.name) <= MAX_NAME
    elif isinstance(event, DnsAnswer):
        assert len(event.name) <= MAX_NAME and len(event.value or "") <= MAX_VALUE
    elif isinstance(event, DhcpEvent):
        assert len(event.hostname or "") <= MAX_HOSTNAME and len(event.mac or "") <= MAX_TOKEN * 3
    elif isinstance(event, DhcpClientName):
        assert len(event.name) <= MAX_HOSTNAME
    else:
        assert event is None
    return event


def before_plus_one(before: dict[str, int], after: dict[str, int]) -> int:
    changed = [key for key in ("parsed", "ignored", "unparsed") if after[key] != before[key]]
    return before[changed[0]] + 1


@FAST
@given(hostile_text, st.sampled_from([None, "dnsmasq", "dnsmasq-dhcp", "systemd", ""]))
def test_dnsmasq_hostile_text_never_raises_and_is_counted(text, ident):
    parser = DnsmasqLogParser()
    parse_one(parser, text, ident)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_lines())
def test_dnsmasq_real_shapes_with_mutated_fields_never_raise(line_ident):
    parser = DnsmasqLogParser()
    parse_one(parser, *line_ident)


@FAST
@given(hostile_text)
def test_dnsmasq_unframed_line_that_is_not_understood_counts_as_unparsed(text):
    """Without a syslog frame or an ident nothing vouches for the line: anything that is not a known
    dnsmasq message is unparsed, except the DNSSEC/ipset verbs that are known to carry nothing."""
    parser = DnsmasqLogParser()
    assume(not text[:1].isdigit())  # "serial client/port" lines may well be valid
    event = parse_one(parser, text, None)
    if event is None and parser.ignored:
        verb = text.rstrip("\r\n").partition(" ")[0].partition("[")[0]
        assert verb in {"validation", "auth", "ipset", "nftset", "dnssec-retry", "dnssec-query"}


@pytest.mark.parametrize(
    ("line", "ident"),
    [
        ("query[A] example.org from not-an-address", "dnsmasq"),
        ("query[A] example.org", "dnsmasq"),
        ("forwarded example.org to \u202e1.2.3.4", "dnsmasq"),
        ("reply example.org", "dnsmasq"),
        ("7 10.0.0.1/53 query[A] x from 10.0.0.1\u202e", "dnsmasq"),
        ("DHCPACK(br0 10.0.0.2", "dnsmasq-dhcp"),
        ("\ufffd\ufffd\ufffd", None),
        ("Nov 22 02:25:18 gw dnsmasq[1]: query[A] " + "a" * 5000 + " from ::1x", None),
    ],
)
def test_dnsmasq_malformed_known_shapes_count_as_unparsed(line, ident):
    parser = DnsmasqLogParser()
    assert parser.parse(line, TS, ident) is None
    assert parser.counts()["unparsed"] == 1 and parser.counts()["parsed"] == 0


# valid lines: built from events, parsed back to the same events

NEGATIVE_WORDS = (
    "NXDOMAIN",
    "NODATA",
    "NODATA-IPv4",
    "NODATA-IPv6",
    "SERVFAIL",
    "REFUSED",
    "not implemented",
)
line_text = st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=300)
free_value = st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=300).filter(
    lambda v: (
        v not in NEGATIVE_WORDS
        and not v.startswith("<")
        and not v.endswith(")")
        and "keytag " not in v
        and not (v.isdigit() and len(v) <= 2)
        and _not_an_ip(v)
    )
)


def _not_an_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return True
    return False


@st.composite
def valid_lines(draw: st.DrawFn) -> tuple[str, str | None, object]:
    """A line dnsmasq could write, and the event it must become."""
    serial = draw(st.one_of(st.none(), st.integers(0, 2**32 - 1)))
    client = draw(ips)
    extra = f"{serial} {client}/{draw(st.integers(1, 65535))} " if serial is not None else ""
    kind = draw(st.sampled_from(["query", "forwarded", "answer", "dhcp", "name"]))
    name = draw(line_text)
    if kind == "query":
        qtype = draw(st.sampled_from(["A", "AAAA", "HTTPS", "type=65"]))
        message = f"{extra}query[{qtype}] {name} from {client}"
        event: object = DnsQuery(TS, serial, client, qtype, name[:MAX_NAME])
    elif kind == "forwarded":
        server = draw(ips)
        message = f"{extra}forwarded {name} to {server}#53"
        event = DnsForwarded(TS, serial, client if extra else None, name[:MAX_NAME], server)
    elif kind == "answer":
        verb, answer_kind = draw(
            st.sampled_from(
                [
                    ("reply", DnsAnswerKind.REPLY),
                    ("cached", DnsAnswerKind.CACHED),
                    ("config", DnsAnswerKind.CONFIG),
                    ("/etc/hosts", DnsAnswerKind.HOSTS),
                ]
            )
        )
        shape = draw(st.sampled_from(["address", "cname", "rcode", "text"]))
        who = client if extra else None
        if shape == "address":
            value = draw(ips)
            event = DnsAnswer(TS, serial, who, answer_kind, name[:MAX_NAME], address=value)
        elif shape == "cname":
            value = "<CNAME>"
            event = DnsAnswer(TS, serial, who, answer_kind, name[:MAX_NAME], cname=True)
        elif shape == "rcode":
            value, rcode = draw(st.sampled_from([("NXDOMAIN", "NXDOMAIN"), ("NODATA-IPv4", "NODATA")]))
            event = DnsAnswer(TS, serial, who, answer_kind, name[:MAX_NAME], rcode=rcode)
        else:
            assume(" is " not in name)  # free text after "is" may hold " is "; then the name may not
            value = draw(free_value)
            event = DnsAnswer(TS, serial, who, answer_kind, name[:MAX_NAME], value=value[:MAX_VALUE])
        message = f"{extra}{verb} {name} is {value}"
    elif kind == "dhcp":
        xid = draw(st.one_of(st.none(), st.integers(0, 2**32 - 1)))
        iface = draw(st.from_regex(r"[a-z0-9]{0,15}", fullmatch=True))
        ip = draw(st.ip_addresses(v=4).map(str))
        mac = draw(macs)
        host = draw(line_text.map(lambda h: h.strip(" ")))
        tail = f" {host}" if host else ""
        message = f"{'' if xid is None else f'{xid} '}DHCPACK({iface}) {ip} {mac}{tail}"
        event = DhcpEvent(TS, xid, "DHCPACK", iface or None, ip, mac.lower(), host[:MAX_HOSTNAME] or None)
    else:
        xid = draw(st.integers(0, 2**32 - 1))
        message = f"{xid} client provides name: {name}"
        event = DhcpClientName(TS, xid, name[:MAX_HOSTNAME])
    ident = "dnsmasq-dhcp" if kind in ("dhcp", "name") else "dnsmasq"
    how = draw(st.sampled_from(["bare", "ident", "frame"]))
    if how == "ident":
        return message, ident, event
    if how == "frame":
        return draw(st.sampled_from(FRAMES)).format(ident=ident) + message, None, event
    return message, None, event


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_lines())
def test_dnsmasq_valid_lines_round_trip_to_their_events(case):
    line, ident, expected = case
    parser = DnsmasqLogParser()
    assert parser.parse(line, TS, ident) == expected, line
    assert parser.parsed == 1 and parser.unparsed == 0


# --------------------------------------------------------------------------------------------------
# the leases file

REAL_LEASES = """1763780000 02:a5:00:00:00:01 10.99.1.101 phone-1 01:02:a5:00:00:00:01
1763780100 02:A5:00:00:00:02 10.99.1.102 * *
duid 00:01:00:01:2c:aa:bb:cc:02:a5:00:00:00:09
1763780200 3456789 fd00::1:5 laptop-6 00:01:00:01:2c:aa:bb:cc:02:a5:00:00:00:09
0 02:a5:00:00:00:03 10.99.1.103 tv-1 *
"""


def check_snapshot(text: str) -> None:
    """Every non-blank line is a lease, the DUID line, or counted as an error."""
    snap = parse_leases(text)
    lines = [line for line in text.splitlines() if line.strip()]
    duid = sum(1 for line in lines if line.startswith("duid "))
    assert len(snap.leases) + snap.errors + duid == len(lines)
    for lease in snap.leases:
        assert lease.expiry >= 0
        ipaddress.ip_address(lease.ip.split("%")[0])
        assert len(lease.hostname or "") <= 255 and len(lease.client_id or "") <= 1024


@FAST
@given(st.lists(hostile_text, max_size=8).map("\n".join))
def test_leases_random_files_never_raise_and_bad_lines_are_counted(text):
    check_snapshot(text)


@FAST
@given(st.data())
def test_leases_mutated_real_file_never_raises(data):
    raw = bytearray(REAL_LEASES.encode())
    for _ in range(data.draw(st.integers(1, 10))):
        where = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["set", "cut", "insert"]))
        if op == "set":
            raw[where] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[where : where + data.draw(st.integers(1, 20))]
        else:
            raw[where:where] = data.draw(st.binary(min_size=1, max_size=20))
    check_snapshot(bytes(raw).decode("utf-8", "replace"))


def test_leases_source_reads_undecodable_bytes_and_counts_them(tmp_path):
    path = tmp_path / "dnsmasq.leases"
    path.write_bytes(REAL_LEASES.encode() + b"\xff\xfe garbage \x00\n1 02:a5:00:00:00:04 10.0.0.4 \xc3( *\n")
    source = LeasesSource(path)
    snap = source.read()
    assert snap is not None and snap.errors == 1 and source.errors == 1
    assert {lease.ip for lease in snap.leases} >= {"10.99.1.101", "10.0.0.4"}
    assert next(lease for lease in snap.leases if lease.ip == "10.0.0.4").hostname == "\ufffd("


@st.composite
def lease_lines(draw: st.DrawFn) -> tuple[str, Lease]:
    expiry = draw(st.integers(0, 2**40))
    v6 = draw(st.booleans())
    ip = draw(st.ip_addresses(v=6 if v6 else 4).map(str))
    raw_mac = draw(st.integers(0, 2**32).map(str) if v6 else macs)
    host = draw(st.one_of(st.just("*"), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", fullmatch=True)))
    cid = draw(st.one_of(st.just("*"), st.binary(min_size=1, max_size=40).map(lambda b: b.hex(":"))))
    lease = Lease(
        expiry=expiry,
        mac=None if v6 else raw_mac.lower(),
        ip=ip,
        hostname=None if host == "*" else host,
        client_id=None if cid == "*" else cid,
    )
    return f"{expiry} {raw_mac} {ip} {host} {cid}", lease


@FAST
@given(st.lists(lease_lines(), max_size=20))
def test_leases_valid_lines_parse_exactly(cases):
    text = "\n".join(line for line, _ in cases) + "\n"
    snap = parse_leases(text)
    assert snap.errors == 0 and list(snap.leases) == [lease for _, lease in cases]
    for line, lease in cases:
        assert parse_lease_line(line) == lease


def test_leases_regressions():
    # Non-ASCII digits and underscores are numbers to int(), but not to dnsmasq.
    assert parse_lease_line("\u0661\u0662 02:a5:00:00:00:01 10.0.0.1 h *") is None
    assert parse_lease_line("1_000 02:a5:00:00:00:01 10.0.0.1 h *") is None
    assert parse_lease_line("+5 02:a5:00:00:00:01 10.0.0.1 h *") is None
    # A client id longer than DHCP allows is cut, not kept whole.
    lease = parse_lease_line("5 02:a5:00:00:00:01 10.0.0.1 h " + "ab:" * 100000)
    assert lease is not None and len(lease.client_id or "") == 1024


# --------------------------------------------------------------------------------------------------
# the configuration

SECTIONS = {
    "server": ["listen", "port", "tick_hz", "max_streams_per_address", "client_queue"],
    "sources": ["netns", "leases", "journal_since", "conntrack_refresh", "conntrack_rcvbuf", "neighbours"],
    "state": ["lan", "local_addresses", "flow_hold", "device_idle"],
    "view": ["top_devices", "gateway_lat", "gateway_label"],
    "exhibit": ["mode", "language", "forget_after", "ssid", "wifi_password", "phone_url"],
    "operator": ["password_hash", "session_minutes"],
    "bogus": ["x"],
}
toml_scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(10**400), 10**400),  # beyond TOML's 64 bits: tomllib still reads them
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=40),
    st.sampled_from(["127.0.0.1", "10.0.0.0/8", "exhibit", "de", "http://x", "scrypt$1"]),
)
toml_values = st.one_of(
    toml_scalars, st.lists(toml_scalars, max_size=3), st.dictionaries(st.text(max_size=5), toml_scalars)
)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        plain = " ./:$-"
        return (
            '"'
            + "".join(c if c.isascii() and (c.isalnum() or c in plain) else f"\\U{ord(c):08x}" for c in value)
            + '"'
        )
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"


@st.composite
def toml_documents(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A valid TOML document over known and unknown keys, and the names an error may point at."""
    names: list[str] = []
    out = []
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), unique=True, max_size=4)):
        out.append(f"[{section}]")
        keys = draw(st.lists(st.sampled_from([*SECTIONS[section], "unknown_key"]), unique=True, max_size=4))
        for key in keys:
            out.append(f"{key} = {toml_value(draw(toml_values))}")
            names.append(f"{section}.{key}")
        names.append(f"[{section}]")
    return "\n".join(out) + "\n", names


def load_text(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> object:
    path = tmp_path_factory.mktemp("cfg") / "apviz.toml"
    path.write_bytes(data)
    return load(path, env={}), path


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(toml_documents())
def test_config_wrong_values_name_the_key(tmp_path_factory, doc):
    text, names = doc
    try:
        load_text(tmp_path_factory, text.encode())
    except ConfigError as exc:
        assert any(name in str(exc) for name in names), (str(exc), text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_config_invalid_files_give_a_config_error(tmp_path_factory, data):
    try:
        load_text(tmp_path_factory, data)
    except ConfigError as exc:
        assert "apviz.toml" in str(exc) or "unknown" in str(exc) or "must" in str(exc)


@FAST
@given(
    st.sampled_from(sorted(k for k in SECTIONS if k != "bogus")).flatmap(
        lambda s: st.tuples(st.just(s), st.sampled_from(SECTIONS[s]))
    ),
    st.one_of(st.text(max_size=60), decoded("surrogateescape")),
)
def test_config_environment_overrides_are_checked_and_named(section_key, value):
    section, key = section_key
    env_key = f"APVIZ_{section}_{key}".upper()
    try:
        from_dict({}, env={env_key: value})
    except ConfigError as exc:
        assert env_key in str(exc) or f"{section}.{key}" in str(exc), str(exc)


def test_config_regressions(tmp_path):
    for doc, key in (
        ({"server": {"tick_hz": 10**400}}, "server.tick_hz"),
        ({"view": {"gateway_lat": -(10**309)}}, "view.gateway_lat"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            from_dict(doc, env={})
    with pytest.raises(ConfigError, match="APVIZ_EXHIBIT_SSID must be UTF-8"):
        from_dict({}, env={"APVIZ_EXHIBIT_SSID": b"caf\xe9".decode("utf-8", "surrogateescape")})
    (tmp_path / "latin1.toml").write_bytes(b'[view]\ngateway_label = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(tmp_path / "latin1.toml", env={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(tmp_path, env={})  # a directory


# --------------------------------------------------------------------------------------------------
# the ctnetlink decoder


def split_messages(chunks: list[bytes]) -> list[bytes]:
    """The conntrack messages of a captured dump, one per item (DONE and errors left out)."""
    out = []
    for data in chunks:
        off = 0
        while off + 16 <= len(data):
            length, mtype = struct.unpack_from("=IH", data, off)
            if mtype >> 8 == 1:
                out.append(bytes(data[off : off + length]))
            off += (length + 3) & ~3
    return out


@pytest.fixture(scope="module")
def kernel_messages() -> list[bytes]:
    """Real ctnetlink messages: UDP, ICMP and TCP, IPv4 and IPv6, from a throw-away namespace."""
    with CtNamespace() as ns:
        proc = subprocess.Popen(
            ns.python_cmd(TRAFFIC), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            messages = split_messages(capture_dump(ns.name))
        finally:
            proc.kill()  # our own child
            proc.wait()
    assert len(messages) >= 6 and {len(m) for m in messages} != {0}
    return messages


def accounted(decoder: CtDecoder, flows: int) -> int:
    return decoder.errors + decoder.ignored + flows + decoder.done + bool(decoder.error)


def decode_both(data: bytes) -> tuple[CtDecoder, int]:
    """Decode with a fresh decoder, then again through the templates it learned, with both entry
    points agreeing; returns the first decoder (its counters describe ``data`` once)."""
    first = CtDecoder()
    n = len(first.decode(data))
    assert n <= len(data) // 36  # a flow needs at least a header and two tuples
    again = CtDecoder()
    for _ in range(2):
        events = again.decode(data)
        flows = again.decode_flows(memoryview(data))
        assert len(events) == len(flows) == n
        assert [kind_flow[1] for kind_flow in events] == flows
    return first, n


def attribute_offsets(message: bytes) -> list[int]:
    """Offsets of every attribute header in a message, nested ones included."""
    out: list[int] = []

    def walk(start: int, end: int, depth: int) -> None:
        off = start
        while end - off >= 4:
            alen, atype = struct.unpack_from("=HH", message, off)
            if alen < 4 or off + alen > end:
                return
            out.append(off)
            if atype & 0x8000 and depth < 4:
                walk(off + 4, off + alen, depth + 1)
            off += (alen + 3) & ~3

    walk(20, len(message), 0)
    return out


@pytest.mark.lab
def test_ctdecode_every_truncation_of_real_messages_is_one_error(kernel_messages):
    for message in kernel_messages:
        assert len(decode_both(message)[0].decode(message)) == 1
        for cut in range(1, len(message)):
            decoder = CtDecoder()
            assert decoder.decode(message[:cut]) == [] and decoder.errors == 1
            # The same cut with a netlink length that agrees: attributes end early or lie.
            shortened = struct.pack("=I", cut) + message[4:cut]
            decoder, n = decode_both(shortened) if cut >= 4 else decode_both(message[:cut])
            assert n + decoder.errors == 1


@pytest.mark.lab
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_ctdecode_bit_flipped_real_messages_are_decoded_or_counted(kernel_messages, data):
    raw = bytearray(b"".join(data.draw(st.lists(st.sampled_from(kernel_messages), min_size=1, max_size=4))))
    for _ in range(data.draw(st.integers(1, 6))):
        bit = data.draw(st.integers(0, len(raw) * 8 - 1))
        raw[bit // 8] ^= 1 << (bit % 8)
    decoder, n = decode_both(bytes(raw))
    assert accounted(decoder, n) >= 1


@pytest.mark.lab
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_ctdecode_lying_attribute_lengths_are_counted(kernel_messages, data):
    message = bytearray(data.draw(st.sampled_from(kernel_messages)))
    offsets = attribute_offsets(bytes(message))
    for _ in range(data.draw(st.integers(1, 3))):
        off = data.draw(st.sampled_from(offsets))
        lie = data.draw(st.one_of(st.integers(0, 8), st.integers(0, 0xFFFF)))
        struct.pack_into("=H", message, off, lie)
    decoder, n = decode_both(bytes(message))
    assert n + decoder.errors == 1  # one message: one flow (a harmless lie) or one error


# structured garbage without the kernel: valid netlink framing around random attribute trees


def attribute_tree(depth: int = 0) -> st.SearchStrategy[bytes]:
    leaf = st.tuples(st.integers(0, 25), st.binary(max_size=20)).map(lambda t: nla(t[0], t[1]))
    if depth >= 3:
        return leaf
    nested = st.tuples(st.integers(0, 25), st.lists(attribute_tree(depth + 1), max_size=4)).map(
        lambda t: nla(t[0], b"".join(t[1]), nested=True)
    )
    return st.one_of(leaf, nested)


@st.composite
def netlink_garbage(draw: st.DrawFn) -> bytes:
    out = b""
    for _ in range(draw(st.integers(1, 4))):
        attrs = b"".join(draw(st.lists(attribute_tree(), max_size=6)))
        mtype = draw(st.sampled_from([0x100, 0x102, NLMSG_DONE, 2, 1, 0x101, draw(st.integers(0, 0xFFFF))]))
        body = struct.pack("=BBH", draw(st.sampled_from([2, 10, 0, 255])), 0, 0) + attrs
        length = 16 + len(body)
        if draw(st.integers(0, 4)) == 0:
            length = draw(st.integers(0, 0xFFFFFFFF))  # the netlink length lies too
        out += struct.pack("=IHHII", length, mtype, draw(st.integers(0, 0xFFFF)), 0, 0) + body
        out += b"\0" * (-len(out) % 4)
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(netlink_garbage())
def test_ctdecode_structured_garbage_never_raises(data):
    decoder, n = decode_both(data)
    assert accounted(decoder, n) >= 1


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(netlink_garbage(), st.binary(max_size=2000)))
def test_ctdecode_allocates_in_proportion_to_its_input(data):
    """A length field of 4 GB must not make the decoder reserve 4 GB: peak memory of one decode
    stays within a small multiple of the input plus one compiled template."""
    decoder = CtDecoder()
    tracemalloc.start()
    try:
        decoder.decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200_000 + 50 * len(data), peak


def test_ctdecode_bounded_work_and_state_on_a_flood_of_layouts():
    """Many distinct layouts (each a template compile) and a long run of tiny messages: the decoder
    finishes in bounded time, keeps at most max_templates layouts and counts everything."""
    good = sample_messages()[1]
    decoder = CtDecoder()
    buf = bytearray()
    for i in range(400):  # 400 lengths: an unknown attribute of i bytes appended
        extra = nla(99, b"x" * i)
        msg = struct.pack("=I", len(good) + len(extra)) + good[4:] + extra
        buf += msg + b"\0" * (-len(msg) % 4)
    t0 = time.monotonic()
    assert len(decoder.decode(bytes(buf))) == 400
    assert decoder._n_templates == decoder.max_templates
    tiny = struct.pack("=IHHII", 20, 0x100, 0, 0, 0) + b"\0" * 4  # CT_NEW with no attributes at all
    decoder.decode(tiny * 20000)
    assert decoder.errors == 20000
    assert time.monotonic() - t0 < 20  # generous for a loaded 2-core box; typically well under 1 s


def test_ctdecode_regression_lengths_that_point_past_the_buffer():
    good = sample_messages()[1]
    for length in (0, 15, 16, 19, 20, len(good) + 1, 0xFFFFFFFF):
        decoder = CtDecoder()
        assert decoder.decode(struct.pack("=I", length) + good[4:]) == []
        assert decoder.errors >= 1
