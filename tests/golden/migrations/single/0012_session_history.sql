-- statement 1 (line 5)
-- 0012_session_history: per-session event history (ORDER BY session_id, ts) for
-- `for_session`. Mirrored, with the full commentary and the backfill query, in
-- materialized_views/session_history.sql.

CREATE TABLE IF NOT EXISTS redpoll.session_history 
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

-- statement 2 (line 17)
CREATE MATERIALIZED VIEW IF NOT EXISTS redpoll.session_history_mv 
TO redpoll.session_history
AS SELECT session_id, ts, event_type, item_id, event_id
FROM redpoll.events
WHERE session_id != '';

