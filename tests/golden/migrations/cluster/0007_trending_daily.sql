-- statement 1 (line 5)
CREATE DATABASE IF NOT EXISTS redpoll_shard ON CLUSTER `redpoll`;

-- statement 2 (line 5)
-- 0007_trending_daily: events per item, UTC day and event type (no TTL).
-- Mirrored, with the full commentary and the backfill query, in
-- materialized_views/trending_daily.sql.

CREATE TABLE IF NOT EXISTS redpoll_shard.trending_daily ON CLUSTER `redpoll`
(
    day Date,
    item_id String,
    event_type LowCardinality(String),
    events UInt64
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/redpoll_shard/trending_daily', '{replica}', events)
ORDER BY (day, item_id, event_type);

-- statement 3 (line 5)
CREATE TABLE IF NOT EXISTS redpoll.trending_daily ON CLUSTER `redpoll` AS redpoll_shard.trending_daily
ENGINE = Distributed(`redpoll`, redpoll_shard, trending_daily);

-- statement 4 (line 15)
CREATE MATERIALIZED VIEW IF NOT EXISTS redpoll_shard.trending_daily_mv ON CLUSTER `redpoll`
TO redpoll_shard.trending_daily
AS SELECT
    toDate(ts) AS day,
    item_id,
    event_type,
    count() AS events
FROM redpoll_shard.events
GROUP BY day, item_id, event_type;

