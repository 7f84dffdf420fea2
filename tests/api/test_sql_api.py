"""`/v0/sql` (api/sql.py, endpoints/sql_access.py): Tinybird's Query API over the data
sources a token may read.

Access: some `DATASOURCES:READ` scope to call it, then every table the query reads must
be granted (data sources of `sql/` and materialized view targets by name; internal tables
only by a grant naming them; system tables never). Checks: one SELECT, no SETTINGS, no
table functions, functions from the `q=` allow-list. Limits and errors as pipes answer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from redpoll.settings import Settings
from redpoll.store import Store
from tests.support.api import ADMIN_TOKEN, api_client, assert_error
from tests.support.module_store import module_store
from tests.support.shop import EVENTS, ITEMS, create_token, ndjson, prepare_shop


@pytest.fixture
def shop(project_dir: Path, store: Store) -> Path:
    return prepare_shop(project_dir, store)


def load(api: TestClient) -> None:
    for name, rows in (("items", ITEMS), ("events", EVENTS)):
        response = api.post(f"/v0/events?name={name}&wait=true", content=ndjson(rows))
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def api(
    redpoll_clickhouse_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """One loaded shop for the module's read-only cases (a migration per case cost most of
    the module's time); the cases that change limits or data attach their own store."""
    project = tmp_path_factory.mktemp("sql_api")
    with module_store(redpoll_clickhouse_url, project) as (settings, store):
        prepare_shop(project, store)
        with api_client(settings, store) as client:
            load(client)
            yield client


def token(api: TestClient, name: str, *scopes: str) -> str:
    """A token named `name` plus a suffix: cases share one app, names must not clash."""
    return create_token(api, f"{name}_{uuid.uuid4().hex[:8]}", *scopes)


def sql(api: TestClient, q: str, bearer: str | None = ADMIN_TOKEN, **params: Any) -> Any:
    headers = {"Authorization": f"Bearer {bearer}" if bearer else ""}
    return api.get("/v0/sql", params={"q": q, **params}, headers=headers)


# ---------------------------------------------------------------------- access


def test_access_by_scope(api: TestClient) -> None:
    q = "SELECT count() AS n FROM events"
    assert_error(sql(api, q, None), 403)
    assert_error(sql(api, q, "rp_not-a-token"), 403)
    for scope in ("PIPES:READ", "DATASOURCES:APPEND", "DATASOURCES:APPEND:events"):
        assert_error(sql(api, q, token(api, scope.replace(":", "_").lower(), scope)), 403)
    items_only = token(api, "items_reader", "DATASOURCES:READ:items")
    assert_error(sql(api, q, items_only), 403, "DATASOURCES:READ:events")
    join = "SELECT count() FROM events AS e JOIN items AS i ON e.item_id = i.item_id"
    events_only = token(api, "events_reader", "DATASOURCES:READ:events")
    assert_error(sql(api, join, events_only), 403, "DATASOURCES:READ:items")
    for bearer in (events_only, token(api, "all_reader", "DATASOURCES:READ"), ADMIN_TOKEN):
        response = sql(api, q, bearer)
        assert response.status_code == 200, response.text
        assert response.json()["data"] == [{"n": "6"}]
    both = token(api, "both", "DATASOURCES:READ:events", "DATASOURCES:READ:items")
    assert sql(api, join, both).json()["data"] == [{"count()": "6"}]


