"""The exact result cache (endpoints/cache.py) over `create_app` and real chDB.

One app for the module: the repository's project (migrations, views, endpoints) plus a
few probe endpoints, and `*_ref` twins of the endpoints under test with `-- cache: off`:
the same SQL computed without the cache, by the same engine, is the reference every
cached answer is compared with. Item and order ids are unique per test, so tests do not
see each other's rows.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from redpoll.api.state import AppState, app_state
from redpoll.clickhouse.client import Client, connect, parse_url, quote_identifier
from redpoll.endpoints.cache import ResultCache
from redpoll.settings import load_settings
from redpoll.store import Store
from redpoll.testing import copy_project
from tests.support.api import ADMIN_TOKEN, api_client
from tests.support.events import purchase
from tests.support.paths import REPO_ROOT

PROBES = {
    # slow enough that concurrent identical calls overlap; `fail=1` raises after the sleep
    "slow_probe": """
SELECT n, {{ String(tag, '') }} AS tag
FROM (SELECT count() AS n FROM events)
WHERE throwIf(sleep(0.4) + {{ Int32(fail, 0) }} = 1, 'probe failure') = 0
""",
    "ttl_probe": """-- cache_ttl: 60
SELECT count() AS n FROM items WHERE startsWith(item_id, {{ String(prefix, 'ttl') }})
""",
    "clock_probe": """
SELECT toUInt32(now()) AS t, count() AS n FROM items WHERE item_id = {{ String(tag, '') }}
""",
    "rand_probe": "SELECT rand64() AS r\n",
    "merge_probe": "SELECT count() AS n FROM items_everywhere\n",
}
TWINS = ("also_bought", "trending")


@dataclasses.dataclass
class Env:
    client: TestClient  # type: ignore[type-arg]
    admin: Client
    wiring: AppState

    @property
    def cache(self) -> ResultCache:
        assert self.wiring.result_cache is not None
        return self.wiring.result_cache


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, redpoll_clickhouse_url: str) -> Iterator[Env]:
    project = copy_project(REPO_ROOT, tmp_path_factory.mktemp("cache") / "project")
    endpoints = project / "endpoints"
    for name, sql in PROBES.items():
        (endpoints / f"{name}.sql").write_text(sql)
    for name in TWINS:
        source = (endpoints / f"{name}.sql").read_text()
        (endpoints / f"{name}_ref.sql").write_text("-- cache: off\n" + source)
    database = f"t_{uuid.uuid4().hex[:12]}"
    target = parse_url(redpoll_clickhouse_url, database)
    admin = connect(target, create_database=True)
    app_settings = load_settings(
        {"project_dir": str(project), "admin_token": ADMIN_TOKEN}, environ={}
    )
    store = Store.attach(app_settings, target, admin)
    try:
        store.migrations().up()
        # a Merge table reads tables Redpoll cannot version: never cached exactly
        admin.command(
            "CREATE TABLE items_everywhere AS items ENGINE = Merge(currentDatabase(), '^items$')"
        )
        with api_client(app_settings, store) as client:
            yield Env(client, admin, app_state(client.app.state))
    finally:
        store.close_read_pools()
        admin.command(f"DROP DATABASE IF EXISTS {quote_identifier(database)}")
        admin.close()


_ids = itertools.count()
_updated = itertools.count(1)


def uid(prefix: str) -> str:
    return f"{prefix}{next(_ids)}_{uuid.uuid4().hex[:6]}"


def ndjson(rows: list[dict[str, Any]]) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def purchases(order: str, items: list[str], user: str = "u") -> list[dict[str, Any]]:
    return [purchase(user, order, item, time.time() - 60) for item in items]


def catalog(items: list[str], available: bool = True) -> list[dict[str, Any]]:
    stamp = f"2024-01-01 00:00:{next(_updated) % 60:02d}.{next(_updated):03d}"
    return [
        {
            "item_id": item,
            "title": f"title {item}",
            "category": "C",
            "price": 1.0,
            "available": available,
            "updated_at": stamp,
        }
        for item in items
    ]


def post(env: Env, datasource: str, rows: list[dict[str, Any]]) -> None:
    r = env.client.post(f"/v0/events?name={datasource}&wait=true", content=ndjson(rows))
    assert r.status_code == 200 and r.json()["quarantined_rows"] == 0, r.text


def call(env: Env, name: str, **params: Any) -> tuple[dict[str, Any], str]:
    r = env.client.get(f"/v0/pipes/{name}.json", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["statistics"]["cache"] == r.headers["x-redpoll-cache"]
    return body, r.headers["x-redpoll-cache"]


def answer(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows without the per-response id."""
    return [{k: v for k, v in row.items() if k != "rec_id"} for row in body["data"]]


