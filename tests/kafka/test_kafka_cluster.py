"""Kafka in cluster mode against librdkafka's mock broker: one consumer per shard,
assigned that shard's partitions by hand, each batch reaching its shard's writer, offsets
committed after the insert; the shards (simulated in the embedded chDB,
tests/support/cluster.py) end up exact."""

from __future__ import annotations

import dataclasses
import functools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from redpoll.clickhouse.client import Client, Target, connect
from redpoll.cluster.keys import partitions_of_shard, routing_key, shard_of
from redpoll.ingest.service import IngestService
from redpoll.kafka.bindings import load_bindings
from redpoll.kafka.consumer import KafkaIngestors
from redpoll.kafka.lag import GroupLag
from redpoll.testing_kafka import MockKafka
from tests.support.cluster import SHARDS, Cluster, cluster_databases, stream
from tests.support.kafka import wait_for, write_project
from tests.support.views import observed, oracle

confluent_kafka = pytest.importorskip("confluent_kafka")
PARTITIONS = 2 * SHARDS


@pytest.fixture
def cluster(ch_target: Target, admin_client: Client) -> Iterator[Cluster]:
    with cluster_databases(ch_target, admin_client) as build:
        yield build()


@pytest.fixture
def sharded_topic(kafka: MockKafka) -> str:
    topic = f"events_{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, PARTITIONS)
    return topic


@pytest.fixture
def project(tmp_path: Path, sharded_topic: str) -> Path:
    return write_project(tmp_path / "shop", sharded_topic, batch_rows=300, batch_ms=150)


@pytest.fixture
def service(cluster: Cluster, project: Path) -> Iterator[IngestService]:
    """The writer process's service: one writer per shard database."""
    shards = [
        (functools.partial(connect, dataclasses.replace(cluster.target, database=db)), db)
        for db in cluster.shards
    ]
    target = dataclasses.replace(cluster.target, database=cluster.merged)
    svc = IngestService(functools.partial(connect, target), cluster.merged, project, shards=shards)
    yield svc
    svc.close()


def test_one_consumer_per_shard_reads_its_partitions_and_stays_exact(
    kafka: MockKafka, sharded_topic: str, project: Path, cluster: Cluster, service: IngestService
) -> None:
    topic = sharded_topic
    events, batches, _ = stream(9)
    sent: list[dict[str, Any]] = [e for batch in batches for e in batch]  # with copies
    produce(kafka.bootstrap, topic, sent)
    status = consume(kafka, project, service)
    for s in range(SHARDS):
        mine = status[f"events@shard{s}"]
        assert mine["state"] == "running" and mine["shard"] == s and mine["lag"] == 0
        assert sorted(int(k.split("/")[1]) for k in mine["lag_by_partition"]) == (
            partitions_of_shard(s, SHARDS, PARTITIONS)
        )
    assert sum(status[f"events@shard{s}"]["messages"] for s in range(SHARDS)) == len(sent)
    # each shard's consumer got exactly the messages of its shard
    for s in range(SHARDS):
        owed = [
            e
            for e in sent
            if shard_of(routing_key(e["user_id"], e["order_id"], e["event_id"]), SHARDS) == s
        ]
        assert status[f"events@shard{s}"]["messages"] == len(owed)
    # exact: each event once, in its shard, views as the batch recomputation
    client = cluster.client
    for s, db in enumerate(cluster.shards):
        rows = client.query(f"SELECT event_id, user_id, order_id FROM {db}.events").result_rows
        assert all(shard_of(routing_key(u, o, e), SHARDS) == s for e, u, o in rows)
    assert observed(client, cluster.merged) == oracle(events)

    # a restart resumes each shard's partitions at the offsets committed after its
    # inserts: only the new messages are read
    # (orders of their own: an order belongs to one owner, the ADR's assumption)
    renamed: dict[str, dict[str, Any]] = {}
    for event in [e for batch in stream(10)[1] for e in batch]:
        order = event["order_id"] and "later-" + event["order_id"]
        renamed.setdefault(event["event_id"], {**event, "order_id": order})
    later = [renamed[e["event_id"]] for batch in stream(10)[1] for e in batch]
    more = list(renamed.values())
    produce(kafka.bootstrap, topic, later)
    again = consume(kafka, project, service)
    assert sum(again[f"events@shard{s}"]["messages"] for s in range(SHARDS)) == len(later)
    assert observed(client, cluster.merged) == oracle(events + more)


def produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    """As a producer must in cluster mode: keyed by the routing key, murmur2."""
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "linger.ms": 5,
        }
    )
    for event in events:
        key = routing_key(event["user_id"], event["order_id"], event["event_id"])
        producer.produce(topic, json.dumps(event).encode(), key=key.encode())
    assert producer.flush(30) == 0


def consume(kafka: MockKafka, project: Path, service: IngestService) -> dict[str, Any]:
    """Run the process's consumers until the group's committed offsets reach the ends."""
    ingestors = KafkaIngestors(service, project, kafka.bootstrap)
    assert [i.shard for i in ingestors.ingestors] == [(s, SHARDS) for s in range(SHARDS)]
    ingestors.start()
    try:
        with GroupLag(kafka.bootstrap, load_bindings(project)["events"]) as lag:
            wait_for(lag.caught_up, 60, "the shard consumers to commit every partition")
        return ingestors.status()
    finally:
        ingestors.stop()