def test_post_form_json_and_plain_text(api: TestClient) -> None:
    q = "SELECT item_id FROM items ORDER BY item_id LIMIT 2"
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for kwargs in ({"data": {"q": q}}, {"json": {"q": q}}, {"content": q}):
        response = api.post("/v0/sql", headers=auth, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 200, (kwargs, response.text)
        assert response.json()["data"] == [{"item_id": "i0"}, {"item_id": "i1"}]
    assert_error(api.post("/v0/sql", headers=auth, json={"sql": q}), 400, "'q'")
    assert_error(api.get("/v0/sql", headers=auth), 400, "'q'")


def test_materialized_view_target_is_a_data_source(api: TestClient) -> None:
    trending = token(api, "trending_reader", "DATASOURCES:READ:trending")
    response = sql(api, "SELECT sum(events) AS n FROM trending", trending)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == [{"n": "6"}]
    assert_error(sql(api, "SELECT count() FROM trending_mv", trending), 403, "trending_mv")
    assert_error(sql(api, "SELECT count() FROM events", trending), 403)
    everything = token(api, "reader", "DATASOURCES:READ")
    assert sql(api, "SELECT count() FROM trending", everything).status_code == 200


# ---------------------------------------------------------------------- formats


def test_formats(api: TestClient) -> None:
    q = "SELECT item_id, price FROM items ORDER BY item_id LIMIT 2"
    body = sql(api, q).json()
    assert body["data"] == [{"item_id": "i0", "price": 0}, {"item_id": "i1", "price": 1}]
    assert body["meta"] == [
        {"name": "item_id", "type": "String"},
        {"name": "price", "type": "Float64"},
    ]
    assert sql(api, q + " FORMAT JSON;").json()["rows"] == 2
    named = sql(api, q + " FORMAT CSVWithNames")
    assert named.headers["content-type"].startswith("text/csv")
    assert named.text.splitlines() == ['"item_id","price"', '"i0",0', '"i1",1']
    assert sql(api, q + " FORMAT CSV").text.splitlines() == ['"i0",0', '"i1",1']
    assert sql(api, q, format="csv").text.splitlines()[0] == '"item_id","price"'
    lines = sql(api, q + " FORMAT JSONEachRow")
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line) for line in lines.text.splitlines()] == body["data"]
    assert sql(api, q, format="ndjson").text == lines.text
    parquet = sql(api, q + " FORMAT Parquet")
    assert parquet.content[:4] == b"PAR1"
    pyarrow = pytest.importorskip("pyarrow.parquet")
    assert pyarrow.read_table(io.BytesIO(parquet.content)).num_rows == 2
    assert_error(sql(api, q + " FORMAT TabSeparated"), 400, "FORMAT")
    assert_error(sql(api, q, format="xml"), 400, "'format'")
    assert_error(sql(api, "SELECT * FROM (SELECT 1 FORMAT JSON)"), 400)


# ------------------------------------------------------------ tables refused


@pytest.mark.parametrize(
    "q",
    [
        "SELECT * FROM _redpoll_tokens",
        "SELECT * FROM _redpoll_migrations",
        "SELECT count() FROM events_landing",
        "SELECT count() FROM events_quarantine",
        "SELECT count() FROM items WHERE item_id IN (SELECT name FROM _redpoll_tokens)",
        # a CTE hides a table only inside the query that declares it
        "SELECT * FROM _redpoll_tokens UNION ALL "
        "(WITH _redpoll_tokens AS (SELECT 1) SELECT * FROM _redpoll_tokens)",
        "WITH _redpoll_tokens AS (SELECT * FROM _redpoll_tokens) SELECT * FROM _redpoll_tokens",
        "WITH t AS (SELECT 1) SELECT * FROM t UNION ALL SELECT * FROM _redpoll_tokens",
        "SELECT count() FROM popular",  # endpoints are not tables here
    ],
)
def test_internal_tables_are_refused(api: TestClient, q: str) -> None:
    reader = token(api, "reader", "DATASOURCES:READ")
    error = assert_error(sql(api, q, reader), 403)
    assert "_redpoll_" in error or "events_" in error or "popular" in error


def test_internal_tables_by_name_and_quarantine_with_its_data_source(api: TestClient) -> None:
    bad = '{"event_id": "bad", "ts": "not a time", "item_id": "i1", "event_type": "view"}'
    api.post("/v0/events?name=events&wait=true", content=bad)
    q = "SELECT count() AS n FROM events_quarantine"
    assert sql(api, q).status_code == 200  # ADMIN reads every table
    events = token(api, "events_reader", "DATASOURCES:READ:events")
    assert sql(api, q, events).status_code == 200, "READ:<ds> covers <ds>_quarantine"
    named = token(api, "landing_reader", "DATASOURCES:READ:events_landing")
    assert sql(api, "SELECT count() FROM events_landing", named).status_code == 200


