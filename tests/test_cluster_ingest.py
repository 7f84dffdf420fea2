"""Cluster mode's write path, through the real HTTP app and ingest service, on a
simulated cluster (tests/support/cluster.py: 3 shard databases and a read database in
the session's embedded chDB; no live cluster runs here, docs/cluster.md).

The app is configured as a cluster's writer process: `cluster_shard_urls` names each
shard's database (`chdb://<store path>?database=<shard>`). Checked: every event is
stored in the shard its routing key names and nowhere else; the views read over the
shards equal a single store fed the same events, and the batch recomputation; the
catalog goes through `items_all_nodes`; a shard that fails an INSERT makes the request
fail (503) with nothing acknowledged, and the retry after the repair stores each event
once; with `ack = "durable"` the write-ahead log replays the batch into the shards; the
single-node path is unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from redpoll.api.state import app_state
from redpoll.clickhouse.client import Client, Target, connect
from redpoll.cluster.keys import routing_key, shard_of
from redpoll.cluster.shards import shard_targets
from redpoll.errors import ConfigError
from redpoll.ingest import service as service_module
from redpoll.ingest.service import IngestService
from redpoll.ingest.writer import EventWriter
from redpoll.settings import Settings, load_settings
from redpoll.store import Store
from redpoll.testing import copy_project
from tests.support.api import ADMIN_TOKEN, api_client
from tests.support.cluster import (
    SHARDS,
    TWINS,
    Cluster,
    cluster_databases,
    columns,
    compare_endpoints,
    same,
    stream,
)
from tests.support.paths import REPO_ROOT
from tests.support.views import VIEWS, observed, oracle

ITEM_COLUMNS = ("item_id", "title", "category", "brand", "price", "available")


@pytest.fixture
def cluster(ch_target: Target, admin_client: Client) -> Iterator[Cluster]:
    with cluster_databases(ch_target, admin_client) as build:
        yield build()


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return copy_project(REPO_ROOT, tmp_path / "shop", ("sql", "materialized_views", "migrations"))


def shard_urls(cluster: Cluster) -> str:
    return ",".join(f"chdb://{cluster.target.path}?database={db}" for db in cluster.shards)


def cluster_settings(shop: Path, cluster: Cluster, **extra: Any) -> Settings:
    overrides = {
        "project_dir": str(shop),
        "admin_token": ADMIN_TOKEN,
        "cluster_shard_urls": shard_urls(cluster),
        **extra,
    }
    return load_settings(overrides, environ={})


@contextlib.contextmanager
def node_app(settings: Settings, cluster: Cluster) -> Iterator[TestClient]:  # type: ignore[type-arg]
    """The app of the writer process, on the cluster's read database (`<db>`)."""
    target = dataclasses.replace(cluster.target, database=cluster.merged)
    admin = connect(target)
    store = Store.attach(settings, target, admin)
    try:
        with api_client(settings, store) as client:
            yield client
    finally:
        store.close_read_pools()
        admin.close()


def ndjson(batch: list[dict[str, Any]]) -> bytes:
    return "\n".join(json.dumps(e) for e in batch).encode()


def post(api: TestClient, name: str, body: bytes, wait: bool = True) -> Any:  # type: ignore[type-arg]
    flag = "true" if wait else "false"
    return api.post(f"/v0/events?name={name}&wait={flag}", content=body)


def single_store(cluster: Cluster, batches: list[list[dict[str, Any]]]) -> None:
    """The same batches into the single store, through one writer."""
    writer = EventWriter(cluster.client, cluster.single, views=VIEWS)
    for batch in batches:
        writer.insert(columns(batch))


def placement(cluster: Cluster) -> dict[str, list[int]]:
    """event_id -> the shards holding it (as many entries as stored copies)."""
    where: dict[str, list[int]] = {}
    for shard, db in enumerate(cluster.shards):
        rows = cluster.client.query(f"SELECT event_id, user_id, order_id FROM {db}.events")
        for event_id, user, order in rows.result_rows:
            assert shard_of(routing_key(user, order, event_id), SHARDS) == shard, event_id
            where.setdefault(event_id, []).append(shard)
    return where


def assert_exact(cluster: Cluster, events: list[dict[str, Any]]) -> None:
    """Each event once, on its own shard; every view over the shards equals the single
    store's and the batch recomputation."""
    where = placement(cluster)
    assert sorted(where) == sorted(e["event_id"] for e in events)
    assert all(len(shards) == 1 for shards in where.values())
    for table in TWINS:
        assert same(cluster, table), table
    got = observed(cluster.client, cluster.merged)
    assert got == observed(cluster.client, cluster.single)
    assert got == oracle(events)


