-- Service data sources `pipe_stats` and `datasources_ops_log`: what the API did, written
-- by the server itself (app/redpoll/api/request_log.py). The file is named after neither
-- table on purpose: a data source is a file of sql/ named like its table
-- (ingest/datasources.py), and these must not be writable through the Events API.
--
-- pipe_stats: one row per endpoint call (`/v0/pipes/<name>.<format>`), written within
-- about a second of the answer. `parameters` is the call's parameters as a JSON object
-- (query string and POST body), without `token`. `read_rows`/`read_bytes` come from
-- ClickHouse's statistics of `.json` answers (0 for other formats); `result_rows` from
-- the answer (0 for `.parquet`). `error` is the error envelope's message (status >= 400).
--
-- datasources_ops_log: one row per ingest request (`operation` = 'append'), backfill
-- ('backfill') and data source operation ('replace', 'truncate', 'delete_data', 'erase':
-- app/redpoll/ingest/mutations.py); `rows` = rows stored or removed, `result` = 'ok' or
-- 'error'.
--
-- Both keep `stats_retention_days` days (setting, default 30): the server sets the TTL
-- to the setting when it starts; the 30 below is the default.

CREATE TABLE IF NOT EXISTS {{ database }}.pipe_stats {{ on_cluster }}
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

CREATE TABLE IF NOT EXISTS {{ database }}.datasources_ops_log {{ on_cluster }}
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