def reference(env: Env, name: str, **params: Any) -> list[dict[str, Any]]:
    body, status = call(env, f"{name}_ref", **params)
    assert status == "off"
    return answer(body)


def test_a_hit_is_the_same_answer_with_its_own_rec_id_and_statistics(env: Env) -> None:
    a, b, c = uid("i"), uid("i"), uid("i")
    post(env, "items", catalog([a, b, c]))
    post(env, "events", purchases(uid("o"), [a, b]) + purchases(uid("o"), [a, b, c]))
    first, s1 = call(env, "also_bought", item_id=a, fallback="false")
    second, s2 = call(env, "also_bought", item_id=a, fallback="false")
    third, s3 = call(env, "also_bought", item_id=a, fallback="false")
    assert (s1, s2, s3) == ("miss", "hit", "hit")
    assert [row["item_id"] for row in first["data"]] == [b, c]
    assert answer(first) == answer(second) == answer(third)
    assert first["meta"] == second["meta"]
    ids = [{row["rec_id"] for row in body["data"]} for body in (first, second, third)]
    assert all(len(one) == 1 for one in ids)  # one id per response, on every row
    assert len(set().union(*ids)) == 3  # and a different one per response
    assert uuid.UUID(next(iter(ids[1])))
    assert second["statistics"]["rows_read"] == 0 and first["statistics"]["rows_read"] > 0
    assert 0 < second["statistics"]["elapsed"] < 1
    csv = env.client.get("/v0/pipes/also_bought.csv", params={"item_id": a, "fallback": "false"})
    again = env.client.get("/v0/pipes/also_bought.csv", params={"item_id": a, "fallback": "0"})
    assert csv.headers["x-redpoll-cache"] == "miss"  # another format, another key
    assert again.headers["x-redpoll-cache"] == "miss"  # `0` is another spelling: a new key
    rows = [line.split(",") for line in csv.text.splitlines()[1:]]
    assert [r[0] for r in rows] == [f'"{b}"', f'"{c}"']


