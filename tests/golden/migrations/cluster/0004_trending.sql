-- statement 1 (line 5)
CREATE DATABASE IF NOT EXISTS redpoll_shard ON CLUSTER `redpoll`;

-- statement 2 (line 5)
-- 0004_trending: events per item, hour and event type; 90-day TTL.
-- Mirrored, with the full commentary and the backfill query, in
-- materialized_views/trending.sql.

CREATE TABLE IF NOT EXISTS redpoll_shard.trending ON CLUSTER `redpoll`
(
    hour DateTime('UTC'),
    item_id String,
    event_type LowCardinality(String),
    events UInt64
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/redpoll_shard/trending', '{replica}', events)
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, item_id, event_type)
TTL hour + INTERVAL 90 DAY DELETE;

-- statement 3 (line 5)
CREATE TABLE IF NOT EXISTS redpoll.trending ON CLUSTER `redpoll` AS redpoll_shard.trending
ENGINE = Distributed(`redpoll`, redpoll_shard, trending);

-- statement 4 (line 17)
CREATE MATERIALIZED VIEW IF NOT EXISTS redpoll_shard.trending_mv ON CLUSTER `redpoll`
TO redpoll_shard.trending
AS SELECT
    toStartOfHour(ts) AS hour,
    item_id,
    event_type,
    count() AS events
FROM redpoll_shard.events
GROUP BY hour, item_id, event_type;

