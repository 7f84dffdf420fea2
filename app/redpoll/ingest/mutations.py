"""Data source mutations: append a file, replace, truncate, delete rows, erase a key.

Every change keeps the views exact (ADR 0021): afterwards each view equals its
recomputation from the rows that remain.
- **append** goes through the ingest path (`IngestService.ingest`: validation, quarantine,
  event-id dedup, the views' insert protocol), chunk by chunk: exact by construction.
- **replace, truncate, delete, erase** change the stored table while holding its write
  lock (`IngestService.exclusive`: the events writer's lock, or the plain data source's),
  then rebuild, still under the lock, every table derived from it: for `events` the
  writer's `repair` (the `event_ids` dedup index and every view from `events`), for
  another data source the views `ViewSet.fed_by` its table (each from its file's
  recompute block). An INSERT waiting for the lock runs after the rebuild, so concurrent
  ingest is neither lost nor counted twice. The locks of every data source the rebuilt
  views read are taken, in name order (no deadlock), so a view reading two data sources
  is rebuilt while neither changes.
- **replace** validates and stages the new rows first, outside the lock, in a table
  `_redpoll_stage_<id>` created `AS` the stored one; under the lock each partition is
  swapped in (`REPLACE PARTITION ... FROM`, partitions not in the new data dropped):
  readers see the old rows or the new ones, never a mix (a table without PARTITION BY is
  one partition). Replaced events keep their `event_id` (first copy wins) and get batch 0,
  earlier than every INSERT of the writer.

Cost: a rebuild reads the whole history of the changed data source, so each of these
operations is O(history), whatever it removes (ADR 0021 says what a per-key recompute
would save). Each operation is reported to `record` (the API writes it to
`datasources_ops_log`) and bumps `IngestService.versions` for the tables it changed.

Clients: each operation opens its own (`new_client`) and closes it: it runs on a request
or job thread, and chDB clients are not shared between threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redpoll.clickhouse.client import DatabaseError, quote_identifier
from redpoll.clickhouse.errors import public_message
from redpoll.endpoints.loader import q_functions_from_client
from redpoll.errors import ConfigError, ParameterError, RedpollError
from redpoll.ingest.condition import check_condition
from redpoll.ingest.datasources import DataSource, ensure_quarantine_table
from redpoll.ingest.files import FORMATS, read_chunks
from redpoll.ingest.service import fill_defaults, quarantine_rows
from redpoll.ingest.validate import parse_body, validate_body, validate_rows
from redpoll.ingest.writer import backfill, epoch_ms
from redpoll.materialized import ViewSet, load_views

if TYPE_CHECKING:
    from redpoll.clickhouse.client import Client
    from redpoll.endpoints.model import FunctionSet
    from redpoll.ingest.service import IngestService
    from redpoll.ingest.writer import EventWriter

__all__ = ("ERASE_KEYS", "Mutations", "Operation", "Recorder", "Who", "stored_table")

#: what `erase` removes by: the column, in every data source that has it
ERASE_KEYS = ("user_id", "item_id")
_QUARANTINE_COLUMNS = ["received_at", "line", "column", "error", "raw"]
#: service tables whose rows may name a user (request parameters), erased with them
_CALL_LOG = "pipe_stats"


@dataclasses.dataclass(frozen=True)
class Who:
    """Who asked, for the operation's log row."""

    request_id: str = ""
    token_name: str = ""


@dataclasses.dataclass(frozen=True)
class Operation:
    """One row of `datasources_ops_log`: what a mutation did to one data source."""

    datasource: str
    operation: str  # append, replace, truncate, delete_data, erase
    rows: int
    started: float  # time.time()
    elapsed: float
    error: str = ""
    who: Who = Who()


Recorder = Callable[[Operation], None]


def stored_table(datasource: DataSource) -> str:
    """The table its rows live in (`events`, not the landing table it is written to)."""
    return datasource.name if datasource.uses_landing else datasource.table


