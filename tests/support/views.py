"""The exactness oracle shared by view tests: a plain-Python recomputation of every view
from the distinct events (`oracle`), what a store holds (`observed`), and the migrations
that create the views in a scratch database (`apply_migrations`), optionally with the
opt-in views of materialized_views/optional/ (`apply_optional_views`)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from redpoll.clickhouse.client import Client
from redpoll.materialized import ViewSet, load_views, read_schema_file, read_view
from redpoll.migrations.files import (
    MigrationFile,
    discover,
    render_statements,
    template_variables,
)

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
#: the repository's views (materialized_views/*.sql), in rebuild order
VIEWS = load_views(MIGRATIONS.parent)
#: the opt-in views (materialized_views/optional/*.sql): not installed by the migrations
OPTIONAL = ViewSet(
    tuple(
        read_view(p)
        for p in sorted((MIGRATIONS.parent / "materialized_views/optional").glob("*.sql"))
    )
)
WINDOW_MS = 30 * 86_400_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
# Recent enough that the 90-day trending TTL never fires during a test.
BASE_MS = (int(time.time()) // 3600 - 85 * 24) * HOUR_MS
EVENT_FIELDS = (
    "event_id",
    "ts",
    "user_id",
    "session_id",
    "order_id",
    "item_id",
    "event_type",
    "quantity",
)


# basket_pairs: orders of at most this many distinct items (`max_basket_items` of its file)
BASKET_CAP = int(VIEWS.get("basket_pairs").constants["max_basket_items"])
_CAP_SQL = f"{BASKET_CAP} AS max_basket_items"
# buyer_pairs: groups (buyer x period of `bucket_days`) of at most `max_group_items` items
GROUP_CAP = int(VIEWS.get("buyer_pairs").constants["max_group_items"])
BUCKET_DAYS = int(VIEWS.get("buyer_pairs").constants["bucket_days"])
_GROUP_CAP_SQL = f"{GROUP_CAP} AS max_group_items"
_BUCKET_SQL = f"{BUCKET_DAYS} AS bucket_days"


def apply_migrations(
    client: Client,
    database: str,
    basket_cap: int = BASKET_CAP,
    group_cap: int = GROUP_CAP,
    bucket_days: int = BUCKET_DAYS,
) -> None:
    """Run the repository's migrations with the project's own file splitter and variables
    (`basket_cap`, `group_cap`, `bucket_days`: other constants of basket_pairs and
    buyer_pairs, small so that small tests reach the caps and cross periods)."""
    for migration in discover(MIGRATIONS):
        for statement in render_statements(migration, template_variables(database, "")):
            sql = statement.sql
            sql = sql.replace(_CAP_SQL, f"{basket_cap} AS max_basket_items")
            sql = sql.replace(_GROUP_CAP_SQL, f"{group_cap} AS max_group_items")
            client.command(sql.replace(_BUCKET_SQL, f"{bucket_days} AS bucket_days"))


def apply_optional_views(client: Client, database: str) -> None:
    """Create the opt-in views (materialized_views/optional/) as a project that opts in
    would: their files' statements, after the migrations."""
    for view in OPTIONAL.views:
        text = ";\n".join(o.text for o in view.objects)
        migration = MigrationFile(0, view.name, view.path, text)
        for statement in render_statements(migration, template_variables(database, "")):
            client.command(statement.sql)


def statements_of(paths: list[Path]) -> list[str]:
    """The rendered statements of SQL files, whitespace-normalised, in file order
    (schema files without their recompute block, which is no DDL)."""
    out = []
    for path in paths:
        if path.parent == MIGRATIONS:
            text = path.read_text()
        else:
            text = ";\n".join(o.text for o in read_schema_file(path).objects)
        migration = MigrationFile(0, path.stem, path, text)
        for statement in render_statements(migration, template_variables("db", "")):
            body = " ".join(
                line.split("--")[0]
                for line in statement.sql.splitlines()
                if not line.strip().startswith("--")
            )
            out.append(" ".join(body.split()))
    return out


