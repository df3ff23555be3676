"""Tracker/ad classification from real EasyList/EasyPrivacy lines, hosts and plain lists, and the
full Debian-installed lists when present."""

from __future__ import annotations

import logging

import pytest

from apviz.enrich import BlocklistSpec, EnrichOptionError, TrackerClassifier, TrackerMatch
from apviz.enrich.trackers import DEBIAN_EASYLIST, DEBIAN_EASYPRIVACY, parse_abp_line, sniff_format
from tests.enrich_data import BLOCKLISTS, needs_easylists

EASYPRIVACY = BLOCKLISTS / "easyprivacy-excerpt.txt"
EASYLIST = BLOCKLISTS / "easylist-excerpt.txt"


@pytest.fixture(scope="module")
def excerpt():
    return TrackerClassifier(
        [BlocklistSpec(EASYPRIVACY, "tracker", "EasyPrivacy"), BlocklistSpec(EASYLIST, "ads", "EasyList")]
    )


@pytest.mark.parametrize(
    ("line", "domain", "reason"),
    [
        ("||adnxs.com^", "adnxs.com", None),
        ("||criteo.com^$third-party", "criteo.com", None),
        ("||Hotjar.COM^$3p", "hotjar.com", None),
        ("||google-analytics.com^$script,third-party,xmlhttprequest", None, "options"),
        ("||doubleclick.net^$popup", None, "options"),
        ("||mixpanel.com/track?", None, "path-or-wildcard"),
        ("||google.*/url?$ping", None, "options"),
        ("||taboola.com^*/vignette-render.js", None, "path-or-wildcard"),
        ("||34.215.155.61^", None, "not-a-domain"),
        ("@@||jetzt.de^$generichide", None, "exception"),
        ("###AD_160", None, "cosmetic"),
        ("example.com##.ad", None, "cosmetic"),
        ("! Title: EasyPrivacy", None, "comment"),
        ("[Adblock Plus 2.0]", None, "comment"),
        ("&action=js_stats", None, "url-pattern"),
    ],
)
def test_abp_rules(line, domain, reason):
    assert parse_abp_line(line) == (domain, reason)


def test_type_options_opt_in():
    assert parse_abp_line("||google-analytics.com^$script,third-party,xmlhttprequest", True) == (
        "google-analytics.com",
        None,
    )
    assert parse_abp_line("||x.com^$script,domain=a.com", True) == (None, "options")


def test_excerpt_lists_match_parents(excerpt):
    assert excerpt.lookup("sb.scorecardresearch.com") == TrackerMatch(
        "tracker", "EasyPrivacy", "scorecardresearch.com"
    )
    assert excerpt.lookup("ib.adnxs.com") == TrackerMatch("ads", "EasyList", "adnxs.com")
    assert excerpt.lookup("ad.doubleclick.net").category == "ads"
    assert excerpt.lookup("doubleclick.net") is None  # only ad.doubleclick.net is a pure domain rule
    assert excerpt.lookup("notscorecardresearch.com") is None  # label boundary, not substring
    assert excerpt.lookup("www.bbc.co.uk") is None
    assert excerpt.lookup("<garbage>") is None


def test_skipped_rules_are_counted(excerpt):
    privacy = excerpt.stats[0]
    assert privacy.format == "abp"
    assert privacy.skipped["exception"] == 2
    assert privacy.skipped["cosmetic"] == 2
    assert privacy.skipped["options"] >= 2
    assert privacy.domains == 9


def test_hosts_and_domain_lists(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text(
        "# a hosts file\n127.0.0.1 localhost\n0.0.0.0 ads.example.com tracker.example.net # two\n"
        "::1 ip6-localhost\n0.0.0.0 0.0.0.0\nnot a line\n"
    )
    plain = tmp_path / "domains.txt"
    plain.write_text("# plain\nmalware.example.org\n\nbad name\n1.2.3.4\n")
    lists = TrackerClassifier([f"{hosts}:ads:Hosts", f"{plain}:malware"])
    assert [s.format for s in lists.stats] == ["hosts", "domains"]
    assert lists.lookup("x.ads.example.com") == TrackerMatch("ads", "Hosts", "ads.example.com")
    assert lists.lookup("tracker.example.net").category == "ads"
    assert lists.lookup("malware.example.org") == TrackerMatch("malware", "domains", "malware.example.org")
    assert lists.lookup("localhost") is None
    assert len(lists) == 3


def test_sniff_format():
    assert sniff_format(["[Adblock Plus 2.0]"]) == "abp"
    assert sniff_format(["# c", "0.0.0.0 a.com"]) == "hosts"
    assert sniff_format(["a.com", "b.com"]) == "domains"


def test_first_list_wins(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("x.com\n")
    b.write_text("x.com\ny.com\n")
    lists = TrackerClassifier([BlocklistSpec(a, "tracker"), BlocklistSpec(b, "ads")])
    assert lists.lookup("x.com").category == "tracker"
    assert lists.lookup("y.com").category == "ads"


def test_missing_list_warns_and_degrades(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="apviz.enrich"):
        lists = TrackerClassifier([BlocklistSpec(tmp_path / "gone.txt", "ads")])
    assert not lists.available and lists.lookup("adnxs.com") is None
    assert "gone.txt not found" in caplog.text


@pytest.mark.parametrize(
    ("spec", "bad"),
    [("list.txt", "'list.txt'"), ("list.txt:spyware", "'list.txt:spyware'")],
)
def test_bad_specs_are_named(spec, bad):
    with pytest.raises(EnrichOptionError, match=bad):
        BlocklistSpec.parse(spec)


def test_spec_parse_with_name():
    spec = BlocklistSpec.parse("/x/easylist.txt:ads:EasyList")
    assert (str(spec.path), spec.category, spec.name) == ("/x/easylist.txt", "ads", "EasyList")
    with pytest.raises(EnrichOptionError, match="'yaml'"):
        BlocklistSpec("x", "ads", format="yaml")


@needs_easylists
def test_installed_easylist_and_easyprivacy():
    lists = TrackerClassifier(
        [
            BlocklistSpec(DEBIAN_EASYPRIVACY, "tracker", "EasyPrivacy"),
            BlocklistSpec(DEBIAN_EASYLIST, "ads", "EasyList"),
        ]
    )
    assert len(lists) > 50_000
    assert lists.lookup("sb.scorecardresearch.com").category == "tracker"
    assert lists.lookup("ib.adnxs.com").category == "ads"
    assert lists.lookup("www.wikipedia.org") is None
    for stats in lists.stats:
        assert stats.format == "abp"
        assert stats.skipped["cosmetic"] > 0 and stats.skipped["exception"] > 0
