"""Events API over real chDB: formats, quarantine, dedup, group commit, errors."""

from __future__ import annotations

import gzip
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from redpoll.app import create_app
from redpoll.clickhouse.client import Client
from redpoll.settings import Settings
from redpoll.store import Store
from tests.api.test_health_admin import assert_error_envelope
from tests.conftest import REPO_ROOT

ALL_TYPES = """
CREATE TABLE {{ database }}.all_types (
    s String, lc LowCardinality(String), i8 Int8, u64 UInt64, f Float64, b Bool,
    d Date, dt DateTime('UTC'), dt64 DateTime64(3, 'UTC'), u UUID, e Enum8('a' = 1, 'b' = 2),
    n Nullable(Int32), arr Array(UInt16), m Map(String, Float64), dec Decimal(10, 2),
    created DateTime64(3, 'UTC') DEFAULT now64(3), tag String DEFAULT 'none'
) ENGINE = MergeTree ORDER BY s;
"""

GOOD_ROW = {
    "s": "x",
    "lc": "y",
    "i8": -5,
    "u64": "18446744073709551615",
    "f": 1.5,
    "b": True,
    "d": "2024-01-31",
    "dt": "2024-01-31 10:00:00",
    "dt64": 1_706_695_200_123,
    "u": "9f1c2b4e-8a3d-4c5e-9f10-1a2b3c4d5e6f",
    "e": "b",
    "n": None,
    "arr": [1, 2],
    "m": {"k": 2},
    "dec": "3.14",
}


@pytest.fixture
def shop(project_dir: Path, store: Store) -> Path:
    """The repository's own data sources and migrations, plus an all-types source."""
    for folder in ("sql", "migrations"):
        shutil.copytree(REPO_ROOT / folder, project_dir / folder, dirs_exist_ok=True)
    (project_dir / "sql" / "all_types.sql").write_text(ALL_TYPES)
    (project_dir / "migrations" / "0900_all_types.sql").write_text(ALL_TYPES)
    store.migrations().up()
    return project_dir


@pytest.fixture
def events_api(shop: Path, settings: Settings, store: Store) -> Iterator[TestClient]:
    with TestClient(app=create_app(settings, store=store)) as client:
        yield client


def post(api: TestClient, name: str, body: bytes | str, wait: bool = True, **headers: str):  # type: ignore[no-untyped-def]
    data = body.encode() if isinstance(body, str) else body
    return api.post(
        f"/v0/events?name={name}&wait={'true' if wait else 'false'}", content=data, headers=headers
    )


def ndjson(rows: list[dict]) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def test_ndjson_ack_and_rows_visible(events_api: TestClient, admin_client: Client) -> None:
    rows = [
        {
            "event_id": f"e{i}",
            "ts": "2024-01-01T00:00:00Z",
            "user_id": "u1",
            "item_id": f"i{i % 3}",
            "event_type": "view",
        }
        for i in range(10)
    ]
    r = post(events_api, "events", ndjson(rows))
    assert r.status_code == 200, r.text
    assert r.json() == {"successful_rows": 10, "quarantined_rows": 0}
    assert admin_client.command("SELECT count() FROM events") == 10

    r = post(events_api, "events", ndjson([{"event_type": "view", "item_id": "i9"}]), wait=False)
    assert r.status_code == 202
    # generated event_id and server receive time when absent
    row = admin_client.query(
        "SELECT event_id != '', ts > now() - INTERVAL 1 MINUTE FROM events WHERE item_id = 'i9'"
    ).result_rows
    assert row == [(True, True)]


def test_single_object_array_gzip_and_extra_params(
    events_api: TestClient, admin_client: Client
) -> None:
    one = {"event_id": "a", "item_id": "x", "event_type": "view", "ts": 1_700_000_000}
    assert post(events_api, "events", json.dumps(one)).json()["successful_rows"] == 1
    arr = [
        {"event_id": "b", "item_id": "x", "event_type": "view"},
        {"event_id": "c", "item_id": "x", "event_type": "view"},
    ]
    assert post(events_api, "events", json.dumps(arr)).json()["successful_rows"] == 2
    gz = gzip.compress(ndjson([{"event_id": "d", "item_id": "x", "event_type": "view"}]).encode())
    r = events_api.post(
        "/v0/events?name=events&wait=true&format=ndjson&mode=append&from=sdk",
        content=gz,
        headers={"Content-Encoding": "gzip"},
    )
    assert r.json() == {"successful_rows": 1, "quarantined_rows": 0}
    assert admin_client.command("SELECT count() FROM events") == 4


def test_redelivered_event_ids_change_nothing(events_api: TestClient, admin_client: Client) -> None:
    batch = [
        {
            "event_id": f"p{i}",
            "user_id": "u",
            "order_id": "o1",
            "item_id": f"i{i}",
            "event_type": "purchase",
            "ts": "2024-01-01T00:00:00Z",
        }
        for i in range(3)
    ]
    post(events_api, "events", ndjson(batch))
    before = admin_client.query("SELECT * FROM co_purchase FINAL ORDER BY ALL").result_rows
    assert sum(r[2] for r in before) == 6  # 3 distinct pairs, both directions
    post(events_api, "events", ndjson(batch + batch))  # client retry, twice in one body
    assert admin_client.command("SELECT count() FROM events") == 3
    assert admin_client.query("SELECT * FROM co_purchase FINAL ORDER BY ALL").result_rows == before


