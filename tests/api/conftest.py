"""API fixtures: `create_app` over a real chDB store in a fresh database (no subprocess);
the store and its project come from tests/conftest.py. `api` sends the ADMIN token of
the settings (tests/conftest.py ADMIN_TOKEN); a test of access control sends its own
`Authorization` header (an empty one: no token)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from redpoll.settings import Settings
from redpoll.store import Store
from tests.support.api import api_client


@pytest.fixture
def api(settings: Settings, store: Store) -> Iterator[TestClient]:
    with api_client(settings, store) as client:
        yield client
