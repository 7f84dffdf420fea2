-- statement 1 (line 5)
-- 0004_trending: events per item, hour and event type; 90-day TTL.
-- Mirrored, with the full commentary and the backfill query, in
-- materialized_views/trending.sql.

CREATE TABLE IF NOT EXISTS redpoll.trending 
(
    hour DateTime('UTC'),
    item_id String,
    event_type LowCardinality(String),
    events UInt64
)
ENGINE = SummingMergeTree(events)
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, item_id, event_type)
TTL hour + INTERVAL 90 DAY DELETE;

-- statement 2 (line 17)
CREATE MATERIALIZED VIEW IF NOT EXISTS redpoll.trending_mv 
TO redpoll.trending
AS SELECT
    toStartOfHour(ts) AS hour,
    item_id,
    event_type,
    count() AS events
FROM redpoll.events
GROUP BY hour, item_id, event_type;