def test_every_write_path_invalidates(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, c, d, e = (uid("w") for _ in range(5))
    post(env, "items", catalog([a, b, c, d, e]))
    post(env, "events", purchases(uid("o"), [a, b]))

    def ids() -> tuple[list[str], str]:
        body, status = call(env, "also_bought", item_id=a, fallback="false")
        assert answer(body) == reference(env, "also_bought", item_id=a, fallback="false")
        return [row["item_id"] for row in body["data"]], status

    assert ids() == ([b], "miss")
    assert ids() == ([b], "hit")
    # HTTP events
    post(env, "events", purchases(uid("o"), [a, c]))
    assert ids() == ([b, c], "miss")
    assert ids()[1] == "hit"
    # IngestService.ingest: the path of file loads and the Kafka consumer
    result = env.wiring.ingest.ingest("events", ndjson(purchases(uid("o"), [a, d])))
    assert result.successful_rows == 2
    assert ids() == ([b, c, d], "miss")
    # the catalog (items -> items_latest, read by also_bought)
    post(env, "items", catalog([c], available=False))
    assert ids() == ([b, d], "miss")
    assert ids()[1] == "hit"
    # a backfill (rebuild_view): bumps what the view is fed by
    r = env.client.post("/redpoll/v1/admin/backfill", json={"view": "basket_pairs"})
    assert r.status_code == 200, r.text
    assert ids() == ([b, d], "miss")
    # any bump of a table upstream (e.g. a data source mutation) drops the answer
    assert ids()[1] == "hit"
    env.wiring.ingest.versions.bump(["events"])
    assert ids()[1] == "miss"
    env.wiring.ingest.versions.bump(["unrelated_table"])
    assert ids()[1] == "hit"
    # the admin SQL route (`redpoll sql` through a server): a read keeps the answers,
    # any other statement may write anywhere and drops them all
    for query, status in (("SELECT 1", "hit"), ("OPTIMIZE TABLE basket_pairs FINAL", "miss")):
        r = env.client.post("/redpoll/v1/admin/sql", json={"query": query})
        assert r.status_code == 200, r.text
        assert ids()[1] == status


def test_a_write_during_the_query_is_not_cached(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = uid("r"), uid("r")
    post(env, "items", catalog([a, b]))
    lane = env.wiring.query_lanes.ordinary
    original = lane.run

    async def write_meanwhile(prepare: Any, timeout: float) -> bytes:
        body = await original(prepare, timeout)
        env.wiring.ingest.versions.bump(["events_landing"])  # landed while it ran
        return body

    raced = env.cache.stats.raced
    monkeypatch.setattr(lane, "run", write_meanwhile)
    assert call(env, "also_bought", item_id=a)[1] == "miss"
    monkeypatch.setattr(lane, "run", original)
    assert env.cache.stats.raced == raced + 1
    assert call(env, "also_bought", item_id=a)[1] == "miss"  # nothing was stored
    assert call(env, "also_bought", item_id=a)[1] == "hit"


# --- exactness under random interleavings ----------------------------------------------

UNIVERSE = 5
writes = st.one_of(
    st.tuples(st.just("buy"), st.lists(st.integers(0, UNIVERSE - 1), min_size=2, max_size=3)),
    st.tuples(st.just("ingest"), st.lists(st.integers(0, UNIVERSE - 1), min_size=2, max_size=3)),
    st.tuples(st.just("stock"), st.tuples(st.integers(0, UNIVERSE - 1), st.booleans())),
    st.tuples(st.just("bump"), st.sampled_from(["events_landing", "items", "nothing"])),
    st.tuples(st.just("trend"), st.integers(1, 3)),
    st.tuples(st.just("none"), st.none()),
)
#: each step: a write (or a trending read), then a read of one item
steps = st.lists(st.tuples(writes, st.integers(0, UNIVERSE - 1)), min_size=2, max_size=5)


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=steps)
def test_cached_answers_equal_uncached_ones_under_writes(
    env: Env, plan: list[tuple[tuple[str, Any], int]]
) -> None:
    items = [uid("h") for _ in range(UNIVERSE)]
    post(env, "items", catalog(items))
    post(env, "events", purchases(uid("o"), items[:2]))

    def read(index: int) -> None:
        params = {"item_id": items[index], "fallback": "false"}
        first, _ = call(env, "also_bought", **params)
        expected = reference(env, "also_bought", **params)
        second, status = call(env, "also_bought", **params)
        assert answer(first) == expected  # a stale answer fails here
        assert status == "hit" and answer(second) == expected  # the cache is in play

    for index in range(UNIVERSE):  # every item has a cached answer before the writes
        read(index)
    for (kind, arg), index in plan:
        if kind == "buy":
            post(env, "events", purchases(uid("o"), [items[i] for i in set(arg)]))
        elif kind == "ingest":  # the path of file loads and Kafka
            rows = purchases(uid("o"), [items[i] for i in set(arg)])
            env.wiring.ingest.ingest("events", ndjson(rows))
        elif kind == "stock":
            post(env, "items", catalog([items[arg[0]]], available=arg[1]))
        elif kind == "bump":
            env.wiring.ingest.versions.bump([arg])
        elif kind == "trend":  # reads the clock (keyed by the second) and the trending view
            params = {"hours": str(arg), "category": "C", "limit": "100"}
            body, _ = call(env, "trending", **params)
            expected = reference(env, "trending", **params)
            mine = {r["item_id"]: r["score"] for r in answer(body) if r["item_id"] in items}
            theirs = {r["item_id"]: r["score"] for r in expected if r["item_id"] in items}
            assert mine.keys() == theirs.keys()
            for item, score in mine.items():  # the decay moves with the clock's second
                assert score == pytest.approx(theirs[item], rel=1e-3)
        read(index)


# --- single flight -----------------------------------------------------------------------


def _concurrently(env: Env, n: int, **params: Any) -> list[Any]:
    def one(_: int) -> Any:
        return env.client.get("/v0/pipes/slow_probe.json", params=params)

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_concurrent_identical_misses_run_the_query_once(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    lane = env.wiring.query_lanes.ordinary
    original = lane.run
    runs = 0

    async def counting(prepare: Any, timeout: float) -> bytes:
        nonlocal runs
        runs += 1
        return await original(prepare, timeout)

    monkeypatch.setattr(lane, "run", counting)
    tag = uid("sf")
    responses = _concurrently(env, 6, tag=tag)
    assert [r.status_code for r in responses] == [200] * 6
    assert runs == 1
    statuses = sorted(r.headers["x-redpoll-cache"] for r in responses)
    assert statuses == ["hit"] * 5 + ["miss"]
    assert len({json.dumps(r.json()["data"]) for r in responses}) == 1

    # an error reaches every waiter and is not cached
    runs = 0
    failing = _concurrently(env, 4, tag=tag, fail=1)
    assert runs == 1
    assert {r.status_code for r in failing} == {400}
    assert all("probe failure" in r.json()["error"] for r in failing)
    assert (
        env.client.get("/v0/pipes/slow_probe.json", params={"tag": tag, "fail": 1}).status_code
        == 400
    )
    assert runs == 2


# --- memory, TTL, clock, what is not cached -------------------------------------------------


def test_eviction_keeps_the_cache_under_its_byte_bound(env: Env) -> None:
    cache = env.cache
    items = [uid("e") for _ in range(8)]
    post(env, "items", catalog(items))
    post(env, "events", purchases(uid("o"), items))
    saved, evictions = cache.max_bytes, cache.stats.evictions
    try:
        cache.clear()
        call(env, "also_bought", item_id=items[0])
        one = cache.size_bytes  # one entry: its SQL, its answer and the overhead
        cache.max_bytes = int(one * 3.5)
        for item in items:
            assert call(env, "also_bought", item_id=item)[1] in ("miss", "hit")
            assert cache.size_bytes <= cache.max_bytes
        assert cache.stats.evictions - evictions >= 4
        assert call(env, "also_bought", item_id=items[-1])[1] == "hit"  # recent: kept
        assert call(env, "also_bought", item_id=items[0])[1] == "miss"  # oldest: evicted
    finally:
        cache.max_bytes = saved


def test_ttl_mode_bounds_the_age_of_answers_changed_behind_redpolls_back(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = uid("ttl")
    now = [1000.0]
    monkeypatch.setattr(env.cache, "_monotonic", lambda: now[0])
    body, status = call(env, "ttl_probe", prefix=prefix)
    assert (body["data"], status) == ([{"n": "0"}], "miss")
    body, status = call(env, "ttl_probe", prefix=prefix)
    assert (body["data"], status) == ([{"n": "0"}], "hit")
    # another writer (not Redpoll): no version moves, the answer lives until its TTL
    env.admin.command(f"INSERT INTO items (item_id, title) VALUES ('{prefix}x', 't')")
    now[0] += 59
    assert call(env, "ttl_probe", prefix=prefix)[0]["data"] == [{"n": "0"}]
    now[0] += 2
    body, status = call(env, "ttl_probe", prefix=prefix)
    assert (body["data"], status) == ([{"n": "1"}], "miss")
    # Redpoll's own writes still invalidate at once in TTL mode
    post(env, "items", catalog([f"{prefix}y"]))
    body, status = call(env, "ttl_probe", prefix=prefix)
    assert (body["data"], status) == ([{"n": "2"}], "miss")
    assert env.client.get("/v0/pipes/ttl_probe.json").headers["cache-control"] == "max-age=60"


def test_clock_answers_are_reused_within_their_second_only(env: Env) -> None:
    tag = uid("clock")
    for _ in range(20):  # until two calls land in one second
        t0 = time.time()
        first, _ = call(env, "clock_probe", tag=tag)
        second, s2 = call(env, "clock_probe", tag=tag)
        if int(t0) == int(time.time()):
            break
    assert s2 == "hit" and first["data"] == second["data"]
    time.sleep(1.05 - time.time() % 1)  # the next second
    third, s3 = call(env, "clock_probe", tag=tag)
    assert s3 == "miss" and int(third["data"][0]["t"]) > int(first["data"][0]["t"])


def test_what_is_not_cached(env: Env) -> None:
    one, s1 = call(env, "rand_probe")
    two, s2 = call(env, "rand_probe")
    assert (s1, s2) == ("off", "off") and one["data"] != two["data"]  # rand64(): per call
    # pipe_stats is written by the call log without a version
    assert call(env, "slowest_calls")[1] == "off"
    assert call(env, "merge_probe")[1] == "off"
    assert call(env, "also_bought_ref", item_id="x")[1] == "off"  # `-- cache: off`
    # the global switch (settings `cache`, `cache_max_bytes`): no cache object at all
    saved = env.wiring.result_cache
    env.wiring.result_cache = None
    try:
        body, status = call(env, "also_bought", item_id="x")
        assert status == "off" and body["statistics"]["rows_read"] > 0
    finally:
        env.wiring.result_cache = saved
    assert load_settings({"cache": "off"}, environ={}).cache is False


def test_metrics_report_the_cache(env: Env) -> None:
    call(env, "also_bought", item_id="m")
    call(env, "also_bought", item_id="m")
    text = env.client.get("/v0/metrics").text
    assert 'redpoll_result_cache_lookups_total{result="hit"}' in text
    assert "redpoll_result_cache_bytes" in text and "redpoll_result_cache_evictions_total" in text


def test_a_changed_endpoint_file_is_another_key(env: Env) -> None:
    probe = env.wiring.settings.project_dir / "endpoints" / "version_probe.sql"
    probe.write_text("SELECT 1 AS v\n")
    env.client.post("/redpoll/v1/admin/reload")
    assert call(env, "version_probe")[0]["data"] == [{"v": 1}]
    assert call(env, "version_probe")[1] == "hit"
    probe.write_text("SELECT 2 AS v\n")
    env.client.post("/redpoll/v1/admin/reload")
    body, status = call(env, "version_probe")
    assert (body["data"], status) == ([{"v": 2}], "miss")
