"""A ClickHouse cluster simulated in the session's embedded chDB (tests of cluster mode).

No ClickHouse cluster runs here (docs/cluster.md). Each shard is its own database with
the repository's migrations in single-node form: exactly what a shard's writer node holds
in `<db>_shard`. The read side is a database (`merged`) holding what every node has
outside the shards (the catalog, request logs, ...) plus, for each table the cluster
rendering gives a `Distributed` twin (app/redpoll/cluster/ddl.py), a `Merge` table over
the shard databases (a Distributed read is the union of the shards' local reads).
`items_all_nodes` (a `Distributed` table over every node, through which the catalog is
written) is emulated for this one node by a Null table whose view copies into `items`.
Used by tests/test_cluster_simulation.py (writers fed directly) and
tests/test_cluster_ingest.py (the real ingest service and HTTP app).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import random
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from redpoll.clickhouse.client import Client, Target, connect
from redpoll.cluster.ddl import layout_for, render_cluster_statements
from redpoll.endpoints.executor import execute, prepare
from redpoll.endpoints.loader import catalog_from_client
from redpoll.endpoints.model import Endpoint
from redpoll.endpoints.registry import Registry
from redpoll.migrations.files import discover, render_statements, template_variables
from redpoll.migrations.generate import created_objects
from tests.support.paths import REPO_ROOT
from tests.support.views import EVENT_FIELDS, MIGRATIONS, apply_migrations

SHARDS = 3
HOUR_MS = 3_600_000
#: recent whole hour: trending's 90-day TTL applies on insert, endpoints take `now`
NOW_MS = (int(dt.datetime.now(dt.UTC).timestamp()) // 3600 - 1) * HOUR_MS
LAYOUT = layout_for(discover(MIGRATIONS), "db", "c")
_TWIN = re.compile(r"CREATE TABLE IF NOT EXISTS db\.(\w+) ON CLUSTER `c` AS db_shard\.\w+\n")
#: the tables a cluster reads through a Distributed twin (from the real cluster rendering)
TWINS = sorted(
    m.group(1)
    for migration in discover(MIGRATIONS)
    for s in render_cluster_statements(migration, LAYOUT)
    if (m := _TWIN.match(s.sql)) and m.group(1) in created_objects(discover(MIGRATIONS))
)
_OBJECT = re.compile(
    r"^(?:CREATE|DROP) (?:TABLE|MATERIALIZED VIEW|VIEW)(?: IF (?:NOT )?EXISTS)? \w+\.(\w+)"
)


def stream(
    seed: int,
) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]], list[tuple[Any, ...]]]:
    """Distinct events, the batches they arrive in (shuffled, ~15% redelivered copies,
    random sizes) and a catalog. Orders belong to one user or to a guest (the ADR's
    assumption); two orders are larger than basket_pairs' cap of 50 items; some
    purchases have a user and no order, some neither; views and carts come from users
    and from anonymous sessions."""
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(40)]
    items = [f"i{i}" for i in range(70)]
    events: list[dict[str, Any]] = []

    def add(**fields: Any) -> None:
        events.append(
            {
                "event_id": f"e{seed}-{len(events)}",
                "user_id": "",
                "order_id": "",
                "session_id": "",
                "quantity": rng.randint(1, 4),
                **fields,
            }
        )

    for n in range(140):
        owner = rng.choice(["", *users, *users])  # about 1 in 5 orders is a guest's
        when = NOW_MS - rng.randint(0, 60 * 24) * HOUR_MS
        size = 55 if n in (3, 77) else rng.randint(1, 8)
        for item in rng.sample(items, size):
            add(
                ts=when + rng.randint(0, 600) * 1000,
                user_id=owner,
                order_id=f"o{n}",
                item_id=item,
                event_type="purchase",
            )
    for _ in range(120):  # purchases with a user and no order, or with neither
        add(
            ts=NOW_MS - rng.randint(0, 60 * 24) * HOUR_MS,
            user_id=rng.choice(["", *users]),
            item_id=rng.choice(items),
            event_type="purchase",
        )
    for _ in range(500):
        user = rng.choice(["", "", *users])
        add(
            ts=NOW_MS - rng.randint(0, 10 * 24 * 60) * 60_000,
            user_id=user,
            session_id=f"s{rng.randint(0, 60)}" if rng.random() < 0.7 else "",
            item_id=rng.choice(items),
            event_type=rng.choice(["view", "view", "cart"]),
        )
    arrivals = events + [rng.choice(events) for _ in range(len(events) // 7)]
    rng.shuffle(arrivals)
    batches: list[list[dict[str, Any]]] = []
    while arrivals:
        size = rng.choice([1, 3, 20, 90, 250])
        batches.append(arrivals[:size])
        arrivals = arrivals[size:]
    batches.append(rng.choice(batches))  # a whole batch replayed (client retry)
    catalog = [
        (
            item,
            f"Item {item} {rng.choice(['MUG', 'LAMP', 'CANDLE'])}",
            f"c{i % 4}",
            "b",
            float(i),
            i % 11 != 5,
        )
        for i, item in enumerate(items)
    ]
    return events, batches, catalog


def columns(batch: list[dict[str, Any]]) -> dict[str, list[Any]]:
    out = {name: [e[name] for e in batch] for name in EVENT_FIELDS}
    out["ts"] = [dt.datetime.fromtimestamp(ms / 1000, dt.UTC) for ms in out["ts"]]
    return out


@dataclasses.dataclass
class Cluster:
    target: Target
    client: Client
    single: str
    shards: list[str]
    merged: str  # the read database: Merge tables over the shards + the catalog


@contextlib.contextmanager
def cluster_databases(ch_target: Target, admin_client: Client) -> Iterator[Callable[[], Cluster]]:
    """Builds simulated clusters on demand (`build_cluster`) and drops every database
    they created on exit: the fixtures of the cluster tests."""
    created: list[str] = []
    try:
        yield lambda: build_cluster(ch_target, admin_client, created)
    finally:
        for db in created:
            admin_client.command(f"DROP DATABASE IF EXISTS {db}")


def build_cluster(ch_target: Target, admin_client: Client, created: list[str]) -> Cluster:
    """A single store, SHARDS shard databases and the read database, in new databases
    (appended to `created`, which the caller drops)."""
    tag = uuid.uuid4().hex[:8]
    single, merged = f"single_{tag}", f"merged_{tag}"
    shards = [f"shard{i}_{tag}" for i in range(SHARDS)]
    for db in [single, *shards, merged]:
        admin_client.command(f"CREATE DATABASE {db}")
        created.append(db)
    for db in [single, *shards]:
        apply_migrations(admin_client, db)
    for migration in discover(MIGRATIONS):  # what every node has outside the shards
        for statement in render_statements(migration, template_variables(merged, "")):
            code = "\n".join(
                line for line in statement.sql.splitlines() if not line.startswith("--")
            ).strip()
            found = _OBJECT.match(code)
            if found is None or found.group(1) not in LAYOUT.sharded:
                admin_client.command(statement.sql)
    shard_dbs = "|".join(shards)
    for table in TWINS:  # the Distributed twins, emulated
        admin_client.command(
            f"CREATE TABLE {merged}.{table} AS {shards[0]}.{table}"
            f" ENGINE = Merge(REGEXP('^({shard_dbs})$'), '^{table}$')"
        )
    for table in sorted(LAYOUT.fanout):  # `<table>_all_nodes`, for this one node
        admin_client.command(
            f"CREATE TABLE {merged}.{table}_all_nodes AS {merged}.{table} ENGINE = Null"
        )
        admin_client.command(
            f"CREATE MATERIALIZED VIEW {merged}.{table}_all_nodes_mv TO {merged}.{table}"
            f" AS SELECT * FROM {merged}.{table}_all_nodes"
        )
    return Cluster(ch_target, admin_client, single, shards, merged)


def content(client: Client, db: str, table: str, like: str) -> list[tuple[Any, ...]]:
    """A table's content independent of how its rows are split and merged: summed or
    aggregated by key for Summing/AggregatingMergeTree, without the writer's `batch`
    numbers (each shard numbers its own), as a sorted list. `like`: the database whose
    table of that name has the engine (the read database's is a Merge table)."""
    [(engine,)] = client.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": like, "t": table},
    ).result_rows
    cols = client.query(
        "SELECT name, type FROM system.columns WHERE database = {db:String}"
        " AND table = {t:String} ORDER BY position",
        parameters={"db": db, "t": table},
    ).result_rows
    summed = re.match(r"\w*SummingMergeTree\(([^)]*)\)", engine)
    values = {c.strip() for c in summed.group(1).split(",")} if summed else set()
    select, group = [], []
    for name, type_ in cols:
        if name == "batch":
            continue
        if name in values:
            select.append(f"sum({name}) AS {name}")
        elif type_.startswith("SimpleAggregateFunction("):
            select.append(f"{type_.split('(')[1].split(',')[0]}({name})")
        else:
            select.append(name)
            group.append(name)
    sql = f"SELECT {', '.join(select)} FROM {db}.{table}"
    if len(group) < len(select):
        sql += f" GROUP BY {', '.join(group)}"
        if values:
            sql += " HAVING " + " OR ".join(f"{v} != 0" for v in sorted(values))
    return sorted(tuple(r) for r in client.query(sql).result_rows)


