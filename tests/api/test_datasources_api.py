"""`GET /v0/datasources[/<name>]` (api/datasources.py, endpoints/datasource_catalog.py):
the data sources a token may see, with columns, engine, statistics and the views they
feed. `DATASOURCES:READ` or `DATASOURCES:APPEND` on a data source shows it; a scoped
token asking for another one gets 403 whether it exists or not; ADMIN sees all, and 404
for an unknown name."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from redpoll.settings import Settings
from redpoll.store import Store
from tests.support.api import ADMIN_TOKEN, api_client, assert_error
from tests.support.shop import ITEMS, create_token, ndjson, prepare_shop


@pytest.fixture
def shop(project_dir: Path, store: Store) -> Path:
    return prepare_shop(project_dir, store)


def token(api: TestClient, name: str, *scopes: str) -> str:
    return create_token(api, name, *scopes)


@pytest.fixture
def api(shop: Path, settings: Settings, store: Store) -> Iterator[TestClient]:
    with api_client(dataclasses.replace(settings, rate_limit_ip_rps=0), store) as client:
        response = client.post("/v0/events?name=items&wait=true", content=ndjson(ITEMS))
        assert response.status_code == 200, response.text
        yield client


def get(api: TestClient, url: str, bearer: str | None = ADMIN_TOKEN) -> Any:
    return api.get(url, headers={"Authorization": f"Bearer {bearer}" if bearer else ""})


def test_admin_lists_every_data_source_and_view_target(api: TestClient) -> None:
    listed = get(api, "/v0/datasources")
    assert listed.status_code == 200, listed.text
    by_name = {ds["name"]: ds for ds in listed.json()["datasources"]}
    assert {"events", "items", "trending", "basket_pairs", "user_history"} <= set(by_name)
    assert not {n for n in by_name if n.startswith("_redpoll") or n.endswith("_mv")}
    assert "events_landing" not in by_name
    items = by_name["items"]
    assert items["type"] == "datasource" and items["materialized_by"] is None
    assert items["columns"][0] == {
        "name": "item_id",
        "type": "String",
        "default_value": None,
        "nullable": False,
    }
    available = next(c for c in items["columns"] if c["name"] == "available")
    assert available["default_value"] == "DEFAULT true"
    assert items["engine"]["engine"] == "ReplacingMergeTree"
    assert items["engine"]["sorting_key"] == "item_id"
    assert items["statistics"]["row_count"] == len(ITEMS)
    assert items["statistics"]["bytes"] > 0
    assert {"name": "items_latest", "type": "materialized_view"} in items["used_by"]
    trending = by_name["trending"]
    assert trending["type"] == "materialized" and trending["materialized_by"] == "trending"
    assert trending["engine"]["engine"] == "SummingMergeTree"
    assert {v["name"] for v in by_name["events"]["used_by"]} >= {"trending", "user_history"}


def test_listing_shows_only_granted_data_sources(api: TestClient) -> None:
    cases = {
        "DATASOURCES:READ:items": ["items"],
        "DATASOURCES:APPEND:events": ["events"],
        "DATASOURCES:READ:trending": ["trending"],
    }
    for scope, expected in cases.items():
        bearer = token(api, scope.replace(":", "_").lower(), scope)
        listed = get(api, "/v0/datasources", bearer)
        assert listed.status_code == 200, listed.text
        assert [ds["name"] for ds in listed.json()["datasources"]] == expected
    everything = token(api, "reader", "DATASOURCES:READ")
    assert len(get(api, "/v0/datasources", everything).json()["datasources"]) > 3


def test_access_to_the_list(api: TestClient) -> None:
    assert_error(get(api, "/v0/datasources", None), 403)
    assert_error(get(api, "/v0/datasources", "rp_not-a-token"), 403)
    pipes = token(api, "pipes", "PIPES:READ")
    assert_error(get(api, "/v0/datasources", pipes), 403, "DATASOURCES:READ")


def test_describe_one(api: TestClient) -> None:
    items = token(api, "items_reader", "DATASOURCES:READ:items")
    described = get(api, "/v0/datasources/items", items)
    assert described.status_code == 200, described.text
    assert described.json()["name"] == "items"
    appender = token(api, "items_appender", "DATASOURCES:APPEND:items")
    assert get(api, "/v0/datasources/items", appender).status_code == 200
    # another data source, or one that does not exist: 403 (existence is not revealed)
    assert_error(get(api, "/v0/datasources/events", items), 403, "events")
    assert_error(get(api, "/v0/datasources/nope", items), 403)
    assert_error(get(api, "/v0/datasources/items", None), 403)
    assert_error(get(api, "/v0/datasources/nope"), 404, "nope")
    assert_error(get(api, "/v0/datasources/_redpoll_tokens"), 404)
    assert_error(get(api, "/v0/datasources/trending_mv"), 404)
    reader = token(api, "reader", "DATASOURCES:READ")
    assert_error(get(api, "/v0/datasources/nope", reader), 404)
    assert get(api, "/v0/datasources/trending", reader).json()["materialized_by"] == "trending"