@pytest.mark.parametrize(
    ("q", "status"),
    [
        ("SELECT * FROM system.tables", 403),
        ("SELECT * FROM information_schema.tables", 403),
        ("SELECT * FROM INFORMATION_SCHEMA.TABLES", 403),
        ("SELECT * FROM other_db.events", 403),
        ("SELECT * FROM numbers(10)", 400),
        ("SELECT * FROM file('/etc/passwd')", 400),
        ("SELECT * FROM url('http://127.0.0.1:1/x', CSV)", 400),
        ("SELECT * FROM remote('127.0.0.1', system.one)", 400),
        ("SELECT count() FROM events SETTINGS max_execution_time = 1000", 400),
        ("SELECT count() FROM events WHERE item_id IN items", 400),
        ("SELECT system.one.dummy FROM events", 400),
        ("SELECT getSetting('max_memory_usage')", 400),
        ("SELECT joinGet('items_latest', 'title', 'i1')", 400),
        ("SELECT dictGet('d', 'x', 1)", 400),
        ("INSERT INTO items (item_id) VALUES ('x')", 400),
        ("SELECT 1; DROP TABLE items", 400),
        ("SELECT count() FROM events INTO OUTFILE '/tmp/x'", 400),
        ("SELEC 1", 400),
        ("SELECT 'unclosed", 400),
        ("SELECT {x:String}", 400),
    ],
)
def test_queries_refused_for_everyone(api: TestClient, q: str, status: int) -> None:
    for bearer in (ADMIN_TOKEN, token(api, "reader", "DATASOURCES:READ")):
        error = assert_error(sql(api, q, bearer), status)
        assert "Traceback" not in error and "/etc/passwd" not in error


def test_ctes_and_subqueries_over_granted_data_sources(api: TestClient) -> None:
    events = token(api, "events_reader", "DATASOURCES:READ:events")
    q = (
        "WITH bought AS (SELECT item_id, count() AS n FROM events GROUP BY item_id), "
        "top AS (SELECT * FROM bought ORDER BY n DESC, item_id LIMIT 1) "
        "SELECT t.item_id, t.n FROM top AS t"
    )
    response = sql(api, q, events)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == [{"item_id": "i0", "n": "2"}]
    unknown = assert_error(sql(api, "SELECT count() FROM no_such_table"), 400)
    assert "no_such_table" in unknown or "table" in unknown.lower()


# ---------------------------------------------------------------------- limits


@contextlib.contextmanager
def limited_api(settings: Settings, store: Store, **changes: Any) -> Iterator[TestClient]:
    """An app whose read clients carry `changes` (read limits are the store's settings)."""
    limited = dataclasses.replace(settings, **changes)
    own = Store.attach(limited, store.target, store.admin)
    try:
        with api_client(limited, own) as api:
            yield api
    finally:
        own.close_read_pools()


def test_result_rows_limit_is_400_as_for_pipes(
    shop: Path, settings: Settings, store: Store
) -> None:
    with limited_api(settings, store, max_result_rows=2) as api:
        load(api)
        response = sql(api, "SELECT * FROM items")
        error = assert_error(response, 400)
        pipe = api.get("/v0/pipes/popular.json", params={"q": "SELECT * FROM _", "limit": 5})
        if pipe.status_code == 400:  # the same refusal, the same ClickHouse code
            assert response.headers["X-DB-Exception-Code"] == pipe.headers["X-DB-Exception-Code"]
        assert "result" in error.lower() or "rows" in error.lower()


def test_time_limit_is_408(shop: Path, settings: Settings, store: Store) -> None:
    with limited_api(settings, store, query_timeout_s=0.5) as api:
        many = [{**ITEMS[0], "item_id": f"x{i}"} for i in range(1000)]
        assert api.post("/v0/events?name=items&wait=true", content=ndjson(many)).status_code == 200
        q = (
            "SELECT count() FROM items AS a CROSS JOIN items AS b CROSS JOIN items AS c "
            "WHERE cityHash64(a.item_id, b.item_id, c.item_id) % 7 = 3"
        )
        assert_error(sql(api, q), 408, "time limit")


def test_q_size_and_budget(shop: Path, settings: Settings, store: Store) -> None:
    with limited_api(settings, store, q_seconds_per_minute=0.001, max_q_bytes=200) as api:
        reader = token(api, "analyst", "DATASOURCES:READ")
        long = "SELECT count() FROM items WHERE item_id != '" + "x" * 300 + "'"
        assert_error(sql(api, long, reader), 413)
        assert sql(api, "SELECT count() FROM items", reader).status_code == 200
        spent = sql(api, "SELECT count() FROM items", reader)
        assert_error(spent, 429, "query budget")
        assert spent.headers["Retry-After"].isdigit()
