"""GeoLookup takes a database replaced on disk into use, and keeps the old one when the new file is
broken or gone. (The running service's side is in ``test_faults_lab.py``.)"""

from __future__ import annotations

import logging
import os
import shutil

import pytest

from apviz.enrich import EnrichOptionError, GeoLookup
from tests.enrich_data import BROKEN_MMDB, CITY_TEST, write_dbip_like

LONDON = "81.2.69.142"  # in the GeoIP2 test database, not in the DB-IP-like fixture
MOUNTAIN_VIEW = "8.8.8.8"  # in the DB-IP-like fixture only


def replace(src, dst):
    """What an update does: a complete copy beside the file, renamed over it."""
    tmp = dst.with_name(dst.name + ".new")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def test_renamed_over_file_is_used_and_caches_and_listeners_are_told(tmp_path):
    (tmp_path / "dbip").mkdir()
    p4, _ = write_dbip_like(tmp_path / "dbip")
    db = tmp_path / "geo.mmdb"
    shutil.copyfile(CITY_TEST, db)
    geo = GeoLookup(db, reload_interval=0)
    told = []
    geo.on_reload.append(lambda: told.append(True))
    assert geo.lookup(LONDON).city == "London" and geo.lookup(MOUNTAIN_VIEW) is None
    assert geo.reload_if_changed() is False  # nothing changed: nothing reopened
    replace(p4, db)
    assert geo.reload_if_changed() is True
    assert geo.lookup(LONDON) is None  # the cached answer went with the old file
    assert geo.lookup(MOUNTAIN_VIEW).city == "Mountain View"
    assert (geo.reloads, geo.reload_failures, told) == (1, 0, [True])


def test_broken_or_missing_replacement_keeps_the_old_data(tmp_path, caplog):
    db = tmp_path / "geo.mmdb"
    shutil.copyfile(CITY_TEST, db)
    geo = GeoLookup(db, reload_interval=0)
    for broken in (BROKEN_MMDB, None):
        with caplog.at_level(logging.WARNING, logger="apviz.enrich.geo"):
            if broken is None:
                db.unlink()
            else:
                replace(broken, db)
            assert geo.reload_if_changed() is False
            assert geo.reload_if_changed() is False  # the same bad file is not tried (or logged) again
        assert geo.lookup(LONDON).city == "London"
    assert geo.reload_failures == 1 and geo.reloads == 0
    assert "keeping the previous data" in caplog.text and "disappeared" in caplog.text
    assert caplog.text.count("keeping the previous data") == 1
    replace(CITY_TEST, db)  # a good file again: in use
    assert geo.reload_if_changed() is True and geo.reloads == 1


def test_file_missing_at_start_is_picked_up_when_it_appears(tmp_path):
    db = tmp_path / "later.mmdb"
    geo = GeoLookup(db, reload_interval=0)
    assert not geo.available and geo.lookup(LONDON) is None
    replace(CITY_TEST, db)
    assert geo.reload_if_changed() and geo.available
    assert geo.lookup(LONDON).city == "London"


def test_checks_are_rate_limited(tmp_path):
    (tmp_path / "dbip").mkdir()
    p4, _ = write_dbip_like(tmp_path / "dbip")
    db = tmp_path / "geo.mmdb"
    shutil.copyfile(CITY_TEST, db)
    geo = GeoLookup(db, reload_interval=3600)
    assert geo.reload_if_changed() is False  # the first check only notes the time
    replace(p4, db)
    assert geo.reload_if_changed() is False  # within the interval: not even a stat
    assert geo.reload_if_changed(force=True) is True


def test_reload_interval_is_checked():
    with pytest.raises(EnrichOptionError):
        GeoLookup(CITY_TEST, reload_interval=-1)
    assert not GeoLookup(CITY_TEST, reload_interval=0).watched
    assert not GeoLookup(None).watched and GeoLookup(CITY_TEST).watched
