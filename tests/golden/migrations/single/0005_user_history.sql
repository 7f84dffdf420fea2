-- statement 1 (line 5)
-- 0005_user_history: per-user event history and per-user-item aggregates.
-- Mirrored, with the full commentary and the backfill queries, in
-- materialized_views/user_history.sql.

CREATE TABLE IF NOT EXISTS redpoll.user_history 
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

-- statement 2 (line 22)
CREATE MATERIALIZED VIEW IF NOT EXISTS redpoll.user_history_mv 
TO redpoll.user_history
AS SELECT
    user_id, ts, event_type, item_id, session_id, order_id,
    quantity, price, rec_id, source, event_id
FROM redpoll.events
WHERE user_id != '';

-- statement 3 (line 30)
CREATE TABLE IF NOT EXISTS redpoll.user_item_stats 
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

-- statement 4 (line 43)
CREATE MATERIALIZED VIEW IF NOT EXISTS redpoll.user_item_stats_mv 
TO redpoll.user_item_stats
AS SELECT
    user_id,
    item_id,
    event_type,
    count() AS events,
    sum(toInt64(quantity)) AS quantity,
    min(ts) AS first_ts,
    max(ts) AS last_ts
FROM redpoll.events
WHERE user_id != ''
GROUP BY user_id, item_id, event_type;

