"""The bound on acknowledged rows waiting for their INSERT (app/redpoll/ingest/backlog.py)."""

from __future__ import annotations

import threading
import time

import pytest

from redpoll.ingest.backlog import AckBacklog, BacklogFull


def test_admits_below_the_bound_and_refuses_after_the_wait() -> None:
    backlog = AckBacklog(max_rows=10, wait_s=0.2)
    backlog.admit(6, "events")
    backlog.logged(1, 6)
    backlog.admit(4, "events")  # exactly at the bound
    backlog.logged(2, 4)
    started = time.monotonic()
    with pytest.raises(BacklogFull, match="10 acknowledged rows"):
        backlog.admit(1, "events")
    assert time.monotonic() - started >= 0.2
    assert backlog.rows == 10
    backlog.applied([1, 2, 99])  # 99: a record replayed at start, never reserved here
    assert backlog.rows == 0


def test_a_batch_larger_than_the_bound_passes_when_nothing_waits() -> None:
    backlog = AckBacklog(max_rows=10, wait_s=0.1)
    backlog.admit(50, "events")
    assert backlog.rows == 50
    backlog.release(50)  # its append failed
    assert backlog.rows == 0


def test_a_waiting_request_is_admitted_once_rows_are_applied() -> None:
    backlog = AckBacklog(max_rows=5, wait_s=5)
    backlog.admit(5, "events")
    backlog.logged(7, 5)
    admitted = threading.Event()

    def wait_for_room() -> None:
        backlog.admit(3, "events")
        admitted.set()

    waiter = threading.Thread(target=wait_for_room)
    waiter.start()
    assert not admitted.wait(0.2)
    backlog.applied([7])
    assert admitted.wait(2)
    waiter.join()
    assert backlog.rows == 3


def test_zero_means_no_bound() -> None:
    backlog = AckBacklog(max_rows=0, wait_s=0)
    for record in range(100):
        backlog.admit(1_000, "events")
        backlog.logged(record, 1_000)
    assert backlog.rows == 100_000
