-- Materialized view `session_history`: per-session event history, for `for_session`.
--
-- `events` is ORDER BY (event_type, item_id, ts) and `user_history` keeps only events
-- with a user, so the items an anonymous session viewed, carted or was shown would be a
-- scan of `events`. `session_history` ORDER BY (session_id, ts) makes them one
-- contiguous range per session, e.g.
--   SELECT item_id, event_type, max(ts) FROM session_history
--   WHERE session_id = {session:String} AND ts > now() - INTERVAL 30 MINUTE
--   GROUP BY item_id, event_type
-- Events without a session_id are not kept. Rows older than 90 days are deleted by TTL
-- (as `trending`: sessions are short, and repetition control looks back hours).
--
-- Exactness: the view reads `events`, i.e. only distinct events, each once (see
-- sql/events.sql); it copies each event it keeps, so block splits do not matter.
--
-- Bound per event: reads nothing but the event; writes at most 1 row (none without a
-- session).
--
-- Backfill (`redpoll backfill session_history`, ingestion stopped): the table is
-- truncated, then recomputed from `events` (within the TTL) by:
-- recompute:
--   INSERT INTO {{ database }}.session_history (session_id, ts, event_type, item_id, event_id)
--   SELECT session_id, ts, event_type, item_id, event_id
--   FROM {{ database }}.events
--   WHERE session_id != '' AND ts >= now() - INTERVAL 90 DAY;
-- end recompute

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
