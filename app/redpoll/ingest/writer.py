"""The event writer: the one path by which events reach the real-time views.

Protocol (migrations 0002-0005, `materialized_views/*.sql`):

1. Events are inserted into `events_landing` (Null engine). Every INSERT carries a `batch`
   number, equal for all its rows and strictly greater than that of every earlier INSERT.
   At start the writer recovers `max(batch)` from `events`, so numbering survives restarts
   (a batch that stored nothing may reuse its number: it left no row behind).
2. Each INSERT reaches the materialized views as ONE block: the writer sends a single
   Native block and sets `min_insert_block_size_rows/bytes` above the batch size, so no
   session setting (`max_block_size`, `max_insert_block_size`, ...) can split or merge it.
3. Every view on `events_landing` keeps an event only if its event_id is not in
   `event_ids` with `batch < current` and it is the first copy of that id in the block
   (the writer also drops in-batch duplicates, first copy wins). `events_mv` writes the
   surviving rows to `events`; views chained on `events` (event_ids, trending,
   trending_daily, user_history, co_purchase_history, basket_items, basket_pairs)
   therefore see each distinct event exactly once.
4. `co_purchase_mv` pairs the new purchases with each other (from the block itself) and
   with earlier purchases (`co_purchase_history`, `batch < current`).

Why exact: every distinct event is stored in exactly one batch k (the first INSERT that
carried it). An unordered pair of distinct purchase events {e, f} stored in batches
k <= l is counted exactly once: in batch l's INSERT, from the block itself if k == l,
from the history (k < l) otherwise; never again, because later batches only pair
their own new events. Restricting every history read to `batch < current` makes the
result independent of the order in which ClickHouse runs the views of one INSERT and of
whether the current INSERT's rows are already visible. Hence after any batch split,
arrival order and redelivery the targets equal a batch recomputation over the distinct
events (`backfill`). Assumptions: one writer per database at a time (batch numbers
come from this object), and inserts go through this class (or follow the protocol).

`insert_deduplication_token` is passed through for MergeTree-level block dedup of
identical retries; exactness does not depend on it.

A failed or cut-short INSERT is rolled back (issue 13): ClickHouse does not write the
views of one INSERT atomically, so an INSERT that fails half-way (a view's error, out of
memory) or is cut short (`kill -9`) may have stored part of its batch in `events` and in
some views. The writer then deletes that batch's rows from `events` (`DELETE ... WHERE
batch = N`, synchronous: the batch number is the writer's own, so it names exactly the
rows of that INSERT) and rebuilds every derived table from `events` (`repair`). The
batch was not acknowledged, so it leaves nothing behind and a retry of the same rows is
stored exactly once. A cut-short INSERT is found through the journal file at the next
start; a failed one is rolled back at once (or, if that fails too, before the next
batch). The rows of an INSERT that returned are never removed.

Known limits: `event_ids` is an EmbeddedRocksDB table (node-local): on a replicated
cluster ingest through one node. A copy with the same event_id but different content is
dropped (first stored wins). Rows inserted into `events_landing` by anything else than
this class must follow the protocol. Against a ClickHouse server, an INSERT whose
connection broke may still finish on the server after its rollback and leave that
unacknowledged batch stored (embedded chDB runs the INSERT in-process: it cannot).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redpoll.errors import ConfigError

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

__all__ = ("COLUMNS", "VIEWS", "EventWriter", "InsertResult", "backfill", "backfill_queries")

#: Landing-table columns (without `batch`), their ClickHouse types and defaults.
COLUMNS: tuple[tuple[str, str, Any], ...] = (
    ("event_id", "String", ""),
    ("ts", "DateTime64(3, 'UTC')", None),
    ("user_id", "String", ""),
    ("session_id", "String", ""),
    ("item_id", "String", ""),
    ("event_type", "LowCardinality(String)", ""),
    ("order_id", "String", ""),
    ("quantity", "Int32", 0),
    ("price", "Float64", 0.0),
    ("rec_id", "String", ""),
    ("source", "String", ""),
    ("properties", "String", ""),
)
_NAMES = (*(name for name, _, _ in COLUMNS), "batch")
_TYPES = (*(type_ for _, type_, _ in COLUMNS), "UInt64")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
log = logging.getLogger("redpoll.ingest.writer")
# Far above any batch: the insert squashing then emits the whole INSERT as one block.
_ONE_BLOCK = 1 << 40


@dataclasses.dataclass(frozen=True)
class InsertResult:
    """Outcome of one `EventWriter.insert`."""

    batch: int
    rows_received: int
    rows_sent: int  # after dropping in-batch duplicate event_ids
    seconds: float


def _ts_ms(value: Any) -> int:
    """Event time as epoch milliseconds; naive datetimes are UTC, numbers are seconds."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return (value - _EPOCH) // dt.timedelta(milliseconds=1)
    if isinstance(value, int | float):
        return round(value * 1000)
    if isinstance(value, str):
        return _ts_ms(dt.datetime.fromisoformat(value))
    raise TypeError(f"unsupported ts value {value!r}")


