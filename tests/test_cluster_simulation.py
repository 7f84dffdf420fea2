"""Sharded ingestion is exact: N shards' views, read together, equal one store's views.

No ClickHouse cluster runs here (docs/cluster.md), so the cluster is simulated inside the
session's embedded chDB: each shard is its own database with the repository's migrations
and its own `EventWriter` (own batch sequence and `event_ids` index), exactly what a
shard's writer node holds. `ShardedWriter` (app/redpoll/cluster/routing.py) routes every
batch by the real sharding key. The read side is emulated by a database whose tables are
what the cluster rendering gives a `Distributed` twin (app/redpoll/cluster/ddl.py),
created here as `Merge` tables over the shard databases (a Distributed read is the union
of the shards' local reads), plus the non-sharded tables (the catalog) as every node has
them (tests/support/cluster.py builds it). The endpoints of endpoints/ run unchanged
over that database and over the single store, and their answers must be equal. A
negative control routes by event_id instead and must break the pair views, so the
comparison can fail. One stream by default (~30 s on 2 cores);
`--hypothesis-profile=thorough` runs four.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from redpoll.clickhouse.client import Client, Target
from redpoll.cluster.keys import routing_key, shard_of
from redpoll.cluster.routing import ShardedWriter, split_by_shard
from redpoll.ingest.writer import EventWriter
from tests.support.cluster import (
    LAYOUT,
    SHARDS,
    TWINS,
    Cluster,
    cluster_databases,
    columns,
    compare_endpoints,
    same,
    stream,
)
from tests.support.examples import examples
from tests.support.views import VIEWS, observed, oracle


@pytest.fixture
def databases(ch_target: Target, admin_client: Client) -> Iterator[Callable[[], Cluster]]:
    with cluster_databases(ch_target, admin_client) as build:
        yield build


def load(
    cluster: Cluster,
    seed: int,
    route: Callable[[dict[str, list[Any]]], list[dict[str, list[Any]]]] | None = None,
) -> list[dict[str, Any]]:
    """Feed the stream to the single store and, routed, to the shards; returns the
    distinct events. `route`: a different split (the negative control)."""
    events, batches, catalog = stream(seed)
    client = cluster.client
    single = EventWriter(client, cluster.single, views=VIEWS)
    shards = [EventWriter(client, db, views=VIEWS) for db in cluster.shards]
    sharded = ShardedWriter(shards)
    for batch in batches:
        rows = columns(batch)
        single.insert(rows)
        if route is None:
            sharded.insert(rows)
        else:
            for writer, part in zip(shards, route(rows), strict=True):
                if part["event_id"]:
                    writer.insert(part)
    names = ["item_id", "title", "category", "brand", "price", "available"]
    for db in (cluster.single, cluster.merged):
        client.insert(f"{db}.items", catalog, column_names=names)
    return events


def test_twins_cover_the_views() -> None:
    """The read path reaches every view fed by events (else the comparison below would
    silently skip one)."""
    fed = {t for v in VIEWS.fed_by({"events"}) for t in v.tables}
    assert {t for t in fed if t in LAYOUT.sharded and not t.endswith("_mv")} <= set(TWINS)


@pytest.mark.parametrize("seed", range(1, 1 + examples(1, 4)))
def test_sharded_views_equal_single_store(databases: Callable[[], Cluster], seed: int) -> None:
    cluster = databases()
    events = load(cluster, seed)
    client = cluster.client
    # every shard got events, and every order and buyer landed on one shard only
    counts = [client.command(f"SELECT count() FROM {db}.events") for db in cluster.shards]
    assert all(int(str(n)) > 100 for n in counts), counts
    owners = client.query(
        f"SELECT order_id, uniqExact(_database) FROM {cluster.merged}.basket_items"
        " GROUP BY order_id HAVING uniqExact(_database) > 1"
    ).result_rows
    assert owners == []
    for table in TWINS:
        assert same(cluster, table), table
    got = observed(client, cluster.merged)
    assert got == observed(client, cluster.single)
    assert got == oracle(events)  # and both are the batch recomputation
    compare_endpoints(cluster, events)


def test_routing_by_event_id_breaks_the_pair_views(databases: Callable[[], Cluster]) -> None:
    """Negative control: shards chosen by event_id split orders and buyer groups, so
    basket_pairs and buyer_pairs over the shards lose pairs (trending, additive per
    event, still agrees)."""
    cluster = databases()

    def by_event_id(rows: dict[str, list[Any]]) -> list[dict[str, list[Any]]]:
        keyed = {
            **rows,
            "user_id": [""] * len(rows["event_id"]),
            "order_id": [""] * len(rows["event_id"]),
        }
        parts = split_by_shard(keyed, SHARDS)
        index = {e: i for i, e in enumerate(rows["event_id"])}
        return [
            {name: [rows[name][index[e]] for e in part["event_id"]] for name in rows}
            for part in parts
        ]

    load(cluster, 1, route=by_event_id)
    for table in ("basket_pairs", "buyer_pairs"):
        assert not same(cluster, table)
    assert same(cluster, "trending")


def test_router_keeps_groups_together() -> None:
    """The key in isolation: an order's events (one owner) and a user's events share a
    shard whatever their ids; anonymous, order-less events spread by id."""
    rows = {
        "event_id": [f"x{i}" for i in range(300)],
        "user_id": ["u7"] * 100 + [""] * 200,
        "order_id": [""] * 100 + ["o9"] * 100 + [""] * 100,
        "item_id": ["i"] * 300,
    }
    parts = split_by_shard(rows, SHARDS)
    assert sum(len(p["event_id"]) for p in parts) == 300
    where = {e: s for s, p in enumerate(parts) for e in p["event_id"]}
    assert {where[f"x{i}"] for i in range(100)} == {shard_of(routing_key("u7", "", ""), SHARDS)}
    assert {where[f"x{i}"] for i in range(100, 200)} == {shard_of("o:o9", SHARDS)}
    assert len({where[f"x{i}"] for i in range(200, 300)}) == SHARDS
    filled = split_by_shard({"item_id": ["a", "b"], "event_id": ["", ""]}, 2)
    assert all(e for p in filled for e in p["event_id"])  # ids assigned before routing
