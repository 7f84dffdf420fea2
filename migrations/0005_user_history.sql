-- 0005_user_history: per-user event history and per-user-item aggregates.
-- Mirrored, with the full commentary and the backfill queries, in
-- materialized_views/user_history.sql.

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
