"""Settings precedence: flags > REDPOLL_* env > redpoll.toml > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from redpoll.errors import ConfigError
from redpoll.settings import SETTINGS, load_settings


def test_defaults_embedded_store_inside_project(tmp_path: Path) -> None:
    s = load_settings({"project_dir": str(tmp_path)}, environ={})
    assert s.port == 8000
    assert s.host == "127.0.0.1"
    assert s.effective_clickhouse_url == f"chdb://{tmp_path.resolve()}/.redpoll/data"
    assert s.is_embedded


def test_precedence_flag_over_env_over_toml(tmp_path: Path) -> None:
    (tmp_path / "redpoll.toml").write_text("port = 7001\nhost = '0.0.0.0'\ndev = true\n")
    env = {"REDPOLL_PORT": "7002", "REDPOLL_PROJECT_DIR": str(tmp_path)}
    assert load_settings({}, environ=env).port == 7002
    assert load_settings({"port": 7003}, environ=env).port == 7003
    s = load_settings({}, environ={"REDPOLL_PROJECT_DIR": str(tmp_path)})
    assert (s.port, s.host, s.dev) == (7001, "0.0.0.0", True)


def test_toml_redpoll_section_and_server_url(tmp_path: Path) -> None:
    (tmp_path / "redpoll.toml").write_text(
        '[redpoll]\nclickhouse_url = "http://u:p@ch:8123/analytics"\n'
    )
    s = load_settings({"project_dir": str(tmp_path)}, environ={})
    assert not s.is_embedded
    assert s.effective_clickhouse_url == "http://u:p@ch:8123/analytics"


def test_unknown_toml_key_is_rejected_with_file_name(tmp_path: Path) -> None:
    (tmp_path / "redpoll.toml").write_text("prot = 1\n")
    with pytest.raises(ConfigError, match=r"redpoll.toml: unknown setting\(s\): prot"):
        load_settings({"project_dir": str(tmp_path)}, environ={})


@pytest.mark.parametrize(("var", "value"), [("REDPOLL_PORT", "eighty"), ("REDPOLL_DEV", "maybe")])
def test_bad_env_value_names_the_variable(tmp_path: Path, var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        load_settings({"project_dir": str(tmp_path)}, environ={var: value})


def test_every_setting_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    missing = [s.env_var for s in SETTINGS if s.env_var not in doc]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"
