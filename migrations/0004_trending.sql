-- 0004_trending: events per item, hour and event type; 90-day TTL.
-- Mirrored, with the full commentary and the backfill query, in
-- materialized_views/trending.sql.

CREATE TABLE IF NOT EXISTS {{ database }}.trending {{ on_cluster }}
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

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.trending_mv {{ on_cluster }}
TO {{ database }}.trending
AS SELECT
    toStartOfHour(ts) AS hour,
    item_id,
    event_type,
    count() AS events
FROM {{ database }}.events
GROUP BY hour, item_id, event_type;
