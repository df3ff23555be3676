"""Special address ranges and the gateway's own addresses get labels, never places."""

from __future__ import annotations

import pytest

from apviz.enrich import EnrichOptionError, SpecialRanges


@pytest.fixture(scope="module")
def special():
    return SpecialRanges(["10.99.0.1", "fd00:99::1"])


@pytest.mark.parametrize(
    ("ip", "kind"),
    [
        ("10.99.0.1", "gateway"),
        ("fd00:99::1", "gateway"),
        ("10.99.1.23", "private"),
        ("172.20.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.12.1", "cgnat"),
        ("127.0.0.53", "loopback"),
        ("169.254.1.1", "link-local"),
        ("224.0.0.251", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("0.0.0.0", "unspecified"),
        ("192.0.2.1", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.9", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.254", "benchmarking"),
        ("240.0.0.1", "reserved"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1%wlan0", "link-local"),
        ("fd12:3456::1", "private"),
        ("ff02::fb", "multicast"),
        ("2001:db8::1", "documentation"),
        ("64:ff9b::808:808", "nat64"),
        ("::ffff:192.168.0.1", "private"),
    ],
)
def test_kinds(special, ip, kind):
    info = special.lookup(ip)
    assert info is not None and info.kind == kind and info.label and info.description


@pytest.mark.parametrize(
    "ip", ["8.8.8.8", "2001:4860:4860::8888", "198.20.0.1", "100.128.0.1", "garbage", ""]
)
def test_public_or_invalid_is_none(special, ip):
    assert special.lookup(ip) is None


def test_benchmarking_is_soft_by_default_and_configurable():
    assert SpecialRanges().lookup("198.18.3.4").soft
    assert not SpecialRanges(soft_benchmarking=False).lookup("198.18.3.4").soft
    assert not SpecialRanges().lookup("10.0.0.1").soft


def test_gateway_network_and_bad_value():
    assert SpecialRanges("10.99.0.0/30").lookup("10.99.0.2").kind == "gateway"
    with pytest.raises(EnrichOptionError, match="'router'"):
        SpecialRanges(["router"])


def test_nat64_embedded_ipv4():
    assert str(SpecialRanges.embedded_ipv4("64:ff9b::808:808")) == "8.8.8.8"
    assert SpecialRanges.embedded_ipv4("2001:db8::1") is None