def same(cluster: Cluster, table: str) -> bool:
    """`table` read over the shards holds what the single store's does."""
    merged = content(cluster.client, cluster.merged, table, cluster.single)
    return merged == content(cluster.client, cluster.single, table, cluster.single)


def _params(endpoint: Endpoint, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Requests for `endpoint`: a few values for the parameters the repository's
    endpoints take; `now` fixed so that both runs see the same clock."""
    names = {p.name for p in endpoint.params}
    now = dt.datetime.fromtimestamp(NOW_MS / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    base: dict[str, Any] = {"rec_id": "r"} if "rec_id" in names else {}
    if "now" in names:
        base["now"] = now
    if "limit" in names:
        base["limit"] = 50
    purchases = [e for e in events if e["event_type"] == "purchase"]
    cases = [dict(base)]
    if "item_id" in names:
        cases = [{**base, "item_id": purchases[k]["item_id"]} for k in (0, 7, 99)]
        if "variant" in names:
            cases.append({**cases[0], "variant": "b"})
    if "user_id" in names:
        users = sorted({e["user_id"] for e in events if e["user_id"]})
        cases = [{**c, "user_id": u} for c in cases for u in users[:3]]
    if "session_id" in names:
        sessions = sorted({e["session_id"] for e in events if e["session_id"]})
        cases = [{**c, "session_id": s} for c in cases for s in sessions[:2]]
    required = {p.name for p in endpoint.params if p.required}
    return [c for c in cases if required <= set(c)]


#: request logs: written by the app that served the requests, not derived from events
LOG_TABLES = ("datasources_ops_log", "pipe_stats")


def compare_endpoints(
    cluster: Cluster, events: list[dict[str, Any]], *, skip_logs: bool = False
) -> None:
    """Every endpoint of endpoints/, as it is in the tree, over the single store and
    over the shards' read database: the same rows in the same order. `skip_logs`: leave
    out endpoints over the request logs (the read database's app logged requests the
    single store never saw)."""
    skip = {
        path.stem
        for path in (REPO_ROOT / "endpoints").glob("*.sql")
        if skip_logs and any(table in path.read_text() for table in LOG_TABLES)
    }
    clients = {
        db: connect(dataclasses.replace(cluster.target, database=db), readonly=True)
        for db in (cluster.single, cluster.merged)
    }
    registry = Registry(
        REPO_ROOT / "endpoints", catalog_from_client(cluster.client, cluster.single)
    )
    snapshot = registry.reload()
    assert snapshot.endpoints, snapshot.errors
    ran, answered = 0, set()
    try:
        for endpoint in snapshot.endpoints.values():
            if endpoint.name in skip:
                continue
            for params in _params(endpoint, events):
                answers = []
                for client in clients.values():
                    data = json.loads(execute(client, prepare(endpoint, params)))["data"]
                    answers.append([{k: v for k, v in r.items() if k != "rec_id"} for r in data])
                assert answers[0] == answers[1], (endpoint.name, params)
                ran += 1
                if answers[0]:
                    answered.add(endpoint.name)
    finally:
        for client in clients.values():
            client.close()
    assert ran >= 10
    # the recommendation endpoints answered with rows, not two empty lists
    assert {"also_bought", "for_user", "popular", "recently_viewed", "trending"} <= answered
