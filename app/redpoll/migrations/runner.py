"""Apply migrations and report their state, recorded in ClickHouse itself (ADR 0005).

State lives in `<db>._redpoll_migrations`, an append-only log: each attempt adds a row
(version, name, checksum, status, statement checksums done, applied_at, duration, error);
the newest row per version is the truth. That keeps the record consistent on failure:
a migration that failed at statement 3 records `failed` with the checksums of statements
1-2, and a re-run of the fixed file skips exactly the leading statements whose text is
unchanged and already ran, so nothing non-idempotent runs twice.

Concurrent `up` runs are excluded by a lock table: `CREATE TABLE` without `IF NOT
EXISTS` is atomic in ClickHouse, so only one runner can create
`<db>._redpoll_migrate_lock`; the loser fails at once naming the holder (kept in the
table comment). The same mechanism works on chDB and on a server.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redpoll.clickhouse.client import DatabaseError, quote_identifier
from redpoll.cluster.ddl import ClusterLayout, layout_for, render_cluster_statements
from redpoll.errors import MigrationError
from redpoll.migrations.files import (
    MigrationFile,
    Statement,
    discover,
    render_statements,
    template_variables,
)

if TYPE_CHECKING:
    from redpoll.clickhouse.client import Client

__all__ = ("MigrationRunner", "MigrationState", "new_migration")

LOG_TABLE = "_redpoll_migrations"
LOCK_TABLE = "_redpoll_migrate_lock"


@dataclasses.dataclass(frozen=True)
class MigrationState:
    """One file's state: `pending`, `applied`, `failed`, `modified` or `missing`."""

    version: int
    name: str
    status: str
    checksum: str = ""
    applied_at: str = ""
    duration_ms: int = 0
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Record:
    version: int
    name: str
    checksum: str
    status: str
    statements_done: tuple[str, ...]
    applied_at: str
    duration_ms: int
    error: str


