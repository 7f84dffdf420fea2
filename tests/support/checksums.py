"""Helpers of the security tests (tests/security): a fingerprint of the stored data
(row count and checksum of every data source and every materialized view's target
table), synthetic data to load before fuzzing, and the check that an answer leaks no
stack trace and no SQL."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from redpoll.testing import AdminSQL

#: Tables checked whatever the views are: the data sources (sql/events.sql, sql/items.sql).
DATA_SOURCES = ("events", "items")

#: Engines whose rows background merges combine: read with FINAL so that a merge between
#: two fingerprints does not look like a change (materialized_views/*.sql).
MERGING_ENGINES = (
    "SummingMergeTree",
    "AggregatingMergeTree",
    "ReplacingMergeTree",
    "CollapsingMergeTree",
    "VersionedCollapsingMergeTree",
)

#: A materialized view's target: `CREATE MATERIALIZED VIEW db.v TO db.t ...`.
_TARGET = re.compile(r"\bTO\s+(?:`?\w+`?\.)?`?(\w+)`?")

#: Text that must never reach a caller: a Python stack trace, or SQL / ClickHouse errors.
TRACE_NEEDLES = ("Traceback", 'File "', '.py", line')
SQL_NEEDLES = ("SELECT ", " FROM ", "DB::Exception", "Code: ")


def checked_tables(sql: AdminSQL) -> dict[str, str]:
    """The data sources and every materialized view's target table, with their engines."""
    rows = sql.rows(
        "SELECT name, engine, create_table_query FROM system.tables "
        "WHERE database = currentDatabase()"
    )
    engines = {row["name"]: row["engine"] for row in rows}
    names = {name for name in DATA_SOURCES if name in engines}
    for row in rows:
        if row["engine"] == "MaterializedView":
            match = _TARGET.search(row["create_table_query"])
            assert match, f"no TO table in {row['name']}: {row['create_table_query']}"
            names.add(match.group(1))
    return {name: engines[name] for name in sorted(names)}


def fingerprint(sql: AdminSQL) -> dict[str, tuple[int, str]]:
    """Row count and `sum(cityHash64(*))` of each table of `checked_tables`."""
    result: dict[str, tuple[int, str]] = {}
    for name, engine in checked_tables(sql).items():
        final = " FINAL" if engine in MERGING_ENGINES else ""
        (row,) = sql.rows(
            f"SELECT count() AS n, toString(sum(cityHash64(*))) AS h FROM `{name}`{final}"
        )
        result[name] = (int(row["n"]), str(row["h"]))
    return result


def synthetic_events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """`n` events with unique ids and recent times (inside every view's window)."""
    rnd = random.Random(seed)
    now_ms = int(time.time() * 1000)
    return [
        {
            "event_id": f"seed-{seed}-{i}",
            "ts": now_ms - rnd.randrange(60_000, 10 * 86_400_000),
            "user_id": f"u{rnd.randrange(12)}",
            "session_id": f"s{rnd.randrange(30)}",
            "order_id": f"o{rnd.randrange(60)}",
            "item_id": f"i{rnd.randrange(30)}",
            "event_type": rnd.choice(["purchase", "purchase", "view", "cart", "click"]),
            "quantity": rnd.randrange(1, 4),
            "price": round(rnd.uniform(1, 50), 2),
        }
        for i in range(n)
    ]


def synthetic_items(n: int = 30) -> list[dict[str, Any]]:
    return [
        {
            "item_id": f"i{i}",
            "title": f"item {i} {'red' if i % 2 else 'blue'} mug",
            "category": f"c{i % 4}",
            "brand": "b",
            "price": 1.5 + i,
        }
        for i in range(n)
    ]


def write_ndjson(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def leaks(body: bytes, sent: str = "") -> list[str]:
    """The needles found in `body` that the caller did not send itself (an endpoint may
    echo a parameter, e.g. `rec_id`; an error may quote the value it refuses)."""
    text = body.decode("utf-8", errors="replace")
    return [n for n in TRACE_NEEDLES + SQL_NEEDLES if n in text and n not in sent]


def sent_text(url: str, body: bytes | str | None) -> str:
    """What a request carried, decoded, to excuse echoes in `leaks`."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    return unquote_plus(url) + "\n" + (body or "")
