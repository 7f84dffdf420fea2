"""Hostile callers of `/v0/pipes`: each reproduction of a probe's finding stays a test.

Failed queries must not poison the next answer on a pooled client; `q=` may name only
`_` and pure functions; oversized or deeply nested input is a 4xx; read limits (memory,
time) hold; caller mistakes are 4xx without SQL text; heavy `q=` calls cannot take the
clients of ordinary calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from redpoll.clickhouse.client import Client, ClientPool, DatabaseError, Target, connect
from redpoll.clickhouse.errors import ERROR_CODES
from redpoll.settings import Settings, load_settings
from redpoll.store import Store
from tests.support.api import api_client, assert_error, copy_endpoints, make_products

BAD_DATE = "SELECT id, toDate({{ String(day, '2020-01-01') }}) AS day FROM products ORDER BY id"


@dataclasses.dataclass
class Served:
    api: TestClient
    store: Store
    settings: Settings


@contextlib.contextmanager
def _serve(settings: Settings, target: Target, admin: Client, readers: int) -> Iterator[Served]:
    make_products(admin)
    copy_endpoints(settings.project_dir)
    (settings.project_dir / "endpoints" / "bad_date.sql").write_text(BAD_DATE)
    store = Store.attach(settings, target, admin, read_clients=readers)
    with api_client(settings, store) as api:
        yield Served(api, store, settings)
    store.close_read_pools()


@pytest.fixture
def served(project_dir: Path, ch_target: Target, admin_client: Client) -> Iterator[Served]:
    settings = load_settings(
        {"project_dir": str(project_dir), "query_max_memory_bytes": 256 * 1024 * 1024},
        environ={},
    )
    with _serve(settings, ch_target, admin_client, readers=1) as served:
        yield served


def assert_clean_json(response) -> dict:  # type: ignore[no-untyped-def, type-arg]
    assert response.status_code == 200, response.text
    body = json.loads(response.content)  # one JSON document, nothing before or after it
    assert set(body) <= {"meta", "data", "rows", "rows_before_limit_at_least", "statistics"}
    return body  # type: ignore[no-any-return]


def test_pool_replaces_a_client_whose_query_failed(ch_target: Target) -> None:
    """chDB keeps a failed query's output and prepends it to the next answer."""
    pool = ClientPool(lambda: connect(ch_target, readonly=True), 1)
    try:
        with pytest.raises(DatabaseError), pool.borrow() as client:
            client.raw_query("SELECT throwIf(number = 5, 'x') FROM numbers(10)", fmt="JSON")
        with pool.borrow() as client:
            body = client.raw_query("SELECT 2 AS b", fmt="JSON")
        assert json.loads(body)["data"] == [{"b": 2}]
        assert pool.replaced == 1
    finally:
        pool.close()


def test_failed_query_does_not_leak_into_the_next_answer(served: Served) -> None:
    api = served.api
    for _ in range(3):  # one read client: every call reuses the slot of the failed one
        assert_error(api.get("/v0/pipes/bad_date.json?day=nope"), 400)
        body = assert_clean_json(api.get("/v0/pipes/product_lookup.json?id=1"))
        assert body["data"][0]["name"] == "alpha"
        assert_error(
            api.get("/v0/pipes/product_lookup.json?id=1&q=SELECT intDiv(1, 0) FROM _"), 400
        )
        csv = api.get("/v0/pipes/product_lookup.csv?id=2")
        assert csv.text.splitlines() == ['"id","name","category","price"', '2,"beta","b",20']


@pytest.mark.parametrize(
    "q",
    [
        "SELECT globalIn((1), event_ids) FROM _",
        "SELECT nullIn(toUInt8(0), system.one) FROM _",
        "SELECT count() FROM _ WHERE id IN (SELECT dummy FROM system.one)",
        "SELECT * FROM _ WHERE id IN products",
        "SELECT * FROM _ UNION ALL SELECT * FROM system.users",
        "SELECT joinGet('items_latest', 'title', name) FROM _",
        "SELECT getSetting('max_memory_usage') FROM _",
        "SELECT currentUser(), version() FROM _",
        "SELECT throwIf(1, 'x') FROM _",
        "SELECT sum(sleepEachRow(1)) FROM _",
        "SELECT system.one.dummy FROM _",
        "SELECT * FROM numbers(10)",
        "SELECT * FROM _ SETTINGS max_memory_usage = 0",
    ],
)
def test_q_names_nothing_but_underscore_and_pure_functions(served: Served, q: str) -> None:
    error = assert_error(
        served.api.get("/v0/pipes/product_lookup.json", params={"id": 1, "q": q}), 400
    )
    assert "system.users" not in error and "columns" not in error.lower()


