"""The dnsmasq log parser against lines captured from a real dnsmasq 2.90 (tests/data/dnsmasq/,
re-captured by capture.py), plus the shapes that capture cannot easily provoke, plus fuzzing.

The fixtures hold xids, PIDs and ports of one capture: after re-capturing, update DHCP_EXTRA."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apviz.events import DhcpClientName, DhcpEvent, DnsAnswer, DnsAnswerKind, DnsForwarded, DnsQuery
from apviz.sources.dnsmasq_log import MAX_HOSTNAME, MAX_NAME, DnsmasqLogParser

DATA = Path(__file__).parent / "data" / "dnsmasq"
TS = 1700000000.5
C4 = "10.99.1.133"
C6 = "fd00:99::5"
UP = "198.18.0.53"
HOSTS = "/tmp/apviz-dnsmasq-capture/lab.hosts"
LONG = ".".join(["x" * 60] * 4) + ".example"
R, K, G, H, D = (
    DnsAnswerKind.REPLY,
    DnsAnswerKind.CACHED,
    DnsAnswerKind.CONFIG,
    DnsAnswerKind.HOSTS,
    DnsAnswerKind.DHCP,
)


def q(serial, qtype, name, client=C4):
    return DnsQuery(TS, serial, client, qtype, name)


def fw(serial, name, client=C4):
    return DnsForwarded(TS, serial, client, name, UP)


def ans(serial, kind, name, client=C4, **kw):
    return DnsAnswer(TS, serial, client, kind, name, **kw)


# Every DNS event of one run of capture.py, in order (with log-queries=extra).
DNS_EXTRA = [
    q(1, "A", "ads.example"),
    fw(1, "ads.example"),
    ans(1, R, "ads.example", address="198.18.0.12"),
    q(2, "A", "ads.example"),
    ans(2, K, "ads.example", address="198.18.0.12"),
    q(3, "AAAA", "ads.example"),
    fw(3, "ads.example"),
    ans(3, R, "ads.example", rcode="NODATA"),
    q(4, "HTTPS", "ads.example"),
    fw(4, "ads.example"),
    ans(4, R, "ads.example", value="<HTTPS>"),
    q(5, "MX", "ads.example"),
    fw(5, "ads.example"),
    ans(5, R, "ads.example", rcode="NODATA"),
    q(6, "A", "www.shop.example"),
    fw(6, "www.shop.example"),
    ans(6, R, "www.shop.example", cname=True),
    ans(6, R, "shop.cdn.example", address="198.18.0.20"),
    q(7, "TXT", "tracker.example"),
    fw(7, "tracker.example"),
    ans(7, R, "tracker.example", value="v=apviz-lab"),
    q(8, "A", "nx.example"),
    fw(8, "nx.example"),
    ans(8, R, "nx.example", rcode="NXDOMAIN"),
    q(9, "A", "servfail.example"),
    fw(9, "servfail.example"),
    fw(9, "servfail.example"),  # dnsmasq retries once
    ans(9, R, "error", rcode="SERVFAIL"),  # upstream rcodes are logged against "error"
    q(10, "A", "refused.example"),
    fw(10, "refused.example"),
    fw(10, "refused.example"),
    ans(10, R, "error", rcode="REFUSED"),
    q(11, "A", "printer.lan"),
    ans(11, G, "printer.lan", address="10.99.1.10"),
    q(12, "AAAA", "printer.lan"),
    ans(12, G, "printer.lan", rcode="NODATA"),
    q(13, "A", "nope.lan"),
    ans(13, G, "nope.lan", rcode="NXDOMAIN"),
    q(14, "A", "photos.lan"),
    ans(14, G, "photos.lan", cname=True),
    ans(14, G, "nas.lan", address="10.99.1.11"),
    q(15, "A", "clock.lan"),
    ans(15, H, "clock.lan", address="10.99.1.12"),
    q(16, "A", "phone-2.lan"),
    ans(16, D, "phone-2.lan", address="10.99.1.164"),
    q(17, "PTR", "10.1.99.10.in-addr.arpa"),
    ans(17, G, "10.99.1.10", value="printer.lan"),
    q(18, "A", "we<ir>d.example"),
    fw(18, "we<ir>d.example"),
    ans(18, R, "we<ir>d.example", rcode="NXDOMAIN"),
    q(19, "A", "a b.example"),
    fw(19, "a b.example"),
    ans(19, R, "a b.example", rcode="NXDOMAIN"),
    q(20, "A", "<name unprintable>"),
    fw(20, "<name unprintable>"),
    ans(20, R, "<name unprintable>", rcode="NXDOMAIN"),
    q(21, "A", LONG),
    fw(21, LONG),
    ans(21, R, LONG, rcode="NXDOMAIN"),
    q(22, "type=65534", "video.example"),
    fw(22, "video.example"),
    ans(22, R, "video.example", rcode="NODATA"),
    q(23, "AAAA", "video.example", client=C6),
    fw(23, "video.example", client=C6),
    ans(23, R, "video.example", client=C6, address="2001:db8:18::30"),
    q(24, "A", "video.example", client=C6),
    fw(24, "video.example", client=C6),
    ans(24, R, "video.example", client=C6, address="198.18.0.30"),
]


def dhcp(xid, message, ip, mac, hostname=None):
    return DhcpEvent(TS, xid, message, "br0", ip, mac, hostname)


def named(xid, name):
    return DhcpClientName(TS, xid, name)


M2, M3, M4, M5, M6 = (f"02:00:00:00:00:0{i}" for i in range(2, 7))
DHCP_EXTRA = [
    named(1987738183, "phone-2"),
    dhcp(1987738183, "DHCPDISCOVER", None, M2),
    dhcp(1987738183, "DHCPOFFER", "10.99.1.164", M2),
    named(1987738183, "phone-2"),
    dhcp(1987738183, "DHCPREQUEST", "10.99.1.164", M2),
    dhcp(1987738183, "DHCPACK", "10.99.1.164", M2, "phone-2"),
    dhcp(3058576731, "DHCPDISCOVER", None, M3),  # "<b>x</b>": illegal, never logged
    dhcp(3058576731, "DHCPOFFER", "10.99.1.165", M3),
    dhcp(3058576731, "DHCPREQUEST", "10.99.1.165", M3),
    dhcp(3058576731, "DHCPACK", "10.99.1.165", M3),
    dhcp(1083610901, "DHCPRELEASE", "10.99.1.165", M3),
    named(2787876193, "tab.<b>x</b>"),  # raw HTML kept as data
    dhcp(2787876193, "DHCPDISCOVER", None, M4),
    dhcp(2787876193, "DHCPOFFER", "10.99.1.166", M4),
    named(2787876193, "tab.<b>x</b>"),
    dhcp(2787876193, "DHCPREQUEST", "10.99.1.166", M4),
    dhcp(2787876193, "DHCPACK", "10.99.1.166", M4, "tab"),
    dhcp(3520013866, "DHCPRELEASE", "10.99.1.166", M4),
    dhcp(1092950040, "DHCPDISCOVER", None, M5),
    dhcp(1092950040, "DHCPOFFER", "10.99.1.167", M5),
    dhcp(1092950040, "DHCPREQUEST", "10.99.1.167", M5),
    dhcp(1092950040, "DHCPACK", "10.99.1.167", M5),
    dhcp(141322575, "DHCPRELEASE", "10.99.1.167", M5),
    named(3670131239, "ok.café☕"),
    dhcp(3670131239, "DHCPDISCOVER", None, M6),
    dhcp(3670131239, "DHCPOFFER", "10.99.1.168", M6),
    named(3670131239, "ok.café☕"),
    dhcp(3670131239, "DHCPREQUEST", "10.99.1.168", M6),
    dhcp(3670131239, "DHCPACK", "10.99.1.168", M6, "ok"),
    dhcp(4103421201, "DHCPRELEASE", "10.99.1.168", M6),
]


def without_extra(event):
    """What the same line says without log-queries=extra / log-dhcp."""
    if isinstance(event, DnsQuery):
        return dataclasses.replace(event, serial=None)
    if isinstance(event, DnsForwarded | DnsAnswer):
        return dataclasses.replace(event, serial=None, client=None)
    if isinstance(event, DhcpEvent):
        return dataclasses.replace(event, xid=None)
    return None  # "client provides name" is a log-dhcp line


def parse_file(name):
    parser = DnsmasqLogParser()
    events = []
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        event = parser.parse(line, TS)
        if event is not None:
            events.append(event)
    return parser, events


def test_extra_fixture_every_event_exactly():
    parser, events = parse_file("extra.log")
    assert [e for e in events if isinstance(e, DhcpEvent | DhcpClientName)] == DHCP_EXTRA
    assert [e for e in events if not isinstance(e, DhcpEvent | DhcpClientName)] == DNS_EXTRA
    assert parser.parsed == len(DNS_EXTRA) + len(DHCP_EXTRA)
    assert parser.unparsed == 0
    lines = (DATA / "extra.log").read_text().splitlines()
    assert parser.ignored == len(lines) - parser.parsed  # status lines, tags, option dumps
    assert parser.truncated == 0


@pytest.mark.parametrize("name", ["plain-short.log", "plain-iso.log"])
def test_plain_syslog_fixtures(name):
    """Same session without extra, as journald exported it in two syslog-file shapes."""
    parser, events = parse_file(name)
    expected = [e for e in map(without_extra, DHCP_EXTRA + DNS_EXTRA) if e is not None]
    assert [e for e in events if isinstance(e, DhcpEvent)] == [
        e for e in expected if isinstance(e, DhcpEvent)
    ]
    assert [e for e in events if not isinstance(e, DhcpEvent)] == [
        e for e in expected if not isinstance(e, DhcpEvent)
    ]
    assert parser.unparsed == 0
    assert parser.parsed + parser.ignored == len((DATA / name).read_text().splitlines())


def test_journald_bare_messages_with_ident():
    """journald stores the message without prefix; the identifier comes separately."""
    parser = DnsmasqLogParser()
    msg = "8 10.99.1.133/60822 reply tracker.example is NODATA-IPv6"
    assert parser.parse(msg, TS, "dnsmasq") == ans(8, R, "tracker.example", rcode="NODATA")
    msg = "3767589708 DHCPACK(br0) 10.99.1.134 02:00:00:00:00:02 phone-2"
    assert parser.parse(msg, TS, "dnsmasq-dhcp") == dhcp(
        3767589708, "DHCPACK", "10.99.1.134", "02:00:00:00:00:02", "phone-2"
    )
    # The ident decides: a DNS-looking message from another program is not ours.
    assert parser.parse("query[A] x from 10.0.0.1", TS, "sshd") is None
    assert parser.parse("started, version 2.90 cachesize 150", TS, "dnsmasq") is None
    assert parser.parse("TFTP sent /srv/x to 10.0.0.2", TS, "dnsmasq-tftp") is None
    assert (parser.parsed, parser.ignored, parser.unparsed) == (2, 3, 0)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # rsyslog's high-precision file format, with a host
        (
            "2024-11-22T02:25:18.123456+01:00 gw dnsmasq[123]: query[A] ads.example from 10.99.1.133",
            DnsQuery(TS, None, C4, "A", "ads.example"),
        ),
        # <PRI> prefix, IPv6 host name, UTC "Z"
        (
            "<30>2024-11-22T02:25:18Z fd00::1 dnsmasq[9]: cached ads.example is 198.18.0.12",
            ans(None, K, "ads.example", client=None, address="198.18.0.12"),
        ),
        # single-digit day is space-padded in BSD stamps; no PID
        (
            "Nov  2 02:25:18 gw dnsmasq: forwarded a.example to 198.18.0.53#5353",
            DnsForwarded(TS, None, None, "a.example", UP),
        ),
        # a message that itself contains "x: y" must not be mistaken for a host + ident
        (
            "Nov 22 02:25:18 dnsmasq[1]: 5 10.99.1.133/1 query[TXT] a: b from 10.99.1.133",
            DnsQuery(TS, 5, C4, "TXT", "a: b"),
        ),
        # F_NOEXTRA lines: serial without client/port
        (
            "Nov 22 02:25:18 dnsmasq[1]: 7 cached x.example is ::1",
            ans(7, K, "x.example", client=None, address="::1"),
        ),
        # IPv6 canonicalised, client in the extra prefix wins for answers
        (
            "Nov 22 02:25:18 dnsmasq[1]: 3 FD00:0099:0::5/53 reply v.example is 2001:DB8:0::1",
            ans(3, R, "v.example", client=C6, address="2001:db8::1"),
        ),
        (
            "Nov 22 02:25:18 dnsmasq[1]: cached-stale s.example is 1.2.3.4",
            ans(None, DnsAnswerKind.CACHED_STALE, "s.example", client=None, address="1.2.3.4"),
        ),
        (
            "Nov 22 02:25:18 dnsmasq[1]: /etc/hosts gw is 10.99.1.1",
            ans(None, H, "gw", client=None, address="10.99.1.1"),
        ),
        (
            "Nov 22 02:25:18 dnsmasq[1]: config x.lan is NODATA-IPv4",
            ans(None, G, "x.lan", client=None, rcode="NODATA"),
        ),
        (
            "Nov 22 02:25:18 dnsmasq[1]: reply error is SERVFAIL (EDE: network error)",
            ans(None, R, "error", client=None, rcode="SERVFAIL"),
        ),
        (
            "Nov 22 02:25:18 dnsmasq[1]: reply error is not implemented",
            ans(None, R, "error", client=None, rcode="NOTIMP"),
        ),
        ("Nov 22 02:25:18 dnsmasq[1]: reply error is 1", ans(None, R, "error", client=None, rcode="FORMERR")),
        (
            "Nov 22 02:25:18 dnsmasq[1]: reply m.example is <MX>",
            ans(None, R, "m.example", client=None, value="<MX>"),
        ),
        # TXT text containing " is ": the name is the part before the first " is "
        (
            "Nov 22 02:25:18 dnsmasq[1]: reply t.example is this is spam",
            ans(None, R, "t.example", client=None, value="this is spam"),
        ),
        # a hostile name containing " is " and a structured value: split at the last " is "
        (
            "Nov 22 02:25:18 dnsmasq[1]: reply a is 6.6.6.6 x is NXDOMAIN",
            ans(None, R, "a is 6.6.6.6 x", client=None, rcode="NXDOMAIN"),
        ),
        # DHCP shapes not provoked by the capture
        (
            "Nov 22 02:25:18 dnsmasq-dhcp[1]: DHCPNAK(br0) 10.99.1.50 02:00:00:00:00:09 wrong address",
            DhcpEvent(TS, None, "DHCPNAK", "br0", "10.99.1.50", "02:00:00:00:00:09"),
        ),
        (
            "Nov 22 02:25:18 dnsmasq-dhcp[1]: 42 DHCPINFORM(br0) 10.99.1.50 02:AA:00:00:00:09",
            DhcpEvent(TS, 42, "DHCPINFORM", "br0", "10.99.1.50", "02:aa:00:00:00:09"),
        ),
        (
            "Nov 22 02:25:18 dnsmasq-dhcp[1]: DHCPDISCOVER(br0) 02:00:00:00:00:09 no address available",
            DhcpEvent(TS, None, "DHCPDISCOVER", "br0", None, "02:00:00:00:00:09"),
        ),
        (
            "Nov 22 02:25:18 dnsmasq-dhcp[1]: DHCPREPLY(br0) fd00:99::1:5 "
            "00:01:00:01:2c:4b:1a:22:02:00:00:00:00:02 p",
            DhcpEvent(
                TS, None, "DHCPREPLY", "br0", "fd00:99::1:5", "00:01:00:01:2c:4b:1a:22:02:00:00:00:00:02", "p"
            ),
        ),
        (
            "Nov 22 02:25:18 dnsmasq-dhcp[1]: client provides name: <script>",
            DhcpClientName(TS, None, "<script>"),
        ),
    ],
)
def test_other_shapes(line, expected):
    parser = DnsmasqLogParser()
    assert parser.parse(line, TS) == expected
    assert parser.parsed == 1


@pytest.mark.parametrize(
    "line",
    [
        "Nov 22 02:25:18 dnsmasq[1]: 12 10.99.1.133/33 validation example is INSECURE",
        "Nov 22 02:25:18 dnsmasq[1]: 12 10.99.1.133/33 dnssec-query[DS] example to 198.18.0.53",
        "Nov 22 02:25:18 dnsmasq[1]: 12 10.99.1.133/33 reply . is DNSKEY keytag 20326, algo 8",
        "Nov 22 02:25:18 dnsmasq[1]: auth x.lan is 10.0.0.1",
        "Nov 22 02:25:18 dnsmasq[1]: ipset add set1 1.2.3.4 x.example",
        "Nov 22 02:25:18 dnsmasq[1]: read /etc/hosts - 3 names",
        "Nov 22 02:25:18 dnsmasq-dhcp[1]: 3767589708 tags: br0, known",
        "Nov 22 02:25:18 dnsmasq-dhcp[1]: Ignoring domain <b>x</b> for DHCP host name tab",
        "Nov 22 02:25:18 sshd[77]: Accepted publickey for root",
        "Nov 22 02:25:18 dnsmasq-tftp[1]: sent /srv/tftp/pxelinux.0 to 10.99.1.5",
    ],
)
def test_known_but_uninteresting_lines_are_ignored(line):
    parser = DnsmasqLogParser()
    assert parser.parse(line, TS) is None
    assert (parser.parsed, parser.ignored, parser.unparsed) == (0, 1, 0)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "garbage",
        "Nov 22 02:25:18 dnsmasq[1]: query[A] no-from-part",
        "Nov 22 02:25:18 dnsmasq[1]: query[A] x from not-an-ip",
        "Nov 22 02:25:18 dnsmasq[1]: forwarded x to nowhere",
        "Nov 22 02:25:18 dnsmasq[1]: reply x-without-value",
        "Nov 22 02:25:18 dnsmasq[1]: 8 999.1.1.1/5 query[A] x from 10.0.0.1",
        "Nov 22 02:25:18 dnsmasq-dhcp[1]: DHCPACK(br0",
        "query[A] x from",
    ],
)
def test_malformed_lines_are_unparsed(line):
    parser = DnsmasqLogParser()
    assert parser.parse(line, TS) is None
    assert (parser.parsed, parser.ignored, parser.unparsed) == (0, 0, 1)


def test_bare_messages_without_ident_are_recognised_by_shape():
    parser = DnsmasqLogParser()
    assert parser.parse("query[A] x.example from 10.0.0.1", TS) == DnsQuery(
        TS, None, "10.0.0.1", "A", "x.example"
    )
    assert parser.parse("client provides name: y", TS) == DhcpClientName(TS, None, "y")


def test_hostile_strings_are_data_and_capped():
    parser = DnsmasqLogParser()
    name = "<img src=x onerror=alert(1)>\x00\x1b[31m\u202e" + "é" * 10
    event = parser.parse(f"query[A] {name} from 10.0.0.1", TS, "dnsmasq")
    assert isinstance(event, DnsQuery)
    assert event.name == name
    huge = "a" * 5000
    event = parser.parse(f"1 10.0.0.1/1 reply {huge} is 10.0.0.2", TS, "dnsmasq")
    assert isinstance(event, DnsAnswer)
    assert event.name == "a" * MAX_NAME
    assert event.address == "10.0.0.2"
    event = parser.parse(f"7 client provides name: {huge}\x07", TS, "dnsmasq-dhcp")
    assert event == DhcpClientName(TS, 7, "a" * MAX_HOSTNAME)
    event = parser.parse(f"DHCPACK(br0) 10.0.0.9 02:00:00:00:00:01 {huge}", TS, "dnsmasq-dhcp")
    assert isinstance(event, DhcpEvent)
    assert event.hostname == "a" * MAX_HOSTNAME
    assert parser.truncated == 3
    assert parser.parsed == 4


# -- fuzzing -------------------------------------------------------------------------------------

REAL_LINES = [
    line
    for name in ("extra.log", "plain-short.log", "plain-iso.log")
    for line in (DATA / name).read_text(encoding="utf-8").splitlines()
]


def _total(parser):
    return parser.parsed + parser.ignored + parser.unparsed


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=400), st.one_of(st.none(), st.sampled_from(["dnsmasq", "dnsmasq-dhcp", "other"])))
def test_random_text_never_raises(text, ident):
    parser = DnsmasqLogParser()
    event = parser.parse(text, TS, ident)
    assert _total(parser) == 1
    if event is None:
        assert parser.parsed == 0


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(REAL_LINES), st.data())
def test_truncated_and_mutated_real_lines_never_raise(line, data):
    cut = data.draw(st.integers(min_value=0, max_value=len(line)))
    junk = data.draw(st.text(max_size=20))
    parser = DnsmasqLogParser()
    for candidate in (line[:cut], line[:cut] + junk, junk + line[cut:], line.replace(" ", junk, 1)):
        parser.parse(candidate, TS)
    assert _total(parser) == 4


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=300).filter(lambda s: "\n" not in s and "\r" not in s))
def test_any_name_roundtrips_verbatim(name):
    """Whatever a visitor puts in a name comes back as the same characters (or a prefix)."""
    parser = DnsmasqLogParser()
    event = parser.parse(f"9 10.0.0.1/9 query[A] {name} from 10.0.0.1", TS, "dnsmasq")
    assert isinstance(event, DnsQuery)
    assert event.name == name[:MAX_NAME]
    event = parser.parse(f"9 client provides name: {name}", TS, "dnsmasq-dhcp")
    assert event == DhcpClientName(TS, 9, name[:MAX_HOSTNAME])
