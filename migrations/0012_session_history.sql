-- 0012_session_history: per-session event history (ORDER BY session_id, ts) for
-- `for_session`. Mirrored, with the full commentary and the backfill query, in
-- materialized_views/session_history.sql.

CREATE TABLE IF NOT EXISTS {{ database }}.session_history {{ on_cluster }}
(
    session_id String,
    ts DateTime64(3, 'UTC'),
    event_type LowCardinality(String),
    item_id String,
    event_id String
)
ENGINE = MergeTree
ORDER BY (session_id, ts)
TTL toDateTime(ts) + INTERVAL 90 DAY DELETE;

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.session_history_mv {{ on_cluster }}
TO {{ database }}.session_history
AS SELECT session_id, ts, event_type, item_id, event_id
FROM {{ database }}.events
WHERE session_id != '';
