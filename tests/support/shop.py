"""The repository's own project as an API test fixture: its data sources (`events`,
`items`), views and endpoints, migrated into the test's database, a few rows, and a helper
that creates scoped tokens through the Tokens API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from redpoll.store import Store
from redpoll.testing import copy_project
from tests.support.paths import REPO_ROOT

ITEMS = [
    {"item_id": f"i{i}", "title": f"t{i}", "category": "c", "brand": "b", "price": float(i)}
    for i in range(5)
]
EVENTS = [
    {
        "event_id": f"e{n}",
        "ts": "2026-11-01T10:00:00Z",
        "user_id": "u1",
        "item_id": f"i{n % 3}",
        "event_type": "purchase",
        "order_id": f"o{n}",
    }
    for n in range(6)
]


def prepare_shop(project_dir: Path, store: Store) -> Path:
    """Copy the repository's project into `project_dir` and apply its migrations."""
    copy_project(
        REPO_ROOT,
        project_dir,
        ("sql", "materialized_views", "migrations", "endpoints"),
        exist_ok=True,
    )
    store.migrations().up()
    return project_dir


def ndjson(rows: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(row) for row in rows)


def create_token(api: TestClient, name: str, *scopes: str, **params: Any) -> str:  # type: ignore[type-arg]
    """A new static token with `scopes` (POST /v0/tokens with the client's ADMIN token)."""
    response = api.post("/v0/tokens", params={"name": name, "scope": list(scopes), **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == name and body["scope"] == list(scopes)
    value: str = body["token"]
    return value
