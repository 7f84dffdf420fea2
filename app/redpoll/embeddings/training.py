"""`redpoll train`: read interactions from the store, learn item vectors, swap them in.

The job runs anywhere a `Runner` reaches the store: `StoreRunner` on a store this process
opened (clickhouse-connect, typed inserts; the offline evaluation), `BackendRunner`
through `redpoll sql`'s statement runner (the CLI's backend: the store itself, or a
running server's admin SQL), so a model can be retrained while `redpoll serve` holds the
embedded store.

Steps (`train`):

1. snapshot: the greatest ingest `batch` of `events` (the EventWriter numbers every
   INSERT, increasing), so the model reads exactly the events stored before it started
   and `model_freshness` can count the ones that arrived after;
2. contexts (`CONTEXTS_SQL`): per order its purchased items, per session (or per user
   and day when there is no session id) the items viewed, carted or bought;
3. factorize (`factorize.item_vectors`);
4. write every vector under a new `model_version`, then its `item_vector_models` row:
   the swap (readers take the greatest version there, sql/embeddings.sql);
5. prune the partitions older than the previous model.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from redpoll.embeddings.factorize import DIMENSIONS, item_vectors

if TYPE_CHECKING:
    from redpoll.store import Store

__all__ = (
    "BackendRunner",
    "Runner",
    "SqlBackend",
    "StoreRunner",
    "TrainResult",
    "freshness",
    "train",
)

METHOD = "ppmi-svd"

#: Item sets per context. Orders of more than 50 items (wholesale restocking) and
#: sessions of more than 50 items say little about which items go together and cost
#: quadratic time: left out, as basket_pairs does (materialized_views/basket_pairs.sql).
CONTEXTS_SQL = """
SELECT groupUniqArray(item_id) AS items
FROM events
WHERE batch <= {max_batch}
  AND item_id != ''
  AND event_type IN ('purchase', 'cart', 'view')
  AND (order_id != '' OR session_id != '' OR user_id != '')
GROUP BY if(event_type = 'purchase' AND order_id != '', concat('o:', order_id),
            if(session_id != '', concat('s:', session_id),
               concat('u:', user_id, ':', toString(toDate(ts)))))
HAVING length(items) BETWEEN 2 AND 50
"""

_SNAPSHOT_SQL = (
    "SELECT max(batch) AS max_batch, count() AS events, toString(max(ts)) AS data_until FROM events"
)

# the same answer as endpoints/model_freshness.sql, for projects without that endpoint
_FRESHNESS_SQL = """
WITH (SELECT max(model_version) FROM item_vector_models) AS version
SELECT
    m.model_version AS model_version,
    toString(m.trained_at) AS trained_at,
    m.method AS method,
    m.items AS items,
    m.events AS events,
    toString(m.data_until) AS data_until,
    (SELECT count() FROM events
     WHERE batch > (SELECT max(max_batch) FROM item_vector_models
                    WHERE model_version = version)) AS events_since,
    dateDiff('second', m.trained_at, now64(3)) AS age_seconds
FROM item_vector_models AS m
WHERE m.model_version = version
LIMIT 1
"""

_CHUNK = 2000  # vectors per INSERT through the admin SQL (a few hundred KB)


class Runner(Protocol):
    """What the job needs of the store: rows of a SELECT, and inserts."""

    def select(self, query: str) -> list[dict[str, Any]]: ...
    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None: ...
    def command(self, query: str) -> None: ...


class StoreRunner:
    """On a store opened by this process: the admin client, under the store's lock."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock: threading.RLock = store.admin_lock

    def select(self, query: str) -> list[dict[str, Any]]:
        with self._lock:
            result = self.store.admin.query(query)
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        with self._lock:
            self.store.admin.insert(table, list(rows), column_names=list(columns))

    def command(self, query: str) -> None:
        with self._lock:
            self.store.admin.command(query)


class SqlBackend(Protocol):
    """Anything that runs one statement like `redpoll sql`: the CLI's backends."""

    def sql(self, query: str, output: str) -> bytes: ...


