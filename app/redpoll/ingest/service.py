"""Ingestion service: validate, group-commit, insert, then acknowledge (ADR 0008).

Acknowledged means durable: a request is answered only after its rows are in a
ClickHouse INSERT that has returned (the part is written and every materialized view
has run), so a `kill -9` after the answer loses nothing and the rows are already
visible in the views (freshness is bounded by the answer itself). For throughput,
concurrent requests to one data source are grouped: one committer thread per data source
takes everything queued while the previous INSERT ran and sends it as one INSERT
(group commit). If a grouped INSERT fails, each request is retried alone, so one bad
request cannot fail its neighbours.

Exactly once under failures: every acknowledged row is stored once, and a
request that fails leaves no row in its data source.
- Generated event ids (and the receive time of a missing `ts`) are assigned once, when
  the batch is validated (`validate.py`), so the retry of a row carries the id of its
  first attempt and the writer's dedup (`event_ids`) drops any copy already stored.
- A batch's quarantine rows are inserted before its events (once: `quarantine_written`),
  so a failing quarantine insert leaves no events behind.
- A failed events INSERT is rolled back by the writer (its batch deleted from `events`,
  derived tables rebuilt: `writer.py`) before the requests are retried alone.
- Line numbers (`first_line`) are checked before anything is queued.
Quarantine rows are a log of what was received: a request whose events INSERT failed
keeps its quarantine rows. Plain data sources (no landing table, e.g. `items`, a
ReplacingMergeTree) have no batch number to roll back; an INSERT ClickHouse rejects
stores nothing there, and a partly applied one is re-inserted by the retry.

The `events` data source goes through `EventWriter` (the exact real-time protocol);
other data sources are plain column-oriented inserts.

Data source lookups are cached: the catalog (`system.columns`) is read once,
and an unknown name re-reads it at most once per `datasource_refresh_s`, so a flood of
unknown names costs one read per interval. `refresh()` re-reads it at once (after
migrations).

Clients come from the caller (docs/architecture.md): the service is given a factory
(`Store.new_client`) and never connects itself. It takes one client for catalog reads
(request threads, under its lock) and one per committer thread (chDB clients are not
shared between threads), and closes them.

Cluster mode (docs/cluster.md): with writer factories for the shards (the setting
`cluster_shard_urls`, `for_store`), the events committer writes through a
`ShardedWriter` (app/redpoll/cluster/routing.py), one `EventWriter` and one client per
shard; a batch some shard did not store fails as a whole (`ShardInsertError`, a 503) and
its retry is deduplicated by the shards that stored it. With the setting `cluster`, a
plain data source that has `<table>_all_nodes` (the catalog, app/redpoll/cluster/ddl.py)
is written through it, so every node's copy and views get the rows. What acts on one
database only (`exclusive`: delete, replace, truncate, erase) is refused in cluster mode.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import pickle
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redpoll.clickhouse.client import quote_identifier
from redpoll.cluster.ddl import EVENT_TABLES
from redpoll.cluster.routing import ShardedWriter, ShardInsertError
from redpoll.cluster.shards import shard_targets
from redpoll.errors import ConfigError, EndpointNotFound, ParameterError, PayloadTooLarge
from redpoll.ingest.backlog import AckBacklog
from redpoll.ingest.convert import Limits
from redpoll.ingest.datasources import DataSource, discover_datasources, ensure_quarantine_table
from redpoll.ingest.validate import (
    QuarantineRow,
    ValidatedBatch,
    parse_body,
    validate_body,
    validate_rows,
)
from redpoll.ingest.versions import DataVersions
from redpoll.ingest.wal import WriteAheadLog
from redpoll.ingest.writer import EventWriter
from redpoll.settings import setting_value

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from redpoll.clickhouse.client import Client
    from redpoll.settings import Settings
    from redpoll.store import Store

__all__ = ("MAX_FIRST_LINE", "IngestResult", "IngestService", "fill_defaults", "quarantine_rows")

log = logging.getLogger("redpoll.ingest")
#: Largest first line number of a body (quarantine `line` is UInt64; far below it).
MAX_FIRST_LINE = 10**15


@dataclasses.dataclass(frozen=True)
class IngestResult:
    successful_rows: int
    quarantined_rows: int

    def as_dict(self) -> dict[str, int]:
        """The Events API answer body (Tinybird's shape)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Stats:
    requests: int = 0
    rows: int = 0
    quarantined: int = 0
    inserts: int = 0
    errors: int = 0
    last_insert_ms: float = 0.0
    #: requests validated by the fast path (validate.py `validate_body`)
    fast_requests: int = 0
    #: cumulative seconds per stage: body decode and validation (request threads; the
    #: general path counts both as `validate_s`), assembling the group's columns,
    #: the writer's Python conversion, then the INSERT itself (all views included)
    decode_s: float = 0.0
    validate_s: float = 0.0
    group_s: float = 0.0
    convert_s: float = 0.0
    insert_s: float = 0.0


#: a queued batch, its future, its dedup token, and its write-ahead log record (None:
#: the request waits for the INSERT itself)
_Item = tuple[ValidatedBatch, "concurrent.futures.Future[None]", str | None, int | None]
#: INSERT attempts of an acknowledged (logged) batch before its rows go to quarantine
MAX_LOGGED_ATTEMPTS = 6


class _Committer:
    """One thread and one client per data source; groups queued batches into one INSERT.

    `client` is its own (used by its thread alone) and is closed by `close()`.
    """

    def __init__(
        self,
        client: Client,
        database: str,
        datasource: DataSource,
        max_rows: int,
        state_dir: Path,
        project_dir: Path | None = None,
        versions: DataVersions | None = None,
        wal: WriteAheadLog | None = None,
        shards: Sequence[tuple[Client, str]] = (),
        cluster: bool = False,
        backlog: AckBacklog | None = None,
    ) -> None:
        """`backlog`: the bound on logged rows waiting for their INSERT (with `wal`).
        `shards`: cluster mode's (client, database) per shard, owned and closed by
        this committer like `client`; a landing data source is then written through a
        `ShardedWriter`. `cluster`: a plain data source goes through its
        `<table>_all_nodes` when there is one."""
        self.datasource = datasource
        #: acknowledged batches not inserted yet (`ack = "durable"`, ingest/wal.py)
        self.wal = wal
        self.backlog = backlog if backlog is not None else AckBacklog(0, 0.0)
        self._attempts: dict[int, int] = {}
        self.versions = versions if versions is not None else DataVersions()
        self.max_rows = max_rows
        self.client = client
        self.database = database
        self.shard_clients = [c for c, _ in shards]
        self.writer: EventWriter | ShardedWriter | None = None
        #: where a plain data source's INSERT goes
        self.table = datasource.table
        if datasource.uses_landing and shards:
            self.writer = ShardedWriter(
                [
                    EventWriter(
                        c,
                        db,
                        journal=state_dir / f"{db}.shard{i}.{datasource.name}.inflight",
                        views=project_dir,
                    )
                    for i, (c, db) in enumerate(shards)
                ]
            )
        elif datasource.uses_landing:
            journal = state_dir / f"{database}.{datasource.name}.inflight"
            self.writer = EventWriter(
                self.client, self.database, journal=journal, views=project_dir
            )
        elif cluster:
            self.table = _fanout_table(client, database, datasource.table)
        #: held during each INSERT into the data source (the events writer's own lock):
        #: `IngestService.exclusive` holds it to change the table between two INSERTs
        self.lock = self.writer.lock if self.writer is not None else threading.Lock()
        self.stats = _Stats()
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._quarantine_ready = False
        self._replay()  # before any new batch, as the journal's repair (writer.py)
        self._thread = threading.Thread(
            target=self._run, name=f"commit-{datasource.name}", daemon=True
        )
        self._thread.start()

    def submit(
        self, batch: ValidatedBatch, dedup_token: str | None = None, *, logged: bool = False
    ) -> concurrent.futures.Future[None]:
        """Queue `batch`; its future is done once the INSERT returned. `logged`: first
        append it to the write-ahead log (fsync), after which it is never dropped."""
        seq = None
        if logged and self.wal is not None:
            self.backlog.admit(batch.rows, self.datasource.name)
            try:
                seq = self.wal.append(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
            except BaseException:
                self.backlog.release(batch.rows)
                raise
            self.backlog.logged(seq, batch.rows)
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._queue.put((batch, future, dedup_token, seq))
        return future

    def flush(self) -> None:
        """Return once every batch queued before this call is inserted (with `ack =
        "durable"`, acknowledged batches too: a mutation must see them, else an erased
        user's logged events would be inserted after the erasure)."""
        self.submit(ValidatedBatch(columns={}, rows=0, quarantined=[])).result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        if self.wal is not None:
            self.wal.close()
        if isinstance(self.writer, ShardedWriter):
            self.writer.close()
        self.client.close()
        for shard_client in self.shard_clients:
            shard_client.close()

    def _replay(self) -> None:
        """Insert the logged batches a previous run acknowledged and did not insert."""
        if self.wal is None:
            return
        group: list[_Item] = []
        rows = replayed = 0
        for seq, payload in self.wal.pending():
            batch: ValidatedBatch = pickle.loads(payload)
            group.append((batch, concurrent.futures.Future(), None, seq))
            rows += batch.rows
            replayed += 1
            if rows >= self.max_rows:
                self._commit(group)
                group, rows = [], 0
        if group:
            self._commit(group)
        if replayed:
            log.warning(
                "%s: inserted %d acknowledged batches from the write-ahead log",
                self.datasource.name,
                replayed,
            )

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            group = [item]
            rows = item[0].rows
            # an acknowledged (logged) batch has no request waiting: gather for a moment
            # (`ack_gather_s`), so that many small requests make one INSERT: each costs a
            # fixed ~0.1-0.2 s of views (README, ingest figures)
            gather = self.backlog.gather_s if item[3] is not None else 0.0
            gather_until = time.monotonic() + gather
            while rows < self.max_rows:
                try:
                    # no more can be acknowledged once the backlog is full: insert now
                    full = 0 < self.backlog.max_rows <= rows
                    wait = 0.0 if full else gather_until - time.monotonic()
                    nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                group.append(nxt)
                rows += nxt[0].rows
            self._commit(group)

    def _commit(self, group: list[_Item]) -> None:
        # a token names the content of ONE batch: only an INSERT of exactly that batch
        # may carry it (a grouped INSERT has other content)
        token = group[0][2] if len(group) == 1 else None
        try:
            self._insert([item[0] for item in group], token)
        except Exception as exc:
            if len(group) == 1:
                self._failed(group[0], exc)
                return
            for single in group:  # isolate the failing request
                self._commit([single])
            return
        logged = [item[3] for item in group if item[3] is not None]
        if logged and self.wal is not None:
            self.wal.mark_applied(logged)
            self.backlog.applied(logged)
        for item in group:
            item[1].set_result(None)

    def _failed(self, item: _Item, exc: Exception) -> None:
        """A batch whose INSERT failed alone. A waiting request gets the error; a logged
        (already acknowledged) batch is retried with back-off, then quarantined."""
        batch, future, _, seq = item
        self.stats.errors += 1
        log.warning("insert into %s failed: %s", self.datasource.table, exc)
        if seq is None or self.wal is None:
            future.set_exception(exc)
            return
        attempts = self._attempts.get(seq, 0) + 1
        self._attempts[seq] = attempts
        if attempts < MAX_LOGGED_ATTEMPTS:
            time.sleep(min(0.1 * 2**attempts, 5.0))
            self._commit([item])
            return
        self._attempts.pop(seq, None)
        if isinstance(exc, ShardInsertError):  # the other shards stored their part
            batch = dataclasses.replace(batch, columns=exc.unstored)
        try:
            self._quarantine([_as_quarantine(batch, exc)])
        except Exception:  # kept in the log: inserted at the next start
            log.exception("acknowledged batch %d could not be quarantined either", seq)
            return
        self.wal.mark_applied([seq])
        self.backlog.applied([seq])
        future.set_result(None)

    def _insert(self, batches: list[ValidatedBatch], dedup_token: str | None = None) -> None:
        started = time.perf_counter()
        columns: dict[str, list[Any]] = {c.name: [] for c in self.datasource.columns}
        for batch in batches:
            self._fill_defaults(batch)
            for name, values in batch.columns.items():
                columns[name].extend(values)
        grouped = time.perf_counter()
        self.stats.group_s += grouped - started
        # quarantine first: if it fails, no event of these batches is stored yet
        self._quarantine([b for b in batches if b.quarantined and not b.quarantine_written])
        total = sum(b.rows for b in batches)
        if total:
            if self.writer is not None:
                result = self.writer.insert(columns, insert_deduplication_token=dedup_token)
                self.stats.convert_s += result.convert_seconds
                self.stats.insert_s += result.seconds - result.convert_seconds
            else:
                settings: dict[str, Any] = {}
                if dedup_token:
                    settings["insert_deduplication_token"] = dedup_token
                if self.table != self.datasource.table:
                    # `<table>_all_nodes` (Distributed): return once every node stored
                    # the rows, not when they are queued for sending
                    settings["distributed_foreground_insert"] = 1
                with self.lock:
                    self.client.insert(
                        f"{quote_identifier(self.database)}.{quote_identifier(self.table)}",
                        list(columns.values()),
                        column_names=list(columns),
                        column_oriented=True,
                        settings=settings or None,
                    )
                self.stats.insert_s += time.perf_counter() - grouped
        if total:  # visible now, acknowledged after this returns
            self.versions.bump([self.datasource.table])
        self.stats.inserts += 1
        self.stats.rows += total
        self.stats.last_insert_ms = (time.perf_counter() - started) * 1000

    def _fill_defaults(self, batch: ValidatedBatch) -> None:
        fill_defaults(self.client, self.datasource, batch)

    def _quarantine(self, batches: list[ValidatedBatch]) -> None:
        """Store the quarantine rows of `batches` in one INSERT; marks them written."""
        rows = [row for b in batches for row in quarantine_rows(b)]
        if not rows:
            return
        if not self._quarantine_ready:
            ensure_quarantine_table(self.client, self.database, self.datasource)
            self._quarantine_ready = True
        self.client.insert(
            f"{quote_identifier(self.database)}."
            f"{quote_identifier(self.datasource.quarantine_table)}",
            rows,
            column_names=["received_at", "line", "column", "error", "raw"],
        )
        for batch in batches:
            batch.quarantine_written = True
        self.stats.quarantined += len(rows)


def _fanout_table(client: Client, database: str, table: str) -> str:
    """`<table>_all_nodes` if the cluster rendering created it (ddl.py `_fanout`), else
    `table`: an INSERT into the local table would reach this node only."""
    fanout = f"{table}_all_nodes"
    found = client.command(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": database, "t": fanout},
    )
    return fanout if int(str(found)) else table


def fill_defaults(client: Client, datasource: DataSource, batch: ValidatedBatch) -> None:
    """Evaluate DEFAULT expressions in ClickHouse, one value per row that needs it."""
    for name, indexes in batch.needs_default.items():
        column = datasource.column(name)
        assert column is not None
        values = client.query(
            f"SELECT {column.default_expression} FROM numbers({len(indexes)})"
        ).result_columns[0]
        target = batch.columns[name]
        for i, value in zip(indexes, values, strict=True):
            target[i] = value
    batch.needs_default = {}


def quarantine_rows(batch: ValidatedBatch) -> list[list[Any]]:
    """The rows of `<ds>_quarantine` for a batch's quarantined lines."""
    return [[batch.received_at, q.line, q.column, q.error, q.raw] for q in batch.quarantined]


def _as_quarantine(batch: ValidatedBatch, exc: Exception) -> ValidatedBatch:
    """An acknowledged batch ClickHouse kept refusing, as quarantine rows (one per row,
    its values as JSON), so accepted data is kept where an operator can see it."""
    names = list(batch.columns)
    rows = [
        QuarantineRow(
            i + 1,
            "",
            f"insert failed: {exc}"[:1000],
            json.dumps(dict(zip(names, values, strict=True)), default=str),
        )
        for i, values in enumerate(zip(*batch.columns.values(), strict=True))
    ]
    return ValidatedBatch(columns={}, rows=0, quarantined=rows, received_at=batch.received_at)


class IngestService:
    """Entry point for every ingestion path (HTTP events API, `redpoll load`, Kafka)."""

    def __init__(
        self,
        new_client: Callable[[], Client],
        database: str,
        project_dir: Path,
        max_group_rows: int = 200_000,
        *,
        settings: Settings | None = None,
        shards: Sequence[tuple[Callable[[], Client], str]] = (),
    ) -> None:
        """`new_client` opens a read-write client the service then owns and closes
        (`Store.new_client`); `database` is the one the data sources live in.
        `settings` gives the String length caps (`max_id_bytes`, `max_field_bytes`)
        and `datasource_refresh_s`; without it, their defaults apply.
        `shards`: cluster mode's writer per shard, in shard order: a client factory
        and the shard database (`for_store` builds them from `cluster_shard_urls`)."""
        self.new_client = new_client
        self.shards = tuple(shards)
        #: cluster mode: `cluster` is set (migrations render for a cluster) or shards are
        self.cluster = bool(self.shards) or bool(settings is not None and settings.cluster)
        self.database = database
        self.project_dir = project_dir
        self.max_group_rows = max_group_rows
        self.limits = Limits.from_settings(settings)
        self.refresh_s: float = setting_value(settings, "datasource_refresh_s")
        #: "durable": a request without wait=true into a landing data source is answered
        #: once its batch is in the write-ahead log (docs/adr, ack); "visible": after the INSERT
        self.ack = str(setting_value(settings, "ack"))
        self._settings = settings  # each committer's backlog bound (`AckBacklog.from_settings`)
        self._admin = new_client()  # own client: discovery runs on request threads
        self._shard_admin: Client | None = None  # shard 0's, for its landing tables
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()  # request threads add their stage times
        self._datasources: dict[str, DataSource] | None = None
        self._read_at = 0.0  # time.monotonic() of the last catalog read
        self._committers: dict[str, _Committer] = {}
        #: bumped after every write is visible (a result cache keys answers by it)
        self.versions = DataVersions()

    @classmethod
    def for_store(cls, store: Store, settings: Settings | None = None) -> IngestService:
        """The service over `store`'s clients and database, for the project and limits of
        `settings` (default: the store's own; an app sharing a store passes its own)."""
        settings = settings if settings is not None else store.settings
        database = store.target.database
        shards = [
            (store.connector(target), target.database)
            for target in shard_targets(settings.cluster_shard_urls, database, store.target)
        ]
        return cls(
            store.new_client, database, settings.project_dir, settings=settings, shards=shards
        )

    def _read_catalog(self) -> dict[str, DataSource]:
        """Scan `system.columns` (caller holds `_lock`). In cluster mode a data source
        with a landing table on the shards (`events`) is the shards' (shard 0's columns:
        every shard runs the same migrations)."""
        found = discover_datasources(self.project_dir, self._admin, self.database, self.limits)
        if self.shards:
            if self._shard_admin is None:
                self._shard_admin = self.shards[0][0]()
            on_shard = discover_datasources(
                self.project_dir, self._shard_admin, self.shards[0][1], self.limits
            )
            found.update({n: d for n, d in on_shard.items() if d.uses_landing})
        self._datasources = found
        self._read_at = time.monotonic()
        return self._datasources

    def datasources(self) -> dict[str, DataSource]:
        with self._lock:
            if self._datasources is None:
                return self._read_catalog()
            return self._datasources

    def refresh(self) -> None:
        """Forget the catalog: the next lookup re-reads it (after migrations)."""
        with self._lock:
            self._datasources = None

    def datasource(self, name: str) -> DataSource:
        """The data source `name`; an unknown name re-reads the catalog only if the last
        read is older than `datasource_refresh_s` (a table created by hand shows up within
        that time; migrations through the server call `refresh`)."""
        with self._lock:
            known = self._datasources
            if known is None or (
                name not in known and time.monotonic() - self._read_at >= self.refresh_s
            ):
                known = self._read_catalog()
        found = known.get(name)
        if found is None:
            raise EndpointNotFound(f"Data Source '{name}' not found")
        return found

    def ingest(
        self,
        name: str,
        body: bytes,
        first_line: int = 1,
        *,
        max_rows: int = 0,
        wait: bool = True,
    ) -> IngestResult:
        """Validate `body` and insert its good rows; returns once they are durable.

        More than `max_rows` rows (0: no limit; the HTTP API passes
        `max_rows_per_request`) is a 413 before any row is validated or written.
        `wait=False` with `ack = "durable"`: durable means in the write-ahead log; the
        INSERT (and so the views) follows."""
        if not 1 <= first_line <= MAX_FIRST_LINE:
            raise ParameterError(f"the first line number must be from 1 to {MAX_FIRST_LINE}")
        datasource = self.datasource(name)
        # the fast path gives the same batch when nothing is to be quarantined or
        # refused (validate.py); else the general path below decides
        started = time.perf_counter()
        fast = validate_body(datasource, body, max_rows)
        if fast is not None:
            self._count(datasource, fast.timings, fast=True)
            return self.ingest_batch(datasource, fast, wait=wait)
        parsed = parse_body(body, first_line)
        if not parsed:
            raise ConfigError("empty body: send NDJSON, a JSON object or a JSON array")
        if max_rows and len(parsed) > max_rows:
            raise PayloadTooLarge(
                f"the body has {len(parsed)} rows, more than {max_rows} (max_rows_per_request)"
            )
        batch = validate_rows(datasource, parsed)
        self._count(datasource, {"validate": time.perf_counter() - started})
        return self.ingest_batch(datasource, batch, wait=wait)

    def _count(self, datasource: DataSource, timings: dict[str, float], fast: bool = False) -> None:
        """Add a request's validation time to its data source's statistics."""
        stats = self._committer(datasource).stats
        with self._stats_lock:
            stats.fast_requests += fast
            stats.decode_s += timings.get("decode", 0.0)
            stats.validate_s += timings.get("validate", 0.0)

    def ingest_batch(
        self,
        datasource: DataSource,
        batch: ValidatedBatch,
        dedup_token: str | None = None,
        *,
        wait: bool = True,
    ) -> IngestResult:
        """Insert a validated batch; returns once durable. `dedup_token` (e.g. a Kafka
        offset range) becomes the INSERT's `insert_deduplication_token` when the batch is
        inserted alone (not grouped with other requests)."""
        committer = self._committer(datasource)
        committer.stats.requests += 1
        logged = not wait and self.ack == "durable" and committer.wal is not None
        future = committer.submit(batch, dedup_token, logged=logged)
        if not logged:
            future.result()
        return IngestResult(batch.rows, len(batch.quarantined))

    def _committer(self, datasource: DataSource) -> _Committer:
        with self._lock:
            committer = self._committers.get(datasource.name)
            if committer is None or committer.datasource != datasource:
                if self._unwritable(datasource):
                    raise ConfigError(
                        f"cluster mode: {datasource.name} is written by the shards' writers;"
                        " set cluster_shard_urls on the one process that ingests"
                        " (docs/cluster.md)"
                    )
                if committer is not None:  # schema changed: one writer per table at a time
                    committer.close()
                client = self.new_client()  # the committer thread's own
                shards: list[tuple[Client, str]] = []
                try:
                    if datasource.uses_landing:  # the shards' writers, one client each
                        for factory, shard_db in self.shards:
                            shards.append((factory(), shard_db))
                    committer = _Committer(
                        client,
                        self.database,
                        datasource,
                        self.max_group_rows,
                        self.project_dir / ".redpoll",
                        self.project_dir,  # its materialized_views/: what repair/backfill rebuild
                        self.versions,
                        self._wal(datasource),
                        shards,
                        self.cluster,
                        AckBacklog.from_settings(self._settings),
                    )
                except BaseException:
                    client.close()
                    for shard_client, _ in shards:
                        shard_client.close()
                    raise
                self._committers[datasource.name] = committer
            return committer

    def _wal(self, datasource: DataSource) -> WriteAheadLog | None:
        """The write-ahead log of a landing data source, opened whatever `ack` is now:
        batches a `durable` run acknowledged are inserted at start in any mode. Other
        data sources have no id dedup, so a replayed batch could be stored twice: none."""
        if not datasource.uses_landing:
            return None
        folder = self.project_dir / ".redpoll" / "wal" / f"{self.database}.{datasource.name}"
        return WriteAheadLog(folder)

    def rebuild_view(self, view: str) -> None:
        """Recompute a view from `events` between two inserts of the events writer."""
        writer = self._committer(self.datasource("events")).writer
        if writer is None:
            raise ConfigError("the events data source has no landing table")
        writer.rebuild_view(view)
        self.versions.bump([self.datasource("events").table])

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[EventWriter | None]:
        """Hold data source `name`'s write lock: no INSERT into it runs until the block
        exits (queued requests wait, none is lost). Yields its EventWriter (`events`: the
        block then rebuilds the derived tables with `writer.repair(own_client)`), or None
        for a plain data source. Used by ingest/mutations.py."""
        if self.cluster:
            raise ConfigError(
                f"cluster mode: changing {name} as a whole (delete, replace, truncate, erase)"
                " would act on one node or shard only; not supported (docs/cluster.md)"
            )
        committer = self._committer(self.datasource(name))
        committer.flush()
        with committer.lock:
            writer = committer.writer
            assert not isinstance(writer, ShardedWriter)  # cluster mode is refused above
            yield writer

    def open_writers(self) -> None:
        """Start a committer for every data source now: crash repair runs at startup,
        before the server reports ready, instead of inside the first request."""
        for datasource in self.datasources().values():
            if self._unwritable(datasource):
                continue  # a reader of a cluster: its requests get the reason (_committer)
            self._committer(datasource)

    def _unwritable(self, datasource: DataSource) -> bool:
        """In cluster mode without shard writers, the events data source: only the
        writer process (`cluster_shard_urls`) writes the shards."""
        return self.cluster and not self.shards and datasource.table in EVENT_TABLES

    def status(self) -> dict[str, Any]:
        """Per data source: the committer's counters, plus `unapplied`, the acknowledged
        records of the write-ahead log (ack=durable) not yet in the table."""
        return {
            name: {
                **dataclasses.asdict(c.stats),
                "unapplied": c.wal.unapplied if c.wal is not None else 0,
                # cluster mode: each shard's last batch number (its own sequence)
                **(
                    {"shard_batches": list(c.writer.last_batch)}
                    if isinstance(c.writer, ShardedWriter)
                    else {}
                ),
            }
            for name, c in self._committers.items()
        }

    def close(self) -> None:
        with self._lock:
            for committer in self._committers.values():
                committer.close()
            self._committers.clear()
            self._admin.close()
            if self._shard_admin is not None:
                self._shard_admin.close()
                self._shard_admin = None
