"""Turn dnsmasq's log lines into :mod:`apviz.events`.

dnsmasq tells us which name each device asked for, and that is what lets apviz put a name on a
conntrack flow. The parser is deliberately stateless: every line becomes at most one event, and the
ties between lines (a query and its answers, a CNAME and its target) are left to the consumer, which
has the ``serial`` of ``log-queries=extra`` to do it exactly, or the line order without it.

Accepted input, one line at a time:

* whole syslog-file lines: ``Nov 22 02:25:18 host dnsmasq[123]: msg``, the same with an ISO-8601
  timestamp (rsyslog, ``journalctl -o short-iso``), an optional ``<PRI>``, and dnsmasq's own
  ``log-facility=/file`` shape, which has no host: ``Nov 22 02:25:18 dnsmasq[123]: msg``;
* bare messages as journald stores them, with ``SYSLOG_IDENTIFIER`` passed as ``ident``.

The timestamp inside a syslog line is not used: the caller supplies ``ts``. A BSD syslog stamp has no
year, no zone and one-second resolution, so the time the line was read is the better clock to match
against conntrack; journald sources pass the entry's ``__REALTIME_TIMESTAMP`` instead.

Everything after the prefix is hostile text (a visitor chose the DNS name and the DHCP hostname; an
upstream server chose TXT and PTR data). It is kept verbatim as data, only cut to a sane length, and
nothing in it can make the parser raise: any failure counts the line as ``unparsed``.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Final

from apviz.events import DhcpClientName, DhcpEvent, DnsAnswer, DnsAnswerKind, DnsForwarded, DnsQuery, Event

MAX_NAME: Final = 253  # longest DNS name in text form
MAX_HOSTNAME: Final = 255  # DHCP option 12 holds at most 255 bytes
MAX_VALUE: Final = 255  # TXT/PTR text after "is"
MAX_TOKEN: Final = 64  # query types, interface names, MACs/DUIDs

DNS_IDENT: Final = "dnsmasq"
DHCP_IDENT: Final = "dnsmasq-dhcp"

# "<PRI>" + (BSD | ISO timestamp) + optional host + ident[pid]: . The host may be an IPv6 address but
# never contains "[" and never ends in ":", which keeps "dnsmasq[1]: a: b" from being misread.
_FRAME: Final = re.compile(
    r"(?:<\d{1,3}>)?"
    r"(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"
    r"|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?)"
    r" (?:[^\s\[]*[^\s\[:] )?"
    r"(?P<ident>[^\s\[\]:]{1,64})(?:\[\d{1,10}\])?: ?"
)
# log-queries=extra: "serial client/port " (client/port absent on lines dnsmasq marks F_NOEXTRA).
_EXTRA: Final = re.compile(r"(\d{1,10}) (?:([0-9A-Fa-f.:]{2,45}(?:%[^\s/]{1,16})?)/\d{1,5} )?")
_DHCP: Final = re.compile(r"(?:(\d{1,10}) )?(DHCP[A-Z0-9]{2,16})\(([^)\s]{0,64})\)(?: (.*))?", re.DOTALL)
_CLIENT_NAME: Final = re.compile(r"(?:(\d{1,10}) )?client provides name: (.*)", re.DOTALL)
_MAC: Final = re.compile(r"[0-9A-Fa-f]{1,2}(?:[:-][0-9A-Fa-f]{1,2}){1,127}")

_ANSWER_KINDS: Final = {
    "reply": DnsAnswerKind.REPLY,
    "cached": DnsAnswerKind.CACHED,
    "cached-stale": DnsAnswerKind.CACHED_STALE,
    "config": DnsAnswerKind.CONFIG,
    "DHCP": DnsAnswerKind.DHCP,
}
# Known dnsmasq DNS lines that carry nothing apviz uses: DNSSEC traffic and verdicts, authoritative
# answers, ipset/nftset additions, and the status lines dnsmasq prints at start and on signals.
_IGNORED_VERBS: Final = frozenset({"validation", "auth", "ipset", "nftset", "dnssec-retry", "dnssec-query"})
_NEGATIVE: Final = {
    "NXDOMAIN": "NXDOMAIN",
    "NODATA": "NODATA",
    "NODATA-IPv4": "NODATA",
    "NODATA-IPv6": "NODATA",
    "SERVFAIL": "SERVFAIL",
    "REFUSED": "REFUSED",
    "not implemented": "NOTIMP",
}
# dnsmasq prints other upstream rcodes as a bare number.
_NUMERIC_RCODES: Final = {"1": "FORMERR", "2": "SERVFAIL", "3": "NXDOMAIN", "4": "NOTIMP", "5": "REFUSED"}

_IGNORED: Final = object()
_UNPARSED: Final = object()


@lru_cache(maxsize=4096)
def canonical_ip(text: str) -> str | None:
    """``ipaddress`` spelling of an address, or None. Cached: clients and servers repeat."""
    if not text or len(text) > 64:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


class DnsmasqLogParser:
    """Parse one dnsmasq log line at a time into an event, counting what it could not use.

    ``parsed``: lines that became an event; ``ignored``: lines understood but of no use (status,
    DNSSEC, DHCP option dumps, other daemons' lines); ``unparsed``: lines that look malformed or
    unknown; ``truncated``: hostile strings cut to the length caps. ``parse`` never raises.
    """

    __slots__ = ("ignored", "parsed", "truncated", "unparsed")

    def __init__(self) -> None:
        self.parsed = 0
        self.ignored = 0
        self.unparsed = 0
        self.truncated = 0

    def counts(self) -> dict[str, int]:
        """The counters, for metrics and :class:`~apviz.events.SourceError`."""
        return {
            "parsed": self.parsed,
            "ignored": self.ignored,
            "unparsed": self.unparsed,
            "truncated": self.truncated,
        }

    def parse(self, message: str, ts: float, ident: str | None = None) -> Event | None:
        """Return the event for one line (without its newline), or None when there is none.

        ``ident`` is journald's ``SYSLOG_IDENTIFIER``; when given, ``message`` is the bare message.
        Without it, a syslog prefix is looked for and, failing that, the message is tried as DNS,
        then DHCP.
        """
        try:
            result = self._parse(message, ts, ident)
        except Exception:  # the last line of defence: a log line must never stop the source
            result = _UNPARSED
        if result is _IGNORED:
            self.ignored += 1
            return None
        if result is _UNPARSED or result is None:
            self.unparsed += 1
            return None
        self.parsed += 1
        return result  # type: ignore[return-value]

    # -- framing ---------------------------------------------------------------------------------

    def _parse(self, message: str, ts: float, ident: str | None) -> object:
        message = message.rstrip("\r\n")
        if ident is None:
            frame = _FRAME.match(message)
            if frame is not None:
                ident = frame["ident"]
                message = message[frame.end() :]
            else:
                result = self._dns(message, ts, strict=True)
                return self._dhcp(message, ts, strict=True) if result is _UNPARSED else result
        if ident == DNS_IDENT:
            return self._dns(message, ts, strict=False)
        if ident == DHCP_IDENT:
            return self._dhcp(message, ts, strict=False)
        return _IGNORED  # dnsmasq-tftp, dnsmasq-script or another daemon sharing the file

    # -- DNS ---------------------------------------------------------------------------------------

    def _dns(self, message: str, ts: float, *, strict: bool) -> object:
        """``strict``: no ident vouched for the line, so an unknown message is not dnsmasq's."""
        serial: int | None = None
        client: str | None = None
        body = message
        if message[:1].isdigit():
            extra = _EXTRA.match(message)
            if extra is not None:
                serial = int(extra[1])
                if extra[2] is not None:
                    client = canonical_ip(extra[2])
                    if client is None:
                        return _UNPARSED
                body = message[extra.end() :]
        verb, _, rest = body.partition(" ")
        if verb.startswith("query[") and verb.endswith("]"):
            name, sep, source = rest.rpartition(" from ")
            source_ip = canonical_ip(source)
            if not sep or source_ip is None:
                return _UNPARSED
            qtype = self._cap(verb[6:-1], MAX_TOKEN)
            return DnsQuery(ts, serial, source_ip, qtype, self._cap(name, MAX_NAME))
        if verb == "forwarded":
            name, sep, server = rest.rpartition(" to ")
            server_ip = canonical_ip(server.partition("#")[0])
            if not sep or server_ip is None:
                return _UNPARSED
            return DnsForwarded(ts, serial, client, self._cap(name, MAX_NAME), server_ip)
        kind = _ANSWER_KINDS.get(verb)
        if kind is None and verb.startswith("/"):
            kind = DnsAnswerKind.HOSTS
        if kind is not None:
            return self._answer(kind, rest, ts, serial, client)
        if verb.partition("[")[0] in _IGNORED_VERBS:
            return _IGNORED
        if strict or verb.startswith("query"):
            return _UNPARSED
        return _IGNORED  # "started, version ...", "using nameserver ...", "read /etc/hosts ..."

    def _answer(
        self, kind: DnsAnswerKind, rest: str, ts: float, serial: int | None, client: str | None
    ) -> object:
        if rest.endswith(")"):  # an Extended DNS Error note: "is SERVFAIL (EDE: ...)"
            cut = rest.rfind(" (EDE: ")
            if cut != -1:
                rest = rest[:cut]
        name, sep, value = rest.rpartition(" is ")
        if not sep:
            return _UNPARSED
        address = canonical_ip(value) if value[:1].isalnum() or value[:1] == ":" else None
        structured = address is not None or value in _NEGATIVE or value[:1] == "<"
        if not structured and " is " in name:
            # Free text after "is" (TXT, PTR) may itself contain " is "; names rarely do.
            name, _, value = rest.partition(" is ")
        name = self._cap(name, MAX_NAME)
        if address is not None:
            return DnsAnswer(ts, serial, client, kind, name, address=address)
        if value == "<CNAME>":
            return DnsAnswer(ts, serial, client, kind, name, cname=True)
        rcode = _NEGATIVE.get(value)
        if rcode is None and kind is DnsAnswerKind.REPLY and value.isdigit() and len(value) <= 2:
            rcode = _NUMERIC_RCODES.get(value, f"RCODE{value}")
        if rcode is not None:
            # Upstream errors are logged against the literal name "error": kept as logged; the
            # serial (or the line order) says which query failed.
            return DnsAnswer(ts, serial, client, kind, name, rcode=rcode)
        if "keytag " in value:  # "reply . is DNSKEY keytag 20326, algo 8": DNSSEC bookkeeping
            return _IGNORED
        return DnsAnswer(ts, serial, client, kind, name, value=self._cap(value, MAX_VALUE))

    # -- DHCP ------------------------------------------------------------------------------------

    def _dhcp(self, message: str, ts: float, *, strict: bool) -> object:
        match = _DHCP.fullmatch(message)
        if match is not None:
            return self._dhcp_packet(match, ts)
        named = _CLIENT_NAME.fullmatch(message)
        if named is not None:
            xid = int(named[1]) if named[1] is not None else None
            return DhcpClientName(ts, xid, self._cap(named[2], MAX_HOSTNAME))
        if strict or (message.startswith("DHCP") and message[4:5].isupper() and "(" in message[:24]):
            return _UNPARSED
        return _IGNORED  # tags, option dumps, "DHCP, IP range ...", "Ignoring domain ..."

    def _dhcp_packet(self, match: re.Match[str], ts: float) -> object:
        """``[xid ]TYPE(iface) [ip ]mac[ text]``: text is the lease name on DHCPACK/DHCPREPLY and
        a reason (``no address available``, ``wrong address``...) on the others."""
        xid = int(match[1]) if match[1] is not None else None
        message, interface = match[2], match[3] or None
        rest = (match[4] or "").rstrip(" ")
        first, _, after = rest.partition(" ")
        ip = canonical_ip(first)
        if ip is not None:
            second, _, tail = after.partition(" ")
            if second and _MAC.fullmatch(second):
                mac: str | None = second.lower()
            elif not second:  # the only token was a MAC/DUID that happens to parse as IPv6
                ip, mac, tail = None, first.lower(), ""
            else:
                mac, tail = None, after
        elif first and _MAC.fullmatch(first):
            mac, tail = first.lower(), after
        else:
            mac, tail = None, rest
        if mac is not None and len(mac) > MAX_TOKEN * 3:
            return _UNPARSED
        hostname = None
        if tail and message in ("DHCPACK", "DHCPREPLY"):
            hostname = self._cap(tail, MAX_HOSTNAME)
        return DhcpEvent(ts, xid, message, interface, ip, mac, hostname)

    # -- helpers -----------------------------------------------------------------------------------

    def _cap(self, text: str, limit: int) -> str:
        if len(text) <= limit:
            return text
        self.truncated += 1
        return text[:limit]
