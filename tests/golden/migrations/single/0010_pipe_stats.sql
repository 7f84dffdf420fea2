-- statement 1 (line 6)
-- 0010_pipe_stats: the API's own logs, `pipe_stats` (one row per endpoint call) and
-- `datasources_ops_log` (one row per ingest request and backfill). Mirrored, with the
-- column meanings, in sql/service_logs.sql; written by app/redpoll/api/request_log.py.
-- The TTL is the default of `stats_retention_days`; the server sets the setting's value.

CREATE TABLE IF NOT EXISTS redpoll.pipe_stats 
(
    start_datetime DateTime64(3, 'UTC'),
    pipe_name LowCardinality(String),
    parameters String,
    duration Float64,
    read_rows UInt64,
    read_bytes UInt64,
    result_rows UInt64,
    status_code UInt16,
    error String,
    request_id String,
    token_name LowCardinality(String)
)
ENGINE = MergeTree
PARTITION BY toDate(start_datetime)
ORDER BY (pipe_name, start_datetime)
TTL toDateTime(start_datetime) + INTERVAL 30 DAY
SETTINGS ttl_only_drop_parts = 1;

-- statement 2 (line 26)
CREATE TABLE IF NOT EXISTS redpoll.datasources_ops_log 
(
    timestamp DateTime64(3, 'UTC'),
    datasource LowCardinality(String),
    operation LowCardinality(String),
    rows UInt64,
    elapsed Float64,
    result LowCardinality(String),
    error String,
    request_id String
)
ENGINE = MergeTree
PARTITION BY toDate(timestamp)
ORDER BY (datasource, timestamp)
TTL toDateTime(timestamp) + INTERVAL 30 DAY
SETTINGS ttl_only_drop_parts = 1;