def test_quarantine_keeps_good_rows_and_records_bad_ones(
    events_api: TestClient, admin_client: Client
) -> None:
    bad_int = dict(GOOD_ROW, i8=300)
    bad_date = dict(GOOD_ROW, d="2024-13-01")
    bad_uuid = dict(GOOD_ROW, u="nope")
    bad_enum = dict(GOOD_ROW, e="z")
    missing_required = {k: v for k, v in GOOD_ROW.items() if k != "u"}
    body = "\n".join(
        [
            json.dumps(GOOD_ROW),
            "{not json",
            json.dumps(bad_int),
            "[1, 2]",
            json.dumps(bad_date),
            json.dumps(bad_uuid),
            json.dumps(bad_enum),
            json.dumps(missing_required),
            json.dumps(dict(GOOD_ROW, s="second", tag="custom")),
        ]
    )
    r = post(events_api, "all_types", body)
    assert r.json() == {"successful_rows": 2, "quarantined_rows": 7}
    q = admin_client.query(
        "SELECT line, column, error, raw FROM all_types_quarantine ORDER BY line"
    ).result_rows
    assert [(line, col) for line, col, _, _ in q] == [
        (2, ""),
        (3, "i8"),
        (4, ""),
        (5, "d"),
        (6, "u"),
        (7, "e"),
        (8, "u"),
    ]
    assert q[0][2] == "not valid JSON" and q[0][3] == "{not json"
    assert "out of range for Int8" in q[1][2]
    assert q[6][2] == "missing required field"
    stored = admin_client.query(
        "SELECT s, u64, dt64, n, arr, m['k'], toString(dec), tag,"
        " created > now() - INTERVAL 1 HOUR FROM all_types ORDER BY s"
    ).result_rows
    assert [(r[0], r[1], r[3], r[4], r[5], r[6], r[7], r[8]) for r in stored] == [
        ("second", 2**64 - 1, None, [1, 2], 2.0, "3.14", "custom", True),
        ("x", 2**64 - 1, None, [1, 2], 2.0, "3.14", "none", True),
    ]
    assert stored[1][2].isoformat().startswith("2024-01-31T10:00:00.123")


@pytest.mark.parametrize(
    ("url", "body", "status", "needle"),
    [
        ("/v0/events?name=nope", b'{"a":1}', 404, "Data Source 'nope' not found"),
        ("/v0/events?name=events", b"  \n", 400, "empty body"),
        ("/v0/events", b'{"a":1}', 400, "'name'"),
    ],
)
def test_errors(events_api: TestClient, url: str, body: bytes, status: int, needle: str) -> None:
    body_json = assert_error_envelope(events_api.post(url, content=body), status)
    assert needle in body_json["error"]


def test_bad_gzip_is_400(events_api: TestClient) -> None:
    r = events_api.post(
        "/v0/events?name=events", content=b"plain", headers={"Content-Encoding": "gzip"}
    )
    assert_error_envelope(r, 400)


def test_items_latest_version_wins(events_api: TestClient, admin_client: Client) -> None:
    post(
        events_api,
        "items",
        ndjson(
            [
                {
                    "item_id": "i1",
                    "title": "old",
                    "category": "c",
                    "price": 1,
                    "updated_at": "2024-01-01T00:00:00Z",
                },
                {
                    "item_id": "i1",
                    "title": "new",
                    "category": "c",
                    "price": 2,
                    "updated_at": "2024-02-01T00:00:00Z",
                },
            ]
        ),
    )
    post(
        events_api,
        "items",
        ndjson(
            [{"item_id": "i1", "title": "older", "price": 0, "updated_at": "2023-01-01T00:00:00Z"}]
        ),
    )
    assert admin_client.query("SELECT title, price, available FROM items FINAL").result_rows == [
        ("new", 2.0, True)
    ]


def test_concurrent_requests_are_group_committed(
    events_api: TestClient, admin_client: Client
) -> None:
    def send(k: int) -> None:
        rows = [
            {"event_id": f"c{k}-{i}", "item_id": f"i{i}", "event_type": "view"} for i in range(50)
        ]
        assert post(events_api, "events", ndjson(rows)).json()["successful_rows"] == 50

    threads = [threading.Thread(target=send, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admin_client.command("SELECT count() FROM events") == 800
    stats = events_api.app.state.ingest.status()["events"]
    assert stats["rows"] == 800 and stats["requests"] == 16
    assert stats["inserts"] <= 16


def test_append_token_when_configured(shop: Path, store: Store, settings: Settings) -> None:
    import dataclasses

    guarded = dataclasses.replace(settings, append_token="s3cret")
    with TestClient(app=create_app(guarded, store=store)) as api:
        body = b'{"item_id": "x", "event_type": "view"}'
        assert_error_envelope(api.post("/v0/events?name=events", content=body), 403)
        ok = api.post("/v0/events?name=events&token=s3cret", content=body)
        assert ok.status_code == 202
        ok = api.post("/v0/events?name=events", content=body,
                      headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 202