def test_q_allows_ordinary_analytics(served: Served) -> None:
    q = (
        "SELECT category, count() AS n, sumIf(price, price > 5) AS s, round(avg(price), 1) AS a,"
        " quantile(0.5)(price) AS m FROM _ WHERE name IN ('alpha', 'beta') OR name LIKE 'g%'"
        " GROUP BY category ORDER BY category"
    )
    body = assert_clean_json(
        served.api.get(
            "/v0/pipes/top_products.json", params={"q": q, "cols": "name,price,category"}
        )
    )
    assert [row["category"] for row in body["data"]] == ["a", "b"]


def test_oversized_and_deeply_nested_q_are_4xx_fast(served: Served) -> None:
    api = served.api
    huge = "SELECT * FROM _ WHERE " + " OR ".join(f"id = {i}" for i in range(40_000))
    started = time.perf_counter()
    assert len(huge) > 500_000
    r = api.post("/v0/pipes/product_lookup.json", data={"id": "1", "q": huge})
    assert_error(r, 413)
    assert time.perf_counter() - started < 2
    nested = "SELECT " + "(" * 200 + "1" + ")" * 200 + " FROM _"
    assert_error(api.get("/v0/pipes/product_lookup.json", params={"id": 1, "q": nested}), 400)


def test_memory_limit_stops_a_query_and_says_so(served: Served) -> None:
    q = "SELECT length(groupArray(randomString(1000))) FROM _ ARRAY JOIN range(3000000) AS x"
    started = time.perf_counter()
    error = assert_error(
        served.api.get("/v0/pipes/product_lookup.json", params={"id": 1, "q": q}), 400
    )
    assert "memory" in error
    assert time.perf_counter() - started < 5
    assert_clean_json(served.api.get("/v0/pipes/product_lookup.json?id=1"))


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{bad"),
        ("application/json", b"[" * 100_000 + b"]" * 100_000),
        ("application/json", b'{"id": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ],
)
def test_bad_pipe_bodies_are_400(served: Served, content_type: str, body: bytes) -> None:
    r = served.api.post(
        "/v0/pipes/product_lookup.json", content=body, headers={"content-type": content_type}
    )
    assert_error(r, 400)


def test_caller_errors_are_400_without_sql(served: Served) -> None:
    api = served.api
    for url in (
        "/v0/pipes/bad_date.json?day=nope",
        "/v0/pipes/product_lookup.json?id=1&q=SELECT intDiv(1, 0) FROM _",
        "/v0/pipes/product_lookup.json?id=1&q=SELECT toUInt8('x') FROM _",
        "/v0/pipes/product_lookup.json?id=1&q=SELECT (1, 2) IN (SELECT id FROM _) FROM _",
    ):
        r = api.get(url)
        error = assert_error(r, 400)
        assert "SELECT" not in error and "products" not in error and "FUNCTION" not in error
        assert r.headers.get("x-db-exception-code")


def test_heavy_q_cannot_take_the_ordinary_clients(
    project_dir: Path, ch_target: Target, admin_client: Client
) -> None:
    settings = load_settings({"project_dir": str(project_dir), "query_timeout_s": 3.0}, environ={})
    slow = (
        "SELECT count() FROM _ ARRAY JOIN range(20000) AS a ARRAY JOIN range(20000) AS b"
        " WHERE cityHash64(a, b) % 7 = 1"
    )
    with _serve(settings, ch_target, admin_client, readers=1) as served:
        statuses: list[int] = []

        def heavy(i: int) -> None:
            # four different queries: identical ones would share one run (result cache)
            q = f"{slow} AND a != {20000 + i}"
            r = served.api.get("/v0/pipes/product_lookup.json", params={"id": 1, "q": q})
            statuses.append(r.status_code)

        threads = [threading.Thread(target=heavy, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        latencies = []
        while any(t.is_alive() for t in threads):
            started = time.perf_counter()
            assert_clean_json(served.api.get("/v0/pipes/product_lookup.json?id=1"))
            latencies.append(time.perf_counter() - started)
        for thread in threads:
            thread.join()
        # one heavy client: the others wait HEAVY_QUEUE_S and get 429 (or the first 408)
        assert 429 in statuses and 500 not in statuses, statuses
        assert latencies and max(latencies) < 1.5, latencies


def test_classified_error_names_are_clickhouses_own(admin_client: Client) -> None:
    """`clickhouse/errors.py` matches errors by name: each name must be the engine's."""
    for name, code in ERROR_CODES.items():
        assert admin_client.command(f"SELECT errorCodeToName({code})") == name
