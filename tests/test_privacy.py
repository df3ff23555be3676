"""Exhibit and classroom privacy: pseudonyms, known domains only, hidden devices, the paused screen,
and visitors forgotten after they leave even while their lease runs on."""

import json
import shutil
import socket
import subprocess
import time

import pytest

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
from apviz.live.destinations import Destination
from apviz.live.privacy import KnownDomains, Mode, Privacy, public_destination
from apviz.live.pseudonyms import ANIMALS, COLOURS, Pseudonyms, colour_index, render
from apviz.live.publicview import ViewBuilder
from apviz.live.state import LiveState, StateConfig, networks

MAC = "02:a5:00:00:00:01"
RUDE = "rude-word-1234.example"


def events(ip="10.99.1.101", mac=MAC, host="my-secret-name", name=RUDE, fid=1, dst="198.18.0.10", expiry=0):
    f = Flow(
        fid,
        socket.AF_INET,
        FlowTuple(6, ip, dst, 40000 + fid, 443),
        FlowTuple(6, dst, "10.99.255.2", 443, 40000 + fid),
        orig_bytes=100,
        reply_bytes=900,
        orig_packets=2,
    )
    return [
        LeaseSnapshot((Lease(expiry, mac, ip, host, "01:" + mac),)),
        DnsQuery(time.time(), fid, ip, "A", name),
        DnsAnswer(time.time(), fid, ip, DnsAnswerKind.REPLY, name, dst),
        FlowEvent(FlowEventKind.NEW, f),
    ]


def state_with(*batches, clock=time.time, **config):
    st = LiveState(StateConfig(lan=networks(["10.99.1.0/24"]), **config), clock=clock)
    for batch in batches:
        for ev in batch:
            st.apply(ev)
    return st


def describe_with_asn(name, address, proto=0, dport=0):
    """An enricher stand-in: domain from the name, the network's owner from the address."""
    if name:
        dom = ".".join(name.split(".")[-2:])
        return Destination(org=dom, org_source="domain", domain=dom, asn_org="Example Hosting", country="DE")
    return Destination(org="Example Hosting", org_source="asn", asn_org="Example Hosting", country="DE")


# ------------------------------------------------------------------------------ pseudonyms


