"""Acceptance of Kafka ingestion: a stream with duplicates, id-less and malformed
messages is consumed by real processes that are killed with SIGKILL at random points
mid-stream and restarted, alternating `redpoll serve` (the in-server consumer) and
`redpoll ingest kafka`. After the last one caught up, `events` holds exactly the valid
distinct events and every view equals the oracle: nothing lost, nothing counted twice.

The project is the repo's own: sql/, migrations/ and kafka/events.toml (topic `events`,
group `redpoll-events`, default batching), plus a short session timeout (see
`TEST_PROPERTIES`: the mock broker makes a restarted member wait for the dead one's
session to expire). Data is read back through the last server's admin SQL API.
"""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from redpoll.kafka.bindings import load_bindings
from redpoll.kafka.lag import GroupLag
from redpoll.testing import AdminSQL, copy_project, free_port, run_cli, run_server
from redpoll.testing_kafka import MockKafka
from tests.support.kafka import Stream, properties_toml, wait_for
from tests.support.paths import REPO_ROOT
from tests.support.views import BASE_MS, observed, oracle

TOKEN = "kafka-crash-token"
#: the consumer processes, in order; each is killed (SIGKILL) mid-stream
INCARNATIONS = ("serve", "ingest", "serve", "ingest")
CHUNK_S = 0.25  # the producer sends a chunk every CHUNK_S while the kills go on
SEED = int(os.environ.get("REDPOLL_TEST_SEED", random.randrange(1_000_000)))


def chunk_events(chunk: int, n: int) -> list[dict[str, Any]]:
    """Recent events, a fifth of them purchases (the oracle's pair count is quadratic)."""
    rnd = random.Random(SEED * 1000 + chunk)
    return [
        {
            "event_id": f"c{chunk}-{i}",
            "ts": BASE_MS + rnd.randrange(0, 40 * 86_400_000),
            "user_id": f"u{rnd.randrange(12)}" if rnd.random() < 0.7 else "",
            "order_id": f"o{rnd.randrange(60)}",
            "item_id": f"i{rnd.randrange(30)}",
            "event_type": rnd.choices(["purchase", "view", "cart"], [20, 65, 15])[0],
            "quantity": rnd.randrange(1, 4),
        }
        for i in range(n)
    ]


class Producer(threading.Thread):
    """Sends chunks until told to finish, then a few more: every kill is mid-stream."""

    def __init__(self, stream: Stream) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.finish = threading.Event()
        self.chunks = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            tail = 4
            while tail > 0 and self.chunks < 200:  # 50 s; a run needs ~18 s
                if self.finish.is_set():
                    tail -= 1
                c = self.chunks
                events = chunk_events(c, 100)
                self.stream.send(
                    events, duplicates=0.1, idless=2, malformed=int(c % 4 == 0), seed=SEED + c
                )
                if c >= 5 and c % 5 == 0:  # an old chunk again: a producer-side replay
                    self.stream.send(chunk_events(c - 5, 100)[:30], duplicates=0.0, seed=c)
                self.stream.producer.poll(0)
                self.chunks += 1
                time.sleep(CHUNK_S)
            self.stream.flush()
        except BaseException as exc:  # reported by the test
            self.error = exc


@dataclasses.dataclass
class Kill:
    kind: str
    committed_before: int
    committed_at_kill: int
    delay_s: float


def committed(lag: GroupLag) -> int:
    read = lag.read(5)
    return sum(max(0, p["committed"]) for p in read.get("partitions", {}).values())


def start(kind: str, project: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    args = ["serve", "--port", str(free_port())] if kind == "serve" else ["ingest", "kafka"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REDPOLL_")}
    environ.update(env, REDPOLL_PROJECT_DIR=str(project))
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "redpoll", *args],
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
def test_kill_dash_9_mid_stream_loses_nothing_and_counts_nothing_twice(tmp_path: Path) -> None:
    print(f"REDPOLL_TEST_SEED={SEED}")
    rnd = random.Random(SEED)
    project = tmp_path / "shop"
    copy_project(REPO_ROOT, project, ("sql", "materialized_views", "migrations"))
    (project / "kafka").mkdir()
    binding_text = (REPO_ROOT / "kafka" / "events.toml").read_text()
    (project / "kafka" / "events.toml").write_text(binding_text + properties_toml())
    migrated = run_cli(project, "migrate", "up")
    assert migrated.returncode == 0, migrated.stderr
    binding = load_bindings(project)["events"]
    assert (binding.topic, binding.group, binding.engine) == ("events", "redpoll-events", "redpoll")

    with MockKafka() as kafka, GroupLag(kafka.bootstrap, binding) as lag:
        kafka.create_topic(binding.topic, 4)
        env = {"REDPOLL_KAFKA_BROKERS": kafka.bootstrap, "REDPOLL_ADMIN_TOKEN": TOKEN}
        stream = Stream(kafka.bootstrap, binding.topic)
        producer = Producer(stream)
        producer.start()
        kills: list[Kill] = []
        try:
            for n, kind in enumerate(INCARNATIONS):
                before = committed(lag)
                log = project / f"consumer-{n}-{kind}.log"
                process = start(kind, project, env, log)
                try:
                    # it consumed, inserted and committed something: now kill it at a
                    # random point of its batch cycle (fetching, inserting, committing)
                    try:
                        wait_for(
                            lambda b=before: committed(lag) > b,
                            60,
                            f"{kind} (incarnation {n}) to commit",
                        )
                    except AssertionError as exc:
                        raise AssertionError(f"{exc}\n{log.read_text(errors='replace')}") from None
                    delay = rnd.uniform(0, 0.8)
                    time.sleep(delay)
                    assert producer.is_alive(), "the stream ended before the kill"
                    at_kill = committed(lag)
                finally:
                    process.kill()
                    process.wait(10)
                kills.append(Kill(kind, before, at_kill, round(delay, 2)))
        finally:
            producer.finish.set()
            producer.join(120)
        assert producer.error is None, producer.error
        print("kills:", *kills, sep="\n  ")

        with run_server(project, env=env) as server:
            wait_for(lag.caught_up, 90, "the last consumer to catch up")
            sql = AdminSQL(server.url, TOKEN)
            database = sql.rows("SELECT currentDatabase() AS db")[0]["db"]
            got = observed(sql, database)  # type: ignore[arg-type]
            bad = sql.rows(
                "SELECT column, raw, count() AS n FROM events_quarantine GROUP BY column, raw"
            )
        stream.verify_topic()

    logs = "".join(p.read_text(errors="replace") for p in project.glob("consumer-*.log"))
    print(
        "inserts cut short by a kill (views rebuilt at restart):",
        logs.count("INSERT was cut short"),
    )
    assert len(kills) == len(INCARNATIONS)
    want = oracle(list(stream.distinct.values()))
    assert len(got["events"]) == len(set(got["events"])), "an event is stored twice"
    missing = set(want["events"]) - set(got["events"])
    extra = set(got["events"]) - set(want["events"])
    assert not missing and not extra, (sorted(missing)[:5], sorted(extra)[:5])
    for view in ("buyer_pairs", "trending", "user_history", "user_item_stats"):
        assert got[view] == want[view], view
    assert len(bad) == stream.malformed  # each bad row quarantined (maybe more than once)
    for row in bad:
        field, where = row["column"].split("@")
        topic, _partition, _offset = where.split("/")
        assert topic == binding.topic and field in {"", "quantity", "ts"}