class MigrationRunner:
    """Reads `migrations/` and applies it to one database through an admin client."""

    def __init__(self, client: Client, directory: Path, database: str, cluster: str = "") -> None:
        self.client = client
        self.directory = directory
        self.database = database
        self.cluster = cluster
        self._db = quote_identifier(database)

    # -- state -----------------------------------------------------------------------------

    def ensure_log_table(self) -> None:
        on_cluster = template_variables(self.database, self.cluster)["on_cluster"]
        self.client.command(
            f"CREATE TABLE IF NOT EXISTS {self._db}.{LOG_TABLE} {on_cluster} ("
            " version UInt32, name String, checksum String,"
            " status LowCardinality(String), statements_done Array(String),"
            " applied_at DateTime64(3, 'UTC'), duration_ms UInt64, error String"
            ") ENGINE = MergeTree ORDER BY (version, applied_at)"
        )

    def _records(self) -> dict[int, _Record]:
        self.ensure_log_table()
        rows = self.client.query(
            f"SELECT version, argMax(name, applied_at), argMax(checksum, applied_at),"
            f" argMax(status, applied_at), argMax(statements_done, applied_at),"
            f" toString(max(applied_at)), argMax(duration_ms, applied_at),"
            f" argMax(error, applied_at)"
            f" FROM {self._db}.{LOG_TABLE} GROUP BY version ORDER BY version"
        ).result_rows
        return {
            int(r[0]): _Record(int(r[0]), r[1], r[2], r[3], tuple(r[4]), r[5], int(r[6]), r[7])
            for r in rows
        }

    def status(self) -> list[MigrationState]:
        """State of every file on disk, plus applied versions whose file is gone."""
        files = discover(self.directory)
        records = self._records()
        states: list[MigrationState] = []
        for f in files:
            rec = records.pop(f.version, None)
            if rec is None:
                states.append(MigrationState(f.version, f.name, "pending", f.checksum))
            elif rec.status == "applied" and rec.checksum != f.checksum:
                states.append(
                    MigrationState(
                        f.version,
                        f.name,
                        "modified",
                        f.checksum,
                        rec.applied_at,
                        rec.duration_ms,
                        f"{f.filename} changed after it was applied "
                        f"(recorded checksum {rec.checksum[:12]}, file {f.checksum[:12]})",
                    )
                )
            else:
                states.append(
                    MigrationState(
                        f.version,
                        f.name,
                        rec.status,
                        rec.checksum,
                        rec.applied_at,
                        rec.duration_ms,
                        rec.error,
                    )
                )
        for rec in records.values():
            if rec.status == "applied":
                states.append(
                    MigrationState(
                        rec.version,
                        rec.name,
                        "missing",
                        rec.checksum,
                        rec.applied_at,
                        rec.duration_ms,
                        "applied but its file is not in migrations/",
                    )
                )
        return sorted(states, key=lambda s: s.version)

    def problems(self) -> list[str]:
        """What `check` reports: pending, failed, modified or missing migrations."""
        out = []
        for s in self.status():
            if s.status != "applied":
                detail = f": {s.error}" if s.error else ""
                out.append(f"{s.version:04d}_{s.name}.sql is {s.status}{detail}")
        return out

    # -- apply -----------------------------------------------------------------------------

    def up(
        self, to: int | None = None, log: Callable[[str], None] = lambda _m: None
    ) -> list[MigrationState]:
        """Apply pending (and previously failed) migrations in order, up to `to`.

        Raises:
            MigrationError: a modified applied file (nothing is applied then), the lock is
                held, or a statement failed (file, line, statement and ClickHouse's error).
        """
        files = {f.version: f for f in discover(self.directory)}
        modified = [s for s in self.status() if s.status == "modified"]
        if modified:
            raise MigrationError(
                "refusing to migrate: "
                + "; ".join(s.error for s in modified)
                + ". Applied migrations are immutable: restore the file and add a new migration."
            )
        applied: list[MigrationState] = []
        layout = self.layout(files.values()) if self.cluster else None
        with self._lock():
            records = self._records()
            for version in sorted(files):
                if to is not None and version > to:
                    break
                rec = records.get(version)
                if rec is not None and rec.status == "applied":
                    continue
                statements = self.render(files[version], layout)
                applied.append(self._apply(files[version], statements, rec, log))
        return applied

    def layout(self, migrations: Iterable[MigrationFile] | None = None) -> ClusterLayout:
        """The cluster layout of every migration (`migrations`, else the directory's)."""
        every = discover(self.directory) if migrations is None else migrations
        return layout_for(every, self.database, self.cluster)

    def render(
        self, migration: MigrationFile, layout: ClusterLayout | None = None
    ) -> list[Statement]:
        """The statements to run: on a cluster (`cluster` set) the sharded layout of
        cluster/ddl.py (docs/adr/0023-cluster-sharding.md; `layout` once per run, else
        derived here), else the file as rendered."""
        if not self.cluster:
            return render_statements(migration, template_variables(self.database, self.cluster))
        return render_cluster_statements(migration, layout or self.layout())

    def _apply(
        self,
        migration: MigrationFile,
        statements: list[Statement],
        previous: _Record | None,
        log: Callable[[str], None],
    ) -> MigrationState:
        already = list(previous.statements_done) if previous and previous.status == "failed" else []
        done: list[str] = []
        started = time.perf_counter()
        for statement in statements:
            if len(done) < len(already) and already[len(done)] == statement.checksum:
                log(f"{migration.filename}: statement {statement.index} already applied, skipped")
                done.append(statement.checksum)
                continue
            try:
                self.client.command(statement.sql)
            except DatabaseError as exc:
                message = (
                    f"{migration.path}:{statement.line}: statement {statement.index} failed: "
                    f"{statement.headline()}\nClickHouse: {_first_line(str(exc))}"
                )
                self._record(migration, "failed", done, started, message)
                raise MigrationError(message) from exc
            done.append(statement.checksum)
        duration = self._record(migration, "applied", done, started, "")
        log(f"applied {migration.filename} ({len(statements)} statements, {duration} ms)")
        return MigrationState(
            migration.version, migration.name, "applied", migration.checksum, "", duration
        )

    def _record(
        self, migration: MigrationFile, status: str, done: list[str], started: float, error: str
    ) -> int:
        duration_ms = int((time.perf_counter() - started) * 1000)
        self.client.insert(
            f"{self.database}.{LOG_TABLE}",
            [
                [
                    migration.version,
                    migration.name,
                    migration.checksum,
                    status,
                    done,
                    dt.datetime.now(dt.UTC),
                    duration_ms,
                    error,
                ]
            ],
            column_names=[
                "version",
                "name",
                "checksum",
                "status",
                "statements_done",
                "applied_at",
                "duration_ms",
                "error",
            ],
        )
        return duration_ms

    # -- lock ------------------------------------------------------------------------------

    def _lock(self) -> _LockTable:
        return _LockTable(self)

    def unlock(self) -> bool:
        """Remove a lock left by a runner that died; True when there was one."""
        held = self.lock_holder()
        self.client.command(f"DROP TABLE IF EXISTS {self._db}.{LOCK_TABLE}")
        return held is not None

    def lock_holder(self) -> str | None:
        rows = self.client.query(
            "SELECT comment FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            parameters={"db": self.database, "t": LOCK_TABLE},
        ).result_rows
        return rows[0][0] if rows else None


class _LockTable:
    def __init__(self, runner: MigrationRunner) -> None:
        self.runner = runner
        self.client = runner.client
        self.table = f"{runner._db}.{LOCK_TABLE}"

    def __enter__(self) -> None:
        owner = json.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
        )
        escaped = owner.replace("\\", "\\\\").replace("'", "\\'")
        try:
            self.client.command(
                f"CREATE TABLE {self.table} (x UInt8) ENGINE = Log COMMENT '{escaped}'"
            )
        except DatabaseError as exc:
            if "already exists" not in str(exc).lower():
                raise
            who = self.runner.lock_holder() or "unknown"
            raise MigrationError(
                f"another `redpoll migrate up` holds the migration lock ({who}). Wait for it; "
                "if that process is dead, run `redpoll migrate unlock`."
            ) from exc

    def __exit__(self, *_exc: object) -> None:
        self.client.command(f"DROP TABLE IF EXISTS {self.table}")


def new_migration(directory: Path, name: str) -> Path:
    """Create the next `NNNN_name.sql` file with a commented template."""
    slug = "_".join(name.lower().replace("-", " ").split())
    if not slug or not all(c.isalnum() or c == "_" for c in slug):
        raise MigrationError(f"invalid migration name {name!r}: use letters, digits and _")
    existing = discover(directory)
    version = (existing[-1].version + 1) if existing else 1
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{version:04d}_{slug}.sql"
    path.write_text(
        f"-- {version:04d}_{slug}: describe the change here.\n"
        "-- Statements end with `;`. Variables: {{ database }}, {{ on_cluster }}.\n"
        "-- Applied files are immutable: fix mistakes with a new migration.\n\n",
        encoding="utf-8",
    )
    return path


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else message
