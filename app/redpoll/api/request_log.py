"""`pipe_stats` and `datasources_ops_log`: every endpoint call and ingest operation, as rows.

Recorded OFF the request path. `observe_requests` (api/metrics.py) hands each finished
call to `CallLog.submit` as a small tuple: `put_nowait` on a bounded queue, nothing else;
when the queue is full the call is dropped and counted (`dropped`), a request never
waits. A background thread wakes every `interval` seconds, turns what is queued into
rows (parsing parameters, the error envelope, ClickHouse's `statistics`) and writes
each table in one INSERT, with its own client (`Store.new_client`, docs/architecture.md).

The tables come from sql/service_logs.sql through a migration, so endpoints can read them
(endpoints/slowest_calls.sql, endpoints/ingest_per_minute.sql). A project without them
(not migrated yet) loses the rows, counted as dropped; the thread looks again every
`RECHECK_S`, so `redpoll migrate up` on a running server is enough. Their TTL is set to
the `stats_retention_days` setting when the thread starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import queue
import re
import threading
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redpoll.clickhouse.client import Client
    from redpoll.store import Store

__all__ = ("OPS_COLUMNS", "PIPE_STATS_COLUMNS", "Call", "CallLog")

log = logging.getLogger("redpoll.api.request_log")

PIPE_STATS = "pipe_stats"
OPS_LOG = "datasources_ops_log"
PIPE_STATS_COLUMNS = (
    "start_datetime",
    "pipe_name",
    "parameters",
    "duration",
    "read_rows",
    "read_bytes",
    "result_rows",
    "status_code",
    "error",
    "request_id",
    "token_name",
)
OPS_COLUMNS = (
    "timestamp",
    "datasource",
    "operation",
    "rows",
    "elapsed",
    "result",
    "error",
    "request_id",
)
#: seconds between looks for a missing table
RECHECK_S = 10.0
#: parameters never stored (credentials)
SECRET_PARAMS = frozenset({"token", "access_token"})
_ROWS = re.compile(rb'"rows":\s*(\d+)')
_READ_ROWS = re.compile(rb'"rows_read":\s*(\d+)')
_READ_BYTES = re.compile(rb'"bytes_read":\s*(\d+)')


def reported_read_rows(body: bytes) -> int:
    """Rows read as ClickHouse reports them at the end of a JSON-family answer (its
    `statistics`); 0 for formats that carry none."""
    return _last_int(_READ_ROWS, body[-512:])


@dataclasses.dataclass(slots=True)
class Call:
    """What the request path keeps of one call: references and a few numbers."""

    kind: str  # "pipe", "append" or "backfill"
    started: float  # time.time() at the start
    duration: float  # seconds
    name: str  # the pipe (with its format extension), data source or view
    status: int
    query_string: bytes
    body: bytes  # the request body when small (POST parameters, backfill's view), else b""
    content_type: str
    answer: bytes  # an error envelope, or the tail of a pipe's answer
    lines: int  # newlines of a pipe's answer (ndjson/csv row counts)
    request_id: str
    token_name: str


@dataclasses.dataclass
class CallLogStats:
    submitted: int = 0
    dropped: int = 0  # queue full
    written: dict[str, int] = dataclasses.field(default_factory=dict)
    lost: dict[str, int] = dataclasses.field(default_factory=dict)  # table missing, INSERT failed
    flushes: int = 0
    #: per pipe: rows and bytes read, from ClickHouse's `statistics` (JSON answers)
    read_rows: dict[str, int] = dataclasses.field(default_factory=dict)
    read_bytes: dict[str, int] = dataclasses.field(default_factory=dict)


class CallLog:
    """The queue and the thread that writes it. `start()` once the store is open."""

    def __init__(
        self,
        store: Store,
        *,
        retention_days: int,
        capacity: int = 10_000,
        interval: float = 0.5,
    ) -> None:
        self._store = store
        self._retention_days = retention_days
        self._queue: queue.Queue[Call] = queue.Queue(capacity)
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Client | None = None
        self._present: dict[str, bool] = {}
        self._checked_at = 0.0
        self.stats = CallLogStats()

    # -- the request path

    def submit(self, call: Call) -> None:
        """Queue `call`; never blocks (a full queue drops it, counted)."""
        try:
            self._queue.put_nowait(call)
        except queue.Full:
            self.stats.dropped += 1
        else:
            self.stats.submitted += 1

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    # -- the thread

    def start(self) -> CallLog:
        self._thread = threading.Thread(target=self._run, name="call-log", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 10) -> None:
        """Write what is queued, then stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._client is not None:
            self._client.close()

    def _run(self) -> None:
        try:
            self._client = self._store.new_client()
            self._check_tables(force=True)
            self._apply_retention()
        except Exception:
            log.exception("the call log cannot start: pipe_stats will stay empty")
            return
        while not self._stop.wait(self._interval):
            self.flush()
        self.flush()

    def flush(self) -> None:
        """Write everything queued now (two INSERTs at most)."""
        calls: list[Call] = []
        with contextlib.suppress(queue.Empty):
            while True:
                calls.append(self._queue.get_nowait())
        if not calls:
            return
        pipes: list[list[Any]] = []
        ops: list[list[Any]] = []
        for call in calls:
            try:
                if call.kind == "pipe":
                    pipes.append(self._pipe_row(call))
                else:
                    ops.append(_op_row(call))
            except Exception:  # a row we cannot build is lost, not the others
                log.exception("call log: skipping a %s row", call.kind)
        self._check_tables()
        self._insert(PIPE_STATS, PIPE_STATS_COLUMNS, pipes)
        self._insert(OPS_LOG, OPS_COLUMNS, ops)
        self.stats.flushes += 1

    def _insert(self, table: str, columns: tuple[str, ...], rows: list[list[Any]]) -> None:
        if not rows:
            return
        stats = self.stats
        if not self._present.get(table) or self._client is None:
            stats.lost[table] = stats.lost.get(table, 0) + len(rows)
            return
        try:
            self._client.insert(table, rows, column_names=list(columns))
        except Exception as exc:
            log.warning("call log: INSERT into %s failed: %s", table, exc)
            stats.lost[table] = stats.lost.get(table, 0) + len(rows)
            self._present[table] = False  # dropped meanwhile? look again
            return
        stats.written[table] = stats.written.get(table, 0) + len(rows)

    def _check_tables(self, force: bool = False) -> None:
        if self._client is None:
            return
        if all(self._present.get(t) for t in (PIPE_STATS, OPS_LOG)):
            return
        now = time.monotonic()
        if not force and now - self._checked_at < RECHECK_S:
            return
        self._checked_at = now
        database = self._store.target.database
        found = {
            row[0]
            for row in self._client.query(
                "SELECT name FROM system.tables WHERE database = {db:String} "
                "AND name IN ('pipe_stats', 'datasources_ops_log')",
                parameters={"db": database},
            ).result_rows
        }
        for table in (PIPE_STATS, OPS_LOG):
            if table in found and not self._present.get(table):
                log.info("call log: writing %s", table)
            elif table not in found and force:
                log.warning(
                    "call log: table %s is missing (run `redpoll migrate up`): not recorded",
                    table,
                )
            self._present[table] = table in found

    def _apply_retention(self) -> None:
        """Set each table's TTL to `stats_retention_days` when it differs."""
        assert self._client is not None
        days = int(self._retention_days)
        for table, column in ((PIPE_STATS, "start_datetime"), (OPS_LOG, "timestamp")):
            if not self._present.get(table):
                continue
            engine = self._client.query(
                "SELECT engine_full FROM system.tables "
                "WHERE database = currentDatabase() AND name = {t:String}",
                parameters={"t": table},
            ).result_rows
            if engine and f"toIntervalDay({days})" not in str(engine[0][0]):
                self._client.command(
                    f"ALTER TABLE {table} MODIFY TTL toDateTime({column}) + INTERVAL {days} DAY"
                )
                log.info("call log: %s keeps %d days (stats_retention_days)", table, days)

    def _pipe_row(self, call: Call) -> list[Any]:
        name, _, ext = call.name.rpartition(".")
        if not name:
            name, ext = call.name, "json"
        read_rows = read_bytes = result_rows = 0
        error = ""
        if call.status >= 400:
            error = _error_message(call.answer)
        elif ext == "json":
            tail = call.answer
            result_rows = _last_int(_ROWS, tail)
            read_rows = reported_read_rows(tail)
            read_bytes = _last_int(_READ_BYTES, tail)
        elif ext == "ndjson":
            result_rows = call.lines
        elif ext == "csv":
            result_rows = max(call.lines - 1, 0)  # CSVWithNames: the header line
        if call.status < 400:  # known endpoints only: a bounded set of names
            stats = self.stats
            stats.read_rows[name] = stats.read_rows.get(name, 0) + read_rows
            stats.read_bytes[name] = stats.read_bytes.get(name, 0) + read_bytes
        return [
            _utc(call.started),
            name,
            json.dumps(_parameters(call), ensure_ascii=False, default=str),
            call.duration,
            read_rows,
            read_bytes,
            result_rows,
            call.status,
            error,
            call.request_id,
            call.token_name,
        ]


