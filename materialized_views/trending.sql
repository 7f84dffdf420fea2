-- Materialized view `trending`: events per item, hour bucket (UTC) and event type.
--
-- Endpoints weight and decay at query time, e.g.
--   SELECT item_id, sum(events * multiIf(event_type = 'purchase', 5, event_type = 'cart', 3, 1)
--                       * exp(-dateDiff('second', hour, now()) / 86400)) AS score
--   FROM trending WHERE hour >= now() - INTERVAL 7 DAY GROUP BY item_id
--   ORDER BY score DESC LIMIT 20
-- ORDER BY (hour, item_id, event_type): recent-hours scans prune by hour. Join `items`
-- (FINAL) for per-category trending. Always sum(events) (SummingMergeTree).
-- Buckets older than 90 days are deleted by TTL (in merges, so rows may linger a little).
--
-- Exactness: `trending_mv` reads `events`, i.e. only distinct events, each once; block
-- splits do not matter for sums.
--
-- Bound per event: reads nothing but the event; adds 1 to one (hour, item, type) row.
--
-- Backfill (`redpoll backfill trending`, ingestion stopped): the table is truncated,
-- then recomputed from `events` (within the TTL) by:
-- recompute:
--   INSERT INTO {{ database }}.trending (hour, item_id, event_type, events)
--   SELECT toStartOfHour(ts) AS hour, item_id, event_type, count()
--   FROM {{ database }}.events
--   WHERE ts >= now() - INTERVAL 90 DAY
--   GROUP BY hour, item_id, event_type;
-- end recompute

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
