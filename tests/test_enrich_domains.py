"""DomainParser with the real Public Suffix List from the publicsuffixlist package."""

from __future__ import annotations

import logging

import pytest

from apviz.enrich import DomainParser, EnrichOptionError


@pytest.fixture(scope="module")
def psl():
    return DomainParser()


@pytest.mark.parametrize(
    ("name", "registrable"),
    [
        ("www.example.com", "example.com"),
        ("WWW.Example.COM.", "example.com"),
        ("a.b.c.bbc.co.uk", "bbc.co.uk"),
        ("rr3---sn-4g5e6nsz.googlevideo.com", "googlevideo.com"),
        ("i.ytimg.com", "ytimg.com"),
        ("user.github.io", "user.github.io"),  # private section: a customer's own site
        ("foo.bar.s3.amazonaws.com", "bar.s3.amazonaws.com"),
        ("_dns.resolver.arpa", None),  # special-use (arpa): local
        ("co.uk", None),  # a bare public suffix
        ("com", None),
        ("xn--mller-kva.de", "xn--mller-kva.de"),
        ("www.müller.de", "xn--mller-kva.de"),  # IDNA
    ],
)
def test_registrable(psl, name, registrable):
    assert psl.registrable(name) == registrable


def test_icann_only_ignores_private_section():
    assert DomainParser(icann_only=True).registrable("user.github.io") == "github.io"


@pytest.mark.parametrize(
    "garbage",
    ["", ".", "..", "a..b.com", "<script>alert(1)</script>.com", "exa mple.com", "-" * 64 + ".com",
     "a." * 130 + "com", "\x00.com", "<name unprintable>", "x" * 100_000, None, 12, "\ud800.com"],
)  # fmt: skip
def test_garbage_never_raises(psl, garbage):
    assert psl.registrable(garbage) is None


def test_ip_literals_and_single_labels(psl):
    assert psl.info("1.2.3.4").registrable is None
    router = psl.info("router")
    assert router.registrable is None and router.local


@pytest.mark.parametrize("name", ["printer.local", "nas.home.arpa", "tv.lan", "1.0.168.192.in-addr.arpa"])
def test_local_names(psl, name):
    info = psl.info(name)
    assert info.local and info.registrable is None


def test_display_decodes_idna(psl):
    assert psl.info("xn--mller-kva.de").display == "müller.de"
    assert psl.info("xn--zz.de").display == "xn--zz.de"  # undecodable label kept


def test_custom_psl_file_and_missing_file(tmp_path, caplog):
    custom = tmp_path / "psl.dat"
    custom.write_text("// test list\ncom\nexample.com\n")
    assert DomainParser(custom).registrable("a.b.example.com") == "b.example.com"
    with caplog.at_level(logging.WARNING, logger="apviz.enrich"):
        fallback = DomainParser(tmp_path / "missing.dat")
    assert "missing.dat not found" in caplog.text
    assert fallback.registrable("www.bbc.co.uk") == "bbc.co.uk"  # bundled list used


def test_bad_option_named():
    with pytest.raises(EnrichOptionError, match="'yes'"):
        DomainParser(icann_only="yes")