class Mutations:
    """The operations above, over one `IngestService` (its data sources and locks)."""

    def __init__(
        self,
        service: IngestService,
        new_client: Callable[[], Client],
        *,
        record: Recorder | None = None,
        chunk_rows: int = 20_000,
    ) -> None:
        self.service = service
        self.new_client = new_client
        self.record = record
        self.chunk_rows = chunk_rows
        self._functions: FunctionSet | None = None

    @property
    def database(self) -> str:
        return self.service.database

    def datasource(self, name: str) -> DataSource:
        """A data source of `sql/` (404 otherwise; 400 for a view's table)."""
        try:
            return self.service.datasource(name)
        except RedpollError:
            views = self._views()
            if any(name in view.tables for view in views.views):
                raise ParameterError(
                    f"'{name[:128]}' is a materialized view's table: it is rebuilt from its "
                    "sources (redpoll backfill), not changed directly"
                ) from None
            raise

    # -- append -----------------------------------------------------------------

    def append(self, name: str, path: Path, fmt: str, who: Who = Who()) -> dict[str, int]:
        """Append a CSV (header row), NDJSON or Parquet file (gzip ok if named `.gz`)
        through the ingest path. Chunks stored before a failing one stay stored."""
        self.datasource(name)
        _check_format(fmt)
        totals = {"rows": 0, "quarantine_rows": 0}

        def run() -> int:
            line = 1
            for chunk, rows, _ in _chunks(path, fmt, self.chunk_rows):
                result = self.service.ingest(name, chunk, first_line=line)
                line += rows
                totals["rows"] += result.successful_rows
                totals["quarantine_rows"] += result.quarantined_rows
            return totals["rows"]

        self._recorded("append", name, who, run, partial=lambda: totals["rows"])
        return {**totals, "invalid_lines": 0}

    # -- replace ----------------------------------------------------------------

    def replace(self, name: str, path: Path, fmt: str, who: Who = Who()) -> dict[str, Any]:
        """Swap the data source's rows for the file's, then rebuild its views."""
        datasource = self.datasource(name)
        _check_format(fmt)
        out: dict[str, Any] = {}

        def run() -> int:
            with contextlib.closing(self.new_client()) as client:
                stage = f"_redpoll_stage_{uuid.uuid4().hex[:12]}"
                table = stored_table(datasource)
                client.command(f"CREATE TABLE {self._q(stage)} AS {self._q(table)}")
                try:
                    rows, quarantined = self._stage(client, datasource, stage, path, fmt)
                    with self._exclusive(datasource) as writer:
                        self._swap(client, table, stage)
                        out["views"] = self._rebuild(client, datasource, writer)
                finally:
                    client.command(f"DROP TABLE IF EXISTS {self._q(stage)}")
            self._bump(datasource, out["views"])
            out.update(rows=rows, quarantine_rows=quarantined, invalid_lines=0)
            return rows

        self._recorded("replace", name, who, run)
        return out

    def _stage(
        self, client: Client, datasource: DataSource, stage: str, path: Path, fmt: str
    ) -> tuple[int, int]:
        """Validate the file as the ingest path does and insert the good rows into
        `stage`; quarantined rows go to the data source's quarantine table."""
        landing = datasource.uses_landing
        seen: set[str] = set()
        line, stored, quarantined = 1, 0, 0
        names = [c.name for c in datasource.columns]
        for chunk, n, _ in _chunks(path, fmt, self.chunk_rows):
            batch = validate_body(datasource, chunk) or validate_rows(
                datasource, parse_body(chunk, line)
            )
            line += n
            if batch.quarantined:
                ensure_quarantine_table(client, self.database, datasource)
                client.insert(
                    self._q(datasource.quarantine_table),
                    quarantine_rows(batch),
                    column_names=_QUARANTINE_COLUMNS,
                )
                quarantined += len(batch.quarantined)
            if not batch.rows:
                continue
            fill_defaults(client, datasource, batch)
            columns = [list(batch.columns[name]) for name in names]
            column_names = list(names)
            if landing:  # the writer's protocol: one copy per event_id, a batch number
                columns = _first_copies(columns, names.index("event_id"), seen)
                ts = names.index("ts")
                columns[ts] = [epoch_ms(v) for v in columns[ts]]
                columns.append([0] * len(columns[0]))
                column_names.append("batch")
            if columns[0]:
                client.insert(
                    self._q(stage), columns, column_names=column_names, column_oriented=True
                )
                stored += len(columns[0])
        return stored, quarantined

    def _swap(self, client: Client, table: str, stage: str) -> None:
        """Make `table` hold exactly `stage`'s rows, partition by partition."""

        def partitions(name: str) -> set[str]:
            rows = client.query(
                "SELECT DISTINCT partition_id FROM system.parts WHERE database = {db:String}"
                " AND table = {t:String} AND active",
                parameters={"db": self.database, "t": name},
            ).result_rows
            return {str(r[0]) for r in rows}

        staged = partitions(stage)
        for pid in sorted(staged):
            client.command(
                f"ALTER TABLE {self._q(table)} REPLACE PARTITION ID '{pid}' FROM {self._q(stage)}"
            )
        for pid in sorted(partitions(table) - staged):
            client.command(f"ALTER TABLE {self._q(table)} DROP PARTITION ID '{pid}'")

    # -- truncate, delete -------------------------------------------------------

    def truncate(self, name: str, who: Who = Who()) -> dict[str, Any]:
        """Remove every row, then rebuild the views fed by the data source."""
        datasource = self.datasource(name)
        out: dict[str, Any] = {}

        def run() -> int:
            table = self._q(stored_table(datasource))
            with (
                contextlib.closing(self.new_client()) as client,
                self._exclusive(datasource) as writer,
            ):
                rows = int(str(client.command(f"SELECT count() FROM {table}")))
                client.command(f"TRUNCATE TABLE {table}")
                out["views"] = self._rebuild(client, datasource, writer)
            self._bump(datasource, out["views"])
            out["rows"] = rows
            return rows

        self._recorded("truncate", name, who, run)
        return out

    def check_delete(self, name: str, condition: str) -> str:
        """The checked condition (400 for a bad one), before any job is queued."""
        datasource = self.datasource(name)
        with contextlib.closing(self.new_client()) as client:
            sql = check_condition(condition, self._columns(datasource), self._allowed(client))
            # ClickHouse checks the types (a String is no condition): a 400 now, not later
            try:
                self._count(client, stored_table(datasource), sql, {})
            except DatabaseError as exc:
                raise ParameterError(f"delete_condition: {public_message(exc)}") from None
        return sql

    def delete(
        self, name: str, condition: str, who: Who = Who(), *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Delete the rows matching `condition` (Tinybird's `delete_condition`), then
        rebuild the views; `dry_run` only counts them."""
        datasource = self.datasource(name)
        sql = self.check_delete(name, condition)
        if dry_run:
            with contextlib.closing(self.new_client()) as client:
                return {"rows_to_be_deleted": self._count(client, stored_table(datasource), sql)}
        out: dict[str, Any] = {}

        def run() -> int:
            out.update(self._delete_where(datasource, sql, {}))
            return int(out["rows"])

        self._recorded("delete_data", name, who, run)
        return out

    def _delete_where(
        self, datasource: DataSource, sql: str, parameters: dict[str, Any]
    ) -> dict[str, Any]:
        """DELETE the matching rows and rebuild, under the locks; nothing to delete:
        nothing rebuilt."""
        table = stored_table(datasource)
        views: list[str] = []
        with (
            contextlib.closing(self.new_client()) as client,
            self._exclusive(datasource) as writer,
        ):
            rows = self._delete_rows(client, table, sql, parameters)
            if rows:
                views = self._rebuild(client, datasource, writer)
        if rows:
            self._bump(datasource, views)
        return {"rows": rows, "views": views}

    # -- erase ------------------------------------------------------------------

    def erase(self, key: str, value: str, who: Who = Who()) -> dict[str, Any]:
        """Remove every row whose `key` (user_id or item_id) is `value` from every data
        source with that column, their quarantined lines, and (for a user) logged calls
        that carried the value as a parameter; each data source's views rebuilt."""
        if key not in ERASE_KEYS:
            raise ParameterError(f"erase by one of {', '.join(ERASE_KEYS)}, not {key[:64]!r}")
        if not value:
            raise ParameterError(f"{key} must not be empty")
        removed: dict[str, int] = {}
        param = {"v": value}
        for name, datasource in sorted(self.service.datasources().items()):
            if key not in self._columns(datasource):
                continue

            def run(datasource: DataSource = datasource, name: str = name) -> int:
                done = self._delete_where(
                    datasource, f"{quote_identifier(key)} = {{v:String}}", param
                )
                removed[name] = int(done["rows"])
                return removed[name]

            self._recorded("erase", name, who, run)
        with contextlib.closing(self.new_client()) as client:
            existing = self._tables(client)
            for _, datasource in sorted(self.service.datasources().items()):
                quarantine = datasource.quarantine_table
                if key in self._columns(datasource) and quarantine in existing:
                    removed[quarantine] = self._delete_rows(
                        client, quarantine, f"JSONExtractString(raw, '{key}') = {{v:String}}", param
                    )
            if key == "user_id" and _CALL_LOG in existing:
                removed[_CALL_LOG] = self._delete_rows(
                    client,
                    _CALL_LOG,
                    "arrayExists(kv -> kv.2 = {v:String}, "
                    "JSONExtractKeysAndValues(parameters, 'String'))",
                    param,
                )
        return {"key": key, "removed": removed}

    def _delete_rows(self, client: Client, table: str, sql: str, parameters: dict[str, Any]) -> int:
        """DELETE the matching rows, if any; no lock, no rebuild (a table no view reads:
        quarantine, call log; else the caller holds the locks and rebuilds)."""
        rows = self._count(client, table, sql, parameters)
        if rows:
            client.command(
                f"DELETE FROM {self._q(table)} WHERE {sql}",
                parameters=parameters,
                settings={"lightweight_deletes_sync": 2},
            )
        return rows

    # -- shared -----------------------------------------------------------------

    def _recorded(
        self,
        operation: str,
        name: str,
        who: Who,
        run: Callable[[], int],
        partial: Callable[[], int] = lambda: 0,
    ) -> None:
        """Run `run` (returns rows) and report it to `record`, failed or not."""
        started, wall = time.perf_counter(), time.time()
        try:
            rows = run()
        except Exception as exc:
            message = exc.message if isinstance(exc, RedpollError) else type(exc).__name__
            self._report(Operation(name, operation, partial(), wall, _since(started), message, who))
            raise
        self._report(Operation(name, operation, rows, wall, _since(started), "", who))

    def _report(self, op: Operation) -> None:
        if self.record is not None:
            self.record(op)

    @contextlib.contextmanager
    def _exclusive(self, datasource: DataSource) -> Iterator[EventWriter | None]:
        """Hold the write locks of `datasource` and of every data source the views it
        feeds read, in name order; yields `datasource`'s writer (or None)."""
        sources = {stored_table(datasource), datasource.table}
        for view in self._views().fed_by(sources):
            sources |= view.sources
        names = sorted(
            n
            for n, d in self.service.datasources().items()
            if n == datasource.name or stored_table(d) in sources or d.table in sources
        )
        with contextlib.ExitStack() as stack:
            writers = {n: stack.enter_context(self.service.exclusive(n)) for n in names}
            yield writers[datasource.name]

    def _rebuild(
        self, client: Client, datasource: DataSource, writer: EventWriter | None
    ) -> list[str]:
        """Rebuild what is derived from `datasource`'s table (caller holds the locks)."""
        views = self._views()
        fed = views.fed_by({stored_table(datasource), datasource.table})
        if writer is not None:
            writer.repair(client)
            return [view.name for view in fed]
        existing = self._tables(client)
        rebuilt = []
        for view in fed:
            if set(view.tables) <= existing:  # a file added but not migrated yet: skip
                backfill(client, self.database, view.name, views)
                rebuilt.append(view.name)
        return rebuilt

    def _bump(self, datasource: DataSource, views: list[str]) -> None:
        """Tell the result cache what changed: the data source and the rebuilt views."""
        tables = {datasource.table, stored_table(datasource)}
        for view in self._views().ordered(views):
            tables |= set(view.tables)
        self.service.versions.bump(sorted(tables))

    def _count(
        self, client: Client, table: str, sql: str, parameters: dict[str, Any] | None = None
    ) -> int:
        found = client.query(
            f"SELECT count() FROM {self._q(table)} WHERE {sql}", parameters=parameters or {}
        ).result_rows
        return int(found[0][0])

    def _tables(self, client: Client) -> set[str]:
        rows = client.query(
            "SELECT name FROM system.tables WHERE database = {db:String}",
            parameters={"db": self.database},
        ).result_rows
        return {str(r[0]) for r in rows}

    def _columns(self, datasource: DataSource) -> list[str]:
        return [c.name for c in datasource.columns]

    def _allowed(self, client: Client) -> FunctionSet:
        if self._functions is None:
            self._functions = q_functions_from_client(client)
        return self._functions

    def _views(self) -> ViewSet:
        return load_views(self.service.project_dir)

    def _q(self, table: str) -> str:
        return f"{quote_identifier(self.database)}.{quote_identifier(table)}"


def _since(started: float) -> float:
    return time.perf_counter() - started


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ParameterError(f"format must be one of {', '.join(FORMATS)}, not {fmt[:32]!r}")


def _chunks(path: Path, fmt: str, rows: int) -> Iterator[tuple[bytes, int, int]]:
    """`files.read_chunks`, with a file that is not what `fmt` says as a 400."""
    try:
        yield from read_chunks(path, fmt, rows)
    except ConfigError:
        raise
    except (ValueError, OSError, EOFError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ParameterError(f"the file is not valid {fmt} ({type(exc).__name__})") from None


def _first_copies(columns: list[list[Any]], id_index: int, seen: set[str]) -> list[list[Any]]:
    """Drop rows whose event_id came earlier (in this chunk or a previous one)."""
    keep = []
    for i, event_id in enumerate(columns[id_index]):
        if event_id not in seen:
            seen.add(event_id)
            keep.append(i)
    if len(keep) == len(columns[id_index]):
        return columns
    return [[col[i] for i in keep] for col in columns]
