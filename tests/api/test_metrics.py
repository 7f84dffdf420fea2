"""`GET /v0/metrics` (api/metrics.py): Prometheus exposition, ADMIN only, labelled by route
template (never the raw path), one registry per app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from redpoll.clickhouse.client import Client
from redpoll.settings import Settings
from redpoll.store import Store
from tests.support.api import api_client, assert_error_envelope, copy_endpoints, make_products

PIPE_ROUTE = "/v0/pipes/{pipe}"


@pytest.fixture
def metrics_api(settings: Settings, store: Store, admin_client: Client) -> Iterator[TestClient]:
    make_products(admin_client)
    copy_endpoints(settings.project_dir)
    items = "CREATE TABLE items (item_id String, title String) ENGINE = MergeTree ORDER BY item_id"
    (settings.project_dir / "sql" / "items.sql").write_text(items)
    admin_client.command(items)
    with api_client(settings, store) as client:
        yield client


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(client: TestClient) -> Samples:
    answer = client.get("/v0/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_requests_by_route_template_and_status(metrics_api: TestClient) -> None:
    for _ in range(3):
        assert metrics_api.get("/v0/pipes/top_products.json").status_code == 200
    assert metrics_api.get("/v0/pipes/top_products.json?limit=0").status_code == 400
    for n in range(5):  # unknown paths: one label value, not five
        assert metrics_api.get(f"/no/such/path/{n}").status_code == 404
    found = samples(metrics_api)
    ok = {"method": "GET", "route": PIPE_ROUTE, "status": "200"}
    assert value(found, "redpoll_http_requests_total", **ok) == 3
    assert value(found, "redpoll_http_request_duration_seconds_count", **ok) == 3
    assert value(found, "redpoll_http_request_duration_seconds_sum", **ok) > 0
    unmatched = {"method": "GET", "route": "<unmatched>", "status": "404"}
    assert value(found, "redpoll_http_requests_total", **unmatched) == 5
    assert value(found, "redpoll_http_errors_total", route=PIPE_ROUTE, status="400", code="") == 1
    text = metrics_api.get("/v0/metrics").text
    assert "/no/such/path" not in text and "top_products.json" not in text


def test_ingest_counters_read_at_scrape_time(metrics_api: TestClient) -> None:
    body = b'{"item_id": "i1", "title": "one"}\n{"item_id": "i2", "title": "two"}\n'
    assert metrics_api.post("/v0/events?name=items&wait=true", content=body).status_code == 200
    bad = b'{"item_id": "i3", "title": "three"}\n{"item_id": 1, "title": ["x"]}\n'
    assert metrics_api.post("/v0/events?name=items&wait=true", content=bad).status_code == 200
    found = samples(metrics_api)
    assert value(found, "redpoll_ingest_rows_total", datasource="items") == 3
    assert value(found, "redpoll_ingest_requests_total", datasource="items") == 2
    assert value(found, "redpoll_ingest_quarantined_rows_total", datasource="items") == 1
    assert value(found, "redpoll_ingest_insert_batch_rows_count", datasource="items") >= 1
    assert value(found, "redpoll_ingest_insert_batch_rows_sum", datasource="items") == 3
    assert value(found, "redpoll_ingest_insert_duration_seconds_sum", datasource="items") > 0


def test_pipe_read_statistics(metrics_api: TestClient) -> None:
    import time

    assert metrics_api.get("/v0/pipes/top_products.json").status_code == 200
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # counted by the call log's thread
        found = samples(metrics_api)
        if value(found, "redpoll_pipe_read_rows_total", pipe="top_products") > 0:
            break
        time.sleep(0.1)
    assert value(found, "redpoll_pipe_read_rows_total", pipe="top_products") > 0
    assert value(found, "redpoll_pipe_read_bytes_total", pipe="top_products") > 0


def test_metrics_need_admin(metrics_api: TestClient) -> None:
    created = metrics_api.post("/v0/tokens?name=reader&scope=PIPES:READ")
    assert created.status_code < 300, created.text
    reader = created.json()["token"]
    assert_error_envelope(metrics_api.get("/v0/metrics", headers={"Authorization": ""}), 403)
    answer = metrics_api.get("/v0/metrics", headers={"Authorization": f"Bearer {reader}"})
    assert_error_envelope(answer, 403)


def test_each_app_has_its_own_registry(settings: Settings, store: Store) -> None:
    with api_client(settings, store) as first, api_client(settings, store) as second:
        for _ in range(2):
            first.get("/v0/health")
        health = {"method": "GET", "route": "/v0/health", "status": "200"}
        assert value(samples(first), "redpoll_http_requests_total", **health) == 2
        assert value(samples(second), "redpoll_http_requests_total", **health) == 0