def _op_row(call: Call) -> list[Any]:
    rows = 0
    error = ""
    name = call.name
    if call.status >= 400:
        error = _error_message(call.answer)
    elif call.kind != "backfill":  # the Events API's answer, or a mutation's {"rows": n}
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            answer = json.loads(call.answer)
            rows = int(answer.get("successful_rows", answer.get("rows", 0)))
    if call.kind == "backfill":
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            name = str(json.loads(call.body).get("view", ""))[:200]
    return [
        _utc(call.started),
        name,
        call.kind,
        rows,
        call.duration,
        "ok" if call.status < 400 else "error",
        error,
        call.request_id,
    ]


def _utc(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC)


def _last_int(pattern: re.Pattern[bytes], text: bytes) -> int:
    found = pattern.findall(text)
    return int(found[-1]) if found else 0


def _error_message(answer: bytes) -> str:
    try:
        body = json.loads(answer)
    except ValueError:
        return answer[:500].decode("utf-8", "replace")
    return str(body.get("error", "")) if isinstance(body, dict) else ""


def _parameters(call: Call) -> dict[str, Any]:
    """Query string and POST parameters (form or JSON object), without credentials."""
    params: dict[str, Any] = {}

    def add(key: str, value: Any) -> None:
        if key.lower() in SECRET_PARAMS:
            return
        if key in params:
            old = params[key]
            params[key] = [*old, value] if isinstance(old, list) else [old, value]
        else:
            params[key] = value

    for key, value in urllib.parse.parse_qsl(
        call.query_string.decode("latin-1"), keep_blank_values=True
    ):
        add(key, value)
    if call.body:
        if call.content_type.startswith("application/json"):
            with contextlib.suppress(ValueError):
                body = json.loads(call.body)
                if isinstance(body, dict):
                    for key, value in body.items():
                        add(str(key), value)
        elif call.content_type.startswith("application/x-www-form-urlencoded"):
            for key, value in urllib.parse.parse_qsl(
                call.body.decode("utf-8", "replace"), keep_blank_values=True
            ):
                add(key, value)
    return params
