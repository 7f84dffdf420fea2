"""Kafka -> events through Redpoll's consumer against a real Kafka-protocol broker:
exact views, quarantine with the Kafka location, offsets committed after the insert,
broker outage recovery."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from redpoll.clickhouse.client import Client, Target
from redpoll.errors import ConfigError
from redpoll.ingest.service import IngestService
from redpoll.kafka.bindings import load_bindings
from redpoll.kafka.consumer import KafkaIngestor, dedup_token
from redpoll.kafka.lag import GroupLag, group_lag
from redpoll.testing_kafka import MockKafka
from tests.support.kafka import Stream, make_events, wait_for
from tests.support.views import observed, oracle


def assert_exact(client: Client, target: Target, stream: Stream) -> None:
    stream.verify_topic()
    got = observed(client, target.database)
    want = oracle(list(stream.distinct.values()))
    assert got["events"] == want["events"], "events differ from the distinct valid events"
    for view in ("buyer_pairs", "trending", "user_history", "user_item_stats"):
        assert got[view] == want[view], view


def test_topic_to_views_exact_with_duplicates_and_malformed(
    kafka: MockKafka,
    kafka_project: Path,
    service: IngestService,
    stream: Stream,
    lag: GroupLag,
    admin_client: Client,
    ch_target: Target,
) -> None:
    stream.send(make_events(2500, seed=1), duplicates=0.15, idless=40, malformed=11, seed=1)
    stream.flush()
    binding = load_bindings(kafka_project)["events"]
    ingestor = KafkaIngestor(service, binding, kafka.bootstrap).start()
    try:
        # more while it runs, including re-sends of already stored events
        stream.send(make_events(1500, seed=2), duplicates=0.1, malformed=4, seed=2)
        stream.send(make_events(300, seed=1), duplicates=0.0, seed=3)
        stream.flush()
        wait_for(lag.caught_up, 60, "the consumer to catch up")
        status = ingestor.status()
    finally:
        ingestor.stop()
    assert status["state"] == "running" and status["lag"] == 0
    assert status["messages"] == stream.messages
    assert status["quarantined"] == stream.malformed
    assert status["batches"] >= 3
    assert_exact(admin_client, ch_target, stream)

    bad = admin_client.query(
        "SELECT line, column, error, raw FROM events_quarantine ORDER BY raw"
    ).result_rows
    assert len(bad) == stream.malformed
    for line, column, _error, _raw in bad:
        _field, where = column.split("@")
        t, partition, offset = where.split("/")
        assert t == stream.topic and int(offset) == line and 0 <= int(partition) < 4
    assert {c.split("@")[0] for _, c, _, _ in bad} == {"", "quantity", "ts"}


def test_uncommitted_batch_is_redelivered_without_double_counting(
    kafka: MockKafka,
    kafka_project: Path,
    service: IngestService,
    stream: Stream,
    lag: GroupLag,
    admin_client: Client,
    ch_target: Target,
) -> None:
    """A consumer that inserted but died before committing: the next one replays."""
    stream.send(make_events(1200, seed=5), idless=30, seed=5)
    stream.flush()
    binding = load_bindings(kafka_project)["events"]
    crashed = KafkaIngestor(service, binding, kafka.bootstrap)
    crashed._commit = lambda: None  # type: ignore[method-assign]  # never commits
    crashed.start()
    wait_for(lambda: crashed.stats.messages >= stream.messages, 60, "first consumer")
    crashed.stop()
    stream.verify_topic()
    stored = [r[0] for r in admin_client.query("SELECT event_id FROM events").result_rows]
    assert len(stored) == len(set(stored)) == len(stream.distinct), sorted(
        set(stored) ^ set(stream.distinct)
    )[:5]
    assert group_lag(kafka.bootstrap, binding)["lag"] == stream.messages  # none committed

    again = KafkaIngestor(service, binding, kafka.bootstrap).start()
    try:
        wait_for(lag.caught_up, 60, "the second consumer")
        assert again.stats.messages == stream.messages  # everything redelivered
    finally:
        again.stop()
    assert_exact(admin_client, ch_target, stream)


def test_broker_outage_consumer_recovers(
    kafka: MockKafka,
    kafka_project: Path,
    service: IngestService,
    stream: Stream,
    lag: GroupLag,
    admin_client: Client,
    ch_target: Target,
) -> None:
    binding = load_bindings(kafka_project)["events"]
    ingestor = KafkaIngestor(service, binding, kafka.bootstrap).start()
    try:
        stream.send(make_events(1000, seed=7), seed=7)
        stream.flush()
        wait_for(lag.caught_up, 60, "catch up before the outage")
        kafka.all_down()
        try:
            stream.send(make_events(1000, seed=8), idless=10, malformed=3, seed=8)  # buffered
            wait_for(lambda: ingestor.stats.broker_errors > 0, 20, "the consumer to notice")
            time.sleep(1)  # consume() keeps failing meanwhile
            assert ingestor._thread is not None and ingestor._thread.is_alive()
        finally:
            kafka.all_up()
        stream.flush()
        wait_for(lag.caught_up, 90, "catch up after the outage")
        assert ingestor.status()["state"] == "running"
    finally:
        ingestor.stop()
    assert_exact(admin_client, ch_target, stream)


def test_consumer_shares_the_service_with_concurrent_http_style_ingest(
    kafka: MockKafka,
    kafka_project: Path,
    service: IngestService,
    stream: Stream,
    lag: GroupLag,
    admin_client: Client,
    ch_target: Target,
) -> None:
    """Kafka and direct `service.ingest` calls go through one writer: still exact."""
    binding = load_bindings(kafka_project)["events"]
    ingestor = KafkaIngestor(service, binding, kafka.bootstrap).start()
    extra = make_events(600, seed=11, prefix="http")

    def post() -> None:
        import json

        for i in range(0, len(extra), 50):
            service.ingest("events", "\n".join(json.dumps(e) for e in extra[i : i + 50]).encode())

    try:
        poster = threading.Thread(target=post)
        poster.start()
        stream.send(make_events(2000, seed=12), seed=12)
        stream.flush()
        poster.join()
        wait_for(lag.caught_up, 60, "catch up")
    finally:
        ingestor.stop()
    for e in extra:
        stream.distinct[e["event_id"]] = e
    assert_exact(admin_client, ch_target, stream)


def test_binding_validation(tmp_path: Path) -> None:
    (tmp_path / "kafka").mkdir()
    path = tmp_path / "kafka" / "events.toml"
    path.write_text('topic = "t"\n[properties]\n"sasl.password" = "hunter2"\n')
    with pytest.raises(ConfigError, match="secret"):
        load_bindings(tmp_path)
    path.write_text('topic = "t"\n[properties]\n"sasl.password" = "${KPW}"\n')
    with pytest.raises(ConfigError, match="KPW"):
        load_bindings(tmp_path, environ={})
    binding = load_bindings(tmp_path, environ={"KPW": "s3"})["events"]
    assert binding.consumer_config("b:1")["sasl.password"] == "s3"
    assert binding.group == "redpoll-events" and binding.format == "JSONEachRow"
    path.write_text('topic = "t"\nformat = "CSV"\n')
    with pytest.raises(ConfigError, match="format"):
        load_bindings(tmp_path)
    path.write_text('topic = "t"\ntopik = "x"\n')
    with pytest.raises(ConfigError, match="unknown"):
        load_bindings(tmp_path)


def test_batch_carries_its_offset_range_as_dedup_token(
    kafka: MockKafka, kafka_project: Path, service: IngestService, stream: Stream, lag: GroupLag
) -> None:
    """Each Kafka batch reaches `EventWriter.insert` with its topic/partition/offset range
    as `insert_deduplication_token` (inserted alone: one consumer, nothing to group)."""
    service.open_writers()
    writer = service._committers["events"].writer
    assert writer is not None
    tokens: list[str | None] = []
    insert = writer.insert

    def spy(rows, *, insert_deduplication_token=None):  # type: ignore[no-untyped-def]
        tokens.append(insert_deduplication_token)
        return insert(rows, insert_deduplication_token=insert_deduplication_token)

    writer.insert = spy  # type: ignore[method-assign]
    stream.send(make_events(400, seed=21), duplicates=0.0, seed=21)
    stream.flush()
    ingestor = KafkaIngestor(
        service, load_bindings(kafka_project)["events"], kafka.bootstrap
    ).start()
    try:
        wait_for(lag.caught_up, 60, "catch up")
    finally:
        ingestor.stop()
    assert tokens and all(t and t.startswith("kafka:") for t in tokens), tokens
    covered = 0
    for token in tokens:
        assert token is not None
        for span in token.removeprefix("kafka:").split(","):
            topic, _partition, offsets = span.split("/")
            lo, hi = map(int, offsets.split("-"))
            assert topic == stream.topic and hi >= lo
            covered += hi - lo + 1
    assert covered == stream.messages  # every offset in exactly one batch's range


def test_dedup_token_is_the_offset_range_per_partition() -> None:
    class Message:
        def __init__(self, partition: int, offset: int) -> None:
            self._p, self._o = partition, offset

        def topic(self) -> str:
            return "t"

        def partition(self) -> int:
            return self._p

        def offset(self) -> int:
            return self._o

    batch = [Message(1, 7), Message(0, 3), Message(1, 5), Message(0, 4), Message(1, 6)]
    assert dedup_token(batch) == "kafka:t/0/3-4,t/1/5-7"
