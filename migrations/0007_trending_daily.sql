-- 0007_trending_daily: events per item, UTC day and event type (no TTL).
-- Mirrored, with the full commentary and the backfill query, in
-- materialized_views/trending_daily.sql.

CREATE TABLE IF NOT EXISTS {{ database }}.trending_daily {{ on_cluster }}
(
    day Date,
    item_id String,
    event_type LowCardinality(String),
    events UInt64
)
ENGINE = SummingMergeTree(events)
ORDER BY (day, item_id, event_type);

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.trending_daily_mv {{ on_cluster }}
TO {{ database }}.trending_daily
AS SELECT
    toDate(ts) AS day,
    item_id,
    event_type,
    count() AS events
FROM {{ database }}.events
GROUP BY day, item_id, event_type;
