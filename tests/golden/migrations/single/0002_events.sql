-- statement 1 (line 11)
-- 0002_events: the `events` and `items` data sources.
-- Mirrored, with the full commentary, in sql/events.sql and sql/items.sql.
--
-- Ingestion protocol (see app/redpoll/ingest/writer.py): the data source `events` is
-- ingested through its landing table `events_landing` (Null engine, stores nothing).
-- Every INSERT carries one `batch` number, strictly greater than every earlier INSERT's,
-- and reaches the materialized views as ONE block. Each view keeps only events whose
-- event_id was not stored by an earlier batch (`event_ids`, batch < current) and the
-- first copy of each event_id inside the block, so redelivered events change nothing.

CREATE TABLE IF NOT EXISTS redpoll.events_landing 
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

-- statement 2 (line 29)
CREATE TABLE IF NOT EXISTS redpoll.events 
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

-- statement 3 (line 48)
CREATE TABLE IF NOT EXISTS redpoll.event_ids 
(
    event_id String,
    batch UInt64
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY event_id;

-- statement 4 (line 56)
CREATE MATERIALIZED VIEW IF NOT EXISTS redpoll.events_mv 
TO redpoll.events
AS SELECT
    event_id, ts, user_id, session_id, item_id, event_type, order_id,
    quantity, price, rec_id, source, properties, batch
FROM redpoll.events_landing
WHERE event_id NOT IN (
    SELECT event_id
    FROM redpoll.event_ids
    WHERE event_id IN (SELECT event_id FROM redpoll.events_landing)
      AND batch < (SELECT max(batch) FROM redpoll.events_landing)
)
LIMIT 1 BY event_id;

-- statement 5 (line 70)
CREATE MATERIALIZED VIEW IF NOT EXISTS redpoll.event_ids_mv 
TO redpoll.event_ids
AS SELECT event_id, batch
FROM redpoll.events;

-- statement 6 (line 75)
CREATE TABLE IF NOT EXISTS redpoll.items 
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

