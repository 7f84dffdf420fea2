"""The server-mode Kafka-engine migration: it parses, and its views do the right thing
when run against a stand-in for the Kafka table (chDB cannot run the Kafka engine)."""

from __future__ import annotations

from pathlib import Path

import sqlglot

from redpoll.clickhouse.client import Client, Target
from redpoll.kafka.bindings import KafkaBinding
from redpoll.kafka.sql import kafka_engine_sql
from redpoll.materialized import table_columns
from redpoll.migrations.files import MigrationFile, render_statements, template_variables
from tests.support.paths import REPO_ROOT
from tests.support.views import apply_migrations

BINDING = KafkaBinding(datasource="events", topic="events", group="redpoll-events")
# what a Kafka message fills: the landing table of sql/events.sql, without the writer's batch
EVENT_COLUMNS = [
    (name, type_, "")
    for name, type_ in table_columns(REPO_ROOT / "sql" / "events.sql", "events_landing")
    if name != "batch"
]
VIRTUAL = "_topic String, _partition UInt64, _offset UInt64, _error String, _raw_message String"


def render(text: str, database: str) -> list[str]:
    """Split and render the generated migration exactly as `redpoll migrate up` would."""
    migration = MigrationFile(1, "kafka", Path("0001_kafka.sql"), text)
    return [s.sql for s in render_statements(migration, template_variables(database, ""))]


def test_generated_sql_parses_and_routes_errors() -> None:
    text = kafka_engine_sql(BINDING, EVENT_COLUMNS, uses_landing=True, brokers="redpanda:9092")
    rendered = render(text, "shop")
    assert len(rendered) == 4
    for statement in rendered:
        sqlglot.parse_one(statement, dialect="clickhouse")
    kafka_table, good_mv, quarantine, errors_mv = rendered
    assert "ENGINE = Kafka" in kafka_table
    assert "kafka_handle_error_mode = 'stream'" in kafka_table
    assert "kafka_topic_list = 'events'" in kafka_table
    assert "kafka_broker_list = 'redpanda:9092'" in kafka_table
    assert "`ts` Nullable(DateTime64(3, 'UTC'))" in kafka_table
    assert "TO shop.`events_landing`" in good_mv and "length(_error) = 0" in good_mv
    assert "AS batch" in good_mv
    assert "TO shop.`events_quarantine`" in errors_mv and "length(_error) > 0" in errors_mv
    assert "_partition" in errors_mv and "_offset AS line" in errors_mv
    assert "ENGINE = MergeTree" in quarantine


def test_plain_datasource_keeps_defaults() -> None:
    binding = KafkaBinding(datasource="items", topic="items", group="g")
    text = kafka_engine_sql(
        binding,
        [("item_id", "String", ""), ("updated_at", "DateTime64(3, 'UTC')", "now64(3)")],
        uses_landing=False,
        brokers="k:9092",
    )
    table, mv, _, _ = render(text, "db")
    assert "`updated_at` DateTime64(3, 'UTC') DEFAULT now64(3)" in table
    assert "TO db.`items`" in mv and "batch" not in mv


def test_views_against_a_stand_in_kafka_table(admin_client: Client, ch_target: Target) -> None:
    """Replace `ENGINE = Kafka SETTINGS ...` by a Null table with the virtual columns."""
    db = ch_target.database
    apply_migrations(admin_client, db)
    text = kafka_engine_sql(BINDING, EVENT_COLUMNS, uses_landing=True, brokers="k:9092")
    kafka_table, *rest = render(text, db)
    head = kafka_table[: kafka_table.index("ENGINE = Kafka")].rstrip().rstrip(")")
    admin_client.command(f"{head}, {VIRTUAL}) ENGINE = Null")
    for statement in rest:
        admin_client.command(statement)
    admin_client.command(
        f"INSERT INTO {db}.events_kafka (event_id, ts, item_id, event_type, _topic, _partition,"
        " _offset, _error, _raw_message) VALUES"
        " ('a', '2024-01-01 00:00:00', 'i1', 'view', 'events', 0, 10, '', ''),"
        " ('', NULL, 'i2', 'view', 'events', 1, 11, '', ''),"
        " ('', NULL, '', '', 'events', 2, 12, 'Cannot parse input', 'garbage')"
    )
    rows = admin_client.query(f"SELECT event_id, item_id FROM {db}.events ORDER BY item_id")
    assert rows.result_rows == [("a", "i1"), ("events:1:11", "i2")]
    bad = admin_client.query(f"SELECT line, column, error, raw FROM {db}.events_quarantine")
    assert bad.result_rows == [(12, "@events/2/12", "Cannot parse input", "garbage")]
