"""Shared fixtures. One chDB data directory per test session (chDB allows one path per
process); each test that needs isolation gets its own randomly named database in it.

Set REDPOLL_TEST_CLICKHOUSE_URL=http://user:pass@host:8123 to run the same tests against
a real ClickHouse server instead of embedded chDB.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from redpoll.clickhouse.client import Client, Target, connect, parse_url, quote_identifier

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def clickhouse_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The ClickHouse all in-process tests use: a session chDB dir unless overridden."""
    url = os.environ.get("REDPOLL_TEST_CLICKHOUSE_URL")
    if url:
        return url
    return f"chdb://{tmp_path_factory.mktemp('chdb') / 'data'}"


@pytest.fixture
def ch_target(clickhouse_url: str) -> Iterator[Target]:
    """A fresh, empty database for one test; dropped afterwards."""
    database = f"t_{uuid.uuid4().hex[:12]}"
    target = parse_url(clickhouse_url, database)
    admin = connect(target, create_database=True)
    try:
        yield target
    finally:
        admin.command(f"DROP DATABASE IF EXISTS {quote_identifier(database)}")
        admin.close()


@pytest.fixture
def admin_client(ch_target: Target) -> Iterator[Client]:
    client = connect(ch_target)
    yield client
    client.close()


@pytest.fixture
def online_retail_csv() -> Path:
    """The full UCI Online Retail file from ../shared; skipped (visibly) when absent."""
    path = SHARED_DATA / "online-retail" / "online_retail.csv.gz"
    if not path.is_file():
        pytest.skip(f"../shared/data not present ({path}); full-dataset test skipped")
    return path
