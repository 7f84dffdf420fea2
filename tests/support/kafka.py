"""Helpers of the Kafka tests: projects with a binding, event streams produced to the
test broker, waiting for a condition."""

from __future__ import annotations

import contextlib
import json
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from redpoll.testing import copy_project
from tests.support.paths import REPO_ROOT
from tests.support.views import BASE_MS

confluent_kafka = pytest.importorskip("confluent_kafka")

#: Consumer properties for tests. librdkafka's mock cluster does not honour a member's
#: LeaveGroup: the next member of the group waits for the departed one's session timeout
#: (45 s by default) before it gets partitions. A short session makes every restart (and
#: every kill -9) cost ~1 s. Heartbeats run on librdkafka's own thread, so a slow insert
#: does not expire the session.
TEST_PROPERTIES = {"session.timeout.ms": "1500", "heartbeat.interval.ms": "200"}


def properties_toml(properties: dict[str, str] | None = None) -> str:
    items = (properties or TEST_PROPERTIES).items()
    return "\n[properties]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in items)


def write_project(project: Path, topic: str, **binding: Any) -> Path:
    project.mkdir(parents=True, exist_ok=True)
    copy_project(REPO_ROOT, project, ("sql", "materialized_views", "migrations"), exist_ok=True)
    (project / "kafka").mkdir(exist_ok=True)
    lines = [f'topic = "{topic}"', f'group = "g-{topic}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in binding.items()]
    text = "\n".join(lines) + "\n" + properties_toml()
    (project / "kafka" / "events.toml").write_text(text)
    return project


def make_events(n: int, seed: int, prefix: str = "k") -> list[dict[str, Any]]:
    """Events with recent timestamps (inside trending's TTL), few users/items/orders."""
    rnd = random.Random(seed)
    return [
        {
            "event_id": f"{prefix}{seed}-{i}",
            "ts": BASE_MS + rnd.randrange(0, 40 * 86_400_000),
            "user_id": f"u{rnd.randrange(8)}" if rnd.random() < 0.7 else "",
            "order_id": f"o{rnd.randrange(40)}",
            "item_id": f"i{rnd.randrange(25)}",
            "event_type": rnd.choice(["purchase", "purchase", "view", "cart"]),
            "quantity": rnd.randrange(1, 4),
        }
        for i in range(n)
    ]


MALFORMED = [
    b"not json at all",
    b'{"event_id": "bad-q", "quantity": "many"}',
    b"[1, 2]",
    b'{"event_id": "bad-ts", "ts": "yesterday"}',
    b'"just a string"',
]


class Stream:
    """Produces events (with duplicates, id-less events and malformed messages) and
    remembers what the `events` table must end up holding."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.bootstrap = bootstrap
        # idempotent: a producer retry must not write a message twice (an id-less
        # message written twice is two events with different derived ids)
        self.producer = confluent_kafka.Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True}
        )
        self.distinct: dict[str, dict[str, Any]] = {}
        self.malformed = 0
        self.messages = 0
        self._pending_idless: list[dict[str, Any]] = []

    def send(
        self,
        events: list[dict[str, Any]],
        *,
        duplicates: float = 0.1,
        idless: int = 0,
        malformed: int = 0,
        seed: int = 0,
    ) -> None:
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

    def verify_topic(self) -> None:
        """The topic holds exactly what this producer sent, once: what the test expects
        is computed from the producer's side, so a message the broker holds twice (a
        producer retry) would show up as a consumer bug. Reads the topic back."""
        consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"verify-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            }
        )
        try:
            topic = consumer.list_topics(self.topic, timeout=10).topics[self.topic]
            ends = {
                p: consumer.get_watermark_offsets(
                    confluent_kafka.TopicPartition(self.topic, p), timeout=10
                )[1]
                for p in topic.partitions
            }
            consumer.assign([confluent_kafka.TopicPartition(self.topic, p, 0) for p in ends])
            idless: set[str] = set()
            read = 0
            deadline = time.monotonic() + 30
            while read < sum(ends.values()) and time.monotonic() < deadline:
                for m in consumer.consume(10_000, 0.5):
                    if m.error():
                        continue
                    read += 1
                    with contextlib.suppress(ValueError):
                        doc = json.loads(m.value())
                        if isinstance(doc, dict) and not doc.get("event_id"):
                            idless.add(f"{m.topic()}:{m.partition()}:{m.offset()}")
        finally:
            consumer.close()
        assert read == sum(ends.values()) == self.messages, (
            f"the topic holds {sum(ends.values())} messages, the producer sent {self.messages}"
        )
        assert idless <= set(self.distinct), sorted(idless - set(self.distinct))


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
