"""Hostile ingest, end to end: a real `redpoll serve`, concurrent ingest with
failing requests mixed in (bad `line_offset`, bad rows, invalid and deeply nested bodies,
compression bombs, oversized bodies, an events INSERT that fails half-way), kill -9 once
mid-way, restart, continue; then the rows stored in `events` are exactly the rows
acknowledged, and every view equals its recomputation from `events` (`backfill`).

Accounting: rows without `event_id` (generated ids) are counted (`source = 'gen'`), rows
with client ids are compared as sets. Only client-id requests run while the server is
killed: a request whose connection dies has an unknown outcome, so it is sent again after
the restart (same ids: acknowledged once, stored once).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import random
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from redpoll.testing import AdminSQL, RunningServer, copy_project, run_cli, run_server
from tests.support.paths import REPO_ROOT
from tests.support.views import VIEWS, observed

TOKEN = "abuse-test-token"
MAX_BODY = 256 * 1024
ENV = {
    "REDPOLL_ADMIN_TOKEN": TOKEN,
    "REDPOLL_MAX_BODY_BYTES": str(MAX_BODY),
    "REDPOLL_MAX_INFLATED_BYTES": str(2 << 20),
}
WORKERS = 16
NOW_MS = int(time.time() * 1000)
# a view chained on `events` that fails for one item: its INSERT has already written
# rows to `events` and to some views when the error comes (the writer rolls it back)
BOOM_VIEW = (
    "CREATE TABLE boom_sink (item_id String) ENGINE = Null",
    "CREATE MATERIALIZED VIEW boom_mv TO boom_sink AS SELECT "
    "if(throwIf(item_id = 'boom', 'boom') = 0, item_id, item_id) AS item_id FROM events",
)


@dataclasses.dataclass
class Ledger:
    """What the clients were told, across threads."""

    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    client_ids: set[str] = dataclasses.field(default_factory=set)
    generated_rows: int = 0
    unknown: list[bytes] = dataclasses.field(default_factory=list)
    surprises: list[str] = dataclasses.field(default_factory=list)
    kinds: dict[str, int] = dataclasses.field(default_factory=dict)


def event(rnd: random.Random, **fields: Any) -> dict[str, Any]:
    base = {
        "ts": NOW_MS - rnd.randrange(20 * 86_400_000),
        "user_id": f"u{rnd.randrange(10)}" if rnd.random() < 0.8 else "",
        "order_id": f"o{rnd.randrange(40)}",
        "item_id": f"i{rnd.randrange(20)}",
        "event_type": rnd.choice(["purchase", "purchase", "view", "cart"]),
        "quantity": rnd.randrange(1, 4),
    }
    return {**base, **fields}


def ndjson(rows: list[dict[str, Any]]) -> bytes:
    return b"\n".join(json.dumps(r).encode() for r in rows) + b"\n"


@functools.cache
def gzip_bomb(size: int = 32 << 20) -> bytes:
    """`size` bytes of spaces, gzipped to ~1/1000 of that."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(b" " * (1 << 20)) for _ in range(size >> 20)]
    return b"".join([*parts, packer.flush()])


@dataclasses.dataclass
class Request:
    kind: str
    body: bytes
    expect: int  # the status answered (boom: 400 or 500, see below)
    url: str = "/v0/events?name=events&wait=true"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    ids: set[str] = dataclasses.field(default_factory=set)  # acknowledged if it succeeds
    generated: int = 0  # rows without event_id acknowledged if it succeeds
    quarantined: int = 0


