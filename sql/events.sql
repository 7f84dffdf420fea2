-- Data source `events`: one row per user interaction.
--
-- Ingestion: a data source named `events` is ingested through its landing table
-- `events_landing` (Null engine: stores nothing, only feeds the materialized views).
-- Never insert into `events` directly. Redpoll's EventWriter
-- (app/redpoll/ingest/writer.py) is the one writer: every INSERT carries a `batch`
-- number, the same for all its rows and greater than every earlier INSERT's, and
-- reaches the views as ONE block. That protocol makes every view exact:
--   * `events_mv` stores an event in `events` only if its event_id is not in `event_ids`
--     from an earlier batch (batch < current) and it is the first copy in the block, so a
--     redelivered event (client retry, replay after a crash, Kafka redelivery) changes
--     nothing anywhere;
--   * views chained on `events` (event_ids, trending, user_history, basket_items,
--     buyer_items) see each distinct event exactly once;
--   * reads of history are always restricted to batch < current, so the order in which
--     ClickHouse runs the views of one INSERT does not matter.
--
-- Columns: event_id (client-supplied, generated when absent), ts (event time, UTC),
-- user_id ('' = anonymous), session_id, item_id, event_type (view, cart, purchase,
-- impression, click, return, ...), order_id (basket), quantity, price, rec_id and
-- source (which recommendation produced an impression/click), properties (free JSON).
-- This file is their one definition: the EventWriter reads the columns of the created
-- `events_landing` at start, and tests/test_view_files.py fails if app/ lists them.
--
-- `events` ORDER BY (event_type, item_id, ts): item- and type-centric analytics. Per-user
-- lookups use `user_history` (ORDER BY (user_id, ts)); co-purchase reads `basket_items`
-- and `buyer_items`; trending uses `trending`.
--
-- `event_ids` (EmbeddedRocksDB key-value table, key event_id): the dedup index; a batch
-- of 10k ids is a multi-get, independent of the table size. It is node-local: on a
-- replicated cluster, keep ingestion on one node (see known limits in the writer).

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