def test_colour_index_matches_the_kiosk_palette_function():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    ids = ["d90d27dd1b91a", "df3e596cdea7f", "d000000000000", "dffffffffffff", "x"]
    script = (
        "import('./web/js/colours.js').then(m => console.log(JSON.stringify("
        + json.dumps(ids)
        + ".map(m.deviceColourIndex))))"
    )
    out = subprocess.run(
        [node, "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == [colour_index(i) for i in ids]
    assert len(COLOURS) == 7  # web/css/base.css defines .dev-c0 … .dev-c6


def test_pseudonyms_are_stable_unique_and_new_after_forgetting():
    p = Pseudonyms(salt=b"s" * 16)
    first = p.name("02:00:00:00:00:01", "d1")
    assert p.name("02:00:00:00:00:01", "d1") == first
    assert first.split()[0] == COLOURS[colour_index("d1")].en
    # Same colour for every id here: the animals must still differ while all are present.
    picks = {p.pick(f"02:00:00:00:01:{i:02x}", "same-id") for i in range(len(ANIMALS))}
    assert len(picks) == len(ANIMALS)
    p.forget("02:00:00:00:00:01")
    names = set()
    for _ in range(6):  # leave and come back: a new assignment each time (same colour, new draw)
        names.add(p.name("02:00:00:00:00:01", "d1"))
        p.forget("02:00:00:00:00:01")
    assert len(names) > 1


def test_pseudonyms_in_german_decline_with_the_animal():
    fox = next(i for i, a in enumerate(ANIMALS) if a.en == "Fox")
    owl = next(i for i, a in enumerate(ANIMALS) if a.en == "Owl")
    horse = next(i for i, a in enumerate(ANIMALS) if a.en == "Horse")
    assert render(0, fox, "en") == "Yellow Fox"
    assert (render(0, fox, "de"), render(0, owl, "de"), render(0, horse, "de")) == (
        "Gelber Fuchs",
        "Gelbe Eule",
        "Gelbes Pferd",
    )


# ------------------------------------------------------------------------------ known domains


def test_known_domains_are_exact_and_the_shipped_list_is_curated():
    known = KnownDomains.shipped()
    assert known("wikipedia.org") and known("spiegel.de") and known("WIKIPEDIA.ORG.")
    assert not known(RUDE) and not known("rude.wikipedia.org") and not known(None)
    assert 250 <= len(known.domains) <= 400
    assert all(d == d.lower() and " " not in d and "*" not in d for d in known.domains)
    also = KnownDomains(["a.example"], also=[lambda d: d == "b.example"])
    assert also("a.example") and also("b.example") and not also("c.example")


def test_public_destination_falls_back_to_network_owner_then_unknown():
    def known(d):
        return d == "wikipedia.org"

    shown = Destination(org="wikipedia.org", org_source="domain", domain="wikipedia.org", asn_org="Wikimedia")
    assert public_destination(shown, known) is shown
    rude = Destination(org=RUDE, org_source="domain", domain=RUDE, asn_org="Example Hosting")
    assert public_destination(rude, known) == Destination(
        org="Example Hosting", org_source="asn", asn_org="Example Hosting"
    )
    lan = Destination(org=RUDE, org_source="domain", domain=RUDE, special="private network")
    assert public_destination(lan, known).org == "private network"
    bare = Destination(org=RUDE, org_source="domain", domain=RUDE)
    assert public_destination(bare, known).org == "unknown site"
    assert public_destination(bare, known, "de").org == "unbekannte Seite"
    # A company label is curated, but a visitor's domain under a shared suffix is not.
    company = Destination(org="GitHub", org_source="company", domain="rude.github.io")
    assert public_destination(company, known) == Destination(org="GitHub", org_source="company")


def test_known_domains_from_the_enricher_use_overlay_and_exact_blocklist_rules(tmp_path):
    from apviz.app import known_domains
    from apviz.enrich.enricher import EnrichConfig, Enricher
    from apviz.enrich.trackers import BlocklistSpec

    blocklist = tmp_path / "ads.txt"
    blocklist.write_text("||adnet-example.com^\n||ads.somesite-example.com^\n||github.io^\n")
    extra = tmp_path / "mine.txt"
    extra.write_text("# the museum's own site\nmuseum-example.org\n")
    enricher = Enricher(EnrichConfig(blocklists=(BlocklistSpec(blocklist, "ads", "test"),)))
    known = known_domains(enricher, str(extra))
    assert known("adnet-example.com") and known("museum-example.org") and known("wikipedia.org")
    assert known("fbcdn.net")  # the company overlay
    assert not known("somesite-example.com")  # only a host under it is listed
    assert not known("rude.github.io")  # a parent rule never vouches for a visitor's own name


# ------------------------------------------------------------------------------ the view


def test_exhibit_view_has_no_hostname_address_mac_or_unknown_domain():
    st = state_with(events(), events(fid=2, name="en.wikipedia.org", dst="198.18.0.11"))
    view = ViewBuilder(describe=describe_with_asn).build(st)
    text = json.dumps(view)
    for secret in ("my-secret-name", MAC, "01:" + MAC, "10.99.1.101", "rude-word", "1234"):
        assert secret not in text
    (dev,) = view["devices"].values()
    assert dev["label"].split()[0] in {c.en for c in COLOURS}
    orgs = {n["label"]: n for n in view["nodes"].values() if n["kind"] == "org"}
    assert set(orgs) == {"Example Hosting", "wikipedia.org"}
    assert orgs["Example Hosting"]["domains"] == [] and orgs["wikipedia.org"]["domains"] == ["wikipedia.org"]
    assert view["screen"] == {"mode": "exhibit", "lang": "en", "paused": False}


def test_classroom_is_private_and_home_shows_real_names():
    st = state_with(events())
    classroom = ViewBuilder(describe=describe_with_asn, privacy=Privacy(Mode.CLASSROOM)).build(st)
    assert "my-secret-name" not in json.dumps(classroom) and RUDE not in json.dumps(classroom)
    home = ViewBuilder(describe=describe_with_asn, privacy=Privacy(Mode.HOME)).build(st)
    (dev,) = home["devices"].values()
    assert dev["label"] == "my-secret-name"
    assert home["nodes"]["o:" + RUDE]["domains"] == [RUDE]


def test_mode_and_language_switch_at_run_time():
    st = state_with(events())
    builder = ViewBuilder(describe=describe_with_asn)
    english = next(iter(builder.build(st)["devices"].values()))["label"]
    builder.privacy.set_language("de")
    german = next(iter(builder.build(st)["devices"].values()))["label"]
    assert english != german and german.split()[0] in {c.de_m for c in COLOURS} | {
        c.de_f for c in COLOURS
    } | {c.de_n for c in COLOURS}
    builder.privacy.set_mode("home")
    assert next(iter(builder.build(st)["devices"].values()))["label"] == "my-secret-name"
    with pytest.raises(ValueError, match=r"exhibit\.mode"):
        builder.privacy.set_mode("party")


def test_hidden_device_stays_off_the_view_until_forgotten_for_good():
    now = [1000.0]
    st = state_with(events(), events(ip="10.99.1.102", mac="02:a5:00:00:00:02", host="other", fid=2))
    builder = ViewBuilder(describe=describe_with_asn, privacy=Privacy(forget_after=60, clock=lambda: now[0]))
    assert len(builder.build(st)["devices"]) == 2
    builder.privacy.hide(MAC)
    view = builder.build(st)
    assert len(view["devices"]) == 1 and view["totals"]["devices"] == 1 and view["totals"]["connections"] == 1
    now[0] += 3600  # still present: still hidden, however long it stays
    assert len(builder.build(st)["devices"]) == 1
    st.forget_device(MAC)
    builder.build(st)
    now[0] += 61  # gone for longer than forget_after: not even the "hidden" entry is kept
    builder.build(st)
    assert not builder.privacy.hidden(MAC) and builder.privacy.hidden_count == 0


def test_paused_screen_stays_until_a_privacy_action_retakes_it():
    st = state_with(events())
    builder = ViewBuilder(describe=describe_with_asn)
    builder.privacy.paused = True
    first = builder.build(st)
    for ev in events(ip="10.99.1.102", mac="02:a5:00:00:00:02", fid=2):
        st.apply(ev)
    frozen = builder.build(st)
    assert frozen["devices"] == first["devices"] and frozen["screen"]["paused"]
    builder.privacy.hide(MAC)
    builder.refreeze()
    retaken = builder.build(st)
    assert len(retaken["devices"]) == 1 and retaken["devices"] != first["devices"]
    builder.privacy.paused = False
    assert not builder.build(st)["screen"]["paused"]


def test_forget_after_forgets_a_quiet_device_despite_its_lease():
    now = [time.time()]
    lease_ends = int(now[0]) + 12 * 3600
    st = state_with(
        events(expiry=lease_ends), clock=lambda: now[0], flow_hold=0, device_idle=600, forget_after=120
    )
    for rec in list(st.flows.values()):
        st._end(rec, now[0])
    now[0] += 60
    st.expire()
    assert MAC in st.devices
    now[0] += 61
    st.expire()
    assert st.devices == {} and st.flows == {}
    # Without forget_after a running lease keeps it (the old rule, still home mode's if wanted).
    keep = state_with(events(expiry=lease_ends), clock=lambda: now[0], flow_hold=0, device_idle=600)
    for rec in list(keep.flows.values()):
        keep._end(rec, now[0])
    now[0] += 700
    keep.expire()
    assert MAC in keep.devices
