"""`ShardedWriter` writes a batch's shards side by side (cluster/routing.py): a batch
takes its slowest shard's time, not the sum. The shards here are stand-ins that meet at
a barrier, which only parties running at the same time can pass; the routing and
exactness on real shards are tests/test_cluster_ingest.py's and
tests/test_cluster_simulation.py's."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, cast

import pytest

from redpoll.cluster.routing import ShardedWriter, ShardInsertError, split_by_shard
from redpoll.ingest.writer import EventWriter


class _MeetingShard:
    def __init__(self, barrier: threading.Barrier, fail: bool = False) -> None:
        self.barrier = barrier
        self.fail = fail
        self.rows: list[str] = []

    def insert(self, rows: dict[str, Sequence[Any]], **_: Any) -> str:
        self.barrier.wait()  # BrokenBarrierError after the timeout if run one by one
        if self.fail:
            raise RuntimeError("shard down")
        self.rows += rows["event_id"]
        return "stored"


def _batch() -> dict[str, list[Any]]:
    """Events of many users: both of two shards get some."""
    users = [f"user{n}" for n in range(40)]
    batch = {
        "event_id": [f"e{n}" for n in range(40)],
        "user_id": users,
        "order_id": [""] * 40,
    }
    assert all(part["event_id"] for part in split_by_shard(batch, 2))
    return batch


def test_shards_are_written_side_by_side() -> None:
    barrier = threading.Barrier(2, timeout=5)
    shards = [_MeetingShard(barrier), _MeetingShard(barrier)]
    writer = ShardedWriter(cast(list[EventWriter], shards))
    try:
        result = writer.insert(_batch())
    finally:
        writer.close()
    assert result.shards == ("stored", "stored")
    assert sorted(shards[0].rows + shards[1].rows) == sorted(_batch()["event_id"])


def test_a_failed_shard_names_its_unstored_rows() -> None:
    barrier = threading.Barrier(2, timeout=5)
    shards = [_MeetingShard(barrier), _MeetingShard(barrier, fail=True)]
    writer = ShardedWriter(cast(list[EventWriter], shards))
    try:
        with pytest.raises(ShardInsertError) as failed:
            writer.insert(_batch())
    finally:
        writer.close()
    assert set(failed.value.errors) == {1}
    assert sorted(failed.value.unstored["event_id"]) == sorted(
        split_by_shard(_batch(), 2)[1]["event_id"]
    )
    assert shards[0].rows and not shards[1].rows
