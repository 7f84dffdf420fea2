"""`pipe_stats` and `datasources_ops_log` (api/request_log.py), and the endpoints reading
them (endpoints/slowest_calls.sql, endpoints/ingest_per_minute.sql): rows appear within
2 s of a call, without the token, with the answer's request id."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from redpoll.clickhouse.client import Client
from redpoll.settings import Settings
from redpoll.store import Store
from tests.support.api import ADMIN_TOKEN, api_client, copy_endpoints, make_products

REPO = Path(__file__).resolve().parents[2]
MIGRATION = next((REPO / "migrations").glob("*_pipe_stats.sql"))


@pytest.fixture
def stats_api(settings: Settings, store: Store, admin_client: Client) -> Iterator[TestClient]:
    make_products(admin_client)
    copy_endpoints(settings.project_dir)
    for name in ("slowest_calls.sql", "ingest_per_minute.sql"):
        shutil.copy(REPO / "endpoints" / name, settings.project_dir / "endpoints" / name)
    shutil.copy(MIGRATION, settings.project_dir / "migrations" / MIGRATION.name)
    items = "CREATE TABLE items (item_id String, title String) ENGINE = MergeTree ORDER BY item_id"
    (settings.project_dir / "sql" / "items.sql").write_text(items)
    admin_client.command(items)
    with store.admin_lock:
        store.migrations().up()
    with api_client(settings, store) as client:
        yield client


def _rows(client: Client, sql: str, wait_for: int, timeout: float = 2.0) -> list[dict[str, Any]]:
    """Rows of `sql` once there are `wait_for` of them (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        result = client.query(sql)
        rows = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
        if len(rows) >= wait_for or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_the_service_tables_are_not_data_sources(stats_api: TestClient) -> None:
    for name in ("pipe_stats", "datasources_ops_log"):
        answer = stats_api.post(f"/v0/events?name={name}", content=b"{}")
        assert answer.status_code == 404, answer.text


def test_calls_are_recorded_within_two_seconds(stats_api: TestClient, admin_client: Client) -> None:
    ok = stats_api.get(f"/v0/pipes/top_products.json?limit=2&token={ADMIN_TOKEN}")
    assert ok.status_code == 200, ok.text
    posted = stats_api.post(
        "/v0/pipes/top_products.ndjson", json={"categories": ["a"], "token": ADMIN_TOKEN}
    )
    assert posted.status_code == 200, posted.text
    bad = stats_api.get("/v0/pipes/top_products.json?limit=0")
    assert bad.status_code == 400
    started = time.monotonic()
    rows = _rows(admin_client, "SELECT * FROM pipe_stats ORDER BY start_datetime", 3)
    assert time.monotonic() - started < 2.0 and len(rows) == 3, rows
    by_id = {row["request_id"]: row for row in rows}
    first = by_id[ok.headers["x-request-id"]]
    assert first["pipe_name"] == "top_products" and first["status_code"] == 200
    assert json.loads(first["parameters"]) == {"limit": "2"}  # no token
    assert first["result_rows"] == 2 and first["read_rows"] > 0 and first["read_bytes"] > 0
    assert first["duration"] > 0 and first["token_name"]
    second = by_id[posted.headers["x-request-id"]]
    assert json.loads(second["parameters"]) == {"categories": ["a"]}
    assert second["result_rows"] == 2  # ndjson: alpha, gamma
    third = by_id[bad.headers["x-request-id"]]
    assert third["status_code"] == 400 and "limit" in third["error"]
    assert all(ADMIN_TOKEN not in json.dumps(row, default=str) for row in rows)


def test_ingest_and_the_operations_endpoints(stats_api: TestClient, admin_client: Client) -> None:
    body = b'{"item_id": "i1", "title": "one"}\n{"item_id": "i2", "title": "two"}\n'
    answer = stats_api.post("/v0/events?name=items&wait=true", content=body)
    assert answer.status_code == 200, answer.text
    failed = stats_api.post("/v0/events?name=nope", content=body)
    assert failed.status_code >= 400
    rows = _rows(admin_client, "SELECT * FROM datasources_ops_log ORDER BY timestamp", 2)
    assert [(r["datasource"], r["operation"], r["rows"], r["result"]) for r in rows] == [
        ("items", "append", 2, "ok"),
        ("nope", "append", 0, "error"),
    ]
    assert rows[0]["request_id"] == answer.headers["x-request-id"] and rows[1]["error"]

    per_minute = stats_api.get("/v0/pipes/ingest_per_minute.json?datasource=items")
    assert per_minute.status_code == 200, per_minute.text
    assert [(r["datasource"], r["rows"]) for r in per_minute.json()["data"]] == [("items", "2")]
    _rows(admin_client, "SELECT * FROM pipe_stats", 1)
    slowest = stats_api.get("/v0/pipes/slowest_calls.json?limit=5")
    assert slowest.status_code == 200, slowest.text
    assert slowest.json()["data"][0]["pipe_name"] == "ingest_per_minute"


def test_a_full_queue_drops_and_counts(settings: Settings, store: Store) -> None:
    from redpoll.api.request_log import Call, CallLog

    call_log = CallLog(store, retention_days=30, capacity=2)  # not started: nothing drains
    call = Call("pipe", time.time(), 0.001, "x.json", 200, b"", b"", "", b"", 0, "r", "t")
    for _ in range(5):
        call_log.submit(call)
    assert (call_log.stats.submitted, call_log.stats.dropped, call_log.depth) == (2, 3, 2)


def test_retention_follows_the_setting(
    settings: Settings, store: Store, admin_client: Client
) -> None:
    import dataclasses

    shutil.copy(MIGRATION, settings.project_dir / "migrations" / MIGRATION.name)
    with store.admin_lock:
        store.migrations().up()
    with api_client(dataclasses.replace(settings, stats_retention_days=7), store) as client:
        assert client.get("/v0/health").status_code == 200
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            engine = admin_client.query(
                "SELECT engine_full FROM system.tables "
                "WHERE database = currentDatabase() AND name = 'pipe_stats'"
            ).result_rows[0][0]
            if "toIntervalDay(7)" in engine:
                break
            time.sleep(0.1)
    assert "toIntervalDay(7)" in engine, engine
