"""`Store`: the ClickHouse clients one Redpoll process owns, opened and closed together.

An embedded (chDB) store is guarded by `StoreLock` so a second process fails fast with
a clear message instead of an engine error. The admin client (migrations, inserts,
`redpoll sql`) is serialized by a lock because chDB clients must not be shared by two
threads at once; read clients come from a `ClientPool`, one per worker thread.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

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


class Store:
    """Admin client, read pool and (for chDB) the data-directory lock of one process."""

    def __init__(
        self,
        settings: Settings,
        target: Target,
        admin: Client,
        read_pool: ClientPool | None,
        lock: StoreLock | None,
    ) -> None:
        self.settings = settings
        self.target = target
        self.admin = admin
        self.admin_lock = threading.RLock()
        self.read_pool = read_pool
        self._lock = lock

    @classmethod
    def open(cls, settings: Settings, role: str, read_clients: int = 0) -> Store:
        """Open the project's ClickHouse.

        Args:
            settings: resolved settings.
            role: printed to other processes that find the store busy.
            read_clients: size of the read pool (0: none, for CLI commands).

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
            pool = None
            if read_clients:
                caps = {
                    "max_execution_time": settings.query_timeout_s,
                    "max_result_rows": settings.max_result_rows,
                    "result_overflow_mode": "throw",
                }
                pool = ClientPool(
                    [connect(target, readonly=True, settings=caps) for _ in range(read_clients)]
                )
        except BaseException:
            if lock:
                lock.release()
            raise
        return cls(settings, target, admin, pool, lock)

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
        if self.read_pool:
            self.read_pool.close()
        self.admin.close()
        if self._lock:
            self._lock.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
