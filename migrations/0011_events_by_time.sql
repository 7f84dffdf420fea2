-- 0011_events_by_time: every event's time, item and type, ORDER BY ts (exact "up to now"
-- reads of the current hour for `for_user`'s trend).
-- Mirrored, with the full commentary and the backfill query, in
-- materialized_views/events_by_time.sql.

CREATE TABLE IF NOT EXISTS {{ database }}.events_by_time {{ on_cluster }}
(
    ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    item_id String,
    event_type LowCardinality(String)
)
ENGINE = MergeTree
ORDER BY ts;

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.events_by_time_mv {{ on_cluster }}
TO {{ database }}.events_by_time
AS SELECT ts, item_id, event_type
FROM {{ database }}.events;
