"""`/v0/pipes` over `create_app` and real chDB: shapes, errors, auth, q=, reload."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from redpoll.clickhouse.client import Client, Target, connect
from redpoll.endpoints.lanes import DEADLINE_GRACE_S
from redpoll.settings import Settings, load_settings
from redpoll.store import Store
from tests.support.api import ADMIN_TOKEN, api_client, assert_error, copy_endpoints, make_products


@pytest.fixture
def pipes_settings(project_dir: Path, ch_target: Target) -> Settings:
    return load_settings({"project_dir": str(project_dir), "admin_token": ADMIN_TOKEN}, environ={})


@pytest.fixture
def pipes_api(
    pipes_settings: Settings, ch_target: Target, admin_client: Client
) -> Iterator[TestClient]:
    make_products(admin_client)
    copy_endpoints(pipes_settings.project_dir)
    store = Store.attach(pipes_settings, ch_target, admin_client)
    with api_client(pipes_settings, store) as client:
        yield client
    store.close_read_pools()


def test_json_shape_is_clickhouse_format_json(pipes_api: TestClient) -> None:
    r = pipes_api.get("/v0/pipes/product_lookup.json", params={"id": 1, "unknown": "x"})
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] and r.headers["cache-control"] == "max-age=5"
    body = r.json()
    assert set(body) >= {"meta", "data", "rows", "statistics"}
    assert body["meta"][0] == {"name": "id", "type": "UInt64"}
    assert body["data"] == [{"id": "1", "name": "alpha", "category": "a", "price": 10}]
    assert set(body["statistics"]) == {"elapsed", "rows_read", "bytes_read", "cache"}
    unquoted = pipes_api.get(
        "/v0/pipes/product_lookup.json",
        params={"id": 1, "output_format_json_quote_64bit_integers": 0},
    )
    assert unquoted.json()["data"][0]["id"] == 1


def test_other_formats(pipes_api: TestClient) -> None:
    csv = pipes_api.get("/v0/pipes/top_products.csv", params={"limit": 2})
    assert csv.text.splitlines() == ['"id","name","price"', '3,"gamma",30', '2,"beta",20']
    nd = pipes_api.get("/v0/pipes/top_products.ndjson", params={"limit": 1, "cols": "id"})
    assert [json.loads(line) for line in nd.text.splitlines()] == [{"id": 3}]
    pq = pipes_api.get("/v0/pipes/top_products.parquet")
    assert pq.status_code == 200 and pq.content[:4] == b"PAR1"


def test_typed_params_post_and_arrays(pipes_api: TestClient) -> None:
    r = pipes_api.post(
        "/v0/pipes/top_products.json",
        json={"categories": ["a"], "asc": True, "cols": "id,category"},
    )
    assert [row["id"] for row in r.json()["data"]] == ["1", "3"]
    form = pipes_api.post(
        "/v0/pipes/top_products.json", data={"categories": "b", "since": "2020-06-01"}
    )
    assert [row["id"] for row in form.json()["data"]] == ["2"]
    repeated = pipes_api.get("/v0/pipes/top_products.json?categories=a&categories=b&limit=5")
    assert repeated.json()["rows"] == 3


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({}, "'id'"),
        ({"id": "abc"}, "'id'"),
        ({"id": "-1"}, "'id'"),
        ({"id": str(2**64)}, "'id'"),
    ],
)
def test_parameter_errors_name_the_parameter(
    pipes_api: TestClient, params: dict[str, str], needle: str
) -> None:
    assert_error(pipes_api.get("/v0/pipes/product_lookup.json", params=params), 400, needle)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"limit": 0}, "'limit'"),
        ({"limit": 101}, "'limit'"),
        ({"min_price": -1}, "'min_price'"),
        ({"sort": "price; DROP TABLE products"}, "'sort'"),
        ({"cols": "id,secret"}, "'cols'"),
        ({"since": "yesterday"}, "'since'"),
        ({"asc": "maybe"}, "'asc'"),
    ],
)
def test_range_and_identifier_errors(
    pipes_api: TestClient, params: dict[str, object], needle: str
) -> None:
    assert_error(pipes_api.get("/v0/pipes/top_products.json", params=params), 400, needle)


def test_not_found_and_bad_format(pipes_api: TestClient) -> None:
    assert_error(pipes_api.get("/v0/pipes/nope.json"), 404, "nope")
    assert_error(pipes_api.get("/v0/pipes/top_products.xml"), 404)


def test_q_runs_over_the_result(pipes_api: TestClient) -> None:
    r = pipes_api.get(
        "/v0/pipes/top_products.json", params={"q": "SELECT count() AS c FROM _", "limit": 2}
    )
    assert r.json()["data"] == [{"c": "2"}]
    for bad in [
        "SELECT * FROM products",
        "SELECT * FROM _; DROP TABLE products",
        "INSERT INTO products SELECT * FROM _",
        "SELECT * FROM _ WHERE id IN products",
        "SELECT * FROM _ SETTINGS max_execution_time=1000",
        "SELECT * FROM file('/etc/passwd')",
    ]:
        assert_error(pipes_api.get("/v0/pipes/top_products.json", params={"q": bad}), 400)


def test_timeout_is_408(pipes_api: TestClient, pipes_settings: Settings) -> None:
    (pipes_settings.project_dir / "endpoints" / "slow.sql").write_text(
        "-- max_execution_time: 0.5\nSELECT sleepEachRow(0.3) FROM numbers(10)\n"
    )
    pipes_api.post("/redpoll/v1/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    started = time.perf_counter()
    r = pipes_api.get("/v0/pipes/slow.json")
    assert_error(r, 408, "time limit")
    # ClickHouse checks its limit between blocks (this one block sleeps 3 s): the
    # server's own deadline answers at max_execution_time + DEADLINE_GRACE_S
    assert time.perf_counter() - started < 0.5 + DEADLINE_GRACE_S + 1.0


def test_readonly_write_through_pipe_fails(admin_client: Client, ch_target: Target) -> None:
    make_products(admin_client)
    reader = connect(ch_target, readonly=True)
    try:
        with pytest.raises(Exception, match="readonly"):
            reader.raw_query("INSERT INTO products SELECT 9,'x','x',1,now()", fmt="JSON")
    finally:
        reader.close()


def test_list_and_openapi(pipes_api: TestClient) -> None:
    pipes = {p["name"]: p for p in pipes_api.get("/v0/pipes").json()["pipes"]}
    assert set(pipes) == {"product_lookup", "top_products"}
    limit = next(p for p in pipes["top_products"]["params"] if p["name"] == "limit")
    assert limit == {
        "name": "limit",
        "type": "Int32",
        "default": 10,
        "required": False,
        "description": "Rows to return",
        "min": 1,
        "max": 100,
    }
    doc = pipes_api.get("/v0/pipes/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    params = doc["paths"]["/v0/pipes/product_lookup.json"]["get"]["parameters"]
    assert params[0]["name"] == "id" and params[0]["required"] is True
    assert params[0]["schema"]["type"] == "integer"


def test_broken_file_keeps_last_good_version(
    pipes_api: TestClient, pipes_settings: Settings
) -> None:
    path = pipes_settings.project_dir / "endpoints" / "product_lookup.sql"
    good = path.read_text()
    path.write_text(good.replace("FROM products", "FROM no_such_table"))
    (pipes_settings.project_dir / "endpoints" / "fresh.sql").write_text(
        "SELECT {{ Int32(x, 1) }} + 1 AS y\n"
    )
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert (
        pipes_api.post("/redpoll/v1/admin/reload", headers={"Authorization": ""}).status_code == 403
    )
    report = pipes_api.post("/redpoll/v1/admin/reload", headers=auth).json()
    assert "fresh" in report["endpoints"] and "product_lookup" in report["endpoints"]
    assert any("product_lookup.sql:6" in e and "no_such_table" in e for e in report["errors"])
    ok = pipes_api.get("/v0/pipes/product_lookup.json", params={"id": 2})
    assert ok.json()["data"][0]["name"] == "beta"
    assert pipes_api.get("/v0/pipes/fresh.json", params={"x": 41}).json()["data"] == [{"y": "42"}]


def test_read_token(
    pipes_settings: Settings, ch_target: Target, admin_client: Client, project_dir: Path
) -> None:
    make_products(admin_client)
    copy_endpoints(project_dir)
    settings = load_settings(
        {"project_dir": str(project_dir), "admin_token": ADMIN_TOKEN, "read_token": "rt"},
        environ={},
    )
    store = Store.attach(settings, ch_target, admin_client)
    with api_client(settings, store, authenticated=False) as api:
        url = "/v0/pipes/product_lookup.json?id=1"
        assert_error(api.get(url), 403)
        assert api.get(url + "&token=rt").status_code == 200
        assert api.get(url, headers={"Authorization": "Bearer rt"}).status_code == 200
        assert_error(api.get(url, headers={"Authorization": "Bearer wrong"}), 403)
    store.close_read_pools()
