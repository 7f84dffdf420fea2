"""Data source mutations keep every view exact (ingest/mutations.py, ADR 0021).

One server for the module (uvicorn in a thread over the repository's project, migrated
into a database of its own). Each test starts from a known store (truncate, then events
and items through the Events API), runs one mutation through the HTTP API as a client
would (a file upload, a URL on a local http.server, replace, truncate, delete, erase) and
then checks, independently of the code under test:
- the stored events are exactly the expected ones (what was sent, minus what was removed);
- every view fed by `events` equals the Python oracle of tests/support/views.py computed
  from those events, `items_latest` equals `items FINAL` read back, and `event_ids` holds
  exactly the stored ids;
- every view's tables are unchanged by a rebuild of every view from its recompute block
  (`redpoll backfill`), i.e. each equals its recomputation, whatever views exist.
Erasing a user runs while another thread keeps posting events: every acknowledged event
of another user is there afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from redpoll.api.uploads import receive
from redpoll.clickhouse.client import Client, connect, parse_url, quote_identifier
from redpoll.errors import ParameterError, PayloadTooLarge
from redpoll.ingest.download import check_url
from redpoll.ingest.jobs import JobRunner
from redpoll.materialized import load_views
from redpoll.settings import load_settings
from redpoll.store import Store
from redpoll.testing import free_port
from tests.support.checksums import fingerprint, synthetic_events, synthetic_items
from tests.support.shop import prepare_shop
from tests.support.threaded_server import serve_in_thread
from tests.support.views import observed, oracle

ADMIN = "mutations-admin"


@dataclasses.dataclass
class Shop:
    url: str
    client: Client
    http: httpx.Client
    project: Path

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.client.query(query).result_rows]

    def rows(self, query: str) -> list[dict[str, Any]]:  # the shape checksums.py reads
        return list(self.client.query(query).named_results())

    def event_ids(self) -> set[str]:
        return {r[0] for r in self.sql("SELECT event_id FROM events")}

    def post_events(self, name: str, rows: list[dict[str, Any]]) -> None:
        body = "\n".join(json.dumps(r) for r in rows)
        r = self.http.post("/v0/events", params={"name": name, "wait": "true"}, content=body)
        assert r.status_code == 200, r.text

    def wait(self, answer: httpx.Response) -> dict[str, Any]:
        """The finished job of a job answer (polls `GET /v0/jobs/<id>`)."""
        assert answer.status_code == 200, answer.text
        job: dict[str, Any] = answer.json()
        assert job["job_url"].endswith(f"/v0/jobs/{job['id']}") and job["job_id"] == job["id"]
        deadline = time.monotonic() + 60
        while job["status"] in ("waiting", "working"):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
            job = self.http.get(f"/v0/jobs/{job['id']}").json()
        assert job["status"] == "done", job
        return job

    def reset(self, events: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
        for name in ("events", "items"):
            self.wait(self.http.post(f"/v0/datasources/{name}/truncate"))
        self.post_events("events", events)
        self.post_events("items", items)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, redpoll_clickhouse_url: str) -> Iterator[Shop]:
    project = tmp_path_factory.mktemp("mutations") / "project"
    for folder in ("sql", "materialized_views", "endpoints", "migrations"):
        (project / folder).mkdir(parents=True)
    database = f"t_{uuid.uuid4().hex[:12]}"
    target = parse_url(redpoll_clickhouse_url, database)
    admin = connect(target, create_database=True)
    settings = load_settings(
        {
            "project_dir": str(project),
            "admin_token": ADMIN,
            "rate_limit_ip_rps": 0,
            "rate_limit_rps": 0,
            "import_private_urls": True,  # the test's file server is on 127.0.0.1
        },
        environ={},
    )
    store = Store.attach(settings, target, admin)
    prepare_shop(project, store)
    try:
        with (
            serve_in_thread(settings, store) as url,
            httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=120
            ) as http,
        ):
            reader = connect(target)
            try:
                yield Shop(url, reader, http, project)
            finally:
                reader.close()
    finally:
        admin.command(f"DROP DATABASE IF EXISTS {quote_identifier(database)}")
        admin.close()


# ----------------------------------------------------------------- the checks


def assert_views_exact(shop: Shop) -> None:
    """Every view equals its recomputation from the stored rows (module docstring)."""
    events = shop.rows(
        "SELECT event_id, toUnixTimestamp64Milli(ts) AS ts, user_id, session_id, order_id,"
        " item_id, event_type, quantity FROM events"
    )
    assert observed(shop.client, shop.client.database) == oracle(events)
    ids = {r[0] for r in shop.sql("SELECT event_id FROM event_ids")}
    assert ids == {e["event_id"] for e in events}
    latest = shop.sql("SELECT item_id, title, price, available FROM items_latest ORDER BY item_id")
    final = shop.sql("SELECT item_id, title, price, available FROM items FINAL ORDER BY item_id")
    assert latest == final
    before = fingerprint(shop)  # type: ignore[arg-type]
    for view in load_views(shop.project).names:
        r = shop.http.post("/redpoll/v1/admin/backfill", json={"view": view})
        assert r.status_code == 200, r.text
    assert fingerprint(shop) == before  # type: ignore[arg-type]


def ids(events: list[dict[str, Any]]) -> set[str]:
    return {e["event_id"] for e in events}


EVENTS = synthetic_events(120, seed=1)
ITEMS = synthetic_items(30)


@functools.cache
def files(root: Path) -> dict[str, Path]:
    """The same kind of events as CSV (with a header), NDJSON and Parquet files."""
    root.mkdir(parents=True, exist_ok=True)
    fields = ["event_id", "ts", "user_id", "session_id", "order_id", "item_id", "event_type"]
    fields += ["quantity", "price"]
    csv_rows = synthetic_events(30, seed=2)
    csv_text = ",".join(fields) + "\n"
    csv_text += "".join(",".join(_csv_value(e, f) for f in fields) + "\n" for e in csv_rows)
    csv_text += "bad-row,not-a-time,u1,s1,o1,i1,view,1,1.0\n"  # quarantined
    (root / "events.csv").write_text(csv_text)
    nd_rows = synthetic_events(30, seed=3)
    (root / "events.ndjson").write_text("".join(json.dumps(e) + "\n" for e in nd_rows))
    pq_rows = synthetic_events(30, seed=4)
    pq.write_table(pa.Table.from_pylist(pq_rows), root / "events.parquet")
    return {
        "csv": root / "events.csv",
        "ndjson": root / "events.ndjson",
        "parquet": root / "events.parquet",
    }


def _csv_value(event: dict[str, Any], field: str) -> str:
    """CSV values are text: the time as ISO 8601 (a text epoch is not a time)."""
    if field == "ts":
        return dt.datetime.fromtimestamp(event["ts"] / 1000, dt.UTC).isoformat()
    return str(event[field])


EXPECTED = {
    fmt: ids(synthetic_events(30, seed=seed))
    for fmt, seed in (("csv", 2), ("ndjson", 3), ("parquet", 4))
}


# ------------------------------------------------------------------ the tests


def test_append_csv_ndjson_parquet_files(
    shop: Shop, tmp_path_factory: pytest.TempPathFactory
) -> None:
    shop.reset(EVENTS, ITEMS)
    paths = files(tmp_path_factory.getbasetemp() / "mutation-files")
    for fmt, path in paths.items():
        # Tinybird's SDK sends every format in the field `csv`; `format=` says which
        answer = shop.http.post(
            "/v0/datasources",
            params={"name": "events", "mode": "append", "format": fmt},
            files={"csv": (path.name, path.read_bytes())},
        )
        job = shop.wait(answer)
        assert job["kind"] == "import" and job["import_id"] == job["id"]
        assert job["rows"] == 30, json.dumps(job)
        assert job["quarantine_rows"] == (1 if fmt == "csv" else 0)
        assert job["datasource"]["name"] == "events"
    # the format from the file name alone, and the raw body
    again = shop.http.post(
        "/v0/datasources?name=events",
        files={"file": ("again.ndjson", paths["ndjson"].read_bytes())},
    )
    assert shop.wait(again)["rows"] == 30  # stored already: dropped by the dedup index
    assert (
        shop.event_ids() == ids(EVENTS) | EXPECTED["csv"] | EXPECTED["ndjson"] | EXPECTED["parquet"]
    )
    quarantined = shop.sql("SELECT count() FROM events_quarantine WHERE raw LIKE '%bad-row%'")
    assert quarantined == [(1,)]
    assert_views_exact(shop)


def test_append_from_url(shop: Shop, tmp_path_factory: pytest.TempPathFactory) -> None:
    shop.reset(EVENTS, ITEMS)
    root = files(tmp_path_factory.getbasetemp() / "mutation-files")["csv"].parent
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    files_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files_server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{files_server.server_address[1]}"
    try:
        job = shop.wait(
            shop.http.post(
                "/v0/datasources?name=events&mode=append",
                data={"url": f"{base}/events.parquet"},  # a form, as Tinybird's SDK sends it
            )
        )
        assert job["rows"] == 30 and job["url"].endswith("/events.parquet")
        missing = shop.http.post(
            "/v0/datasources", params={"name": "events", "url": f"{base}/nope.csv"}
        )
        assert missing.status_code == 400 and "404" in missing.json()["error"]
        closed = shop.http.post(
            "/v0/datasources",
            params={"name": "events", "url": f"http://127.0.0.1:{free_port()}/x.csv"},
        )
        assert closed.status_code == 400 and "cannot fetch" in closed.json()["error"]
    finally:
        files_server.shutdown()
    with pytest.raises(ParameterError, match="private or local"):
        check_url(f"{base}/events.csv", allow_private=False)  # the default setting
    assert shop.event_ids() == ids(EVENTS) | EXPECTED["parquet"]
    assert_views_exact(shop)


def test_replace_swaps_rows_and_rebuilds_views(shop: Shop) -> None:
    shop.reset(EVENTS, ITEMS)
    new = synthetic_events(40, seed=9) + EVENTS[:10]  # ten events stay, 110 go
    body = "".join(json.dumps(e) + "\n" for e in [*new, new[0]])  # a duplicate id: once
    job = shop.wait(
        shop.http.post(
            "/v0/datasources?name=events&mode=replace&format=ndjson",
            files={"ndjson": ("new.ndjson", body.encode())},
        )
    )
    assert job["rows"] == 50 and "user_history" in job["views"]
    assert shop.event_ids() == ids(new)
    items = [{**item, "title": "renamed " + item["title"]} for item in ITEMS[:5]]
    shop.wait(
        shop.http.post(
            "/v0/datasources?name=items&mode=replace",
            content="".join(json.dumps(i) + "\n" for i in items),
            headers={"Content-Type": "application/x-ndjson"},
        )
    )
    assert shop.sql("SELECT item_id FROM items_latest ORDER BY item_id") == sorted(
        (i["item_id"],) for i in items
    )
    assert_views_exact(shop)


def test_truncate_empties_the_views(shop: Shop) -> None:
    shop.reset(EVENTS, ITEMS)
    job = shop.wait(shop.http.post("/v0/datasources/events/truncate"))
    assert job["rows"] == len(EVENTS) and job["kind"] == "truncate"
    assert shop.event_ids() == set()
    assert shop.sql("SELECT count() FROM user_history") == [(0,)]
    assert_views_exact(shop)


def test_delete_condition(shop: Shop) -> None:
    shop.reset(EVENTS, ITEMS)
    condition = "event_type = 'view' OR (quantity > 2 AND user_id IN ('u1', 'u2'))"
    gone = {
        e["event_id"]
        for e in EVENTS
        if e["event_type"] == "view" or (e["quantity"] > 2 and e["user_id"] in ("u1", "u2"))
    }
    dry = shop.http.post(
        "/v0/datasources/events/delete", data={"delete_condition": condition, "dry_run": "true"}
    )
    assert dry.json() == {"rows_to_be_deleted": len(gone)}
    job = shop.wait(
        shop.http.post("/v0/datasources/events/delete", data={"delete_condition": condition})
    )
    assert job["kind"] == "delete_data" and job["rows"] == len(gone)
    assert shop.event_ids() == ids(EVENTS) - gone
    assert_views_exact(shop)
    bad = {
        "user_id IN (SELECT user_id FROM items)": "SUBQUERY",
        "nope = 1": "unknown column",
        "file('x') = 1": "function file",
        "user_id": "",  # a String is no condition: ClickHouse says so, 400
        "": "required",
    }
    for text, needle in bad.items():
        r = shop.http.post("/v0/datasources/events/delete", data={"delete_condition": text})
        assert r.status_code == 400 and needle in r.json()["error"], (text, r.text)
    unknown = shop.http.post("/v0/datasources/nope/delete", data={"delete_condition": "1"})
    assert unknown.status_code == 404
    view = shop.http.post("/v0/datasources/trending/delete", data={"delete_condition": "1"})
    assert view.status_code == 400 and "materialized view" in view.json()["error"]
    assert shop.http.post("/v0/datasources?name=events&mode=create").status_code == 400


def test_erase_user_while_ingest_continues(shop: Shop) -> None:
    shop.reset(EVENTS, ITEMS)
    victim = "u3"
    acknowledged: list[dict[str, Any]] = []
    stop = threading.Event()

    def keep_posting() -> None:
        with httpx.Client(base_url=shop.url, headers=dict(shop.http.headers)) as http:
            n = 0
            while not stop.is_set():
                batch = [
                    {**e, "event_id": f"live-{n}-{i}", "user_id": f"u{(n + i) % 12}"}
                    for i, e in enumerate(synthetic_events(5, seed=100 + n))
                    if f"u{(n + i) % 12}" != victim
                ]
                n += 1
                body = "\n".join(json.dumps(e) for e in batch)
                r = http.post("/v0/events", params={"name": "events", "wait": "true"}, content=body)
                assert r.status_code == 200, r.text
                acknowledged.extend(batch)

    poster = threading.Thread(target=keep_posting)
    poster.start()
    try:
        while len(acknowledged) < 8:
            time.sleep(0.01)
        before = len(acknowledged)
        job = shop.wait(shop.http.post("/redpoll/v1/admin/erase", params={"user_id": victim}))
        during = len(acknowledged) - before
        time.sleep(0.2)
    finally:
        stop.set()
        poster.join(30)
    assert job["kind"] == "erase" and victim not in json.dumps(job)
    assert job["removed"]["events"] == sum(e["user_id"] == victim for e in EVENTS)
    assert during > 0, "no event was acknowledged while the erasure ran"
    stored = shop.event_ids()
    expected = {e["event_id"] for e in EVENTS if e["user_id"] != victim} | ids(acknowledged)
    assert stored == expected
    assert shop.sql(f"SELECT count() FROM user_history WHERE user_id = '{victim}'") == [(0,)]
    assert_views_exact(shop)


def test_erase_item_removes_events_and_catalog_row(shop: Shop) -> None:
    shop.reset(EVENTS, ITEMS)
    item = "i5"
    job = shop.wait(shop.http.post("/redpoll/v1/admin/erase", json={"item_id": item}))
    assert job["removed"]["items"] == 1
    assert job["removed"]["events"] == sum(e["item_id"] == item for e in EVENTS) > 0
    assert shop.event_ids() == {e["event_id"] for e in EVENTS if e["item_id"] != item}
    assert shop.sql(f"SELECT count() FROM items_latest WHERE item_id = '{item}'") == [(0,)]
    pairs = f"SELECT count() FROM basket_pairs WHERE item_id = '{item}' OR other_item_id = '{item}'"
    assert shop.sql(pairs) == [(0,)]
    assert_views_exact(shop)
    both = shop.http.post("/redpoll/v1/admin/erase", params={"user_id": "a", "item_id": "b"})
    assert both.status_code == 400


def test_scopes_and_ops_log(shop: Shop) -> None:
    r = shop.http.post(
        "/v0/tokens", params={"name": "loader", "scope": "DATASOURCES:APPEND:events"}
    )
    token = r.json()["token"]
    with httpx.Client(base_url=shop.url, headers={"Authorization": f"Bearer {token}"}) as http:
        body = {"ndjson": ("x.ndjson", json.dumps(EVENTS[0]).encode())}
        appended = http.post("/v0/datasources?name=events", files=body)
        assert appended.status_code == 200, appended.text
        assert http.get(f"/v0/jobs/{appended.json()['id']}").json()["status"] == "done"
        assert http.post("/v0/datasources?name=items", files=body).status_code == 403
        assert http.post("/v0/datasources?name=events&mode=replace", files=body).status_code == 403
        assert http.post("/v0/datasources/events/truncate").status_code == 403
        assert http.post("/redpoll/v1/admin/erase?user_id=u1").status_code == 403
        erase = shop.http.post("/redpoll/v1/admin/erase", params={"user_id": "nobody"}).json()
        assert http.get(f"/v0/jobs/{erase['id']}").status_code == 403
        assert erase["id"] not in http.get("/v0/jobs").text
    deadline = time.monotonic() + 5
    wanted = {"append", "replace", "truncate", "delete_data", "erase"}
    while True:
        logged = {r[0] for r in shop.sql("SELECT DISTINCT operation FROM datasources_ops_log")}
        if wanted <= logged or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert wanted <= logged


def test_job_runner_keeps_the_newest_and_reports_errors() -> None:
    runner = JobRunner(capacity=3)
    try:
        done = [runner.record("truncate", {"rows": i}, datasource="items") for i in range(5)]
        assert [j.id for j in runner.list()] == [j.id for j in reversed(done[2:])]

        def refuse() -> dict[str, Any]:
            raise ParameterError("nope")

        def crash() -> dict[str, Any]:
            raise RuntimeError("secret detail")

        refused = runner.submit("import", refuse, datasource="events")
        crashed = runner.submit("import", crash, datasource="events")
        deadline = time.monotonic() + 10
        while not (refused.finished and crashed.finished):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert (refused.status, refused.error) == ("error", "nope")
        assert crashed.status == "error" and "secret" not in str(crashed.describe())
        assert len(runner.list()) == 3 and runner.get(done[0].id) is None
    finally:
        runner.close()


def test_upload_over_the_limit_is_413(tmp_path: Path) -> None:
    """The body is counted while it streams (api/uploads.py): over the limit, 413."""
    sent = httpx.Request("POST", "http://x/", files={"csv": ("a.csv", b"a,b\n" + b"1,2\n" * 100)})

    class Streamed:
        headers = {k: v for k, v in sent.headers.items() if k.lower() != "content-length"}

        async def stream(self) -> Any:
            body = sent.read()
            for i in range(0, len(body), 64):
                yield body[i : i + 64]

    with pytest.raises(PayloadTooLarge):
        asyncio.run(receive(Streamed(), 200, tmp_path))
    received = asyncio.run(receive(Streamed(), 10_000, tmp_path))
    assert received.field == "csv" and received.path is not None
    assert received.path.read_bytes() == b"a,b\n" + b"1,2\n" * 100
