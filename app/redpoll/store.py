"""`Store`: the ClickHouse clients one Redpoll process owns, opened and closed together.

An embedded (chDB) store is guarded by `StoreLock` so a second process fails fast with
a clear message instead of an engine error. The admin client (migrations, inserts,
`redpoll sql`) is serialized by a lock because chDB clients must not be shared by two
threads at once; read clients come from a `ClientPool`, one per worker thread.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from redpoll.clickhouse.client import (
    ClientPool,
    DatabaseError,
    Target,
    connect,
    target_from_settings,
)
from redpoll.clickhouse.lock import StoreLock
from redpoll.migrations.runner import MigrationRunner

if TYPE_CHECKING:
    from redpoll.clickhouse.client import Client
    from redpoll.settings import Settings

__all__ = ("Store",)


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
    }
    # ClickHouse pauses a running query (between blocks) while one of a smaller priority
    # number runs; 0 would mean "no priority", so ordinary calls take 1
    caps["priority"] = 1
    if heavy:
        caps["max_threads"] = settings.heavy_query_threads
        caps["priority"] = 10
    if not target.embedded:
        # buffer the whole answer on the server: an error mid-way becomes an HTTP error,
        # never a 200 with a truncated body
        caps["http_wait_end_of_query"] = 1
    return caps


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
        target = target_from_settings(settings)
        lock = None
        if target.embedded:
            lock = StoreLock(settings.state_dir)
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
        self.close_read_pools()
        self.admin.close()
        if self._lock:
            self._lock.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
