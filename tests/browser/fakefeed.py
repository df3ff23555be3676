"""A synthetic world for the web pages: the real Service and app on uvicorn, fed made-up events.

Phones join (a lease), ask DNS for real-world names, open connections that carry bytes; a
describe function places each destination in a real country and city and flags the known
trackers, so the kiosk has something true-looking to show without the lab's namespaces.

Used by the browser tests, by ``bench/render.py``, and by hand as a demo::

    .venv/bin/python -m tests.browser.fakefeed --devices 8 --destinations 60 --port 8765

Only loopback is ever bound. Every address handed to the state is in 10.99.0.0/16 (the phones; a
test may give one phone 127.0.0.1 to open its /me page) or 198.18.0.0/15 (the benchmark range
standing in for the internet); nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import ipaddress
import random
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from apviz.enrich.hidden import LABELS as HIDDEN_LABELS
from apviz.enrich.hidden import HiddenClassifier
from apviz.events import (
    DnsAnswer,
    DnsAnswerKind,
    DnsQuery,
    Event,
    Flow,
    FlowEvent,
    FlowEventKind,
    FlowTuple,
    Lease,
    LeaseSnapshot,
)
from apviz.live.destinations import Destination, plain_describe
from apviz.live.pipeline import NamedSource
from apviz.live.privacy import Mode, Privacy
from apviz.live.publicview import ViewBuilder, ViewOptions
from apviz.live.state import LiveState, StateConfig, networks
from apviz.server.app import create_app
from apviz.server.hub import Hub
from apviz.service import Service

GATEWAY = (52.52, 13.40, "You are here")  # Berlin, the configuration's default place

COUNTRY_NAMES = {
    "AR": "Argentina",
    "AU": "Australia",
    "BR": "Brazil",
    "CA": "Canada",
    "CN": "China",
    "DE": "Germany",
    "DK": "Denmark",
    "FI": "Finland",
    "FR": "France",
    "GB": "United Kingdom",
    "IE": "Ireland",
    "IL": "Israel",
    "IN": "India",
    "JP": "Japan",
    "KR": "South Korea",
    "NL": "Netherlands",
    "RU": "Russia",
    "SE": "Sweden",
    "SG": "Singapore",
    "US": "United States",
    "ZA": "South Africa",
}

# (name, company, country, city, lat, lon, tracker category or None, company category)
CATALOGUE: list[tuple[str, str, str, str, float, float, str | None, str]] = [
    ("www.google.com", "Google", "US", "Mountain View", 37.39, -122.08, None, "search"),
    ("doubleclick.net", "Google", "US", "Council Bluffs", 41.26, -95.86, "ads", "ads"),
    ("app-measurement.com", "Google", "IE", "Dublin", 53.35, -6.26, "tracker", "analytics"),
    ("graph.facebook.com", "Meta", "IE", "Clonee", 53.41, -6.44, "tracker", "social"),
    ("www.instagram.com", "Meta", "US", "Prineville", 44.30, -120.83, None, "social"),
    ("mmg.whatsapp.net", "Meta", "DK", "Odense", 55.40, 10.39, None, "messaging"),
    ("gateway.icloud.com", "Apple", "US", "Cupertino", 37.32, -122.03, None, "devices"),
    ("mesu.apple.com", "Apple", "NL", "Amsterdam", 52.37, 4.90, None, "devices"),
    ("login.microsoftonline.com", "Microsoft", "NL", "Middenmeer", 52.80, 5.03, None, "cloud"),
    ("s3.eu-central-1.amazonaws.com", "Amazon", "DE", "Frankfurt", 50.11, 8.68, None, "cloud"),
    ("fls-eu.amazon.com", "Amazon", "IE", "Dublin", 53.34, -6.27, "tracker", "shopping"),
    ("api.tiktokv.com", "ByteDance", "SG", "Singapore", 1.35, 103.82, None, "social"),
    ("log.tiktokv.com", "ByteDance", "US", "Ashburn", 39.04, -77.49, "tracker", "social"),
    ("spclient.wg.spotify.com", "Spotify", "SE", "Stockholm", 59.33, 18.07, None, "music"),
    ("nflxvideo.net", "Netflix", "BR", "São Paulo", -23.55, -46.63, None, "video"),
    ("www.youtube.com", "Google", "FI", "Hamina", 60.57, 27.20, None, "video"),
    ("static.criteo.net", "Criteo", "FR", "Paris", 48.86, 2.35, "ads", "ads"),
    ("sb.scorecardresearch.com", "comScore", "US", "Reston", 38.96, -77.34, "tracker", "ads"),
    ("app.adjust.com", "Adjust", "DE", "Berlin", 52.50, 13.45, "tracker", "analytics"),
    ("t.appsflyer.com", "AppsFlyer", "IL", "Herzliya", 32.16, 34.84, "tracker", "analytics"),
    ("api2.branch.io", "Branch", "US", "Redwood City", 37.49, -122.24, "tracker", "analytics"),
    ("widgets.outbrain.com", "Outbrain", "US", "New York", 40.71, -74.01, "ads", "ads"),
    ("cdn.taboola.com", "Taboola", "IL", "Tel Aviv", 32.09, 34.78, "ads", "ads"),
    ("config.unityads.unity3d.com", "Unity", "CA", "Montreal", 45.50, -73.57, "ads", "games"),
    ("api.snapchat.com", "Snap", "US", "Los Angeles", 34.05, -118.24, None, "social"),
    ("api.samsungcloud.com", "Samsung", "KR", "Suwon", 37.26, 127.03, None, "devices"),
    ("api.io.mi.com", "Xiaomi", "CN", "Beijing", 39.90, 116.40, None, "devices"),
    ("data.mistat.xiaomi.com", "Xiaomi", "CN", "Beijing", 39.95, 116.30, "tracker", "devices"),
    ("www.baidu.com", "Baidu", "CN", "Shanghai", 31.23, 121.47, None, "search"),
    ("mc.yandex.ru", "Yandex", "RU", "Moscow", 55.76, 37.62, "tracker", "search"),
    ("www.bbc.co.uk", "BBC", "GB", "London", 51.51, -0.13, None, "news"),
    ("en.wikipedia.org", "Wikimedia", "NL", "Amsterdam", 52.35, 4.92, None, "knowledge"),
    ("obs.line-scdn.net", "LINE", "JP", "Tokyo", 35.68, 139.69, None, "messaging"),
    ("www.naver.com", "Naver", "KR", "Seoul", 37.57, 126.98, None, "search"),
    ("www.mercadolibre.com", "Mercado Libre", "AR", "Buenos Aires", -34.60, -58.38, None, "shopping"),
    ("cdn.shopify.com", "Shopify", "CA", "Ottawa", 45.42, -75.70, None, "shopping"),
    ("www.roblox.com", "Roblox", "US", "San Mateo", 37.56, -122.32, None, "games"),
    ("epicgames.dev", "Epic Games", "US", "Cary", 35.79, -78.78, None, "games"),
    ("discord.gg", "Discord", "US", "San Francisco", 37.77, -122.42, None, "messaging"),
    ("api.duolingo.com", "Duolingo", "US", "Pittsburgh", 40.44, -79.99, None, "learning"),
    ("cdn.jsdelivr.net", "Cloudflare", "AU", "Sydney", -33.87, 151.21, None, "network"),
    ("fonts.gstatic.com", "Google", "IN", "Mumbai", 19.08, 72.88, None, "search"),
    ("weather.com", "IBM", "ZA", "Johannesburg", -26.20, 28.05, None, "news"),
    ("api.mapbox.com", "Mapbox", "US", "Washington", 38.91, -77.04, "tracker", "maps"),
]

#: The overlay's company id (data/companies.toml) of catalogue companies: what a company card is
#: keyed by. Mercado Libre, Shopify, IBM and Mapbox are left without one here, to stand for the
#: companies a describe function knows no id (and so no card) for.
COMPANY_IDS = {
    name: name.lower().replace(" ", "")
    for name in (
        "Google", "Meta", "Apple", "Microsoft", "Amazon", "ByteDance", "Spotify", "Netflix", "Criteo",
        "comScore", "Adjust", "AppsFlyer", "Branch", "Outbrain", "Taboola", "Unity", "Snap", "Samsung",
        "Xiaomi", "Baidu", "Yandex", "BBC", "Wikimedia", "LINE", "Naver", "Roblox", "Epic Games",
        "Discord", "Duolingo", "Cloudflare",
    )
}  # fmt: skip

HOSTNAMES = [
    "mias-iphone",
    "galaxy-s23",
    "pixel-8",
    "ipad-class-3b",
    "jonas-phone",
    "redmi-note-12",
    "leas-ipad",
    "oneplus-11",
    "moto-g54",
    "iphone-se",
    "fairphone-5",
    "switch-lite",
]

# A phone may have this address so that a browser on loopback is that phone for /me and /api/me.
LOOPBACK_PHONE = "127.0.0.1"

HOSTILE_IMG = "<img src=x onerror=window.__pwned=1>"
HOSTILE_SCRIPT = "<script>window.__pwned=1</script>"


@dataclass(frozen=True, slots=True)
class Place:
    """One destination of the fake internet: the name phones ask for and where it is."""

    name: str
    address: str
    dest: Destination


@dataclass(slots=True)
class Phone:
    mac: str
    ip: str
    hostname: str
    flows: dict[int, Flow] = field(default_factory=dict)


@functools.cache
def _hidden() -> HiddenClassifier:
    return HiddenClassifier.shipped()


class FakeWorld:
    """Makes consistent events: leases, DNS question and answer, then flows whose bytes grow."""

    def __init__(self, destinations: int = 40, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.places: list[Place] = []
        self.by_address: dict[str, Place] = {}
        self.phones: list[Phone] = []
        self._fid = 0
        self._serial = 0
        for i in range(destinations):
            self.add_place(i)

    def add_place(self, i: int, name: str | None = None) -> Place:
        """Destination ``i``: the catalogue's entries first, then copies in nearby cities."""
        base = CATALOGUE[i % len(CATALOGUE)]
        host, org, cc, city, lat, lon, tracker, category = base
        cname = COUNTRY_NAMES[cc]
        rnd = i // len(CATALOGUE)
        if rnd:  # a second edge of the same service, a little further away
            host = f"edge{rnd}.{host.removeprefix('www.')}"
            lat = max(-60.0, min(75.0, lat + self.rng.uniform(-3, 3)))
            lon = lon + self.rng.uniform(-4, 4)
            city = f"{city} ({rnd + 1})"
        address = str(ipaddress.ip_address("198.18.0.0") + 10 + len(self.places))
        parts = host.split(".")
        domain = ".".join(parts[-3:] if parts[-2:-1] == ["co"] else parts[-2:])
        dest = Destination(
            org=org,
            org_source="company",
            domain=domain,
            country=cc,
            country_name=cname,
            city=city,
            lat=round(lat, 4),
            lon=round(lon, 4),
            tracker=tracker,
            category=category,
            company=COMPANY_IDS.get(org),
        )
        place = Place(name or host, address, dest)
        self.places.append(place)
        self.by_address[address] = place
        return place

    def describe(self, name: str | None, address: str, proto: int = 0, dport: int = 0) -> Destination:
        """What the enrichers would say: the place by address; an unknown name keeps its own org;
        encrypted DNS, VPNs and Apple's relay as apviz.app.enricher_describe labels them."""
        place = self.by_address.get(address)
        kind = _hidden().classify(name, address, proto, dport)
        if kind is not None:
            d = place.dest if place is not None else Destination("", "")
            return Destination(
                org=HIDDEN_LABELS[kind],
                org_source="hidden",
                hidden=kind.value,
                country=d.country,
                country_name=d.country_name,
                city=d.city,
                lat=d.lat,
                lon=d.lon,
            )
        if place is None:
            return plain_describe(name, address)
        if name is None or name == place.name:
            return place.dest
        plain = plain_describe(name, address)
        d = place.dest
        return Destination(
            org=plain.org,
            org_source=plain.org_source,
            domain=plain.domain,
            country=d.country,
            country_name=d.country_name,
            city=d.city,
            lat=d.lat,
            lon=d.lon,
        )

    # ------------------------------------------------------------------------------ events

    def leases(self) -> LeaseSnapshot:
        return LeaseSnapshot(tuple(Lease(0, p.mac, p.ip, p.hostname, None) for p in self.phones))

    def add_phone(self, hostname: str | None = None, ip: str | None = None) -> tuple[Phone, list[Event]]:
        """A phone joins. ``ip=LOOPBACK_PHONE`` makes it the phone a test browser on loopback is
        (the server knows a phone by the address its requests come from)."""
        n = len(self.phones) + 1
        phone = Phone(
            mac=f"02:a5:00:00:{n >> 8:02x}:{n & 0xFF:02x}",
            ip=ip or f"10.99.{1 + n // 250}.{10 + n % 250}",
            hostname=hostname or f"{HOSTNAMES[(n - 1) % len(HOSTNAMES)]}{'' if n <= len(HOSTNAMES) else n}",
        )
        self.phones.append(phone)
        return phone, [self.leases()]

    def connect(
        self, phone: Phone, place: Place, name: str | None = None, nbytes: int | None = None
    ) -> list[Event]:
        """The phone asks for the name, gets the place's address, and opens a connection to it."""
        self._serial += 1
        self._fid += 1
        asked = name or place.name
        now = time.time()
        up = nbytes if nbytes is not None else self.rng.randint(400, 4000)
        flow = Flow(
            self._fid,
            socket.AF_INET,
            FlowTuple(6, phone.ip, place.address, 30000 + self._fid % 30000, 443),
            FlowTuple(6, place.address, "192.0.2.1", 443, 30000 + self._fid % 30000),
            orig_bytes=up,
            reply_bytes=up * self.rng.randint(2, 30),
            orig_packets=3,
            reply_packets=5,
            tcp_state="ESTABLISHED",
        )
        phone.flows[flow.id] = flow
        return [
            DnsQuery(now, self._serial, phone.ip, "A", asked),
            DnsAnswer(now, self._serial, phone.ip, DnsAnswerKind.REPLY, asked, place.address),
            FlowEvent(FlowEventKind.NEW, flow),
        ]

    def grow(self, fraction: float = 0.1) -> list[Event]:
        """More bytes on a random share of the open flows (what the counter refresh reports)."""
        out: list[Event] = []
        for phone in self.phones:
            for flow in phone.flows.values():
                if self.rng.random() < fraction:
                    flow.orig_bytes += self.rng.randint(200, 5000)
                    flow.reply_bytes += self.rng.randint(1000, 200_000)
                    out.append(FlowEvent(FlowEventKind.UPDATE, flow))
        return out

    def populate(self, devices: int, per_device: int) -> list[Event]:
        """``devices`` phones, each connected to ``per_device`` places (spread over all of them)."""
        events: list[Event] = []
        for _ in range(devices):
            phone, evs = self.add_phone()
            events += evs
        for d, phone in enumerate(self.phones):
            for k in range(per_device):
                place = self.places[(d * 7 + k * 13) % len(self.places)]
                events += self.connect(phone, place)
        return events


