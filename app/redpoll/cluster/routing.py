"""Route each event to its shard so that every view stays exact on that shard alone.

The key (`keys.routing_key`, docs/adr/0023-cluster-sharding.md): `u:<user_id>` when the
event has a user, else `o:<order_id>` when it has an order, else `e:<event_id>`.
Everything a view must see together then shares one shard: all copies of an event (same
ids, so same key); all events of a `buyer_pairs` group (its buyer is the same `u:`/`o:`
string, materialized_views/buyer_pairs.sql); all events of a `basket_pairs` order,
provided an order belongs to one user (or to none), the ADR's stated assumption. The
per-user views (`user_history`, `user_item_stats`) are keyed by user too. The shard and
the Kafka partition come from the same hash (`keys.py`).

`ShardedWriter` is the ingest path's router in cluster mode (the committer of
ingest/service.py builds it from the setting `cluster_shard_urls`): one `EventWriter`
(one batch sequence, sql/events.sql's protocol) per shard, each batch split by shard.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from redpoll.cluster.keys import routing_key, shard_of
from redpoll.errors import RedpollError
from redpoll.ingest.writer import EventWriter, InsertResult

__all__ = (
    "ShardInsertError",
    "ShardedInsertResult",
    "ShardedWriter",
    "split_by_shard",
)


log = logging.getLogger("redpoll.cluster")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def split_by_shard(rows: Mapping[str, Sequence[Any]], shards: int) -> list[dict[str, list[Any]]]:
    """A columnar batch split into one columnar batch per shard (order kept).

    Empty `event_id`s are filled here (a uuid), before routing: an event without user and
    order is routed by its id, and the writer of its shard must store the same id.
    """
    if not rows:
        return [{} for _ in range(shards)]
    n = len(next(iter(rows.values())))
    ids = [_text(v) or uuid.uuid4().hex for v in rows.get("event_id", [None] * n)]
    users = rows.get("user_id") or [""] * n
    orders = rows.get("order_id") or [""] * n
    columns = {**rows, "event_id": ids}
    target = [
        shard_of(routing_key(_text(u), _text(o), e), shards)
        for u, o, e in zip(users, orders, ids, strict=True)
    ]
    out: list[dict[str, list[Any]]] = []
    for shard in range(shards):
        keep = [i for i, s in enumerate(target) if s == shard]
        out.append({name: [values[i] for i in keep] for name, values in columns.items()})
    return out


@dataclasses.dataclass(frozen=True)
class ShardedInsertResult:
    """Per shard, the outcome of its part of one batch (None: no event of the batch)."""

    shards: tuple[InsertResult | None, ...]
    #: wall time of the whole batch (the shards are written one after the other)
    seconds: float = 0.0

    @property
    def rows_sent(self) -> int:
        return sum(r.rows_sent for r in self.shards if r is not None)

    @property
    def convert_seconds(self) -> float:
        return sum(r.convert_seconds for r in self.shards if r is not None)


class ShardInsertError(RedpollError):
    """Some shards did not store their part of a batch: the caller must not acknowledge
    it, and retries the whole batch (shards that stored theirs drop the copies). An HTTP
    client gets a 503 with `Retry-After`; the shards' own errors are logged, not sent.

    `unstored`: the rows of the failed shards, as routed (columnar, in shard order): what
    the batch still owes them."""

    status = 503
    retry_after = 1

    def __init__(
        self,
        errors: Mapping[int, BaseException],
        unstored: Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        self.errors = dict(errors)
        self.unstored = {name: list(values) for name, values in (unstored or {}).items()}
        failed = ", ".join(str(s) for s in sorted(self.errors))
        super().__init__(
            f"{len(self.errors)} shard(s) ({failed}) did not store their part of the batch:"
            " nothing is acknowledged, retry (shards that stored theirs drop the copies)"
        )


class ShardedWriter:
    """One `EventWriter` per shard, in the cluster's shard order; `insert` routes.

    Exact because each shard runs the single-node protocol on its own events (its own
    batch sequence and dedup index) and no view needs events of two shards. A batch is
    not atomic across shards: on `ShardInsertError` some shards may have stored their
    part; a retry of the same events (same ids) is deduplicated there.
    """

    def __init__(self, writers: Sequence[EventWriter]) -> None:
        if not writers:
            raise ValueError("a sharded writer needs at least one shard")
        self.writers = tuple(writers)
        self._lock = threading.Lock()
        #: the shards' INSERTs run side by side: a batch takes its slowest shard's time
        self._pool = concurrent.futures.ThreadPoolExecutor(len(self.writers), "shard-insert")

    def close(self) -> None:
        """Stop the INSERT threads (the shards' clients belong to the caller)."""
        self._pool.shutdown()

    @property
    def lock(self) -> threading.Lock:
        """Held during every `insert` (each shard's writer also holds its own)."""
        return self._lock

    @property
    def last_batch(self) -> tuple[int, ...]:
        """Each shard's last batch number (its own sequence)."""
        return tuple(w.last_batch for w in self.writers)

    def rebuild_views(self, views: Sequence[str]) -> list[str]:
        """`EventWriter.rebuild_views` on every shard in turn: each shard's views are
        exact on their own (no view needs two shards), so a rebuild is per shard, under
        that shard's writer lock. A failure leaves the shards before it rebuilt; run it
        again."""
        done: list[str] = []
        for writer in self.writers:
            done = writer.rebuild_views(views)
        return done

    def rebuild_view(self, view: str) -> None:
        self.rebuild_views([view])

    def insert(
        self,
        rows: Mapping[str, Sequence[Any]],
        *,
        insert_deduplication_token: str | None = None,
    ) -> ShardedInsertResult:
        """Insert one columnar batch: each shard's events as one batch of that shard.

        Raises:
            ShardInsertError: some shards failed (each rolled its batch back,
                writer.py); the others stored their part.
        """
        started = time.perf_counter()
        parts = split_by_shard(rows, len(self.writers))
        futures: dict[int, concurrent.futures.Future[InsertResult]] = {}
        with self._lock:
            for shard, (writer, part) in enumerate(zip(self.writers, parts, strict=True)):
                if not part or not next(iter(part.values())):
                    continue  # no event of this batch routes here
                token = (  # one token per shard
                    f"{insert_deduplication_token}:{shard}" if insert_deduplication_token else None
                )
                futures[shard] = self._pool.submit(
                    writer.insert, part, insert_deduplication_token=token
                )
            results: list[InsertResult | None] = [None] * len(self.writers)
            errors: dict[int, BaseException] = {}
            for shard, future in futures.items():
                try:
                    results[shard] = future.result()
                except Exception as exc:  # the other shards still get their part
                    log.warning("shard %d did not store its part of a batch: %s", shard, exc)
                    errors[shard] = exc
        if errors:
            failed = [parts[shard] for shard in sorted(errors)]
            unstored = {name: [v for piece in failed for v in piece[name]] for name in failed[0]}
            raise ShardInsertError(errors, unstored)
        return ShardedInsertResult(tuple(results), time.perf_counter() - started)
