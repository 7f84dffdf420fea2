"""`Store`: the ClickHouse clients one Redpoll process owns, opened and closed together.

An embedded (chDB) store is guarded by `StoreLock` so a second process fails fast with
a clear message instead of an engine error. The admin client (migrations, inserts,
`redpoll sql`) is serialized by a lock because chDB clients must not be shared by two
threads at once; read clients come from a `ClientPool`, one per worker thread.

Layering (docs/architecture.md): services, the API and the CLI reach ClickHouse through
this class; the modules under `redpoll.clickhouse` know nothing above them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redpoll.clickhouse.client import (
    ClientPool,
    DatabaseError,
    Target,
    connect,
    parse_url,
    target_from_settings,
)
from redpoll.clickhouse.lock import ServerInfo, StoreLock, read_server_info
from redpoll.clickhouse.query import OUTPUT_FORMATS, run_admin_sql
from redpoll.migrations.runner import MigrationRunner
from redpoll.settings import load_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from redpoll.clickhouse.client import Client
    from redpoll.settings import Settings

__all__ = ("SQL_OUTPUTS", "DatabaseError", "ServerInfo", "Store", "running_server")

#: Output formats of `Store.sql` (`redpoll sql --format`).
SQL_OUTPUTS = tuple(OUTPUT_FORMATS)


def read_limits(settings: Settings, target: Target, *, heavy: bool = False) -> dict[str, Any]:
    """Session settings of a read client: every limit a query must stay within.

    `readonly=2` is added by `connect`. Endpoint headers may lower or raise the time and
    result-row caps per query (`executor.prepare`), never the memory and read limits
    (`compiler.PROTECTED_SETTINGS`).
    """
    caps: dict[str, Any] = {
        "max_execution_time": settings.query_timeout_s,
        "timeout_overflow_mode": "throw",
        "max_result_rows": settings.max_result_rows,
        "max_result_bytes": settings.max_result_bytes,
        "result_overflow_mode": "throw",
        "max_memory_usage": settings.query_max_memory_bytes,
        "max_rows_to_read": settings.query_max_rows_to_read,
        "max_bytes_to_read": settings.query_max_bytes_to_read,
        "read_overflow_mode": "throw",
        # ClickHouse pauses a running query (between blocks) while one of a smaller
        # priority number runs; 0 would mean "no priority", so ordinary calls take 1
        "priority": 10 if heavy else 1,
    }
    if heavy:
        caps["max_threads"] = settings.heavy_query_threads
    if not target.embedded:
        # buffer the whole answer on the server: an error mid-way becomes an HTTP error,
        # never a 200 with a truncated body
        caps["http_wait_end_of_query"] = 1
    return caps


def running_server(settings: Settings) -> ServerInfo | None:
    """The `redpoll serve` process holding this project's embedded store, if any."""
    if not settings.is_embedded:
        return None
    return read_server_info(settings.state_dir)