class Feed:
    """An event source for the pipeline that a test or driver pushes into."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            yield await self.queue.get()

    def push(self, events: list[Event]) -> None:
        for ev in events:
            self.queue.put_nowait(ev)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(slots=True)
class Running:
    feed: Feed
    service: Service
    world: FakeWorld
    server: uvicorn.Server
    url: str

    async def settle(self, timeout: float = 5.0) -> int:
        """Wait until the feed is drained and applied, publish at once, return the hub's seq."""
        deadline = time.monotonic() + timeout
        while not self.feed.queue.empty() or not self.service.pipeline.queue.empty():
            if time.monotonic() > deadline:
                raise TimeoutError("the fake feed was not drained in time")
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)
        self.service.publish_now()
        return self.service.hub.seq


def make_service(world: FakeWorld, feed: Feed, tick_hz: float = 4.0, mode: Mode = Mode.HOME) -> Service:
    state = LiveState(StateConfig(lan=networks(["10.99.0.0/16", LOOPBACK_PHONE + "/32"])))
    lat, lon, label = GATEWAY
    builder = ViewBuilder(
        ViewOptions(gateway_lat=lat, gateway_lon=lon, gateway_label=label),
        world.describe,
        Privacy(mode),  # home: the browser tests follow hostnames; exhibit: what a museum shows
    )
    return Service(state, [NamedSource("fake", lambda: feed)], builder, Hub(), tick_hz=tick_hz)


