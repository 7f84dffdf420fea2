"""What every evaluation does to its throwaway store (replay.py, next_basket.py,
repetition.py, similar_items.py): load the catalog, feed events through `EventWriter`
(the production writer, so every materialized view updates as in production) and leave
out the views no evaluated query reads (same answers, faster ingest)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from redpoll.clickhouse.views import materialized_views, views_not_feeding
from redpoll.endpoints.compiler import render, validate_select
from redpoll.endpoints.registry import Registry
from redpoll.evaluation.timeline import EPOCH
from redpoll.ingest.writer import EventWriter
from redpoll.store import Store

__all__ = (
    "ITEM_COLUMNS",
    "drop_unread_views",
    "event_writer",
    "insert_events",
    "insert_items",
    "tables_read",
)

ITEM_COLUMNS = ("item_id", "title", "category", "brand", "price", "available", "updated_at")


def insert_items(store: Store, items: Iterable[Mapping[str, Any]]) -> None:
    """The data set's catalog into `items` (`updated_at` in epoch ms)."""
    rows = [
        [*(i[c] for c in ITEM_COLUMNS[:-1]), EPOCH + dt.timedelta(milliseconds=i["updated_at"])]
        for i in items
    ]
    store.admin.insert(f"{store.target.database}.items", rows, column_names=list(ITEM_COLUMNS))


def event_writer(store: Store, project_dir: Path) -> EventWriter:
    return EventWriter(store.admin, store.target.database, views=project_dir)


def insert_events(
    writer: EventWriter,
    events: Sequence[Mapping[str, Any]],
    *,
    chunk: int | None = None,
    attribution: bool = False,
) -> None:
    """Insert data-set events (`ts` in epoch ms) through `writer`: all in one INSERT, or
    in INSERTs of at most `chunk` events (none when there is no event); `attribution`
    adds the `rec_id` and `source` columns (empty when an event has none), which the
    simulated impressions and clicks carry."""
    if chunk is None:
        writer.insert(_columns(events, attribution))
        return
    for start in range(0, len(events), chunk):
        writer.insert(_columns(events[start : start + chunk], attribution))


def _columns(events: Sequence[Mapping[str, Any]], attribution: bool) -> dict[str, list[Any]]:
    columns = {
        "event_id": [e["event_id"] for e in events],
        "ts": [e["ts"] / 1000 for e in events],
        "user_id": [e["user_id"] for e in events],
        "order_id": [e["order_id"] for e in events],
        "item_id": [e["item_id"] for e in events],
        "event_type": [e["event_type"] for e in events],
        "quantity": [e["quantity"] for e in events],
        "price": [e["price"] for e in events],
    }
    if attribution:
        columns["rec_id"] = [e.get("rec_id", "") for e in events]
        columns["source"] = [e.get("source", "") for e in events]
    return columns


def tables_read(registry: Registry, calls: Iterable[tuple[str, Mapping[str, Any]]]) -> set[str]:
    """The tables the endpoints read when rendered with these parameters (branches depend
    on parameters, not on which user or item is asked)."""
    catalog = registry.catalog()
    tables: set[str] = set()
    for name, params in calls:
        rendered = render(registry.snapshot.get(name), params)
        tables |= validate_select(rendered.sql, catalog, set(rendered.parameters))
    return tables


def drop_unread_views(store: Store, tables: Iterable[str]) -> tuple[list[str], list[str]]:
    """Drop the views whose output feeds none of `tables`, then the tables only they
    write (a query that still reached one fails instead of reading nothing); return
    both lists."""
    admin, database = store.admin, store.target.database
    unread, orphans = views_not_feeding(materialized_views(admin, database), tables)
    for view in unread:
        admin.command(f"DROP VIEW {database}.`{view}`")
    for table in orphans:
        admin.command(f"DROP TABLE {database}.`{table}`")
    return unread, orphans