def oracle(
    distinct: list[dict[str, Any]],
    basket_cap: int = BASKET_CAP,
    group_cap: int = GROUP_CAP,
    bucket_days: int = BUCKET_DAYS,
    optional: bool = False,
) -> dict[str, Any]:
    """Batch recomputation over the distinct events, written to be read, not to be fast
    (`optional`: also the opt-in views, for stores where they are installed)."""
    co_purchase: Counter[tuple[str, str]] = Counter()
    purchases = [e for e in distinct if e["event_type"] == "purchase"]
    for e in purchases:
        for f in purchases:
            if e is f or e["item_id"] == f["item_id"]:
                continue
            if abs(e["ts"] - f["ts"]) > WINDOW_MS:
                continue
            if e["user_id"]:
                together = e["user_id"] == f["user_id"]
            else:
                together = (
                    not f["user_id"] and e["order_id"] != "" and (e["order_id"] == f["order_id"])
                )
            if together:
                co_purchase[(e["item_id"], f["item_id"])] += 1
    orders: dict[str, set[str]] = {}
    for e in purchases:
        if e["order_id"]:
            orders.setdefault(e["order_id"], set()).add(e["item_id"])
    basket_pairs: Counter[tuple[str, str]] = Counter()
    for items in orders.values():
        for b in items:  # the virtual item '' is in every order
            basket_pairs[("", b)] += 1
        if len(items) > basket_cap:
            continue
        for a in items:
            for b in items:
                if a != b:
                    basket_pairs[(a, b)] += 1
    groups: dict[tuple[str, int], set[str]] = {}
    for e in purchases:
        if e["user_id"] or e["order_id"]:
            buyer = "u:" + e["user_id"] if e["user_id"] else "o:" + e["order_id"]
            bucket = e["ts"] // (DAY_MS * bucket_days)
            groups.setdefault((buyer, bucket), set()).add(e["item_id"])
    buyer_pairs: Counter[tuple[str, str]] = Counter()
    for items in groups.values():
        if len(items) <= group_cap:
            for a in items:
                for b in items:
                    if a != b:
                        buyer_pairs[(a, b)] += 1
    trending: Counter[tuple[int, str, str]] = Counter()
    trending_daily: Counter[tuple[int, str, str]] = Counter()
    for e in distinct:
        trending[(e["ts"] // HOUR_MS * 3600, e["item_id"], e["event_type"])] += 1
        trending_daily[(e["ts"] // DAY_MS, e["item_id"], e["event_type"])] += 1
    history = sorted(
        (e["user_id"], e["ts"], e["event_type"], e["item_id"], e["event_id"])
        for e in distinct
        if e["user_id"]
    )
    stats: dict[tuple[str, str, str], list[int]] = {}
    for e in distinct:
        if e["user_id"]:
            key = (e["user_id"], e["item_id"], e["event_type"])
            s = stats.setdefault(key, [0, 0, e["ts"], e["ts"]])
            s[0] += 1
            s[1] += e["quantity"]
            s[2] = min(s[2], e["ts"])
            s[3] = max(s[3], e["ts"])
    # session_history: one row per distinct event with a session (streams without the
    # column have none)
    sessions = sorted(
        (e["session_id"], e["ts"], e["event_type"], e["item_id"], e["event_id"])
        for e in distinct
        if e.get("session_id")
    )
    out: dict[str, Any] = {
        # events_by_time: the (ts, item, type) of every distinct event
        "events_by_time": sorted((e["ts"], e["item_id"], e["event_type"]) for e in distinct),
        "session_history": sessions,
        "basket_pairs": dict(basket_pairs),
        "buyer_pairs": dict(buyer_pairs),
        "trending": dict(trending),
        "trending_daily": dict(trending_daily),
        "user_history": history,
        "user_item_stats": {k: tuple(v) for k, v in stats.items()},
        "events": sorted(e["event_id"] for e in distinct),
    }
    if optional:
        out["co_purchase"] = dict(co_purchase)
    return out


def observed(client: Client, db: str, optional: bool = False) -> dict[str, Any]:
    """What the views hold, in the oracle's shapes (sums, since merges are lazy);
    `optional`: the opt-in views are installed too."""

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in client.query(sql.format(db=db)).result_rows]

    buyer_pairs = rows(
        "SELECT item_id, other_item_id, sum(buyers) AS n FROM {db}.buyer_pairs "
        "GROUP BY item_id, other_item_id HAVING n != 0"
    )
    basket_pairs = rows(
        "SELECT item_id, other_item_id, sum(orders) AS n FROM {db}.basket_pairs "
        "GROUP BY item_id, other_item_id HAVING n != 0"
    )
    trending = rows(
        "SELECT toUnixTimestamp(hour), item_id, event_type, sum(events) AS n "
        "FROM {db}.trending GROUP BY hour, item_id, event_type HAVING n > 0"
    )
    trending_daily = rows(
        "SELECT toUInt32(day), item_id, event_type, sum(events) AS n "
        "FROM {db}.trending_daily GROUP BY day, item_id, event_type HAVING n > 0"
    )
    history = rows(
        "SELECT user_id, toUnixTimestamp64Milli(ts), event_type, item_id, event_id "
        "FROM {db}.user_history"
    )
    stats = rows(
        "SELECT user_id, item_id, event_type, sum(events), sum(quantity), "
        "toUnixTimestamp64Milli(min(first_ts)), toUnixTimestamp64Milli(max(last_ts)) "
        "FROM {db}.user_item_stats GROUP BY user_id, item_id, event_type"
    )
    sessions = rows(
        "SELECT session_id, toUnixTimestamp64Milli(ts), event_type, item_id, event_id "
        "FROM {db}.session_history"
    )
    by_time = rows(
        "SELECT toUnixTimestamp64Milli(ts), item_id, event_type FROM {db}.events_by_time"
    )
    out: dict[str, Any] = {
        "events_by_time": sorted((int(ts), i, t) for ts, i, t in by_time),
        "session_history": sorted((s, int(ts), t, i, e) for s, ts, t, i, e in sessions),
        "buyer_pairs": {(a, b): int(n) for a, b, n in buyer_pairs},
        "basket_pairs": {(a, b): int(n) for a, b, n in basket_pairs},
        "trending": {(int(h), i, t): int(n) for h, i, t, n in trending},
        "trending_daily": {(int(d), i, t): int(n) for d, i, t, n in trending_daily},
        "user_history": sorted((u, int(ts), t, i, e) for u, ts, t, i, e in history),
        "user_item_stats": {
            (u, i, t): (int(n), int(q), int(lo), int(hi)) for u, i, t, n, q, lo, hi in stats
        },
        "events": sorted(r[0] for r in rows("SELECT event_id FROM {db}.events")),
    }
    if optional:
        co_purchase = rows(
            "SELECT item_id, other_item_id, sum(pairs) AS n FROM {db}.co_purchase "
            "GROUP BY item_id, other_item_id HAVING n > 0"
        )
        out["co_purchase"] = {(a, b): int(n) for a, b, n in co_purchase}
    return out
