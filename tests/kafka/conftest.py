"""Kafka fixtures: a real Kafka-protocol broker (librdkafka's mock cluster) in its own
process for the whole session, a fresh topic per test, and a project with the repo's
data sources bound to that topic."""

from __future__ import annotations

import json
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from redpoll.clickhouse.client import Client, Target
from redpoll.ingest.service import IngestService
from redpoll.settings import load_settings
from redpoll.store import Store
from redpoll.testing_kafka import MockKafka
from tests.conftest import REPO_ROOT
from tests.test_views_exact import BASE_MS

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


def write_project(project: Path, topic: str, **binding: Any) -> Path:
    project.mkdir(parents=True, exist_ok=True)
    for folder in ("sql", "migrations"):
        shutil.copytree(REPO_ROOT / folder, project / folder, dirs_exist_ok=True)
    (project / "kafka").mkdir(exist_ok=True)
    lines = [f'topic = "{topic}"', f'group = "g-{topic}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in binding.items()]
    (project / "kafka" / "events.toml").write_text("\n".join(lines) + "\n")
    return project


@pytest.fixture
def kafka_project(tmp_path: Path, topic: str) -> Path:
    return write_project(tmp_path / "shop", topic, batch_rows=700, batch_ms=200)


@pytest.fixture
def service(kafka_project: Path, ch_target: Target, admin_client: Client
            ) -> Iterator[IngestService]:
    settings = load_settings({"project_dir": str(kafka_project)}, environ={})
    Store(settings, ch_target, admin_client, None, None).migrations().up()
    svc = IngestService(ch_target, kafka_project)
    yield svc
    svc.close()


def make_events(n: int, seed: int, prefix: str = "k") -> list[dict[str, Any]]:
    """Events with recent timestamps (inside trending's TTL), few users/items/orders."""
    rnd = random.Random(seed)
    return [{
        "event_id": f"{prefix}{seed}-{i}",
        "ts": BASE_MS + rnd.randrange(0, 40 * 86_400_000),
        "user_id": f"u{rnd.randrange(8)}" if rnd.random() < 0.7 else "",
        "order_id": f"o{rnd.randrange(40)}",
        "item_id": f"i{rnd.randrange(25)}",
        "event_type": rnd.choice(["purchase", "purchase", "view", "cart"]),
        "quantity": rnd.randrange(1, 4),
    } for i in range(n)]


MALFORMED = [b"not json at all", b'{"event_id": "bad-q", "quantity": "many"}', b"[1, 2]",
             b'{"event_id": "bad-ts", "ts": "yesterday"}', b'"just a string"']


class Stream:
    """Produces events (with duplicates, id-less events and malformed messages) and
    remembers what the `events` table must end up holding."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap,
                                                  "linger.ms": 5})
        self.distinct: dict[str, dict[str, Any]] = {}
        self.malformed = 0
        self.messages = 0
        self._pending_idless: list[dict[str, Any]] = []

    def send(self, events: list[dict[str, Any]], *, duplicates: float = 0.1,
             idless: int = 0, malformed: int = 0, seed: int = 0) -> None:
        rnd = random.Random(seed)
        for event in events:
            self._produce(event)
            self.distinct.setdefault(event["event_id"], event)
            if rnd.random() < duplicates:  # an at-least-once producer retry
                self._produce(event)
        for k in range(idless):
            event = {**events[k % len(events)], "event_id": ""}
            body = {key: v for key, v in event.items() if key != "event_id"}
            self._produce(body, on_delivery=self._idless_delivered(event))
        for k in range(malformed):
            self.producer.produce(self.topic, MALFORMED[k % len(MALFORMED)])
            self.messages += 1
            self.malformed += 1 + (k % len(MALFORMED) == 2)  # "[1, 2]" is two bad rows
        self.producer.poll(0)

    def _idless_delivered(self, event: dict[str, Any]) -> Callable[[Any, Any], None]:
        def done(err: Any, msg: Any) -> None:
            assert err is None, err
            event_id = f"{msg.topic()}:{msg.partition()}:{msg.offset()}"
            self.distinct[event_id] = {**event, "event_id": event_id}
        return done

    def _produce(self, event: dict[str, Any], **kwargs: Any) -> None:
        self.producer.produce(self.topic, json.dumps(event).encode(), **kwargs)
        self.messages += 1
        if self.messages % 5000 == 0:
            self.producer.poll(0)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


@pytest.fixture
def stream(kafka: MockKafka, topic: str) -> Stream:
    return Stream(kafka.bootstrap, topic)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
