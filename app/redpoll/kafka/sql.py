"""Server mode: a migration in which ClickHouse's Kafka engine consumes a binding natively.

`redpoll ingest kafka-sql DATASOURCE` prints (or `--write`s as the next migration) four
statements, templated like every migration (`{{ database }}`, `{{ on_cluster }}`):

1. `<ds>_kafka`: `ENGINE = Kafka` with the binding's topic, group and format and
   `kafka_handle_error_mode = 'stream'` (a bad message does not stop the consumer; its
   error and raw text appear in the virtual columns `_error` / `_raw_message`);
2. `<ds>_kafka_mv`: the good rows into the data source (for `events`: into
   `events_landing`, with the same derived `event_id` as Redpoll's consumer for messages
   without one, and a `batch` number from the insert time so each Kafka flush is a later
   batch than the previous one);
3. `<ds>_quarantine` (the table Redpoll creates on first use);
4. `<ds>_kafka_errors_mv`: bad messages into the quarantine table, `line` = offset and
   `column` = `@<topic>/<partition>/<offset>` (same convention as the embedded consumer).

chDB cannot run the Kafka engine (docs/kafka.md), so this SQL is tested by parsing it and by
running its views against a stand-in table with the same virtual columns.
Credentials never go into the migration: put them in the ClickHouse server's `<kafka>`
configuration (or a named collection).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redpoll.clickhouse.client import quote_identifier
from redpoll.errors import ConfigError
from redpoll.kafka.bindings import KafkaBinding

__all__ = ("columns_query", "engine_columns", "kafka_engine_sql")

_DB = "{{ database }}"
_ON_CLUSTER = "{{ on_cluster }}"
_KAFKA_ID = "concat(_topic, ':', toString(_partition), ':', toString(_offset))"


def columns_query(datasource: str) -> str:
    """The `system.columns` query whose JSON rows `engine_columns` reads (any client)."""
    quote_identifier(datasource)  # a plain identifier, safe to embed below
    return (
        "SELECT table, name, type, default_kind, default_expression FROM system.columns "
        f"WHERE database = currentDatabase() AND table IN ('{datasource}', "
        f"'{datasource}_landing') ORDER BY table, position"
    )


def engine_columns(
    rows: Sequence[Mapping[str, Any]], datasource: str
) -> tuple[list[tuple[str, str, str]], bool]:
    """(name, type, default) of the columns a Kafka message fills, and whether the data
    source has a landing table (`events_landing`) to insert into instead."""
    landing = [r for r in rows if r["table"] == f"{datasource}_landing"]
    chosen = landing or list(rows)
    if not chosen:
        raise ConfigError(f"table {datasource} does not exist: run `redpoll migrate up` first")
    columns = [
        (r["name"], r["type"], r["default_expression"] if r["default_kind"] == "DEFAULT" else "")
        for r in chosen
        if r["default_kind"] not in {"MATERIALIZED", "ALIAS", "EPHEMERAL"}
        and not (landing and r["name"] == "batch")
    ]
    return columns, bool(landing)


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def kafka_engine_sql(
    binding: KafkaBinding,
    columns: Sequence[tuple[str, str, str]],
    *,
    uses_landing: bool,
    brokers: str,
    max_block_size: int | None = None,
) -> str:
    """The migration text for `binding`.

    Args:
        columns: `(name, type, default_expression)` of the data source's insert table
            (without the writer's `batch` column), e.g. from `discover_datasources`.
        uses_landing: the data source follows the landing protocol (`events`).
        brokers: `kafka_broker_list` (host:port,...) as the ClickHouse server sees it.
    """
    name = binding.datasource
    kafka = f"{_DB}.{quote_identifier(name + '_kafka')}"
    target = f"{_DB}.{quote_identifier(name + '_landing' if uses_landing else name)}"
    quarantine = f"{_DB}.{quote_identifier(name + '_quarantine')}"
    mv = f"{_DB}.{quote_identifier(name + '_kafka_mv')}"
    errors_mv = f"{_DB}.{quote_identifier(name + '_kafka_errors_mv')}"
    block = max_block_size or binding.batch_rows

    defs, selects = [], []
    for col, type_, default in columns:
        q = quote_identifier(col)
        if uses_landing and col == "ts":
            defs.append(f"    {q} Nullable({type_})")
            selects.append(f"    coalesce({q}, now64(3)) AS {q}")
        elif uses_landing and col == "event_id":
            defs.append(f"    {q} {type_}")
            selects.append(f"    if({q} = '', {_KAFKA_ID}, {q}) AS {q}")
        else:
            defs.append(f"    {q} {type_}" + (f" DEFAULT {default}" if default else ""))
            selects.append(f"    {q}")
    if uses_landing:
        selects.append("    toUInt64(toUnixTimestamp64Micro(now64(6))) AS batch")

    settings = ",\n    ".join(
        [
            f"kafka_broker_list = {_quote(brokers)}",
            f"kafka_topic_list = {_quote(binding.topic)}",
            f"kafka_group_name = {_quote(binding.group)}",
            f"kafka_format = {_quote(binding.format)}",
            "kafka_handle_error_mode = 'stream'",
            "kafka_num_consumers = 1",
            f"kafka_max_block_size = {int(block)}",
            f"kafka_flush_interval_ms = {int(binding.batch_ms)}",
        ]
    )
    column_list = ",\n".join(defs)
    select_list = ",\n".join(selects)
    return f"""-- Kafka ingestion for data source `{name}` by ClickHouse's Kafka engine
-- (generated by `redpoll ingest kafka-sql {name}`; see docs/kafka.md, ADR 0009).
-- Credentials: ClickHouse server config (<kafka> section or a named collection), never here.

CREATE TABLE IF NOT EXISTS {kafka} {_ON_CLUSTER}
(
{column_list}
)
ENGINE = Kafka
SETTINGS
    {settings};

CREATE MATERIALIZED VIEW IF NOT EXISTS {mv} {_ON_CLUSTER}
TO {target}
AS SELECT
{select_list}
FROM {kafka}
WHERE length(_error) = 0;

CREATE TABLE IF NOT EXISTS {quarantine} {_ON_CLUSTER}
(
    received_at DateTime64(3, 'UTC'),
    line UInt64,
    column String,
    error String,
    raw String
)
ENGINE = MergeTree
ORDER BY received_at
TTL toDateTime(received_at) + INTERVAL 30 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {errors_mv} {_ON_CLUSTER}
TO {quarantine}
AS SELECT
    now64(3) AS received_at,
    _offset AS line,
    concat('@', _topic, '/', toString(_partition), '/', toString(_offset)) AS column,
    _error AS error,
    _raw_message AS raw
FROM {kafka}
WHERE length(_error) > 0;
"""
