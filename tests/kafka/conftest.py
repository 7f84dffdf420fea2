"""Kafka fixtures: a real Kafka-protocol broker (librdkafka's mock cluster) in its own
process for the whole session, a fresh topic per test, and a project with the repo's
data sources bound to that topic."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from redpoll.clickhouse.client import Client, Target
from redpoll.ingest.service import IngestService
from redpoll.kafka.bindings import load_bindings
from redpoll.kafka.lag import GroupLag
from redpoll.settings import load_settings
from redpoll.store import Store
from redpoll.testing_kafka import MockKafka
from tests.support.kafka import Stream, write_project

confluent_kafka = pytest.importorskip("confluent_kafka")


@pytest.fixture(scope="session")
def kafka() -> Iterator[MockKafka]:
    with MockKafka(brokers=1) as cluster:
        yield cluster


@pytest.fixture
def topic(kafka: MockKafka) -> str:
    name = f"events_{uuid.uuid4().hex[:8]}"
    kafka.create_topic(name, 4)
    return name


@pytest.fixture
def kafka_project(tmp_path: Path, topic: str) -> Path:
    return write_project(tmp_path / "shop", topic, batch_rows=700, batch_ms=200)


@pytest.fixture
def service(
    kafka_project: Path, ch_target: Target, admin_client: Client
) -> Iterator[IngestService]:
    settings = load_settings({"project_dir": str(kafka_project)}, environ={})
    store = Store(settings, ch_target, admin_client, None, None)
    store.migrations().up()
    svc = IngestService(store.new_client, ch_target.database, kafka_project)
    yield svc
    svc.close()


@pytest.fixture
def lag(kafka: MockKafka, kafka_project: Path) -> Iterator[GroupLag]:
    """The binding's group lag as the broker sees it (`lag.caught_up()`), one client."""
    with GroupLag(kafka.bootstrap, load_bindings(kafka_project)["events"]) as probe:
        yield probe


@pytest.fixture
def stream(kafka: MockKafka, topic: str) -> Stream:
    return Stream(kafka.bootstrap, topic)