def break_shard(cluster: Cluster, shard: int) -> Callable[[], None]:
    """Make every INSERT into `shard`'s landing table fail (a view that throws, as a
    shard whose node errors); returns the repair."""
    db = cluster.shards[shard]
    cluster.client.command(f"CREATE TABLE {db}.down (x UInt8) ENGINE = Null")
    cluster.client.command(
        f"CREATE MATERIALIZED VIEW {db}.down_mv TO {db}.down"
        f" AS SELECT throwIf(1, 'shard {shard} is down') AS x FROM {db}.events_landing"
    )

    def repair() -> None:
        cluster.client.command(f"DROP VIEW {db}.down_mv")
        cluster.client.command(f"DROP TABLE {db}.down")

    return repair


def test_http_ingest_routes_each_event_to_its_shard_exactly(cluster: Cluster, shop: Path) -> None:
    events, batches, catalog = stream(5)
    client = cluster.client
    client.command(  # witness: rows written through items_all_nodes (not items)
        f"CREATE TABLE {cluster.merged}.witness (item_id String)"
        " ENGINE = MergeTree ORDER BY item_id"
    )
    client.command(
        f"CREATE MATERIALIZED VIEW {cluster.merged}.witness_mv TO {cluster.merged}.witness"
        f" AS SELECT item_id FROM {cluster.merged}.items_all_nodes"
    )
    with node_app(cluster_settings(shop, cluster), cluster) as api:
        for batch in batches:  # shuffled, redelivered copies, a replayed batch
            response = post(api, "events", ndjson(batch))
            assert response.status_code == 200, response.text
        items = [dict(zip(ITEM_COLUMNS, row, strict=True)) for row in catalog]
        assert post(api, "items", ndjson(items)).status_code == 200
        status = app_state(api.app.state).ingest.status()
    single_store(cluster, batches)
    client.insert(f"{cluster.single}.items", catalog, column_names=list(ITEM_COLUMNS))

    assert_exact(cluster, events)
    # every shard got its part, in its own batch sequence
    assert len(status["events"]["shard_batches"]) == SHARDS
    assert all(n > 0 for n in status["events"]["shard_batches"])
    # the catalog went through items_all_nodes, and reached the node's items
    witness = client.command(f"SELECT uniqExact(item_id) FROM {cluster.merged}.witness")
    assert int(str(witness)) == len(catalog)
    compare_endpoints(cluster, events, skip_logs=True)


