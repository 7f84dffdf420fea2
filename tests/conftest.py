"""Shared fixtures. One chDB data directory per test session (chDB allows one path per
process); each test that needs isolation gets its own randomly named database in it
(`redpoll_target` of the redpoll pytest plugin).

Set REDPOLL_TEST_CLICKHOUSE_URL=http://user:pass@host:8123 to run the same tests against
a real ClickHouse server instead of embedded chDB.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from redpoll.clickhouse.client import Client, Target
from redpoll.settings import Settings, load_settings
from redpoll.store import Store
from tests.support.api import ADMIN_TOKEN
from tests.support.examples import THOROUGH
from tests.support.paths import SHARED_DATA

pytest_plugins = ["pytester"]  # tests/test_pytest_plugin.py runs pytest as a user would

# Property tests run their smaller default example counts (tests/support/examples.py);
# `pytest --hypothesis-profile=thorough` runs the full counts, and 500 examples for tests
# that set none.
hypothesis_settings.register_profile(THOROUGH, max_examples=500)


# The store fixtures come from Redpoll's pytest plugin (app/redpoll/pytest_plugin.py),
# the same ones a project's own tests get; these names are the suite's short aliases.


@pytest.fixture
def ch_target(redpoll_target: Target) -> Target:
    """A fresh, empty database for one test; dropped afterwards."""
    return redpoll_target


@pytest.fixture
def admin_client(redpoll_admin: Client) -> Client:
    return redpoll_admin


@pytest.fixture
def online_retail_csv() -> Path:
    """The full UCI Online Retail file from ../shared; skipped (visibly) when absent."""
    path = SHARED_DATA / "online-retail" / "online_retail.csv.gz"
    if not path.is_file():
        pytest.skip(f"../shared/data not present ({path}); full-dataset test skipped")
    return path


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    for folder in ["sql", "materialized_views", "endpoints", "migrations"]:
        (tmp_path / folder).mkdir()
    return tmp_path


@pytest.fixture
def settings(project_dir: Path, ch_target: Target) -> Settings:
    return load_settings({"project_dir": str(project_dir), "admin_token": ADMIN_TOKEN}, environ={})


@pytest.fixture
def store(settings: Settings, ch_target: Target, admin_client: Client) -> Iterator[Store]:
    store = Store.attach(settings, ch_target, admin_client)
    yield store
    store.close_read_pools()
