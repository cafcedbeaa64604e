"""Settings precedence (flag > environment > file > default) and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubproxy.cli import main
from hubproxy.config import ConfigError, load_settings


def test_defaults() -> None:
    s = load_settings(environ={})
    assert (s.host, s.port, s.upstream, s.data_dir, s.offline) == (
        "127.0.0.1", 8000, "https://huggingface.co", Path("./hubproxy-data"), False)
    assert s.db_url.startswith("sqlite:///") and s.db_url.endswith("hubproxy-data/hubproxy.db")


def test_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("port: 7000\nhost: 10.0.0.1\nupstream: http://file:1\noffline: true\nrevision_ttl: 5\n")
    env = {"HUBPROXY_PORT": "7100", "HUBPROXY_UPSTREAM": "http://env:2", "HUBPROXY_UPSTREAM_TOKEN": "hf_x"}
    s = load_settings(cfg, {"port": 7200}, environ=env)
    assert s.port == 7200  # flag
    assert s.upstream == "http://env:2"  # env over file
    assert s.host == "10.0.0.1" and s.offline is True and s.revision_ttl == 5.0  # file over default
    assert s.upstream_token == "hf_x" and "hf_x" not in repr(s)
    assert load_settings(environ={"HUBPROXY_CONFIG": str(cfg)}).port == 7000


@pytest.mark.parametrize(("env", "name"), [
    ({"HUBPROXY_PORT": "eighty"}, "port"), ({"HUBPROXY_PORT": "70000"}, "port"),
    ({"HUBPROXY_UPSTREAM": "ftp://x"}, "upstream"), ({"HUBPROXY_OFFLINE": "maybe"}, "offline"),
    ({"HUBPROXY_REVISION_TTL": "-1"}, "revision_ttl"), ({"HUBPROXY_LOG_LEVEL": "loud"}, "log_level"),
    ({"HUBPROXY_S3_PRESIGN_TTL": "30"}, "s3_presign_ttl"), ({"HUBPROXY_S3_PRESIGN_TTL": "604801"}, "s3_presign_ttl"),
    ({"HUBPROXY_FILL_HELD_MIB": "-1"}, "fill_held_mib"),
])
def test_bad_settings_are_named(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(environ=env)


def test_unknown_file_setting(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("prot: 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings(cfg, environ={})


def test_example_config_is_valid_and_complete() -> None:
    from dataclasses import fields

    from hubproxy.config import Settings

    example = Path(__file__).resolve().parent.parent / "config" / "hubproxy.example.yaml"
    s = load_settings(example, environ={})
    assert s.port == 8000
    text = example.read_text()
    for f in fields(Settings):
        assert f"{f.name}:" in text, f"{f.name} is not documented in the example config"


def test_cli_reports_config_errors(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBPROXY_PORT", "nope")
    assert main(["serve"]) == 2
    assert "port" in capsys.readouterr().err


def test_production_config_is_valid_and_closed() -> None:
    example = Path(__file__).resolve().parent.parent / "config" / "hubproxy.production.yaml"
    s = load_settings(example, environ={})
    assert s.anonymous_access == "off" and s.store == "s3" and s.db_url.startswith("postgresql")
    assert s.cache_max_bytes == 2 * 1024**4