class EventWriter:
    """Inserts event batches into `<database>.events_landing` following the protocol.

    Thread-safe (inserts are serialized); use one writer per database.
    """

    def __init__(
        self,
        client: Client,
        database: str,
        settings: Mapping[str, Any] | None = None,
        journal: Path | None = None,
    ) -> None:
        """Args:
        settings: extra ClickHouse settings for every INSERT (block-size settings are
            always overridden so that each INSERT stays one block).
        journal: a file naming the batch of the INSERT in flight (`{"batch": N}`),
            written (fsync) before each INSERT and removed after it returned. If it is
            found at start, that batch is rolled back (`rollback`) before any new batch.
        """
        self.client = client
        self.database = database
        self.settings = dict(settings or {})
        self.journal = journal
        self._lock = threading.Lock()
        #: a failed batch whose rollback failed too: rolled back before the next INSERT
        self._unrolled: int | None = None
        if journal is not None and journal.exists():
            cut = _journal_batch(journal)
            log.warning("an INSERT (batch %s) was cut short: rolling it back", cut)
            self.rollback(cut)
        self._batch = self._recover_batch()

    def rollback(self, batch: int | None) -> None:
        """Remove `batch` (an INSERT that did not return) from `events`, then rebuild
        every derived table from `events`. `None`: the batch is unknown, only rebuild."""
        if batch is not None:
            self.client.command(
                f"DELETE FROM {self.database}.events WHERE batch = {int(batch)}",
                settings={"lightweight_deletes_sync": 2},
            )
        self.repair()

    def repair(self) -> None:
        """Rebuild every table derived from `events` (dedup index and all views)."""
        started = time.perf_counter()
        db = self.database
        self.client.command(f"TRUNCATE TABLE IF EXISTS {db}.event_ids")
        self.client.command(f"INSERT INTO {db}.event_ids SELECT event_id, batch FROM {db}.events")
        for view in VIEWS:
            backfill(self.client, db, view)
        if self.journal is not None:
            self.journal.unlink(missing_ok=True)
        log.warning("views rebuilt from events in %.1f s", time.perf_counter() - started)

    def rebuild_view(self, view: str) -> None:
        """`backfill` one view while holding this writer's lock, so no batch is inserted
        meanwhile (a concurrent insert could otherwise be counted twice or missed)."""
        with self._lock:
            backfill(self.client, self.database, view)

    def _mark_in_flight(self, batch: int) -> None:
        if self.journal is None:
            return
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal, "w", encoding="utf-8") as handle:
            handle.write(f'{{"batch": {batch}}}\n')
            handle.flush()
            os.fsync(handle.fileno())

    def _recover_batch(self) -> int:
        return int(self.client.command(f"SELECT max(batch) FROM {self.database}.events") or 0)

    @property
    def last_batch(self) -> int:
        return self._batch

    def insert(
        self,
        rows: Mapping[str, Sequence[Any]] | Sequence[Sequence[Any]],
        *,
        insert_deduplication_token: str | None = None,
    ) -> InsertResult:
        """Insert one batch as one block.

        Args:
            rows: a columnar dict `{column: values}` (missing columns get defaults) or a
                sequence of tuples in `COLUMNS` order (trailing columns may be omitted).
                `ts` values: `datetime` (naive = UTC), epoch seconds or ISO strings;
                absent means now. Empty/absent `event_id`s are generated here, so a
                caller that may retry must assign them itself (`validate.py` does).
            insert_deduplication_token: passed to ClickHouse for this INSERT.
        """
        started = time.perf_counter()
        columns = self._columns(rows)
        received = len(columns[0])
        columns = _drop_duplicate_ids(columns)
        sent = len(columns[0])
        with self._lock:
            if self._unrolled is not None:
                self.rollback(self._unrolled)
                self._unrolled = None
            if sent == 0:
                return InsertResult(self._batch, received, 0, time.perf_counter() - started)
            batch = self._batch + 1
            columns.append([batch] * sent)
            settings: dict[str, Any] = {
                # view outputs are already grouped; collapsing them again on insert
                # only costs time (queries sum anyway)
                "optimize_on_insert": 0,
                # run the views of one INSERT in parallel (+17-35% events/s at batches
                # of 200 on 2 cores); safe because every view reads history with
                # `batch < current` only, so view order does not matter (see above)
                "parallel_view_processing": 1,
                **self.settings,
                "min_insert_block_size_rows": _ONE_BLOCK,
                "min_insert_block_size_bytes": _ONE_BLOCK,
            }
            if insert_deduplication_token:
                settings["insert_deduplication_token"] = insert_deduplication_token
            context = self.client.create_insert_context(
                f"{self.database}.events_landing",
                column_names=list(_NAMES),
                column_type_names=list(_TYPES),
                column_oriented=True,
                settings=settings,
            )
            context.req_block_size = sent  # one Native block for the whole batch
            context.data = columns
            # A failed INSERT may have reached some views: never reuse its number, or
            # the retry would not see those rows as "earlier".
            self._batch = batch
            self._mark_in_flight(batch)
            try:
                self.client.data_insert(context)
            except Exception:
                log.warning("INSERT of batch %d failed: rolling it back", batch)
                self._unrolled = batch
                try:
                    self.rollback(batch)
                    self._unrolled = None
                except Exception:
                    log.exception("rollback of batch %d failed: retried before the next", batch)
                raise
            if self.journal is not None:
                self.journal.unlink(missing_ok=True)
        return InsertResult(batch, received, sent, time.perf_counter() - started)

    @staticmethod
    def _columns(rows: Mapping[str, Sequence[Any]] | Sequence[Sequence[Any]]) -> list[list[Any]]:
        if isinstance(rows, Mapping):
            unknown = set(rows) - set(_NAMES[:-1])
            if unknown:
                raise ValueError(f"unknown event columns: {sorted(unknown)}")
            n = len(next(iter(rows.values()))) if rows else 0
            raw = [rows.get(name) for name, _, _ in COLUMNS]
        else:
            n = len(rows)
            width = len(COLUMNS)
            if any(len(row) > width for row in rows):
                raise ValueError(f"an event row has more than {width} values")
            raw = [[row[i] if i < len(row) else None for row in rows] for i in range(width)]
        out: list[list[Any]] = []
        for (name, _, default), values in zip(COLUMNS, raw, strict=True):
            if values is None:
                values = [None] * n
            elif len(values) != n:
                raise ValueError(f"column {name!r} has {len(values)} values, expected {n}")
            if name == "event_id":
                col = [v if v else uuid.uuid4().hex for v in values]
            elif name == "ts":
                now = int(time.time() * 1000)
                col = [now if v is None else _ts_ms(v) for v in values]
            else:
                col = list(values)
                if any(v is None for v in col):
                    col = [default if v is None else v for v in col]
            out.append(col)
        return out


