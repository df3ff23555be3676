"""The shipped company overlay (strictly valid, kid-sized sentences), parent matching, lenient vs
strict loading, and the opt-in Ghostery TrackerDB loader on a sample in the real format."""

from __future__ import annotations

import json
import logging

import pytest

from apviz.enrich import CATEGORIES, CompanyMap, EnrichOptionError, TrackerDb
from apviz.enrich.ghostery import SOURCE_LABEL


@pytest.fixture(scope="module")
def overlay():
    return CompanyMap(strict=True)  # the shipped data/companies.toml must load without one problem


def test_shipped_overlay_size_and_coverage(overlay):
    assert len(overlay) >= 200
    must = ["apple.com", "google.com", "facebook.com", "amazonaws.com", "microsoft.com", "tiktok.com",
            "netflix.com", "samsung.com", "qq.com", "yandex.ru", "spotify.com", "roku.com", "lge.com",
            "xiaomi.com", "huawei.com", "twitter.com", "snapchat.com", "criteo.com", "adnxs.com",
            "scorecardresearch.com", "appsflyer.com", "adjust.com", "branch.io", "onesignal.com",
            "cloudflare.com", "akamai.net", "fastly.net"]  # fmt: skip
    assert [d for d in must if d not in overlay.domains] == []


def test_every_entry_is_kiosk_ready(overlay):
    for key, company in overlay.companies.items():
        assert len(company.about) <= 140, key
        assert company.about.endswith("."), key
    for domain, (_, category, about) in overlay.domains.items():
        assert category in CATEGORIES
        assert about is None or (len(about) <= 140 and about.endswith(".")), domain


@pytest.mark.parametrize(
    ("name", "company", "category", "domain"),
    [
        ("www.google.com", "Google", "search", "google.com"),
        ("securepubads.g.doubleclick.net", "Google", "advertising", "doubleclick.net"),
        ("graph.facebook.com", "Meta", "social", "facebook.com"),
        ("an.facebook.com", "Meta", "advertising", "an.facebook.com"),  # host overrides parent
        ("1-courier.push.apple.com", "Apple", "push", "push.apple.com"),
        ("my-worker.someone.workers.dev", "Cloudflare", "cloud/CDN", "workers.dev"),
        ("IB.ADNXS.COM.", "Xandr (AppNexus)", "advertising", "adnxs.com"),
    ],
)
def test_lookup_most_specific_parent(overlay, name, company, category, domain):
    info = overlay.lookup(name)
    assert (info.name, info.category, info.domain, info.source) == (company, category, domain, "apviz")
    assert info.country and info.category_label == CATEGORIES[category]


def test_unknown_and_garbage(overlay):
    assert overlay.lookup("example.org") is None
    assert overlay.lookup("<b>x</b>") is None
    assert overlay.lookup("") is None


BAD = """
[companies.good]
name = "Good"
country = "US"
about = "Fine."
[companies.badcountry]
name = "Bad"
country = "XX"
about = "Nope."
[domains]
"good.com" = { company = "good", category = "advertising" }
"Upper.com" = { company = "good", category = "advertising" }
"ghost.com" = { company = "nobody", category = "advertising" }
"weird.com" = { company = "good", category = "mind-control" }
"""


def test_lenient_load_skips_and_logs(tmp_path, caplog):
    path = tmp_path / "c.toml"
    path.write_text(BAD)
    with caplog.at_level(logging.WARNING, logger="apviz.enrich.companies"):
        companies = CompanyMap(path)
    assert list(companies.domains) == ["good.com"]
    assert len(companies.errors) == 4
    assert "'XX'" in caplog.text and "'mind-control'" in caplog.text and "'nobody'" in caplog.text


def test_strict_load_names_the_bad_value(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(BAD)
    with pytest.raises(EnrichOptionError, match="'XX'"):
        CompanyMap(path, strict=True)


def test_missing_and_broken_files(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="apviz.enrich"):
        assert CompanyMap(tmp_path / "none.toml").lookup("google.com") is None
        broken = tmp_path / "broken.toml"
        broken.write_text("[companies\n")
        assert len(CompanyMap(broken)) == 0
    assert "none.toml not found" in caplog.text


# A sample in the exact layout of @ghostery/trackerdb 1.0.x dist/trackerdb.json (values written for
# the test, keys and nesting as in the real export).
GHOSTERY_SAMPLE = {
    "categories": {
        "advertising": {"name": "Advertising", "color": "#cb55cd", "description": "Advertising services."},
        "site_analytics": {"name": "Site Analytics", "color": "#87d7ef", "description": "Analytics."},
    },
    "organizations": {
        "exampleads": {"name": "Example Ads GmbH", "description": "Sells ads.", "website_url": None,
                       "country": "DE", "privacy_policy_url": None, "privacy_contact": None,
                       "ghostery_id": "1", "tags": []},
    },
    "patterns": {
        "example_ads": {"name": "Example Ads", "category": "advertising", "organization": "exampleads",
                        "alias": None, "website_url": None, "ghostery_id": None, "tags": [],
                        "domains": ["exampleads.test"], "filters": ["||exampleads.test^$3p"]},
        "lonely_stats": {"name": "Lonely Stats", "category": "site_analytics", "organization": None,
                         "alias": None, "website_url": None, "ghostery_id": None, "tags": [],
                         "domains": ["stats.lonely.test"], "filters": []},
    },
    "domains": {"exampleads.test": "example_ads", "stats.lonely.test": "lonely_stats", "bad.test": "nope"},
    "filters": {"||exampleads.test^$3p": "example_ads"},
}  # fmt: skip


def test_ghostery_trackerdb_sample(tmp_path):
    path = tmp_path / "trackerdb.json"
    path.write_text(json.dumps(GHOSTERY_SAMPLE))
    db = TrackerDb(path)
    assert len(db) == 2  # the domain pointing at an unknown pattern is dropped
    ads = db.lookup("cdn.exampleads.test")
    assert (ads.name, ads.category, ads.country_code, ads.source) == (
        "Example Ads GmbH", "advertising", "DE", SOURCE_LABEL,
    )  # fmt: skip
    stats = db.lookup("stats.lonely.test")
    assert (stats.name, stats.category, stats.country_code) == ("Lonely Stats", "analytics", None)
    assert db.lookup("lonely.test") is None


def test_ghostery_is_off_unless_configured(tmp_path, caplog):
    assert not TrackerDb(None).available
    with caplog.at_level(logging.WARNING, logger="apviz.enrich"):
        assert TrackerDb(tmp_path / "missing.json").lookup("exampleads.test") is None
        wrong = tmp_path / "wrong.json"
        wrong.write_text('{"hello": 1}')
        assert not TrackerDb(wrong).available
    assert "missing.json not found" in caplog.text and "not a TrackerDB JSON export" in caplog.text
