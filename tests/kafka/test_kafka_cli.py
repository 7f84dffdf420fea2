"""Kafka as real processes: the consumer inside `redpoll serve`, `redpoll ingest kafka`,
`redpoll ingest status` and `redpoll ingest kafka-sql`, each run as a subprocess
against the mock broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from redpoll.kafka.bindings import load_bindings
from redpoll.kafka.lag import GroupLag
from redpoll.testing import AdminSQL, run_cli, run_server
from redpoll.testing_kafka import MockKafka
from tests.support.kafka import Stream, make_events, wait_for, write_project

TOKEN = "kafka-cli-token"

pytestmark = pytest.mark.slow


def admin_sql(url: str, query: str) -> list[dict[str, Any]]:
    return AdminSQL(url, TOKEN).rows(query)


def process_env(project: Path, extra: dict[str, str]) -> dict[str, str]:
    """As `redpoll.testing.run_cli` builds it: no inherited REDPOLL_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDPOLL_")}
    return {**env, "REDPOLL_PROJECT_DIR": str(project), **extra}


@pytest.fixture
def project(tmp_path: Path, topic: str) -> Path:
    project = write_project(tmp_path / "shop", topic, batch_ms=200)
    migrated = run_cli(project, "migrate", "up")
    assert migrated.returncode == 0, migrated.stderr
    return project


@pytest.fixture
def env(kafka: MockKafka) -> dict[str, str]:
    return {"REDPOLL_KAFKA_BROKERS": kafka.bootstrap, "REDPOLL_ADMIN_TOKEN": TOKEN}


@pytest.fixture
def lag(kafka: MockKafka, project: Path) -> Iterator[GroupLag]:
    with GroupLag(kafka.bootstrap, load_bindings(project)["events"]) as probe:
        yield probe


def test_serve_consumes_the_binding_and_reports_status(
    project: Path, env: dict[str, str], stream: Stream, lag: GroupLag
) -> None:
    stream.send(make_events(600, seed=31), idless=5, malformed=3, seed=31)
    stream.flush()
    with run_server(project, env=env) as server:
        wait_for(lag.caught_up, 60, "redpoll serve to consume the topic")

        ready = httpx.get(f"{server.url}/v0/ready", headers=server.auth_headers, timeout=10)
        assert ready.status_code == 200, ready.text
        consumer = ready.json()["kafka"]["events"]
        assert consumer["state"] == "running" and consumer["topic"] == stream.topic

        status = run_cli(project, "ingest", "status", env=env)
        assert status.returncode == 0, status.stderr
        assert f"consumer process: redpoll serve pid {server.process.pid}" in status.stdout
        assert f"events: topic {stream.topic} group g-{stream.topic} lag 0 | running" in (
            status.stdout
        )
        assert f"{stream.malformed} quarantined" in status.stdout

        report = json.loads(run_cli(project, "ingest", "status", "--json", env=env).stdout)
        entry = report["bindings"]["events"]
        assert entry["broker"]["lag"] == 0
        assert entry["consumer"]["messages"] == stream.messages
        assert entry["consumer"]["rows"] == stream.messages - stream.malformed + 1  # "[1, 2]"

        # the server consumes already: a second consumer on its store is refused
        refused = run_cli(project, "ingest", "kafka", env=env, timeout=60)
        assert refused.returncode != 0
        assert f"`redpoll serve` (pid {server.process.pid})" in refused.stderr

        stored = [r["event_id"] for r in admin_sql(server.url, "SELECT event_id FROM events")]
        bad = admin_sql(server.url, "SELECT count() AS n FROM events_quarantine")
    stream.verify_topic()
    assert sorted(stored) == sorted(stream.distinct)
    assert int(bad[0]["n"]) == stream.malformed


def test_ingest_kafka_standalone_status_and_sigterm(
    project: Path, env: dict[str, str], stream: Stream, lag: GroupLag
) -> None:
    stream.send(make_events(500, seed=41), idless=4, malformed=2, seed=41)
    stream.flush()
    idle = run_cli(project, "ingest", "status", env=env)
    assert idle.returncode == 0, idle.stderr
    assert "consumer process: none running" in idle.stdout
    assert f"lag {stream.messages}" in idle.stdout  # from the broker: nothing consumed yet

    log_path = project / "ingest-kafka.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "redpoll", "ingest", "kafka"],
            env=process_env(project, env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    status_file = project / ".redpoll" / "kafka-status.json"
    try:
        wait_for(lag.caught_up, 60, "redpoll ingest kafka to consume the topic")
        wait_for(status_file.exists, 10, "the status file")
        status = run_cli(project, "ingest", "status", env=env)
        assert status.returncode == 0, status.stderr
        assert f"consumer process: redpoll ingest kafka pid {process.pid}" in status.stdout
        assert " lag 0 | running" in status.stdout
        more = make_events(100, seed=42)
        stream.send(more, duplicates=0.0, seed=42)  # consumed, then SIGTERM
        stream.flush()
        wait_for(lag.caught_up, 60, "the second part")
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0, log_path.read_text()
    assert not status_file.exists()  # removed on a clean stop

    out = run_cli(project, "sql", "SELECT event_id FROM events", "--format", "json")
    assert out.returncode == 0, out.stderr
    stored = [r["event_id"] for r in json.loads(out.stdout)["data"]]
    stream.verify_topic()
    assert sorted(stored) == sorted(stream.distinct)


def test_ingest_kafka_sql_prints_and_writes_the_engine_migration(
    project: Path, kafka: MockKafka
) -> None:
    missing = run_cli(project, "ingest", "kafka-sql", "events")
    assert missing.returncode != 0 and "no Kafka brokers" in missing.stderr

    printed = run_cli(project, "ingest", "kafka-sql", "events", "--brokers", "redpanda:9092")
    assert printed.returncode == 0, printed.stderr
    assert "ENGINE = Kafka" in printed.stdout
    assert "kafka_broker_list = 'redpanda:9092'" in printed.stdout
    assert "events_landing" in printed.stdout and "events_quarantine" in printed.stdout

    # written as the next free version after the project's migrations
    last = max(int(m.name[:4]) for m in (project / "migrations").glob("[0-9]*.sql"))
    path = project / "migrations" / f"{last + 1:04d}_kafka_events.sql"
    written = run_cli(
        project,
        "ingest",
        "kafka-sql",
        "events",
        "--write",
        env={"REDPOLL_KAFKA_BROKERS": "redpanda:9092"},
    )
    assert written.returncode == 0, written.stderr
    assert f"wrote {path}" in written.stdout
    assert path.read_text() == printed.stdout

    unknown = run_cli(project, "ingest", "kafka-sql", "items", "--brokers", "k:9092")
    assert unknown.returncode != 0 and "no binding kafka/items.toml" in unknown.stderr
