-- statement 1 (line 6)
CREATE DATABASE IF NOT EXISTS redpoll_shard ON CLUSTER `redpoll`;

-- statement 2 (line 6)
-- 0011_events_by_time: every event's time, item and type, ORDER BY ts (exact "up to now"
-- reads of the current hour for `for_user`'s trend).
-- Mirrored, with the full commentary and the backfill query, in
-- materialized_views/events_by_time.sql.

CREATE TABLE IF NOT EXISTS redpoll_shard.events_by_time ON CLUSTER `redpoll`
(
    ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    item_id String,
    event_type LowCardinality(String)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/redpoll_shard/events_by_time', '{replica}')
ORDER BY ts;

-- statement 3 (line 6)
CREATE TABLE IF NOT EXISTS redpoll.events_by_time ON CLUSTER `redpoll` AS redpoll_shard.events_by_time
ENGINE = Distributed(`redpoll`, redpoll_shard, events_by_time);

-- statement 4 (line 15)
CREATE MATERIALIZED VIEW IF NOT EXISTS redpoll_shard.events_by_time_mv ON CLUSTER `redpoll`
TO redpoll_shard.events_by_time
AS SELECT ts, item_id, event_type
FROM redpoll_shard.events;

