-- statement 1 (line 5)
-- 0007_trending_daily: events per item, UTC day and event type (no TTL).
-- Mirrored, with the full commentary and the backfill query, in
-- materialized_views/trending_daily.sql.

CREATE TABLE IF NOT EXISTS redpoll.trending_daily 
(
    day Date,
    item_id String,
    event_type LowCardinality(String),
    events UInt64
)
ENGINE = SummingMergeTree(events)
ORDER BY (day, item_id, event_type);

-- statement 2 (line 15)
CREATE MATERIALIZED VIEW IF NOT EXISTS redpoll.trending_daily_mv 
TO redpoll.trending_daily
AS SELECT
    toDate(ts) AS day,
    item_id,
    event_type,
    count() AS events
FROM redpoll.events
GROUP BY day, item_id, event_type;