def test_a_failing_shard_acknowledges_nothing_and_the_retry_stores_once(
    cluster: Cluster, shop: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events, batches, _ = stream(6)
    first, second = batches[: len(batches) // 2], batches[len(batches) // 2 :]
    failing = [e for b in second for e in b]
    assert {
        shard_of(routing_key(e["user_id"], e["order_id"], e["event_id"]), SHARDS) for e in failing
    } == set(range(SHARDS))
    with node_app(cluster_settings(shop, cluster), cluster) as api:
        for batch in first:
            assert post(api, "events", ndjson(batch)).status_code == 200
        before = placement(cluster)
        repair = break_shard(cluster, 1)
        response = post(api, "events", ndjson(failing))
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        # the body says "internal error" (5xx details go to the log only: api/errors.py)
        assert any("1 shard(s) (1) did not store" in r.getMessage() for r in caplog.records)
        # the failed shard stored none of it (its writer rolled the batch back)
        assert {e for e, s in placement(cluster).items() if 1 in s} == {
            e for e, s in before.items() if 1 in s
        }
        repair()
        response = post(api, "events", ndjson(failing))  # the client's retry
        assert response.status_code == 200, response.text
    single_store(cluster, [*first, failing])
    assert_exact(cluster, events)


def test_durable_ack_replays_into_the_shards(cluster: Cluster, shop: Path) -> None:
    """ack=durable: a 202 once the batch is in the write-ahead log; a shard failing
    meanwhile delays the INSERT (retried with back-off), which then stores each event
    once."""
    events, batches, _ = stream(7)
    body = [e for b in batches for e in b]
    with node_app(cluster_settings(shop, cluster, ack="durable"), cluster) as api:
        repair = break_shard(cluster, 2)
        response = post(api, "events", ndjson(body), wait=False)
        assert response.status_code == 202, response.text
        service = app_state(api.app.state).ingest
        deadline = time.monotonic() + 20
        while service.status()["events"]["errors"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        repair()
        while service.status()["events"]["unapplied"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    single_store(cluster, [body])
    assert_exact(cluster, events)


def test_durable_batch_a_shard_keeps_refusing_is_quarantined_for_that_shard_only(
    cluster: Cluster, shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An acknowledged batch that one shard refuses on every attempt: the other shards
    stored their part, so only that shard's rows go to quarantine (none lost, none both
    stored and quarantined)."""
    monkeypatch.setattr(service_module, "MAX_LOGGED_ATTEMPTS", 2)
    events, batches, _ = stream(8)
    body = [e for b in batches for e in b]
    owed = [
        e
        for e in body
        if shard_of(routing_key(e["user_id"], e["order_id"], e["event_id"]), SHARDS) == 2
    ]
    with node_app(cluster_settings(shop, cluster, ack="durable"), cluster) as api:
        break_shard(cluster, 2)
        assert post(api, "events", ndjson(body), wait=False).status_code == 202
        service = app_state(api.app.state).ingest
        deadline = time.monotonic() + 20
        while service.status()["events"]["unapplied"] or not service.status()["events"]["errors"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    raw = cluster.client.query(
        f"SELECT raw FROM {cluster.merged}.events_quarantine"
    ).result_columns[0]
    assert sorted(json.loads(r)["event_id"] for r in raw) == sorted(e["event_id"] for e in owed)
    where = placement(cluster)
    stored = {e["event_id"] for e in events} - {e["event_id"] for e in owed}
    assert set(where) == stored and all(s != [2] for s in where.values())


def test_mutations_and_unsharded_writers_are_refused(
    cluster: Cluster, shop: Path, ch_target: Target
) -> None:
    """What would act on one shard or node only is refused, with a reason."""
    settings = cluster_settings(shop, cluster)
    target = dataclasses.replace(cluster.target, database=cluster.merged)
    service = IngestService.for_store(Store(settings, target, cluster.client, None, None))
    try:
        with pytest.raises(ConfigError, match="cluster mode"), service.exclusive("events"):
            pass
    finally:
        service.close()
    # `cluster` set without shard writers: events are not written to `<db>` by anyone
    reader = dataclasses.replace(settings, cluster="c", cluster_shard_urls="")
    service = IngestService.for_store(Store(reader, target, cluster.client, None, None))
    try:
        service.open_writers()  # a read replica starts (serve's lifespan calls this)
        with pytest.raises(ConfigError, match="cluster_shard_urls"):
            service.ingest("events", b'{"event_id": "x", "item_id": "i"}')
    finally:
        service.close()


def test_single_node_path_is_unchanged(cluster: Cluster, shop: Path) -> None:
    """Without shard URLs the service writes `<db>.events_landing` and `items` itself
    (no ShardedWriter, no items_all_nodes), as before cluster mode existed."""
    settings = load_settings({"project_dir": str(shop)}, environ={})
    target = dataclasses.replace(cluster.target, database=cluster.single)
    service = IngestService.for_store(Store(settings, target, cluster.client, None, None))
    try:
        assert service.shards == () and not service.cluster
        service.ingest("events", b'{"event_id": "s1", "item_id": "i", "user_id": "u"}')
        committer = service._committers["events"]
        assert isinstance(committer.writer, EventWriter)
        assert committer.writer.database == cluster.single
        assert "shard_batches" not in service.status()["events"]
    finally:
        service.close()
    assert int(str(cluster.client.command(f"SELECT count() FROM {cluster.single}.events"))) == 1


def test_shard_urls() -> None:
    """The setting's forms: a database per URL, else `<db>_shard`; an embedded URL must
    be the store's data directory; one writer per shard."""
    store = Target(kind="chdb", path="/data/x", database="shop")
    assert shard_targets("", "shop", store) == []
    one, two = shard_targets(
        "chdb:///data/x?database=s0, chdb:///data/x?database=s1", "shop", store
    )
    assert (one.path, one.database, two.database) == ("/data/x", "s0", "s1")
    http = shard_targets("http://w:p@ch-s1r1:8123,https://ch-s2r1", "shop", store)
    assert [(t.host, t.port, t.database) for t in http] == [
        ("ch-s1r1", 8123, "shop_shard"),
        ("ch-s2r1", 8443, "shop_shard"),
    ]
    assert http[0].password == "p"
    assert shard_targets("http://h/other", "shop", store)[0].database == "other"
    with pytest.raises(ConfigError, match="data directory"):
        shard_targets("chdb:///elsewhere?database=s0", "shop", store)
    with pytest.raises(ConfigError, match="one writer per shard"):
        shard_targets("http://h:8123,http://u@h:8123", "shop", store)
