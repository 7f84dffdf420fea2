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
   trending_daily, user_history, basket_items, basket_pairs, buyer_items, buyer_pairs)
   therefore see each distinct event exactly once.
4. The pair views (`basket_pairs_mv`, `buyer_pairs_mv`) pair the new purchases with each
   other (from the block itself) and with earlier purchases of the same group
   (`basket_items`, `buyer_items`, `batch < current`).

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

A failed or cut-short INSERT is rolled back: ClickHouse does not write the
views of one INSERT atomically, so an INSERT that fails half-way (a view's error, out of
memory) or is cut short (`kill -9`) may have stored part of its batch in `events` and in
some views. The writer then deletes that batch's rows from `events` (`DELETE ... WHERE
batch = N`, synchronous: the batch number is the writer's own, so it names exactly the
rows of that INSERT) and rebuilds every derived table from `events` (`repair`: the
views of materialized_views/ fed by `events`, each from its file's recompute block). The
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
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redpoll.errors import ConfigError
from redpoll.materialized import VIEWS_DIR, ViewSet, load_views

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

__all__ = (
    "EventWriter",
    "InsertResult",
    "backfill",
    "backfill_queries",
    "check_view",
    "default_views",
    "epoch_ms",
)

#: Tables of the events data source (sql/events.sql) whose derived views `repair` rebuilds.
_EVENT_TABLES = frozenset({"events_landing", "events", "event_ids"})
_VIEW_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: a materialized view's target in its DDL: `... TO db.table ...`
_TO_TABLE = re.compile(r"\bTO\s+(?:`?\w+`?\.)?`?(\w+)`?")
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
    #: of `seconds`, the Python part before the INSERT (columns, `ts`, in-batch dedup)
    convert_seconds: float = 0.0


def epoch_ms(value: Any) -> int:
    """Event time as epoch milliseconds; naive datetimes are UTC, numbers are seconds."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int((value - _EPOCH) // dt.timedelta(milliseconds=1))
    if isinstance(value, int | float):
        return round(value * 1000)
    if isinstance(value, str):
        return epoch_ms(dt.datetime.fromisoformat(value))
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
        views: ViewSet | Path | None = None,
    ) -> None:
        """Args:
        settings: extra ClickHouse settings for every INSERT (block-size settings are
            always overridden so that each INSERT stays one block).
        journal: a file naming the batch of the INSERT in flight (`{"batch": N}`),
            written (fsync) before each INSERT and removed after it returned. If it is
            found at start, that batch is rolled back (`rollback`) before any new batch.
        views: the views `repair` and `rebuild_view` recompute: a loaded set, or a
            project folder whose materialized_views/ is re-read when a file changes (a
            view added to a running server is backfillable at once); default:
            `default_views()`.
        """
        self.client = client
        self.database = database
        self.settings = dict(settings or {})
        self.journal = journal
        self._views = views
        #: the landing table's columns as created (sql/events.sql is their one definition)
        self.columns = _landing_columns(client, database)
        self._names = [name for name, _, _ in self.columns]
        self._lock = threading.Lock()
        #: a failed batch whose rollback failed too: rolled back before the next INSERT
        self._unrolled: int | None = None
        if journal is not None and journal.exists():
            cut = _journal_batch(journal)
            log.warning("an INSERT (batch %s) was cut short: rolling it back", cut)
            self.rollback(cut)
        self._batch = self._recover_batch()

    @property
    def views(self) -> ViewSet:
        if isinstance(self._views, ViewSet):
            return self._views
        return default_views() if self._views is None else load_views(self._views)

    def rollback(self, batch: int | None) -> None:
        """Remove `batch` (an INSERT that did not return) from `events`, then rebuild
        every derived table from `events`. `None`: the batch is unknown, only rebuild."""
        if batch is not None:
            self.client.command(
                f"DELETE FROM {self.database}.events WHERE batch = {int(batch)}",
                settings={"lightweight_deletes_sync": 2},
            )
        self.repair()

    @property
    def lock(self) -> threading.Lock:
        """Held during every INSERT: whoever holds it changes `events` between two batches
        (ingest/mutations.py: delete, replace, truncate, erase; then `repair`)."""
        return self._lock

    def repair(self, client: Client | None = None) -> None:
        """Rebuild every table derived from `events` (dedup index and all views).

        `client`: the caller's own when it runs on another thread than the committer's
        (chDB clients are not shared between threads); default: the writer's."""
        started = time.perf_counter()
        db = self.database
        client = client if client is not None else self.client
        client.command(f"TRUNCATE TABLE IF EXISTS {db}.event_ids")
        client.command(f"INSERT INTO {db}.event_ids SELECT event_id, batch FROM {db}.events")
        catalog = client.query(
            "SELECT name, engine, create_table_query FROM system.tables"
            " WHERE database = {db:String}",
            parameters={"db": db},
        ).result_rows
        existing = {name for name, _, _ in catalog}
        known = {o.name for view in self.views.views for o in view.objects}
        unknown = sorted(
            name
            for name, engine, ddl in catalog
            if engine == "MaterializedView"
            and name not in known
            and not _feeds_protocol(ddl)  # sql/events.sql's own: events_mv, event_ids_mv
        )
        if unknown:  # their targets keep whatever the cut-short INSERT left: not exact
            log.error(
                "materialized views without a file in materialized_views/ cannot be rebuilt: "
                "%s (add their files, then `redpoll backfill`)",
                ", ".join(unknown),
            )
        for view in self.views.fed_by(_EVENT_TABLES):
            if set(view.tables) <= existing:  # a file added but not migrated yet: skip
                backfill(client, db, view.name, self.views)
        if self.journal is not None:
            self.journal.unlink(missing_ok=True)
        log.warning("views rebuilt from events in %.1f s", time.perf_counter() - started)

    def rebuild_view(self, view: str) -> None:
        """`backfill` one view while holding this writer's lock, so no batch is inserted
        meanwhile (a concurrent insert could otherwise be counted twice or missed)."""
        self.rebuild_views([view])

    def rebuild_views(self, views: Sequence[str]) -> list[str]:
        """`backfill` several views in rebuild order (a view after those it reads), under
        the lock; returns the names in the order they were rebuilt."""
        ordered = self.views.ordered(views)
        with self._lock:
            for view in ordered:
                backfill(self.client, self.database, view.name, self.views)
        return [view.name for view in ordered]

    def _mark_in_flight(self, batch: int) -> None:
        if self.journal is None:
            return
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal, "w", encoding="utf-8") as handle:
            handle.write(f'{{"batch": {batch}}}\n')
            handle.flush()
            os.fsync(handle.fileno())

    def _recover_batch(self) -> int:
        found = self.client.command(f"SELECT max(batch) FROM {self.database}.events")
        return int(str(found or 0))

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
                sequence of tuples in `columns` order (trailing columns may be omitted).
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
        converted = time.perf_counter() - started
        with self._lock:
            if self._unrolled is not None:
                self.rollback(self._unrolled)
                self._unrolled = None
            if sent == 0:
                return InsertResult(
                    self._batch, received, 0, time.perf_counter() - started, converted
                )
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
                column_names=[*self._names, "batch"],
                column_type_names=[*(type_ for _, type_, _ in self.columns), "UInt64"],
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
        return InsertResult(batch, received, sent, time.perf_counter() - started, converted)

    def _columns(
        self, rows: Mapping[str, Sequence[Any]] | Sequence[Sequence[Any]]
    ) -> list[list[Any]]:
        if isinstance(rows, Mapping):
            unknown = set(rows) - set(self._names)
            if unknown:
                raise ValueError(f"unknown event columns: {sorted(unknown)}")
            n = len(next(iter(rows.values()))) if rows else 0
            raw = [rows.get(name) for name in self._names]
        else:
            n = len(rows)
            width = len(self.columns)
            if any(len(row) > width for row in rows):
                raise ValueError(f"an event row has more than {width} values")
            raw = [[row[i] if i < len(row) else None for row in rows] for i in range(width)]
        out: list[list[Any]] = []
        for (name, _, default), values in zip(self.columns, raw, strict=True):
            if values is None:
                values = [None] * n
            elif len(values) != n:
                raise ValueError(f"column {name!r} has {len(values)} values, expected {n}")
            if name == "event_id":
                col = [v if v else uuid.uuid4().hex for v in values]
            elif name == "ts":
                now = int(time.time() * 1000)
                col = [now if v is None else epoch_ms(v) for v in values]
            else:
                col = list(values)
                if any(v is None for v in col):
                    col = [default if v is None else v for v in col]
            out.append(col)
        return out


def _landing_columns(client: Client, database: str) -> list[tuple[str, str, Any]]:
    """(name, type, default) of `events_landing` without `batch`, read from the store.

    The default of a missing value: "now" (None) for `ts`, else the zero of its type.
    """
    rows = client.query(
        "SELECT name, type FROM system.columns WHERE database = {db:String}"
        " AND table = 'events_landing' AND default_kind NOT IN ('MATERIALIZED', 'ALIAS')"
        " ORDER BY position",
        parameters={"db": database},
    ).result_rows
    if not rows:
        raise ConfigError(f"{database}.events_landing does not exist: run the migrations")
    return [(name, type_, _zero(name, type_)) for name, type_ in rows if name != "batch"]


def _zero(name: str, type_: str) -> Any:
    if name == "ts":
        return None
    base = type_.removeprefix("LowCardinality(").removesuffix(")")
    if base in {"String", "UUID"} or base.startswith("FixedString"):
        return ""
    if base.startswith(("Int", "UInt")):
        return 0
    if base.startswith(("Float", "Decimal")):
        return 0.0
    if base == "Bool":
        return False
    return None


def _feeds_protocol(ddl: str) -> bool:
    """A materialized view writing `events` or `event_ids`: the protocol's own (sql/
    events.sql), rebuilt by `repair` itself, not a view of materialized_views/."""
    target = _TO_TABLE.search(ddl)
    return target is not None and target.group(1) in {"events", "event_ids"}


def _journal_batch(journal: Path) -> int | None:
    """The batch number a journal names; None if the file is unreadable (then the
    rollback only rebuilds the derived tables)."""
    try:
        return int(json.loads(journal.read_text(encoding="utf-8"))["batch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _drop_duplicate_ids(columns: list[list[Any]]) -> list[list[Any]]:
    ids = columns[0]
    first: dict[Any, int] = {}
    for i, event_id in enumerate(ids):
        first.setdefault(event_id, i)
    if len(first) == len(ids):
        return columns
    keep = sorted(first.values())
    return [[col[i] for i in keep] for col in columns]


def default_views() -> ViewSet:
    """The views of the project named by REDPOLL_PROJECT_DIR, else the current directory
    (what the CLI uses when no --project is given)."""
    return load_views(Path(os.environ.get("REDPOLL_PROJECT_DIR") or "."))


def check_view(view: str, views: ViewSet | None = None) -> str:
    """`view` if `views` has a file `materialized_views/<view>.sql`, else a ConfigError
    listing them. Without `views` only the name's form is checked: the writer checks it
    against its own project's files when it rebuilds."""
    if views is not None:
        return views.get(view).name
    if not _VIEW_NAME.fullmatch(view):
        raise ConfigError(f"invalid view name {view!r}: a file name of {VIEWS_DIR}/ without .sql")
    return view


def backfill_queries(database: str, view: str, views: ViewSet | None = None) -> list[str]:
    """The statements `backfill` runs for `view`: TRUNCATE its tables, then the recompute
    block of its file (materialized_views/<view>.sql)."""
    return (views or default_views()).get(view).backfill_statements(database)


def backfill(client: Client, database: str, view: str, views: ViewSet | None = None) -> None:
    """Recompute `view`'s target tables from their source (no double counting).

    Truncates the targets, then inserts the batch recomputation. Run it while no
    ingestion is in progress: events inserted meanwhile could be counted twice or missed.
    """
    for statement in backfill_queries(database, view, views):
        client.command(statement)
