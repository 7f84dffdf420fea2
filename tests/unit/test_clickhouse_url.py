from __future__ import annotations

import pytest

from redpoll.clickhouse.client import parse_url
from redpoll.errors import ConfigError


def test_chdb_url() -> None:
    t = parse_url("chdb:///var/lib/redpoll/data")
    assert (t.kind, t.path, t.database) == ("chdb", "/var/lib/redpoll/data", "default")


def test_http_url_with_credentials_and_database() -> None:
    t = parse_url("https://ana%40x:s3cret@ch.example:9443/analytics")
    assert (t.kind, t.secure, t.host, t.port) == ("http", True, "ch.example", 9443)
    assert (t.username, t.password, t.database) == ("ana@x", "s3cret", "analytics")
    assert "s3cret" not in t.describe()


def test_database_setting_wins_over_url_path() -> None:
    assert parse_url("http://h:8123/a", "b").database == "b"


@pytest.mark.parametrize("url", ["chdb://relative/path", "postgres://x", "redis://h"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_url(url)
