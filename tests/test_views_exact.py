"""The real-time views are exact: after any stream of inserts they equal a Python oracle.

Random event streams (few users/items/orders, purchases with and without user, other
event types, timestamps spread around the 30-day window) arrive shuffled, split into
random batches, with duplicated events and replayed batches, a writer restart in
between, under random session settings that would split blocks. Every view of
materialized_views/ fed by `events` (basket_pairs, buyer_pairs, trending, trending_daily,
user_history and user_item_stats) and the opt-in co_purchase
(materialized_views/optional/) must equal the oracle computed from the distinct events by
nested loops (tests/support/views.py), and so must a `backfill` of each view afterwards;
items_latest (fed by `items`) must equal `items FINAL`.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import random
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redpoll.clickhouse.client import Client, Target, connect
from redpoll.ingest.writer import EventWriter, backfill
from redpoll.materialized import ViewSet, load_views, schema_files
from redpoll.migrations.files import (
    discover,
)
from redpoll.migrations.generate import created_objects
from tests.support.examples import examples
from tests.support.views import (
    BASE_MS,
    BASKET_CAP,
    BUCKET_DAYS,
    DAY_MS,
    EVENT_FIELDS,
    GROUP_CAP,
    HOUR_MS,
    MIGRATIONS,
    OPTIONAL,
    VIEWS,
    apply_migrations,
    apply_optional_views,
    observed,
    oracle,
    statements_of,
)

_CREATED = re.compile(r"^CREATE (?:TABLE|MATERIALIZED VIEW|VIEW) IF NOT EXISTS db\.(\w+)")


def test_readable_definitions_mirror_the_migrations() -> None:
    """sql/ and materialized_views/ (what analysts read) say exactly what migrations do:
    the CREATEs of the objects that exist after every migration (a later DROP removes
    one, e.g. 0009 drops co_purchase, now materialized_views/optional/)."""
    existing = set(created_objects(discover(MIGRATIONS)))
    migrated = [
        s
        for s in statements_of([m.path for m in discover(MIGRATIONS)])
        if (m := _CREATED.match(s)) and m.group(1) in existing
    ]
    declared = statements_of([f.path for f in schema_files(MIGRATIONS.parent)])
    assert sorted(migrated) == sorted(declared)
    assert not existing & {t for v in OPTIONAL.views for t in v.tables}


@functools.cache
def views_with(basket_cap: int, group_cap: int, bucket_days: int) -> ViewSet:
    """The repository's view files with other constants (what `apply_migrations` installs
    with them), so that the writer's repair and `backfill` use the same ones."""
    if (basket_cap, group_cap, bucket_days) == (BASKET_CAP, GROUP_CAP, BUCKET_DAYS):
        return VIEWS
    root = Path(tempfile.mkdtemp(prefix="views-"))
    (root / "materialized_views").mkdir()
    for view in VIEWS.views:
        text = view.path.read_text()
        text = text.replace(
            f"{BASKET_CAP} AS max_basket_items", f"{basket_cap} AS max_basket_items"
        )
        text = text.replace(f"{GROUP_CAP} AS max_group_items", f"{group_cap} AS max_group_items")
        text = text.replace(f"{BUCKET_DAYS} AS bucket_days", f"{bucket_days} AS bucket_days")
        (root / "materialized_views" / view.path.name).write_text(text)
    return load_views(root)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """Distinct events, and the batches they arrive in: shuffled (so late events come
    after later ones), with duplicated events and whole replayed batches."""
    n = draw(st.integers(1, 40))
    events = [
        {
            "event_id": f"e{i}",
            "ts": BASE_MS
            + draw(st.integers(0, 70 * 24)) * HOUR_MS // 2
            + draw(st.integers(0, 59)) * 60_000,
            "user_id": draw(st.sampled_from(["", "", "u1", "u2", "u3"])),
            "session_id": draw(st.sampled_from(["", "s1", "s2"])),
            "order_id": draw(st.sampled_from(["", "o1", "o2", "o3"])),
            "item_id": draw(st.sampled_from(["a", "b", "c", "d", "e"])),
            "event_type": draw(st.sampled_from(["purchase", "purchase", "view", "cart"])),
            "quantity": draw(st.integers(1, 5)),
        }
        for i in range(n)
    ]
    arrivals = list(events)
    for _ in range(draw(st.integers(0, 8))):  # redelivered copies
        arrivals.append(draw(st.sampled_from(events)))
    arrivals = draw(st.permutations(arrivals))
    cuts = sorted(draw(st.lists(st.integers(0, len(arrivals)), max_size=6)))
    bounds = [0, *cuts, len(arrivals)]
    batches = [arrivals[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    if batches and draw(st.booleans()):  # a whole batch replayed later (client retry)
        batches.append(draw(st.sampled_from(batches)))
    return events, batches


# Session settings that would split an INSERT into several blocks if the writer let them.
_block_settings = st.sampled_from(
    [
        {},
        {"max_block_size": 1},
        {"max_insert_block_size": 2, "min_insert_block_size_rows": 1},
        {"min_insert_block_size_rows": 3, "min_insert_block_size_bytes": 1, "max_threads": 4},
    ]
)


def to_columns(batch: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """A batch as the writer's columnar input (ts as aware datetimes; no session_id: '')."""
    columns: dict[str, list[Any]] = {
        name: [e.get(name, "") if name == "session_id" else e[name] for e in batch]
        for name in EVENT_FIELDS
    }
    columns["ts"] = [dt.datetime.fromtimestamp(ms / 1000, dt.UTC) for ms in columns["ts"]]
    return columns


@pytest.fixture
def fresh_db(ch_target: Target, admin_client: Client) -> Iterator[Any]:
    """A factory of fresh databases with the view migrations applied (one per example)."""
    created: list[str] = []

    def make(
        basket_cap: int = BASKET_CAP,
        group_cap: int = GROUP_CAP,
        bucket_days: int = BUCKET_DAYS,
        optional: bool = False,
    ) -> str:
        db = f"{ch_target.database}_{uuid.uuid4().hex[:8]}"
        admin_client.command(f"CREATE DATABASE {db}")
        created.append(db)
        apply_migrations(admin_client, db, basket_cap, group_cap, bucket_days)
        if optional:
            apply_optional_views(admin_client, db)
        return db

    yield make
    for db in created:
        admin_client.command(f"DROP DATABASE IF EXISTS {db}")


@settings(
    max_examples=examples(20, 60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    stream=streams(),
    session=_block_settings,
    tuples=st.booleans(),
    basket_cap=st.sampled_from([BASKET_CAP, 2, 3]),
    group_cap=st.sampled_from([GROUP_CAP, 2, 3]),
    bucket_days=st.sampled_from([BUCKET_DAYS, 1, 7]),
    restart=st.integers(0, 8),
)
def test_views_equal_oracle(
    ch_target: Target,
    fresh_db: Any,
    stream: Any,
    session: dict[str, Any],
    tuples: bool,
    basket_cap: int,
    group_cap: int,
    bucket_days: int,
    restart: int,
) -> None:
    """basket_cap, group_cap: the basket_pairs and buyer_pairs caps, also small so that
    orders and buyer groups (up to 5 items here) grow past them, within a batch and across
    batches; bucket_days: buyer_pairs' period, also short so that groups split; restart:
    the writer is replaced (a process restart) before that batch. The opt-in co_purchase
    is installed too, as a project that opts in has it."""
    events, batches = stream
    db = fresh_db(basket_cap, group_cap, bucket_days, optional=True)
    views = views_with(basket_cap, group_cap, bucket_days)
    client = connect(ch_target, settings=session)
    try:
        writer = EventWriter(client, db, views=views)
        for n, batch in enumerate(batches):
            if n == restart:
                writer = EventWriter(client, db, views=views)  # reads the last batch back
            if tuples:  # list-of-tuples input in the landing table's column order
                writer.insert(
                    [
                        (
                            e["event_id"],
                            dt.datetime.fromtimestamp(e["ts"] / 1000, dt.UTC),
                            e["user_id"],
                            e["session_id"],
                            e["item_id"],
                            e["event_type"],
                            e["order_id"],
                            e["quantity"],
                        )
                        for e in batch
                    ]
                )
            else:
                writer.insert(to_columns(batch))
        expected = oracle(events, basket_cap, group_cap, bucket_days, optional=True)
        assert observed(client, db, optional=True) == expected
        for view in views.fed_by({"events"}):
            backfill(client, db, view.name, views)
        backfill(client, db, "co_purchase", OPTIONAL)
        assert observed(client, db, optional=True) == expected
    finally:
        client.close()


def test_every_view_file_is_covered_by_the_oracle() -> None:
    """A new file of materialized_views/ (or optional/) must be added to the oracle."""
    fed = {v.name for v in VIEWS.fed_by({"events"})} | set(OPTIONAL.names)
    checked = set(oracle([], optional=True)) | {"user_history"}  # its file: both tables
    assert fed <= checked, fed - checked
    assert set(VIEWS.names) - fed == {"items_latest"}  # test_items_latest_equals_final


def test_writer_recovers_batch_and_ignores_replays(
    ch_target: Target, fresh_db: Any, admin_client: Client
) -> None:
    db = fresh_db()
    ts = BASE_MS / 1000
    rows = {
        "event_id": ["a", "b"],
        "ts": [ts, ts + 60],
        "user_id": ["u", "u"],
        "item_id": ["x", "y"],
        "event_type": ["purchase", "purchase"],
    }
    first = EventWriter(admin_client, db, views=VIEWS)
    assert first.insert(rows, insert_deduplication_token="t1").batch == 1
    restarted = EventWriter(admin_client, db, views=VIEWS)  # e.g. after a crash
    assert restarted.last_batch == 1
    assert restarted.insert(rows).batch == 2  # replay after crash: counts unchanged
    assert restarted.insert({"item_id": ["z"], "event_type": ["view"]}).rows_sent == 1
    got = observed(admin_client, db)
    assert got["buyer_pairs"] == {("x", "y"): 1, ("y", "x"): 1}
    assert len(got["events"]) == 3  # generated event_id for the third event


def test_split_block_breaks_exactness_without_the_writer(
    ch_target: Target, fresh_db: Any, admin_client: Client
) -> None:
    """Negative control: one batch arriving as two blocks loses the pair across blocks,
    which is why the writer forces one block; the property test would catch a regression."""
    db = fresh_db()
    context = admin_client.create_insert_context(
        f"{db}.events_landing",
        column_names=["event_id", "ts", "user_id", "item_id", "event_type", "batch"],
        column_type_names=[
            "String",
            "DateTime64(3, 'UTC')",
            "String",
            "String",
            "LowCardinality(String)",
            "UInt64",
        ],
        column_oriented=True,
        settings={"min_insert_block_size_rows": 1, "min_insert_block_size_bytes": 1},
    )
    context.req_block_size = 1
    context.data = [
        ["a", "b"],
        [BASE_MS, BASE_MS],
        ["u", "u"],
        ["x", "y"],
        ["purchase", "purchase"],
        [1, 1],
    ]
    admin_client.data_insert(context)
    assert observed(admin_client, db)["buyer_pairs"] == {}
    assert oracle(
        [
            {
                "event_id": "a",
                "ts": BASE_MS,
                "user_id": "u",
                "order_id": "",
                "item_id": "x",
                "event_type": "purchase",
                "quantity": 0,
            },
            {
                "event_id": "b",
                "ts": BASE_MS,
                "user_id": "u",
                "order_id": "",
                "item_id": "y",
                "event_type": "purchase",
                "quantity": 0,
            },
        ]
    )["buyer_pairs"] == {("x", "y"): 1, ("y", "x"): 1}


def test_cut_short_insert_is_rolled_back_and_repaired_from_events(
    ch_target: Target, fresh_db: Any, admin_client: Client, tmp_path: Path
) -> None:
    """A journal left behind (the process died mid-INSERT) makes the next writer remove
    that batch from `events` (it was never acknowledged) and rebuild every derived table,
    so views missing part of a batch become exact again and a retry stores it once."""
    rnd = random.Random(7)
    events = [
        {
            "event_id": f"e{i}",
            "ts": BASE_MS + rnd.randrange(40 * 86_400_000),
            "user_id": rnd.choice(["", "u1", "u2"]),
            "order_id": rnd.choice(["o1", "o2"]),
            "item_id": f"i{rnd.randrange(6)}",
            "event_type": rnd.choice(["purchase", "view"]),
            "quantity": 1,
        }
        for i in range(60)
    ]
    db = fresh_db()
    journal = tmp_path / "events.inflight"
    writer = EventWriter(admin_client, db, journal=journal, views=VIEWS)
    writer.insert(to_columns(events[:30]))
    writer.insert(to_columns(events[30:]))
    assert not journal.exists()
    # Simulate a crash after `events` got the last batch but before other views did.
    admin_client.command(f"TRUNCATE TABLE {db}.buyer_pairs")
    admin_client.command(f"DELETE FROM {db}.trending WHERE item_id = 'i1'")
    admin_client.command(f"TRUNCATE TABLE {db}.event_ids")
    journal.write_text('{"batch": 2}')
    assert observed(admin_client, db) != oracle(events[:30])
    writer = EventWriter(admin_client, db, journal=journal, views=VIEWS)
    assert not journal.exists()
    assert observed(admin_client, db) == oracle(events[:30])
    writer.insert(to_columns(events[25:]))  # the client's retry, overlapping batch 1
    assert observed(admin_client, db) == oracle(events)
    writer.insert(to_columns(events[:10]))  # replays still change nothing after repair
    assert observed(admin_client, db) == oracle(events)
    journal.write_text("not json")  # unreadable: nothing is removed, views are rebuilt
    admin_client.command(f"TRUNCATE TABLE {db}.buyer_pairs")
    EventWriter(admin_client, db, journal=journal, views=VIEWS)
    assert not journal.exists()
    assert observed(admin_client, db) == oracle(events)


@st.composite
def item_versions(draw: st.DrawFn) -> list[list[dict[str, Any]]]:
    """Catalog rows inserted in batches: few items, few distinct updated_at (ties), versions
    arriving out of order."""
    rows = [
        {
            "item_id": draw(st.sampled_from(["a", "b", "c"])),
            "title": draw(st.sampled_from(["Red mug", "Blue mug", "T-light holder", "x"])),
            "category": draw(st.sampled_from(["MUG", "LAMP"])),
            "price": float(draw(st.integers(1, 3))),
            "available": draw(st.booleans()),
            "updated_at": BASE_MS + draw(st.integers(0, 3)) * 60_000,
        }
        for _ in range(draw(st.integers(1, 12)))
    ]
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=4)))
    bounds = [0, *cuts, len(rows)]
    return [rows[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def latest_oracle(batches: list[list[dict[str, Any]]]) -> dict[str, tuple[Any, ...]]:
    """Per item: the row with the greatest updated_at, the last inserted among equals."""
    latest: dict[str, dict[str, Any]] = {}
    for row in (r for batch in batches for r in batch):
        current = latest.get(row["item_id"])
        if current is None or row["updated_at"] >= current["updated_at"]:
            latest[row["item_id"]] = row
    out = {}
    for item, r in latest.items():
        words = []
        for w in "".join(ch if ch.isalpha() else " " for ch in r["title"].upper()).split():
            if len(w) >= 3 and w not in words:
                words.append(w)
        out[item] = (
            r["title"],
            r["category"],
            r["price"],
            r["available"],
            r["updated_at"],
            sorted(words),
        )
    return out


@settings(
    max_examples=examples(15, 40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=item_versions())
def test_items_latest_equals_final(
    ch_target: Target, fresh_db: Any, admin_client: Client, batches: list[list[dict[str, Any]]]
) -> None:
    """items_latest (Join table) holds what `items FINAL` returns, and so does a rebuild."""
    db = fresh_db()
    columns = ["item_id", "title", "category", "brand", "price", "available", "updated_at"]
    for batch in batches:
        admin_client.insert(
            f"{db}.items",
            [
                [
                    r["item_id"],
                    r["title"],
                    r["category"],
                    "",
                    r["price"],
                    r["available"],
                    dt.datetime.fromtimestamp(r["updated_at"] / 1000, dt.UTC),
                ]
                for r in batch
            ],
            column_names=columns,
        )

    def read(sql: str) -> dict[str, tuple[Any, ...]]:
        return {
            r[0]: (r[1], r[2], float(r[3]), bool(r[4]), int(r[5]), sorted(r[6]))
            for r in admin_client.query(sql.format(db=db)).result_rows
        }

    latest = (
        "SELECT item_id, title, category, price, available, toUnixTimestamp64Milli(updated_at),"
        " words FROM {db}.items_latest"
    )
    expected = latest_oracle(batches)
    assert read(latest) == expected
    final = read(
        "SELECT item_id, title, category, price, available, toUnixTimestamp64Milli(updated_at),"
        " arrayDistinct(arrayFilter(w -> length(w) >= 3, splitByNonAlpha(upper(title))))"
        " FROM {db}.items FINAL"
    )
    assert final == expected
    backfill(admin_client, db, "items_latest", VIEWS)  # its file's recompute block
    assert read(latest) == expected


def tables_snapshot(client: Client, db: str, tables: tuple[str, ...]) -> dict[str, list[Any]]:
    """Every row of `tables`, sorted, after merging parts (OPTIMIZE FINAL collapses
    Summing/Aggregating/Replacing rows by key), so equal contents compare equal
    whatever the parts they were written in."""
    out = {}
    for table in tables:
        engine = client.command(
            "SELECT engine FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            parameters={"db": db, "t": table},
        )
        if "MergeTree" in str(engine):
            client.command(f"OPTIMIZE TABLE {db}.{table} FINAL")
        rows = client.query(f"SELECT * FROM {db}.{table}").result_rows
        out[table] = sorted((tuple(map(repr, r)) for r in rows), key=repr)
    return out


def random_events(rnd: random.Random, n: int) -> list[dict[str, Any]]:
    """Few users, orders and items, so every view gets pairs, repeats and sums."""
    return [
        {
            "event_id": f"e{i}",
            "ts": BASE_MS + rnd.randrange(40 * DAY_MS),
            "user_id": rnd.choice(["", "u1", "u2", "u3"]),
            "session_id": rnd.choice(["", "s1", "s2"]),
            "order_id": rnd.choice(["", "o1", "o2", "o3", "o4"]),
            "item_id": f"i{rnd.randrange(8)}",
            "event_type": rnd.choice(["purchase", "purchase", "view", "cart"]),
            "quantity": rnd.randrange(1, 4),
        }
        for i in range(n)
    ]


def random_batches(rnd: random.Random, rows: list[Any]) -> list[list[Any]]:
    cuts = sorted(rnd.sample(range(1, len(rows)), min(len(rows) - 1, rnd.randrange(1, 6))))
    return [rows[a:b] for a, b in itertools.pairwise([0, *cuts, len(rows)])]


@pytest.mark.parametrize("view", VIEWS.names)
def test_backfill_of_each_view_equals_its_incremental_contents(
    fresh_db: Any, admin_client: Client, view: str
) -> None:
    """For every file of materialized_views/: random events through the writer (random
    batches, redelivered copies) and catalog rows in random batches, then the view's
    tables are snapshotted, rebuilt by `backfill` and must be equal."""
    rnd = random.Random(view)
    db = fresh_db()
    events = random_events(rnd, 80)
    arrivals = events + rnd.sample(events, 10)
    rnd.shuffle(arrivals)
    writer = EventWriter(admin_client, db, views=VIEWS)
    for batch in random_batches(rnd, arrivals):
        writer.insert(to_columns(batch))
    items = [
        [
            f"i{rnd.randrange(8)}",
            rnd.choice(["Red mug", "Blue mug", "T-light holder"]),
            rnd.choice(["MUG", "LAMP"]),
            "",
            float(rnd.randrange(1, 4)),
            rnd.random() < 0.8,
            dt.datetime.fromtimestamp((BASE_MS + rnd.randrange(4) * 60_000) / 1000, dt.UTC),
        ]
        for _ in range(20)
    ]
    columns = ["item_id", "title", "category", "brand", "price", "available", "updated_at"]
    for batch in random_batches(rnd, items):
        admin_client.insert(f"{db}.items", batch, column_names=columns)
    tables = VIEWS.get(view).tables
    live = observed(admin_client, db), tables_snapshot(admin_client, db, tables)
    assert any(live[1].values()), f"{view}: the random data left its tables empty"
    assert writer.rebuild_views([view]) == [view]
    assert (observed(admin_client, db), tables_snapshot(admin_client, db, tables)) == live


def test_repair_skips_a_view_file_whose_migration_is_not_applied_yet(
    fresh_db: Any, admin_client: Client, tmp_path: Path
) -> None:
    """An analyst's new file, not migrated yet, does not block the crash repair."""
    shutil.copytree(MIGRATIONS.parent / "materialized_views", tmp_path / "materialized_views")
    (tmp_path / "materialized_views" / "hits.sql").write_text(
        "CREATE TABLE {{ database }}.hits (item_id String, n UInt64)\n"
        "ENGINE = SummingMergeTree(n) ORDER BY item_id;\n"
        "CREATE MATERIALIZED VIEW {{ database }}.hits_mv TO {{ database }}.hits AS\n"
        "SELECT item_id, count() AS n FROM {{ database }}.events GROUP BY item_id;\n"
    )
    db = fresh_db()
    events = random_events(random.Random(3), 30)
    writer = EventWriter(admin_client, db, views=tmp_path)
    assert "hits" in writer.views.names
    writer.insert(to_columns(events))
    admin_client.command(f"TRUNCATE TABLE {db}.buyer_pairs")
    writer.repair()
    assert observed(admin_client, db) == oracle(events)
