"""How many acknowledged rows may wait for their INSERT (`ack = "durable"`).

Why: with durable acknowledgement a request is answered once its rows are in the
write-ahead log (ingest/wal.py), so clients can outpace the committer. Unbounded, the
gap between "acknowledged" and "visible in every view" grows with the backlog (7.2 s
p99 in the README's ingest figures before this bound). Here a request is admitted only
while fewer than `max_rows` acknowledged rows wait; otherwise it waits for the committer
(backpressure) and, past `wait_s`, is refused 503 with nothing stored. The views then lag
an acknowledgement by about two INSERTs of at most `max_rows` rows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from redpoll.errors import RedpollError
from redpoll.settings import setting_value

if TYPE_CHECKING:
    from redpoll.settings import Settings

__all__ = ("AckBacklog", "BacklogFull")


class BacklogFull(RedpollError):
    """The committer did not catch up within the wait: nothing was stored; retry."""

    status = 503
    retry_after = 1
    public = True


class AckBacklog:
    """Rows reserved by requests and rows logged but not inserted, per data source."""

    def __init__(self, max_rows: int, wait_s: float, gather_s: float = 0.0) -> None:
        """`max_rows` 0: no bound (admit never waits). `gather_s`: how long the committer
        gathers acknowledged rows before their INSERT (each INSERT has a fixed cost, so
        fewer and larger INSERTs leave more CPU to queries; freshness pays it); 0: at once."""
        self.max_rows = max_rows
        self.wait_s = wait_s
        self.gather_s = gather_s
        self._cond = threading.Condition()
        self._rows = 0
        self._by_record: dict[int, int] = {}

    @classmethod
    def from_settings(cls, settings: Settings | None) -> AckBacklog:
        """A data source's bound from `ack_max_backlog_rows`, `ack_backlog_wait_s` and
        `ack_gather_s` (their defaults without settings)."""
        names = ("ack_max_backlog_rows", "ack_backlog_wait_s", "ack_gather_s")
        return cls(*(setting_value(settings, name) for name in names))

    @property
    def rows(self) -> int:
        return self._rows

    def admit(self, rows: int, name: str) -> None:
        """Reserve `rows` once the backlog is below the bound (a batch larger than the
        bound passes when nothing waits). Raises `BacklogFull` after `wait_s`."""
        with self._cond:
            if self.max_rows > 0 and not self._cond.wait_for(
                lambda: self._rows == 0 or self._rows + rows <= self.max_rows, self.wait_s
            ):
                raise BacklogFull(
                    f"{name}: {self._rows} acknowledged rows are waiting for their INSERT"
                    f" (ack_max_backlog_rows {self.max_rows}); nothing was stored, retry"
                )
            self._rows += rows

    def logged(self, record: int, rows: int) -> None:
        """The reserved `rows` are log record `record` (released when it is applied)."""
        with self._cond:
            self._by_record[record] = rows

    def release(self, rows: int) -> None:
        """Give back a reservation that was never logged (the append failed)."""
        with self._cond:
            self._rows -= rows
            self._cond.notify_all()

    def applied(self, records: Iterable[int]) -> None:
        """These records' rows are inserted (or quarantined): they no longer wait.
        Records not reserved here (replayed at start) are ignored."""
        with self._cond:
            for record in records:
                self._rows -= self._by_record.pop(record, 0)
            self._cond.notify_all()
