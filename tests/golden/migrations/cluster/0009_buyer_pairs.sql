-- statement 1 (line 11)
CREATE DATABASE IF NOT EXISTS redpoll_shard ON CLUSTER `redpoll`;

-- statement 2 (line 11)
-- 0009_buyer_pairs: the default buyer-level co-purchase becomes bounded.
-- Drops `co_purchase` (every pair of purchases by the same buyer within 30 days: ~200
-- pair increments per event on Online Retail, unbounded per event; now the opt-in
-- materialized_views/optional/co_purchase.sql) and creates `buyer_pairs` (buyers x
-- fixed periods of at most a capped number of items, bounded work per event). Mirrored,
-- with the full commentary and the recompute block, in materialized_views/buyer_pairs.sql;
-- why and the figures: docs/adr/0017-bounded-buyer-co-purchase.md. After
-- `redpoll migrate up`, fill the new view from the stored events with
-- `redpoll backfill buyer_pairs` (docs/views.md).

DROP VIEW IF EXISTS redpoll_shard.co_purchase_mv ON CLUSTER `redpoll`;

-- statement 3 (line 11)
DROP TABLE IF EXISTS redpoll.co_purchase_mv ON CLUSTER `redpoll`;

-- statement 4 (line 13)
DROP VIEW IF EXISTS redpoll_shard.co_purchase_history_mv ON CLUSTER `redpoll`;

-- statement 5 (line 13)
DROP TABLE IF EXISTS redpoll.co_purchase_history_mv ON CLUSTER `redpoll`;

-- statement 6 (line 15)
DROP TABLE IF EXISTS redpoll_shard.co_purchase ON CLUSTER `redpoll`;

-- statement 7 (line 15)
DROP TABLE IF EXISTS redpoll.co_purchase ON CLUSTER `redpoll`;

-- statement 8 (line 17)
DROP TABLE IF EXISTS redpoll_shard.co_purchase_history ON CLUSTER `redpoll`;

-- statement 9 (line 17)
DROP TABLE IF EXISTS redpoll.co_purchase_history ON CLUSTER `redpoll`;

