-- 0002_events: the `events` and `items` data sources.
-- Mirrored, with the full commentary, in sql/events.sql and sql/items.sql.
--
-- Ingestion protocol (see app/redpoll/ingest/writer.py): the data source `events` is
-- ingested through its landing table `events_landing` (Null engine, stores nothing).
-- Every INSERT carries one `batch` number, strictly greater than every earlier INSERT's,
-- and reaches the materialized views as ONE block. Each view keeps only events whose
-- event_id was not stored by an earlier batch (`event_ids`, batch < current) and the
-- first copy of each event_id inside the block, so redelivered events change nothing.

CREATE TABLE IF NOT EXISTS {{ database }}.events_landing {{ on_cluster }}
(
    event_id String,
    ts DateTime64(3, 'UTC'),
    user_id String,
    session_id String,
    item_id String,
    event_type LowCardinality(String),
    order_id String,
    quantity Int32,
    price Float64,
    rec_id String,
    source String,
    properties String,
    batch UInt64
)
ENGINE = Null;

CREATE TABLE IF NOT EXISTS {{ database }}.events {{ on_cluster }}
(
    event_id String,
    ts DateTime64(3, 'UTC'),
    user_id String,
    session_id String,
    item_id String,
    event_type LowCardinality(String),
    order_id String,
    quantity Int32,
    price Float64,
    rec_id String,
    source String,
    properties String,
    batch UInt64 CODEC(Delta, ZSTD)
)
ENGINE = MergeTree
ORDER BY (event_type, item_id, ts);

CREATE TABLE IF NOT EXISTS {{ database }}.event_ids {{ on_cluster }}
(
    event_id String,
    batch UInt64
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY event_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.events_mv {{ on_cluster }}
TO {{ database }}.events
AS SELECT
    event_id, ts, user_id, session_id, item_id, event_type, order_id,
    quantity, price, rec_id, source, properties, batch
FROM {{ database }}.events_landing
WHERE event_id NOT IN (
    SELECT event_id
    FROM {{ database }}.event_ids
    WHERE event_id IN (SELECT event_id FROM {{ database }}.events_landing)
      AND batch < (SELECT max(batch) FROM {{ database }}.events_landing)
)
LIMIT 1 BY event_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.event_ids_mv {{ on_cluster }}
TO {{ database }}.event_ids
AS SELECT event_id, batch
FROM {{ database }}.events;

CREATE TABLE IF NOT EXISTS {{ database }}.items {{ on_cluster }}
(
    item_id String,
    title String,
    category LowCardinality(String),
    brand LowCardinality(String),
    price Float64,
    available Bool DEFAULT true,
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY item_id;