class BackendRunner:
    """Through a CLI backend's SQL (`redpoll sql`; a running server's admin API)."""

    def __init__(self, backend: SqlBackend) -> None:
        self.backend = backend

    def select(self, query: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.backend.sql(query, "json"))["data"]
        return rows

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        for start in range(0, len(rows), _CHUNK):
            lines = (
                json.dumps(dict(zip(columns, map(_json_value, row), strict=True)))
                for row in rows[start : start + _CHUNK]
            )
            self.backend.sql(
                f"INSERT INTO {table} ({', '.join(columns)}) FORMAT JSONEachRow\n"
                + "\n".join(lines),
                "json",
            )

    def command(self, query: str) -> None:
        self.backend.sql(query, "json")


@dataclasses.dataclass(frozen=True)
class TrainResult:
    model_version: int
    trained_at: dt.datetime
    items: int
    contexts: int
    events: int
    rank: int
    seconds: float
    dropped_versions: list[int]

    def as_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "trained_at": self.trained_at.isoformat(timespec="milliseconds"),
        }


def train(
    runner: Runner, dims: int = DIMENSIONS, say: Callable[[str], None] | None = None
) -> TrainResult:
    """Learn item vectors from the events stored now and make them the current model.

    Raises:
        ValueError: no item shares a context with another (nothing to learn); the
            current model, if any, stays.
    """
    say = say or (lambda _m: None)
    started = time.perf_counter()
    snap = runner.select(_SNAPSHOT_SQL)[0]
    max_batch, events = int(snap["max_batch"]), int(snap["events"])
    contexts = [row["items"] for row in runner.select(CONTEXTS_SQL.format(max_batch=max_batch))]
    say(f"read {events} events: {len(contexts)} contexts ({time.perf_counter() - started:.1f} s)")
    learned = item_vectors(contexts, dims)
    if not learned.item_ids:
        raise ValueError("nothing to learn: no item shares an order or a session with another item")
    say(
        f"factorized {len(learned.item_ids)} items, rank {learned.rank} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    trained_at = dt.datetime.now(dt.UTC)
    previous = _versions(runner)
    version = max([int(trained_at.timestamp() * 1000), *(v + 1 for v in previous)])
    runner.insert(
        "item_vectors",
        ("model_version", "item_id", "vector", "trained_at"),
        [
            (version, item, vector.tolist(), trained_at)
            for item, vector in zip(learned.item_ids, learned.vectors, strict=True)
        ],
    )
    seconds = round(time.perf_counter() - started, 3)
    # the swap: from this row on, readers take the new version
    runner.insert(
        "item_vector_models",
        (
            "model_version",
            "trained_at",
            "method",
            "dimensions",
            "items",
            "contexts",
            "events",
            "max_batch",
            "data_until",
            "seconds",
        ),
        [
            (
                version,
                trained_at,
                METHOD,
                DIMENSIONS,
                len(learned.item_ids),
                learned.contexts,
                events,
                max_batch,
                _parse_ts(snap["data_until"]),
                seconds,
            )
        ],
    )
    dropped = _prune(runner, keep_from=max(previous, default=version))
    return TrainResult(
        version,
        trained_at,
        len(learned.item_ids),
        learned.contexts,
        events,
        learned.rank,
        seconds,
        dropped,
    )


def freshness(runner: Runner) -> dict[str, Any] | None:
    """The current model: when trained, from how many events, and how many events were
    ingested since (None: no model trained yet)."""
    rows = runner.select(_FRESHNESS_SQL)
    return rows[0] if rows else None


def _versions(runner: Runner) -> list[int]:
    rows = runner.select("SELECT model_version FROM item_vector_models ORDER BY model_version")
    return [int(r["model_version"]) for r in rows]


def _prune(runner: Runner, keep_from: int) -> list[int]:
    """Drop the vector partitions older than `keep_from` (the model before the new one,
    kept for readers that read its version just before the swap), and those of
    trainings that never finished. A newer unfinished version (a concurrent training)
    is left alone."""
    rows = runner.select(
        "SELECT DISTINCT model_version FROM item_vectors "
        f"WHERE model_version < {int(keep_from)} ORDER BY model_version"
    )
    dropped = [int(r["model_version"]) for r in rows]
    for version in dropped:
        runner.command(f"ALTER TABLE item_vectors DROP PARTITION {version}")
    return dropped


def _json_value(value: Any) -> Any:
    """A value as JSONEachRow input: datetimes as ClickHouse reads them by default."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return value


def _parse_ts(text: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