-- statement 10 (line 19)
CREATE TABLE IF NOT EXISTS redpoll_shard.buyer_items ON CLUSTER `redpoll`
(
    buyer String,
    bucket UInt32,
    item_id String,
    batch UInt64
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/redpoll_shard/buyer_items', '{replica}')
ORDER BY (buyer, bucket, item_id);

-- statement 11 (line 19)
CREATE TABLE IF NOT EXISTS redpoll.buyer_items ON CLUSTER `redpoll` AS redpoll_shard.buyer_items
ENGINE = Distributed(`redpoll`, redpoll_shard, buyer_items);

-- statement 12 (line 29)
CREATE MATERIALIZED VIEW IF NOT EXISTS redpoll_shard.buyer_items_mv ON CLUSTER `redpoll`
TO redpoll_shard.buyer_items
AS WITH
    7 AS bucket_days,
    50 AS max_group_items,
    grouped AS (
        -- per (group, item) of the groups in this block: is_new = 1 when no earlier
        -- batch stored that item in that group
        SELECT buyer, bucket, item_id, max(earlier) = 0 AS is_new
        FROM
        (
            SELECT
                if(user_id != '', concat('u:', user_id), concat('o:', order_id)) AS buyer,
                toUInt32(intDiv(toUnixTimestamp(ts), 86400 * bucket_days)) AS bucket,
                item_id,
                0 AS earlier
            FROM redpoll_shard.events
            WHERE event_type = 'purchase' AND (user_id != '' OR order_id != '')
            UNION ALL
            SELECT buyer, bucket, item_id, 1 AS earlier
            FROM redpoll_shard.buyer_items
            WHERE (buyer, bucket) IN (
                      SELECT
                          if(user_id != '', concat('u:', user_id), concat('o:', order_id)),
                          toUInt32(intDiv(toUnixTimestamp(ts), 86400 * bucket_days))
                      FROM redpoll_shard.events
                      WHERE event_type = 'purchase' AND (user_id != '' OR order_id != ''))
              AND batch < (SELECT max(batch) FROM redpoll_shard.events)
        )
        GROUP BY buyer, bucket, item_id
    )
SELECT buyer, bucket, item_id, (SELECT max(batch) FROM redpoll_shard.events) AS batch
FROM
(
    -- a group's new items, by item_id, while it has room: at most max_group_items + 1
    -- stored in all (the one past the cap marks the group as over it)
    SELECT
        buyer,
        bucket,
        arraySlice(
            arraySort(groupArrayIf(item_id, is_new)),
            1,
            greatest(toInt64(max_group_items) + 1 - toInt64(countIf(NOT is_new)), 0)) AS kept
    FROM grouped
    GROUP BY buyer, bucket
)
ARRAY JOIN kept AS item_id;

-- statement 13 (line 77)
CREATE TABLE IF NOT EXISTS redpoll_shard.buyer_pairs ON CLUSTER `redpoll`
(
    item_id String,
    other_item_id String,
    buyers Int64
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/redpoll_shard/buyer_pairs', '{replica}', buyers)
ORDER BY (item_id, other_item_id);

-- statement 14 (line 77)
CREATE TABLE IF NOT EXISTS redpoll.buyer_pairs ON CLUSTER `redpoll` AS redpoll_shard.buyer_pairs
ENGINE = Distributed(`redpoll`, redpoll_shard, buyer_pairs);

-- statement 15 (line 86)
CREATE MATERIALIZED VIEW IF NOT EXISTS redpoll_shard.buyer_pairs_mv ON CLUSTER `redpoll`
TO redpoll_shard.buyer_pairs
AS WITH
    7 AS bucket_days,
    50 AS max_group_items,
    grouped AS (
        -- as in buyer_items_mv: per (group, item) of this block's groups, is_new
        SELECT buyer, bucket, item_id, max(earlier) = 0 AS is_new
        FROM
        (
            SELECT
                if(user_id != '', concat('u:', user_id), concat('o:', order_id)) AS buyer,
                toUInt32(intDiv(toUnixTimestamp(ts), 86400 * bucket_days)) AS bucket,
                item_id,
                0 AS earlier
            FROM redpoll_shard.events
            WHERE event_type = 'purchase' AND (user_id != '' OR order_id != '')
            UNION ALL
            -- at most max_group_items + 1 rows per group (see buyer_items_mv)
            SELECT buyer, bucket, item_id, 1 AS earlier
            FROM redpoll_shard.buyer_items
            WHERE (buyer, bucket) IN (
                      SELECT
                          if(user_id != '', concat('u:', user_id), concat('o:', order_id)),
                          toUInt32(intDiv(toUnixTimestamp(ts), 86400 * bucket_days))
                      FROM redpoll_shard.events
                      WHERE event_type = 'purchase' AND (user_id != '' OR order_id != ''))
              AND batch < (SELECT max(batch) FROM redpoll_shard.events)
        )
        GROUP BY buyer, bucket, item_id
    ),
    per_group AS (
        SELECT groupArrayIf(item_id, is_new) AS new_items, groupArrayIf(item_id, NOT is_new) AS old_items
        FROM grouped
        GROUP BY buyer, bucket
        HAVING length(new_items) > 0
    )
SELECT
    tupleElement(pair, 1) AS item_id,
    tupleElement(pair, 2) AS other_item_id,
    sum(tupleElement(pair, 3)) AS buyers
FROM per_group
ARRAY JOIN multiIf(
        -- still small enough: +1 for (new x, any other y) and (old y, new x)
        length(new_items) + length(old_items) <= max_group_items,
        arrayConcat(
            arrayFlatten(arrayMap(
                x -> arrayMap(y -> (x, y, 1), arrayFilter(y -> y != x, arrayConcat(new_items, old_items))),
                new_items)),
            arrayFlatten(arrayMap(x -> arrayMap(y -> (y, x, 1), old_items), new_items))),
        -- grows past the cap in this batch: -1 for the pairs counted before
        length(old_items) <= max_group_items,
        arrayFlatten(arrayMap(
            x -> arrayMap(y -> (x, y, -1), arrayFilter(y -> y != x, old_items)),
            old_items)),
        -- was already past the cap: nothing
        []) AS pair
GROUP BY item_id, other_item_id;

