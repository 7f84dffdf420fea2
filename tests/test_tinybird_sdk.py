"""A reference client works unchanged: the Tinybird Python SDK against a real Redpoll
HTTP server (uvicorn in a thread on a free port, over the session chDB store)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from redpoll.app import create_app
from redpoll.clickhouse.client import Client, Target
from redpoll.settings import load_settings
from redpoll.store import Store
from redpoll.testing import free_port
from tests.support.api import copy_endpoints, make_products

tinybird_sdk = pytest.importorskip("tinybird_sdk")


@pytest.fixture
def server_url(tmp_path, ch_target: Target, admin_client: Client) -> Iterator[str]:  # type: ignore[no-untyped-def]
    (tmp_path / "endpoints").mkdir()
    make_products(admin_client)
    copy_endpoints(tmp_path)
    settings = load_settings(
        {"project_dir": str(tmp_path), "admin_token": "adm", "read_token": "tb-token"}, environ={}
    )
    store = Store.attach(settings, ch_target, admin_client)
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, store=store), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/v0/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
        store.close_read_pools()


def test_sdk_query_returns_data(server_url: str) -> None:
    from tinybird_sdk.api.api import TinybirdApi, TinybirdApiError

    api = TinybirdApi({"base_url": server_url, "token": "tb-token"})
    result = api.query("product_lookup", {"id": 2})
    assert result["data"] == [{"id": "2", "name": "beta", "category": "b", "price": 20}]
    assert result["rows"] == 1 and result["meta"][0] == {"name": "id", "type": "UInt64"}

    top = api.query("top_products", {"categories": ["a", "b"], "limit": 2, "asc": True})
    assert [row["id"] for row in top["data"]] == ["1", "2"]

    with pytest.raises(TinybirdApiError) as info:
        api.query("product_lookup", {"id": "nope"})
    assert info.value.status_code == 400

    bad = TinybirdApi({"base_url": server_url, "token": "wrong"})
    with pytest.raises(TinybirdApiError) as info:
        bad.query("product_lookup", {"id": 1})
    assert info.value.status_code == 403


def test_sdk_sql_runs_on_the_query_api(server_url: str) -> None:
    """`TinybirdApi.sql` POSTs the SQL as a plain-text body to `/v0/sql` (api/sql.py)."""
    from tinybird_sdk.api.api import TinybirdApi, TinybirdApiError

    admin = TinybirdApi({"base_url": server_url, "token": "adm"})
    result = admin.sql("SELECT id, name FROM products WHERE id <= 2 ORDER BY id")
    assert result["data"] == [{"id": "1", "name": "alpha"}, {"id": "2", "name": "beta"}]
    assert result["meta"] == [{"name": "id", "type": "UInt64"}, {"name": "name", "type": "String"}]
    assert admin.sql("SELECT count() AS n FROM products FORMAT JSON")["data"] == [{"n": "3"}]

    with pytest.raises(TinybirdApiError) as info:
        admin.sql("SELECT * FROM numbers(3)")
    assert info.value.status_code == 400

    reader = TinybirdApi({"base_url": server_url, "token": "tb-token"})  # PIPES:READ only
    with pytest.raises(TinybirdApiError) as info:
        reader.sql("SELECT count() FROM products")
    assert info.value.status_code == 403
