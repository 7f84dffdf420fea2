"""Kafka ingestion by Redpoll's own consumer (ADR 0009, docs/kafka.md).

A data source is bound to a topic by `kafka/<datasource>.toml` in the project. One
consumer thread per binding (`KafkaIngestor`, confluent-kafka = librdkafka) runs inside
`redpoll serve` when `kafka_brokers` is set, or alone as `redpoll ingest kafka`.

Delivery: messages are batched by size (`batch_rows`) or time (`batch_ms`), validated by
the same code as the HTTP events API (`parse_body` + `validate_rows`) and inserted through
the process's one `IngestService` (one writer per data source); offsets are committed
only after that insert returned, i.e. after the rows are durable and in the views. A crash
between insert and commit redelivers the batch; it is harmless because every event has an
`event_id` (a message without one gets `<topic>:<partition>:<offset>[:<row>]`, the same id
on every redelivery) and the views drop event_ids stored by an earlier batch. Malformed
messages go to `<datasource>_quarantine` with `line` = offset and
`column` = `<field>@<topic>/<partition>/<offset>`.

Cluster mode (docs/cluster.md, docs/adr/0023-cluster-sharding.md): when the service
writes events to shards (`cluster_shard_urls`), a binding of a landing data source gets
one consumer per shard instead of one group member: consumer i is assigned
`partitions_of_shard(i, shards, partitions)` by hand (producers key messages by the
routing key with the murmur2 partitioner, so those partitions hold only shard i's
events) and commits its offsets after the insert returned, as above. Its batches reach
only shard i's writer (the service's `ShardedWriter` routes by the same key, so a
message in a wrong partition still lands on its own shard). Manual assignment has no
group protocol: run one such process for the cluster (docs/cluster.md).

Broker outages: librdkafka reconnects by itself; errors are counted and logged, commits
that failed are retried, and any unexpected failure (including a failed insert) closes the
consumer, waits with exponential backoff (capped) and starts again from the committed
offsets. The thread only ends when asked to stop.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redpoll.cluster.keys import partitions_of_shard
from redpoll.errors import ConfigError, RedpollError
from redpoll.ingest.validate import QuarantineRow, parse_body, validate_rows
from redpoll.kafka.bindings import BINDINGS_DIR, KafkaBinding, load_bindings

if TYPE_CHECKING:
    from redpoll.ingest.datasources import DataSource
    from redpoll.ingest.service import IngestService

__all__ = (
    "BINDINGS_DIR",
    "KafkaBinding",
    "KafkaIngestor",
    "KafkaIngestors",
    "dedup_token",
    "load_bindings",
)

log = logging.getLogger("redpoll.kafka")

_MAX_BACKOFF_S = 30.0


# ---------------------------------------------------------------- message -> batch


def build_batch(datasource: DataSource, messages: list[Any]) -> Any:
    """Validate Kafka messages exactly as the events API validates a body.

    Each message value is a body (usually one JSON object; several NDJSON lines are rows
    of the same message). Rows without `event_id` on the events landing path get
    `<topic>:<partition>:<offset>` (`:<k>` for the k-th extra row of a message), so a
    redelivered message carries the same ids. Quarantined rows get their Kafka location.
    """
    parsed: list[tuple[int, bytes, Any]] = []
    where: list[tuple[str, int, int]] = []
    fill_ids = datasource.uses_landing and datasource.column("event_id") is not None
    for message in messages:
        value = message.value()
        if not value:
            continue  # tombstone / empty message
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        for k, (_line, raw, doc) in enumerate(parse_body(value)):
            if fill_ids and isinstance(doc, dict) and not doc.get("event_id"):
                doc["event_id"] = f"{topic}:{partition}:{offset}" + (f":{k}" if k else "")
            parsed.append((len(parsed), raw, doc))
            where.append((topic, partition, offset))
    batch = validate_rows(datasource, parsed)
    relocated = []
    for q in batch.quarantined:
        topic, partition, offset = where[q.line]
        relocated.append(
            QuarantineRow(offset, f"{q.column}@{topic}/{partition}/{offset}", q.error, q.raw)
        )
    batch.quarantined = relocated
    return batch


def dedup_token(messages: list[Any]) -> str:
    """`insert_deduplication_token` of a batch: its offset range per partition.

    A redelivered batch with the same ranges holds the same messages (Kafka logs are
    immutable), so ClickHouse may drop it as an identical retry where block dedup is on
    (replicated tables, `non_replicated_deduplication_window`). Exactness of the events
    views does not depend on it (event_id dedup does that).
    """
    ranges: dict[tuple[str, int], list[int]] = {}
    for message in messages:
        key = (message.topic(), message.partition())
        offset = message.offset()
        span = ranges.setdefault(key, [offset, offset])
        span[0], span[1] = min(span[0], offset), max(span[1], offset)
    return "kafka:" + ",".join(
        f"{topic}/{partition}/{lo}-{hi}" for (topic, partition), (lo, hi) in sorted(ranges.items())
    )


# ---------------------------------------------------------------- the consumer


@dataclasses.dataclass
class KafkaStats:
    state: str = "starting"  # starting, running, backoff, stopped
    messages: int = 0
    rows: int = 0
    quarantined: int = 0
    batches: int = 0
    insert_errors: int = 0
    commit_errors: int = 0
    broker_errors: int = 0
    restarts: int = 0
    last_error: str = ""
    last_batch_at: float = 0.0
    last_batch_ms: float = 0.0


class KafkaIngestor:
    """One consumer thread for one binding, inserting through `service`.

    `shard`: (shard, shards) in cluster mode: the consumer reads the partitions of that
    shard (`partitions_of_shard`), assigned by hand, instead of subscribing."""

    def __init__(
        self,
        service: IngestService,
        binding: KafkaBinding,
        brokers: str,
        consumer_factory: Callable[[dict[str, Any]], Any] | None = None,
        shard: tuple[int, int] | None = None,
    ) -> None:
        self.service = service
        self.binding = binding
        self.brokers = brokers
        self.shard = shard
        #: the status key: the data source, `<datasource>@shard<i>` in cluster mode
        self.name = binding.datasource + (f"@shard{shard[0]}" if shard else "")
        self.stats = KafkaStats()
        self._factory = consumer_factory
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None
        self._pending: list[Any] = []
        self._pending_rows = 0
        self._uncommitted: dict[tuple[str, int], int] = {}  # inserted, commit failed
        self._committed: dict[tuple[str, int], int] = {}  # next offset, durable in Kafka
        self._high: dict[tuple[str, int], int] = {}
        self._rate: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()

    # -- lifecycle

    def start(self) -> KafkaIngestor:
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"kafka-{self.name}")
        self._thread.start()
        return self

    def stop(self, timeout: float = 30) -> None:
        """Flush what was consumed, commit it, leave the group."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_forever(self) -> None:
        """Run in the calling thread until `stop()` (from a signal handler)."""
        self._run()

    # -- status

    def status(self) -> dict[str, Any]:
        now = time.time()
        with self._lock:
            while self._rate and self._rate[0][0] < now - 10:
                self._rate.popleft()
            rows_10s = sum(n for _, n in self._rate)
            lag = {
                f"{t}/{p}": max(0, high - self._committed.get((t, p), 0))
                for (t, p), high in self._high.items()
            }
        body = dataclasses.asdict(self.stats)
        body.update(
            {
                "topic": self.binding.topic,
                "group": self.binding.group,
                **({"shard": self.shard[0]} if self.shard else {}),
                "events_per_s": round(rows_10s / 10, 1),
                "lag": sum(lag.values()),
                "lag_by_partition": lag,
                "seconds_since_last_batch": (
                    round(now - self.stats.last_batch_at, 1) if self.stats.last_batch_at else None
                ),
            }
        )
        return body

    # -- the loop

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._consume_until_stopped()
                backoff = 0.5
            except Exception as exc:
                self.stats.restarts += 1
                self.stats.state = "backoff"
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "kafka consumer for %s failed (%s); restarting in %.1fs",
                    self.binding.datasource,
                    self.stats.last_error,
                    backoff,
                )
                self._close_consumer(commit=False)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
        self.stats.state = "stopped"

    def _new_consumer(self) -> Any:
        config = self.binding.consumer_config(self.brokers)
        config["error_cb"] = self._on_error
        if self._factory is not None:
            return self._factory(config)
        from confluent_kafka import Consumer

        return Consumer(config)

    def _consume_until_stopped(self) -> None:
        self._pending, self._pending_rows = [], 0
        self._uncommitted.clear()
        self._consumer = self._new_consumer()
        if self.shard is None:
            self._consumer.subscribe(
                [self.binding.topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        else:
            self._assign_shard(*self.shard)
        self.stats.state = "running"
        batch_s = self.binding.batch_ms / 1000
        deadline = time.monotonic() + batch_s
        try:
            while not self._stop.is_set():
                wait = max(0.0, deadline - time.monotonic())
                want = max(1, min(10_000, self.binding.batch_rows - self._pending_rows))
                for message in self._consumer.consume(want, wait):
                    if message.error():
                        self._on_message_error(message)
                        continue
                    self._pending.append(message)
                    self._pending_rows += 1
                if self._pending_rows >= self.binding.batch_rows or (time.monotonic() >= deadline):
                    self._flush()
                    deadline = time.monotonic() + batch_s
        finally:
            self._close_consumer(commit=True)

    def _assign_shard(self, shard: int, shards: int) -> None:
        """Take the topic's partitions of `shard` by hand; each starts at the group's
        committed offset (else `auto_offset_reset`). A topic whose partition count is
        not a multiple of `shards` is refused (its partitions would mix shards)."""
        from confluent_kafka import TopicPartition

        topic = self.binding.topic
        found = self._consumer.list_topics(topic, timeout=10).topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise RuntimeError(f"topic {topic!r} not found: {getattr(found, 'error', None)}")
        mine = [
            TopicPartition(topic, p)
            for p in partitions_of_shard(shard, shards, len(found.partitions))
        ]
        self._on_assign(self._consumer, mine)
        self._consumer.assign(mine)

    def _flush(self) -> None:
        """Insert what is pending, then commit its offsets (only after the insert)."""
        messages, self._pending, self._pending_rows = self._pending, [], 0
        if messages:
            started = time.perf_counter()
            datasource = self.service.datasource(self.binding.datasource)
            batch = build_batch(datasource, messages)
            try:
                self.service.ingest_batch(datasource, batch, dedup_token=dedup_token(messages))
            except Exception:
                self.stats.insert_errors += 1
                raise  # the consumer restarts from the committed offsets
            for message in messages:
                key = (message.topic(), message.partition())
                next_offset = message.offset() + 1
                if next_offset > self._uncommitted.get(key, -1):
                    self._uncommitted[key] = next_offset
            self.stats.messages += len(messages)
            self.stats.rows += batch.rows
            self.stats.quarantined += len(batch.quarantined)
            self.stats.batches += 1
            self.stats.last_batch_at = time.time()
            self.stats.last_batch_ms = round((time.perf_counter() - started) * 1000, 1)
            with self._lock:
                self._rate.append((time.time(), batch.rows))
        self._commit()
        self._refresh_watermarks()

    def _commit(self) -> None:
        if not self._uncommitted or self._consumer is None:
            return
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(t, p, o) for (t, p), o in self._uncommitted.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # rows are durable; if we die before a later commit succeeds they are
            # redelivered and dropped by event_id dedup
            self.stats.commit_errors += 1
            self.stats.last_error = f"commit: {exc}"
            log.warning(
                "offset commit for %s failed (will retry): %s", self.binding.datasource, exc
            )
            return
        with self._lock:
            self._committed.update(self._uncommitted)
        self._uncommitted.clear()

    def _refresh_watermarks(self) -> None:
        if self._consumer is None:
            return
        from confluent_kafka import TopicPartition

        with self._lock:
            keys = list(self._high)
        for topic, partition in keys:
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except Exception:
                continue
            if high >= 0:
                with self._lock:
                    self._high[(topic, partition)] = high

    # -- callbacks (run inside consume(), on this thread)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        try:
            committed = consumer.committed(partitions, timeout=10)
        except Exception:
            committed = []
        with self._lock:
            for tp in committed:
                self._high.setdefault((tp.topic, tp.partition), 0)
                if tp.offset >= 0:
                    self._committed[(tp.topic, tp.partition)] = tp.offset
            for tp in partitions:
                self._high.setdefault((tp.topic, tp.partition), 0)
        log.info(
            "kafka %s: assigned %s",
            self.name,
            [f"{tp.topic}/{tp.partition}" for tp in partitions],
        )

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        # the batch may hold messages of revoked partitions: make them durable and
        # commit before another member gets those partitions
        self._flush()
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        with self._lock:
            for key in revoked:
                self._high.pop(key, None)
                self._committed.pop(key, None)

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        # partitions already belong to someone else: a commit would fail. Insert what we
        # have anyway (dedup makes a redelivery harmless) and drop the offsets.
        self._flush_without_commit()
        with self._lock:
            for tp in partitions:
                self._high.pop((tp.topic, tp.partition), None)
                self._committed.pop((tp.topic, tp.partition), None)

    def _flush_without_commit(self) -> None:
        consumer, self._consumer = self._consumer, None
        try:
            self._flush()
        finally:
            self._consumer = consumer
            self._uncommitted.clear()

    def _on_error(self, error: Any) -> None:
        self.stats.broker_errors += 1
        self.stats.last_error = f"broker: {error}"
        if getattr(error, "fatal", lambda: False)():
            log.error("kafka %s: fatal error %s", self.binding.datasource, error)
        else:
            log.info("kafka %s: %s", self.binding.datasource, error)

    def _on_message_error(self, message: Any) -> None:
        error = message.error()
        self.stats.broker_errors += 1
        self.stats.last_error = f"consume: {error}"
        if error.fatal():
            raise RuntimeError(f"fatal Kafka error: {error}")
        log.info("kafka %s: %s", self.binding.datasource, error)

    def _close_consumer(self, *, commit: bool) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        if commit:
            try:
                self._flush()
            except Exception as exc:
                log.warning("final flush of %s failed: %s", self.binding.datasource, exc)
        self._consumer = None
        try:
            consumer.close()
        except Exception as exc:
            log.info("closing the kafka consumer: %s", exc)


class KafkaIngestors:
    """The consumers of one process (one per `engine = "redpoll"` binding; in cluster
    mode one per shard for a binding of a landing data source)."""

    def __init__(
        self, service: IngestService, project_dir: Path, brokers: str, only: set[str] | None = None
    ) -> None:
        bindings = load_bindings(project_dir)
        missing = (only or set()) - set(bindings)
        if missing:
            raise ConfigError(
                f"no Kafka binding for {sorted(missing)} "
                f"(expected {BINDINGS_DIR}/<datasource>.toml)"
            )
        self.ingestors = [
            KafkaIngestor(service, binding, brokers, shard=shard)
            for name, binding in bindings.items()
            if binding.engine == "redpoll" and (only is None or name in only)
            for shard in _shards_of(service, name)
        ]

    def start(self) -> KafkaIngestors:
        for ingestor in self.ingestors:
            ingestor.start()
        return self

    def stop(self) -> None:
        for ingestor in self.ingestors:
            ingestor._stop.set()
        for ingestor in self.ingestors:
            ingestor.stop()

    def status(self) -> dict[str, Any]:
        return {i.name: i.status() for i in self.ingestors}

    def write_status(self, path: Path) -> None:
        """For `redpoll ingest status` when the consumers run in `redpoll ingest kafka`."""
        body = {"pid": os.getpid(), "written_at": time.time(), "kafka": self.status()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=1))
        tmp.replace(path)


def _shards_of(service: IngestService, datasource: str) -> list[tuple[int, int] | None]:
    """One consumer per shard for a landing data source when the service writes to
    shards; else one consumer (None). An unknown data source gets one consumer, whose
    batches then fail as today (the table may be created later)."""
    shards = len(service.shards)
    if not shards:
        return [None]
    try:
        sharded = service.datasource(datasource).uses_landing
    except RedpollError:
        return [None]
    return [(i, shards) for i in range(shards)] if sharded else [None]
