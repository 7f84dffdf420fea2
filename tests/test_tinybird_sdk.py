"""A reference client works unchanged: the Tinybird Python SDK against a real Redpoll
HTTP server (uvicorn in a thread on a free port, over the session chDB store)."""

from __future__ import annotations

import functools
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from redpoll.clickhouse.client import Client, Target
from redpoll.settings import load_settings
from redpoll.store import Store
from tests.support.api import copy_endpoints, make_products
from tests.support.shop import prepare_shop
from tests.support.threaded_server import serve_in_thread

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
    with serve_in_thread(settings, store) as url:
        yield url


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


# ----------------------------------------------------- data source operations


@pytest.fixture
def shop_url(project_dir: Path, ch_target: Target, admin_client: Client) -> Iterator[str]:
    """`redpoll serve` (in a thread) over the repository's project, migrated; `url=`
    imports may read 127.0.0.1 (the test's file server)."""
    settings = load_settings(
        {"project_dir": str(project_dir), "admin_token": "adm", "import_private_urls": True},
        environ={},
    )
    store = Store.attach(settings, ch_target, admin_client)
    prepare_shop(project_dir, store)
    with serve_in_thread(settings, store) as url:
        yield url


def _done(api: Any, answer: dict[str, Any]) -> dict[str, Any]:
    """Poll the job the answer names (`GET /v0/jobs/<id>`, Tinybird's Jobs API)."""
    job = answer
    deadline = time.monotonic() + 30
    while job["status"] in ("waiting", "working"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
        job = api.request_json(f"/v0/jobs/{answer['job_id']}")
    assert job["status"] == "done", job
    return job


def test_sdk_datasource_operations(shop_url: str, tmp_path: Path) -> None:
    """append (file, URL), replace, delete, truncate and SQL as the SDK sends them."""
    from tinybird_sdk.api.api import TinybirdApi, TinybirdApiError

    api = TinybirdApi({"base_url": shop_url, "token": "adm"})
    events = [
        {
            "event_id": f"sdk{i}",
            "ts": "2026-11-01T10:00:00Z",
            "user_id": f"u{i % 3}",
            "item_id": f"i{i % 4}",
            "event_type": "purchase",
            "order_id": f"o{i // 2}",
        }
        for i in range(12)
    ]
    ndjson = tmp_path / "events.ndjson"
    ndjson.write_text("".join(json.dumps(e) + "\n" for e in events[:8]))
    appended = _done(api, api.append_datasource("events", {"file": str(ndjson)}))
    assert appended["rows"] == 8

    served = tmp_path / "served"
    served.mkdir()
    (served / "more.csv").write_text(
        "event_id,ts,user_id,item_id,event_type,order_id\n"
        + "".join(
            f"{e['event_id']},{e['ts']},{e['user_id']},{e['item_id']},purchase,{e['order_id']}\n"
            for e in events[8:]
        )
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    try:
        more = f"http://127.0.0.1:{files.server_address[1]}/more.csv"
        assert _done(api, api.append_datasource("events", {"url": more}))["rows"] == 4
    finally:
        files.shutdown()
    assert api.sql("SELECT count() AS n FROM events")["data"] == [{"n": "12"}]

    deleted = _done(api, api.delete_datasource("events", {"delete_condition": "user_id = 'u0'"}))
    assert deleted["rows"] == 4
    assert api.delete_datasource("events", {"delete_condition": "1", "dry_run": True}) == {
        "rows_to_be_deleted": 8
    }
    per_user = api.sql("SELECT user_id, count() AS n FROM user_history GROUP BY user_id ORDER BY 1")
    assert per_user["data"] == [{"user_id": "u1", "n": "4"}, {"user_id": "u2", "n": "4"}]
    with pytest.raises(TinybirdApiError) as info:
        api.delete_datasource("events", {"delete_condition": "user_id IN (SELECT 1)"})
    assert info.value.status_code == 400

    replacement = tmp_path / "replacement.ndjson"
    replacement.write_text(json.dumps(events[0]) + "\n")
    replaced = api.append_datasource("events", {"file": str(replacement)}, {"mode": "replace"})
    assert _done(api, replaced)["rows"] == 1
    assert api.sql("SELECT count() AS n FROM user_history")["data"] == [{"n": "1"}]

    api.ingest_batch("items", [{"item_id": "i1", "title": "mug"}])
    api.truncate_datasource("items")
    assert api.sql("SELECT count() AS n FROM items_latest")["data"] == [{"n": "0"}]