class Store:
    """Admin client, read pools and (for chDB) the data-directory lock of one process.

    Two read pools: `read_pool` for ordinary endpoint calls and `heavy_pool` for queries
    with a caller-written `q` (fewer threads, lower priority; `endpoints/lanes.py`).
    """

    def __init__(
        self,
        settings: Settings,
        target: Target,
        admin: Client,
        read_pool: ClientPool | None,
        lock: StoreLock | None,
        heavy_pool: ClientPool | None = None,
    ) -> None:
        self.settings = settings
        self.target = target
        self.admin = admin
        self.admin_lock = threading.RLock()
        self.read_pool = read_pool
        self.heavy_pool = heavy_pool
        self._lock = lock
        self._control: Client | None = None
        self._control_lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(cls, settings: Settings, role: str, read_clients: int = 0) -> Store:
        """Open the project's ClickHouse.

        Args:
            settings: resolved settings.
            role: printed to other processes that find the store busy.
            read_clients: size of the ordinary read pool (0: no read pools, for CLI
                commands); the heavy pool has `heavy_query_concurrency` clients.

        Raises:
            StoreBusy: another process holds the embedded data directory.
        """
        return cls._open(
            settings, target_from_settings(settings), settings.state_dir, role, read_clients
        )

    @classmethod
    def open_scratch(cls, project_dir: Path, data_dir: Path, database: str, role: str) -> Store:
        """An embedded store in a throwaway directory, with `project_dir`'s migrations.

        For the evaluation's replay (`evaluation/replay.py`): its lock sits next to
        `data_dir`, so it never contends with the project's own store or server.
        """
        base = load_settings({"project_dir": project_dir}, environ={})
        settings = dataclasses.replace(
            base,
            clickhouse_url=f"chdb://{data_dir.as_posix()}",
            database=database,
            cluster="",
            cluster_shard_urls="",
        )
        target = parse_url(settings.clickhouse_url, database)
        return cls._open(settings, target, data_dir.parent, role, 0)

    @classmethod
    def _open(
        cls, settings: Settings, target: Target, lock_dir: Path, role: str, read_clients: int
    ) -> Store:
        lock = None
        if target.embedded:
            lock = StoreLock(lock_dir)
            lock.acquire(role)
        try:
            admin = connect(target, create_database=True)
            store = cls(settings, target, admin, None, lock)
            if read_clients:
                store.open_read_pools(read_clients)
        except BaseException:
            if lock:
                lock.release()
            raise
        return store

    @classmethod
    def attach(
        cls, settings: Settings, target: Target, admin: Client, read_clients: int = 2
    ) -> Store:
        """A store over a client the caller owns (tests): no lock; `close_read_pools()`
        closes what this opened and leaves `admin` open."""
        store = cls(settings, target, admin, None, None)
        store.open_read_pools(read_clients)
        return store

    def close_read_pools(self) -> None:
        for pool in (self.read_pool, self.heavy_pool):
            if pool is not None:
                pool.close()
        self.read_pool = self.heavy_pool = None
        if self._control is not None:
            self._control.close()
            self._control = None

    def open_read_pools(self, read_clients: int) -> None:
        """Open the ordinary and heavy read pools (tests call it on a store they built)."""
        settings, target = self.settings, self.target
        ordinary = read_limits(settings, target)
        heavy = read_limits(settings, target, heavy=True)
        self.read_pool = ClientPool(
            lambda: connect(target, readonly=True, settings=ordinary), read_clients
        )
        self.heavy_pool = ClientPool(
            lambda: connect(target, readonly=True, settings=heavy),
            max(1, settings.heavy_query_concurrency),
        )

    def new_client(self, *, readonly: bool = False) -> Client:
        """A client of its own for one worker thread (chDB clients are not shared
        between threads); the caller closes it."""
        return connect(self.target, readonly=readonly)

    def connector(self, target: Target) -> Callable[[], Client]:
        """Opens read-write clients of another node or database than the store's (cluster
        mode's shard writers, app/redpoll/cluster/shards.py); the caller closes them."""
        return functools.partial(connect, target)

    def sql(self, query: str, output: str) -> bytes:
        """`redpoll sql` and the admin API's `/sql`: one statement on the admin client."""
        with self.admin_lock:
            return run_admin_sql(self.admin, query, output)

    def kill_query(self, marker: str) -> None:
        """Cancel the running query tagged `log_comment = marker` (see executor.prepare)."""
        with self._control_lock:
            if self._control is None:
                self._control = connect(self.target)
            self._control.command(
                "KILL QUERY WHERE Settings['log_comment'] = {marker:String} ASYNC",
                parameters={"marker": marker},
            )

    @property
    def lock(self) -> StoreLock | None:
        return self._lock

    def publish_server(self, url: str, local_token: str) -> None:
        """Tell CLI commands where the server holding this embedded store answers
        (`running_server`); nothing to publish for a ClickHouse server."""
        if self._lock is not None:
            self._lock.publish_server(ServerInfo(os.getpid(), url, local_token))

    def migrations(self) -> MigrationRunner:
        return MigrationRunner(
            self.admin,
            self.settings.project_dir / "migrations",
            self.target.database,
            self.settings.cluster,
        )

    def ping(self) -> bool:
        try:
            with self.admin_lock:
                self.admin.command("SELECT 1")
        except DatabaseError:
            return False
        return True

    def close(self) -> None:
        """Close every client and release the lock; a second call does nothing (the app
        and `redpoll serve` may both close the store they share)."""
        if self._closed:
            return
        self._closed = True
        self.close_read_pools()
        self.admin.close()
        if self._lock:
            self._lock.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
