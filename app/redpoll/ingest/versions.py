"""Data versions: a counter per table, bumped once a write to it is visible.

A cache of query answers (issue: exact result cache) keys each answer by the versions
of the tables it read, so an answer is reused only while no write reached those tables.
Every write path of the process goes through `IngestService`
(app/redpoll/ingest/service.py), which bumps the table it wrote to after the rows are
visible and before the write is acknowledged; views fed by that table are resolved by
the reader (the version of a data source covers every view it feeds).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

_Callback = Callable[[tuple[str, ...]], None]


class DataVersions:
    """Thread-safe version counters, one per table name (unqualified, one database)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._callbacks: list[_Callback] = []

    def bump(self, tables: Iterable[str]) -> None:
        """Mark `tables` changed; call after the change is visible to queries."""
        names = tuple(tables)
        with self._lock:
            for name in names:
                self._versions[name] = self._versions.get(name, 0) + 1
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback(names)

    def of(self, tables: Iterable[str]) -> tuple[int, ...]:
        """The current versions of `tables`, in the order given (0: never written)."""
        with self._lock:
            return tuple(self._versions.get(name, 0) for name in tables)

    def subscribe(self, callback: _Callback) -> None:
        """Call `callback(tables)` after every bump (e.g. to drop cached answers)."""
        with self._lock:
            self._callbacks.append(callback)
