"""API fixtures: `create_app` over a real chDB store in a fresh database (no subprocess)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from redpoll.app import create_app
from redpoll.clickhouse.client import Client, Target
from redpoll.settings import Settings, load_settings
from redpoll.store import Store

ADMIN_TOKEN = "test-admin-token"


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


@pytest.fixture
def api(settings: Settings, store: Store) -> Iterator[TestClient]:
    with TestClient(app=create_app(settings, store=store)) as client:
        yield client