@contextlib.asynccontextmanager
async def running(
    world: FakeWorld | None = None,
    port: int | None = None,
    web_dir: Path | None = None,
    tick_hz: float = 4.0,
    mode: Mode = Mode.HOME,
) -> AsyncIterator[Running]:
    """The real service and app on ``127.0.0.1:port`` (a free port unless given)."""
    world = world or FakeWorld()
    feed = Feed()
    service = make_service(world, feed, tick_hz, mode)
    port = port or free_port()
    app = create_app(service, web_dir=web_dir)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises the reason it could not start
        await asyncio.sleep(0.01)
    try:
        yield Running(feed, service, world, server, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await task


def scripted(world: FakeWorld, devices: int, per_device: int) -> Iterator[list[Event]]:
    """A demo's story: phones join one by one, connect, and keep moving data."""
    for _ in range(devices):
        phone, evs = world.add_phone()
        for _ in range(per_device):
            evs += world.connect(phone, world.rng.choice(world.places))
        yield evs
    while True:
        evs = world.grow(0.2)
        if world.rng.random() < 0.3 and world.phones:
            evs += world.connect(world.rng.choice(world.phones), world.rng.choice(world.places))
        yield evs


async def screenshot(path: Path, query: str = "", devices: int = 10, per_device: int = 8) -> None:
    """The kiosk at 1920x1080 with a populated world and one phone that just joined (it pulses)."""
    from playwright.async_api import async_playwright

    from tests.browser import chromium

    world = FakeWorld(destinations=44)
    async with running(world) as run, async_playwright() as p:
        browser = await chromium.launch(p)
        page = await browser.new_page(viewport={"width": 1920, "height": 1080})
        run.feed.push(world.populate(devices - 1, per_device))
        await run.settle()
        await page.goto(f"{run.url}/{query}")
        await page.wait_for_timeout(2500)
        phone, evs = world.add_phone("new-phone")
        run.feed.push(evs + world.connect(phone, world.places[30]) + world.connect(phone, world.places[16]))
        await page.wait_for_timeout(1200)
        path.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(path))
        await browser.close()


async def _demo(args: argparse.Namespace) -> None:
    if args.shot:
        await screenshot(Path(args.shot), args.query)
        return
    world = FakeWorld(destinations=args.destinations, seed=args.seed)
    async with running(world, port=args.port) as run:
        print(f"apviz fake world on {run.url}/  (kiosk), {run.url}/status, Ctrl-C to stop", flush=True)
        for events in scripted(world, args.devices, args.per_device):
            run.feed.push(events)
            await asyncio.sleep(args.every)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=8, help="phones that join, one per step")
    parser.add_argument("--destinations", type=int, default=60, help="places of the fake internet")
    parser.add_argument("--per-device", type=int, default=6, help="connections each phone opens on joining")
    parser.add_argument("--every", type=float, default=1.5, help="seconds between steps")
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--shot", metavar="PNG", help="save a 1920x1080 kiosk screenshot (needs Chromium) and exit"
    )
    parser.add_argument("--query", default="", help="kiosk URL query for --shot, e.g. '?layout=rotate'")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_demo(args))


if __name__ == "__main__":
    main()