def _journal_batch(journal: Path) -> int | None:
    """The batch number a journal names; None if the file is unreadable (then the
    rollback only rebuilds the derived tables)."""
    try:
        return int(json.loads(journal.read_text(encoding="utf-8"))["batch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _drop_duplicate_ids(columns: list[list[Any]]) -> list[list[Any]]:
    ids = columns[0]
    first = {}
    for i, event_id in enumerate(ids):
        first.setdefault(event_id, i)
    if len(first) == len(ids):
        return columns
    keep = sorted(first.values())
    return [[col[i] for i in keep] for col in columns]


#: basket_pairs counts orders of at most this many distinct items (materialized_views/
#: basket_pairs.sql, `max_basket_items`).
MAX_BASKET_ITEMS = 50

_CO_PURCHASE_KEY = "if(user_id != '', concat('u:', user_id), concat('o:', order_id))"

#: Per view: the tables it owns (truncated first) and the INSERT ... SELECT that
#: recomputes them from `events` (must match materialized_views/*.sql).
VIEWS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "co_purchase": (
        ("co_purchase_history", "co_purchase"),
        (
            f"""INSERT INTO {{db}}.co_purchase_history (pair_key, ts_ms, item_id, batch)
            SELECT {_CO_PURCHASE_KEY}, toUnixTimestamp64Milli(ts), item_id, batch
            FROM {{db}}.events
            WHERE event_type = 'purchase' AND (user_id != '' OR order_id != '')""",
            """INSERT INTO {db}.co_purchase (item_id, other_item_id, pairs)
            SELECT a.item_id, b.item_id, count()
            FROM {db}.co_purchase_history AS a
            INNER JOIN {db}.co_purchase_history AS b ON a.pair_key = b.pair_key
            WHERE a.item_id != b.item_id AND abs(a.ts_ms - b.ts_ms) <= 2592000000
            GROUP BY a.item_id, b.item_id""",
        ),
    ),
    "trending": (
        ("trending",),
        (
            """INSERT INTO {db}.trending (hour, item_id, event_type, events)
            SELECT toStartOfHour(ts) AS hour, item_id, event_type, count()
            FROM {db}.events
            WHERE ts >= now() - INTERVAL 90 DAY
            GROUP BY hour, item_id, event_type""",
        ),
    ),
    "basket_pairs": (
        ("basket_items", "basket_pairs"),
        (
            """INSERT INTO {db}.basket_items (order_id, item_id, batch)
            SELECT order_id, item_id, batch
            FROM {db}.events WHERE event_type = 'purchase' AND order_id != ''""",
            f"""INSERT INTO {{db}}.basket_pairs (item_id, other_item_id, orders)
            WITH lines AS (
                SELECT DISTINCT order_id, item_id FROM {{db}}.basket_items
                WHERE order_id IN (SELECT order_id FROM {{db}}.basket_items GROUP BY order_id
                                   HAVING uniqExact(item_id) <= {MAX_BASKET_ITEMS}))
            SELECT a.item_id, b.item_id, count()
            FROM lines AS a INNER JOIN lines AS b ON a.order_id = b.order_id
            WHERE a.item_id != b.item_id
            GROUP BY a.item_id, b.item_id""",
            """INSERT INTO {db}.basket_pairs (item_id, other_item_id, orders)
            SELECT '', item_id, uniqExact(order_id) FROM {db}.basket_items GROUP BY item_id""",
        ),
    ),
    "trending_daily": (
        ("trending_daily",),
        (
            """INSERT INTO {db}.trending_daily (day, item_id, event_type, events)
            SELECT toDate(ts) AS day, item_id, event_type, count()
            FROM {db}.events GROUP BY day, item_id, event_type""",
        ),
    ),
    "user_history": (
        ("user_history", "user_item_stats"),
        (
            """INSERT INTO {db}.user_history
                (user_id, ts, event_type, item_id, session_id, order_id,
                 quantity, price, rec_id, source, event_id)
            SELECT user_id, ts, event_type, item_id, session_id, order_id,
                   quantity, price, rec_id, source, event_id
            FROM {db}.events
            WHERE user_id != ''""",
            """INSERT INTO {db}.user_item_stats
                (user_id, item_id, event_type, events, quantity, first_ts, last_ts)
            SELECT user_id, item_id, event_type, count(), sum(toInt64(quantity)),
                   min(ts), max(ts)
            FROM {db}.events
            WHERE user_id != ''
            GROUP BY user_id, item_id, event_type""",
        ),
    ),
}


def check_view(view: str) -> str:
    """`view` if it is a view `backfill` knows, else a ConfigError listing them."""
    if view not in VIEWS:
        raise ConfigError(f"unknown view {view!r}; known: {', '.join(sorted(VIEWS))}")
    return view


def backfill_queries(database: str, view: str) -> list[str]:
    """The statements `backfill` runs for `view` (TRUNCATEs, then INSERT ... SELECTs)."""
    tables, inserts = VIEWS[check_view(view)]
    statements = [f"TRUNCATE TABLE IF EXISTS {database}.{table}" for table in tables]
    statements += [query.format(db=database) for query in inserts]
    return statements


def backfill(client: Client, database: str, view: str) -> None:
    """Recompute `view`'s target tables from `events` (no double counting).

    Truncates the targets, then inserts the batch recomputation. Run it while no
    ingestion is in progress: events inserted meanwhile could be counted twice or missed.
    """
    for statement in backfill_queries(database, view):
        client.command(statement)
