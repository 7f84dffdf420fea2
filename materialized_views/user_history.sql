-- Materialized views `user_history` and `user_item_stats`: per-user lookups.
--
-- `user_history` ORDER BY (user_id, ts): "recently viewed", "already purchased" and
-- session context for one user read a contiguous range, e.g.
--   SELECT item_id FROM user_history WHERE user_id = {user:String}
--   AND event_type = 'view' ORDER BY ts DESC LIMIT 20
-- `user_item_stats` ORDER BY (user_id, item_id, event_type): per user and item, the
-- number of events, total quantity, first and last time; read with sum/min/max and
-- GROUP BY (AggregatingMergeTree of SimpleAggregateFunction columns).
-- Events without a user_id are not kept here.
--
-- Exactness: both views read `events`, i.e. only distinct events, each once.
--
-- Bound per event: reads nothing but the event; writes at most 1 `user_history` row and
-- 1 `user_item_stats` row (none without a user).
--
-- Backfill (`redpoll backfill user_history`, ingestion stopped): both tables are
-- truncated, then recomputed from `events` by:
-- recompute:
--   INSERT INTO {{ database }}.user_history
--       (user_id, ts, event_type, item_id, session_id, order_id,
--        quantity, price, rec_id, source, event_id)
--   SELECT user_id, ts, event_type, item_id, session_id, order_id,
--          quantity, price, rec_id, source, event_id
--   FROM {{ database }}.events
--   WHERE user_id != '';
--   INSERT INTO {{ database }}.user_item_stats
--       (user_id, item_id, event_type, events, quantity, first_ts, last_ts)
--   SELECT user_id, item_id, event_type, count(), sum(toInt64(quantity)),
--          min(ts), max(ts)
--   FROM {{ database }}.events
--   WHERE user_id != ''
--   GROUP BY user_id, item_id, event_type;
-- end recompute

CREATE TABLE IF NOT EXISTS {{ database }}.user_history {{ on_cluster }}
(
    user_id String,
    ts DateTime64(3, 'UTC'),
    event_type LowCardinality(String),
    item_id String,
    session_id String,
    order_id String,
    quantity Int32,
    price Float64,
    rec_id String,
    source String,
    event_id String
)
ENGINE = MergeTree
ORDER BY (user_id, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.user_history_mv {{ on_cluster }}
TO {{ database }}.user_history
AS SELECT
    user_id, ts, event_type, item_id, session_id, order_id,
    quantity, price, rec_id, source, event_id
FROM {{ database }}.events
WHERE user_id != '';

CREATE TABLE IF NOT EXISTS {{ database }}.user_item_stats {{ on_cluster }}
(
    user_id String,
    item_id String,
    event_type LowCardinality(String),
    events SimpleAggregateFunction(sum, UInt64),
    quantity SimpleAggregateFunction(sum, Int64),
    first_ts SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_ts SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (user_id, item_id, event_type);

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.user_item_stats_mv {{ on_cluster }}
TO {{ database }}.user_item_stats
AS SELECT
    user_id,
    item_id,
    event_type,
    count() AS events,
    sum(toInt64(quantity)) AS quantity,
    min(ts) AS first_ts,
    max(ts) AS last_ts
FROM {{ database }}.events
WHERE user_id != ''
GROUP BY user_id, item_id, event_type;
