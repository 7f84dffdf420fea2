-- Materialized view `trending_daily`: events per item, UTC day and event type.
--
-- The daily twin of `trending` (hourly, 90-day TTL): long look-backs (`popular`, the
-- popular fill of `also_bought`) read ~1 row per item and day instead of ~2 per item and
-- hour, e.g. purchases in the last 7 days (today, UTC, and the 6 days before):
--   SELECT item_id, sum(events) AS purchases FROM trending_daily
--   WHERE event_type = 'purchase' AND day > today() - 7
--   GROUP BY item_id ORDER BY purchases DESC LIMIT 10
-- ORDER BY (day, item_id, event_type): recent-days scans prune by day. Always
-- sum(events) (SummingMergeTree). No TTL: ~1 row per item and day stays small, and a
-- replay of old data (`redpoll evaluate`) keeps its history.
--
-- Exactness: `trending_daily_mv` reads `events`, i.e. only distinct events, each once;
-- block splits do not matter for sums.
--
-- Bound per event: reads nothing but the event; adds 1 to one (day, item, type) row.
--
-- Backfill (`redpoll backfill trending_daily`, ingestion stopped): the table is
-- truncated, then recomputed from `events` by:
-- recompute:
--   INSERT INTO {{ database }}.trending_daily (day, item_id, event_type, events)
--   SELECT toDate(ts) AS day, item_id, event_type, count()
--   FROM {{ database }}.events GROUP BY day, item_id, event_type;
-- end recompute

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
