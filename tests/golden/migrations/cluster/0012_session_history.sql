-- statement 1 (line 5)
CREATE DATABASE IF NOT EXISTS redpoll_shard ON CLUSTER `redpoll`;

-- statement 2 (line 5)
-- 0012_session_history: per-session event history (ORDER BY session_id, ts) for
-- `for_session`. Mirrored, with the full commentary and the backfill query, in
-- materialized_views/session_history.sql.

CREATE TABLE IF NOT EXISTS redpoll_shard.session_history ON CLUSTER `redpoll`
(
    session_id String,
    ts DateTime64(3, 'UTC'),
    event_type LowCardinality(String),
    item_id String,
    event_id String
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/redpoll_shard/session_history', '{replica}')
ORDER BY (session_id, ts)
TTL toDateTime(ts) + INTERVAL 90 DAY DELETE;

-- statement 3 (line 5)
CREATE TABLE IF NOT EXISTS redpoll.session_history ON CLUSTER `redpoll` AS redpoll_shard.session_history
ENGINE = Distributed(`redpoll`, redpoll_shard, session_history);

-- statement 4 (line 17)
CREATE MATERIALIZED VIEW IF NOT EXISTS redpoll_shard.session_history_mv ON CLUSTER `redpoll`
TO redpoll_shard.session_history
AS SELECT session_id, ts, event_type, item_id, event_id
FROM redpoll_shard.events
WHERE session_id != '';

