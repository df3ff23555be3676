"""Configuration: defaults, validation that names the bad key, env overrides, docs in step."""

import tomllib
from pathlib import Path

import pytest

from apviz import config
from apviz.config import ConfigError, from_dict, load

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_safe():
    cfg = from_dict({}, env={})
    assert cfg.server.listen == "127.0.0.1"  # never all addresses by surprise
    assert cfg.server.tick_hz <= 4


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"server": {"port": 70000}}, "server.port must be between"),
        ({"server": {"port": "80"}}, "server.port must be a whole number"),
        ({"server": {"listen": "everywhere"}}, "server.listen must be an IP address"),
        ({"server": {"colour": "red"}}, "unknown key server.colour"),
        ({"serve": {}}, "unknown section [serve]"),
        ({"state": {"lan": ["10.0.0.0/33"]}}, "state.lan: '10.0.0.0/33' is not a network"),
        ({"state": {"lan": "10.0.0.0/8"}}, "state.lan must be a list of strings"),
        ({"enrich": {"blocklists": ["/x"]}}, "enrich.blocklists: '/x' must look like"),
        ({"view": {"gateway_lat": 91}}, "view.gateway_lat must be between"),
    ],
)
def test_errors_name_the_key(data, message):
    with pytest.raises(ConfigError) as exc:
        from_dict(data, env={})
    assert message in str(exc.value)


def test_env_overrides_file():
    cfg = from_dict(
        {"server": {"port": 9000}}, env={"APVIZ_SERVER_PORT": "9100", "APVIZ_STATE_LAN": "10.9.0.0/16"}
    )
    assert cfg.server.port == 9100 and cfg.state.lan == ["10.9.0.0/16"]


def test_load_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(bad, env={})


def test_example_and_reference_are_current():
    assert from_dict(tomllib.loads(config.example()), env={}) == from_dict({}, env={})
    assert (ROOT / "docs/config.md").read_text() == config.reference(), (
        "run: apviz config --doc > docs/config.md"
    )
    assert (ROOT / "apviz.toml.example").read_text() == config.example(), "run: apviz config --example"
