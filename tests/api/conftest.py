"""API fixtures: `create_app` over a real chDB store in a fresh database (no subprocess);
the store and its project come from tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from redpoll.app import create_app
from redpoll.settings import Settings
from redpoll.store import Store


@pytest.fixture
def api(settings: Settings, store: Store) -> Iterator[TestClient]:
    with TestClient(app=create_app(settings, store=store)) as client:
        yield client