def build(kind: str, rnd: random.Random, tag: str, history: list[Request]) -> Request:
    """One request of `kind`; `history`: this client's earlier client-id requests."""
    if kind == "replay" and history:  # a client retry of an earlier request
        return dataclasses.replace(rnd.choice(history), kind="replay")
    if kind in {"ids", "replay"}:
        rows = [event(rnd, event_id=f"{tag}-{i}") for i in range(50)]
        rows += rnd.sample(rows, 5)  # in-body duplicates (first copy wins)
        request = Request("ids", ndjson(rows), 200, ids={r["event_id"] for r in rows})
        if rnd.random() < 0.5:
            request = dataclasses.replace(request, url="/v0/events?name=events", expect=202)
        history.append(request)
        return request
    if kind == "gen":
        body = ndjson([event(rnd, source="gen") for _ in range(50)])
        return Request(kind, body, 200, generated=50)
    if kind == "bad_rows":  # good rows acknowledged, the bad ones quarantined
        rows = [event(rnd, event_id=f"{tag}-{i}") for i in range(40)]
        bad = [
            event(rnd, event_id=f"{tag}-negts", ts=-1e12),
            event(rnd, event_id=f"{tag}-obj", user_id={"a": 1}),
            event(rnd, event_id=f"{tag}-num", item_id=12345),
            event(rnd, event_id="x" * 300),
        ]
        body = b"\xef\xbb\xbf" + ndjson(rows + bad) + b"{broken\n"
        return Request(kind, body, 200, ids={r["event_id"] for r in rows}, quarantined=5)
    if kind == "bad_offset":
        body = ndjson([event(rnd, event_id=f"{tag}-{i}") for i in range(10)]) + b"{bad\n"
        return Request(kind, body, 400, url="/v0/events?name=events&line_offset=-1000")
    if kind == "huge_offset":
        body = ndjson([event(rnd, event_id=f"{tag}-{i}") for i in range(10)])
        return Request(kind, body, 400, url="/v0/events?name=events&line_offset=" + "9" * 25)
    if kind == "deep":
        return Request(kind, b"[" * 50_000 + b"]" * 50_000, 400)
    if kind == "bomb":
        return Request(kind, gzip_bomb(), 413, headers={"Content-Encoding": "gzip"})
    if kind == "too_big":
        rows = [event(rnd, event_id=f"{tag}-{i}", properties="p" * 2000) for i in range(150)]
        return Request(kind, ndjson(rows), 413)
    if kind == "boom":  # the events INSERT fails half-way: nothing of it may stay
        rows = [event(rnd, event_id=f"{tag}-{i}") for i in range(20)]
        return Request(kind, ndjson([*rows, event(rnd, event_id=f"{tag}-x", item_id="boom")]), 500)
    assert kind == "unknown", kind
    return Request(kind, ndjson([event(rnd)]), 404, url="/v0/events?name=nope")


def send(http: httpx.Client, request: Request, led: Ledger) -> None:
    """Send one request and record what the server acknowledged. A connection error is
    re-raised; a client-id request is then kept to be sent again after the restart."""
    try:
        r = http.post(request.url, content=request.body, headers=request.headers)
    except httpx.HTTPError:
        with led.lock:
            if request.ids and not request.generated:
                led.unknown.append(request.body)
            else:
                led.surprises.append(f"{request.kind}: connection failed")
        raise
    with led.lock:
        led.kinds[request.kind] = led.kinds.get(request.kind, 0) + 1
        # a view's error (throwIf) is mapped by api/errors.py: any error status will do
        expected = {400, 500} if request.kind == "boom" else {request.expect}
        if r.status_code not in expected:
            led.surprises.append(f"{request.kind}: {r.status_code} {r.text[:200]}")
        elif r.status_code >= 400:
            if set(r.json()) != {"error", "documentation"}:
                led.surprises.append(f"{request.kind}: error body {r.text[:200]}")
        elif r.json()["quarantined_rows"] != request.quarantined:
            led.surprises.append(f"{request.kind}: {r.json()}")
        else:
            led.client_ids |= request.ids
            led.generated_rows += request.generated


MIXED = (
    *["gen"] * 6,
    *["ids"] * 6,
    *["replay"] * 2,
    *["bad_rows"] * 2,
    *("bad_offset", "huge_offset", "deep", "bomb", "too_big", "unknown"),
)


def traffic(server: RunningServer, led: Ledger, phase: str, requests: int) -> None:
    """WORKERS clients at once, each sending `requests` requests of mixed kinds."""

    def client(w: int) -> None:
        rnd = random.Random(f"{phase}-{w}")
        history: list[Request] = []
        with server.client(timeout=60) as http:
            for k in range(requests):
                try:
                    send(http, build(rnd.choice(MIXED), rnd, f"{phase}-{w}-{k}", history), led)
                except httpx.HTTPError:
                    return

    threads = [threading.Thread(target=client, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)


def admin(server: RunningServer) -> AdminSQL:
    return AdminSQL(server.url, TOKEN)


@pytest.mark.slow
def test_concurrent_abusive_ingest_with_kill_9_stores_exactly_what_was_acknowledged(
    tmp_path: Path,
) -> None:
    project = tmp_path / "shop"
    project.mkdir()
    copy_project(REPO_ROOT, project, ("sql", "materialized_views", "migrations"))
    assert run_cli(project, "migrate", "up").returncode == 0
    for statement in BOOM_VIEW:
        assert run_cli(project, "sql", statement).returncode == 0
    led = Ledger()

    with run_server(project, env=ENV) as server:
        traffic(server, led, "a", 10)
        with server.client(timeout=60) as http:  # INSERTs that fail
            for k in range(2):
                send(http, build("boom", random.Random(k), f"boom-a{k}", []), led)
        assert not led.surprises, led.surprises[:5]

        # only client ids from here until the kill: their outcome can be settled later
        stop = threading.Event()
        acked_before = len(led.client_ids)

        def kill_phase(w: int) -> None:
            rnd = random.Random(f"b-{w}")
            history: list[Request] = []
            with server.client(timeout=60) as http:
                k = 0
                while not stop.is_set():
                    try:
                        send(http, build("ids", rnd, f"b-{w}-{k}", history), led)
                    except httpx.HTTPError:
                        return
                    k += 1

        threads = [threading.Thread(target=kill_phase, args=(w,)) for w in range(WORKERS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(led.client_ids) < acked_before + 3000 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.kill9()
        stop.set()
        for t in threads:
            t.join(60)

    with run_server(project, env=ENV) as server:
        with server.client(timeout=60) as http:
            for body in led.unknown:  # the clients' retries of unanswered requests
                r = http.post("/v0/events?name=events&wait=true", content=body)
                assert r.status_code == 200, r.text
                led.client_ids |= {json.loads(line)["event_id"] for line in body.splitlines()}
            send(http, build("boom", random.Random(9), "boom-c", []), led)
        traffic(server, led, "c", 8)
        # a 202 (default `ack = durable`) is visible within the committer's next INSERTs,
        # made in arrival order: once a `wait=true` request is answered, all earlier are
        with server.client(timeout=60) as http:
            last = event(random.Random(10), event_id="last")
            send(http, Request("ids", ndjson([last]), 200, ids={"last"}), led)
        assert not led.surprises, led.surprises[:5]
        assert {"bomb", "too_big", "bad_offset", "deep", "bad_rows"} <= set(led.kinds)

        sql = admin(server)
        [(total, distinct, generated)] = sql.query(
            "SELECT count(), uniqExact(event_id), countIf(source = 'gen') FROM events"
        ).result_rows
        assert int(total) == int(distinct), "an event is stored twice"
        assert int(generated) == led.generated_rows
        stored = {
            row[0]
            for row in sql.query("SELECT event_id FROM events WHERE source != 'gen'").result_rows
        }
        assert not stored - led.client_ids, (
            f"stored, never acknowledged: {sorted(stored - led.client_ids)[:5]}"
        )
        assert not led.client_ids - stored, (
            f"acknowledged, lost: {sorted(led.client_ids - stored)[:5]}"
        )
        assert int(total) == led.generated_rows + len(led.client_ids)

        [(database,)] = sql.query("SELECT currentDatabase()").result_rows
        live = observed(sql, database)  # type: ignore[arg-type]
        for view in VIEWS.names:
            sql.backfill(view)
        assert observed(sql, database) == live  # type: ignore[arg-type]


def test_load_through_a_running_server_sends_chunks_below_its_body_limit(tmp_path: Path) -> None:
    """`redpoll load` splits a file into chunks below the server's default
    `max_body_bytes` (16 MiB) even when rows are large: here 2,000 rows of 10 KB, which
    used to go out as one 20 MB chunk."""
    project = tmp_path / "shop"
    project.mkdir()
    copy_project(REPO_ROOT, project, ("sql", "materialized_views", "migrations"))
    assert run_cli(project, "migrate", "up").returncode == 0
    rnd = random.Random(3)
    rows = [event(rnd, event_id=f"big-{i}", properties="p" * 10_000) for i in range(2000)]
    data = tmp_path / "big.ndjson.gz"
    data.write_bytes(gzip.compress(ndjson(rows), compresslevel=1))
    with run_server(project, env={"REDPOLL_ADMIN_TOKEN": TOKEN}) as server:
        out = run_cli(project, "load", "events", str(data))
        assert out.returncode == 0, out.stderr
        assert "2000 rows loaded into events" in out.stdout
        assert "through the running server" in out.stderr
        [(count,)] = admin(server).query("SELECT count() FROM events").result_rows
        assert int(count) == 2000
