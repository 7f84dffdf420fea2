-- statement 1 (line 5)
-- 0003_co_purchase: exact incremental co-purchase counts.
-- Mirrored, with the full commentary and the backfill query, in
-- materialized_views/co_purchase.sql.

CREATE TABLE IF NOT EXISTS redpoll.co_purchase_history 
(
    pair_key String,
    ts_ms Int64,
    item_id String,
    batch UInt64
)
ENGINE = MergeTree
ORDER BY (pair_key, ts_ms);

-- statement 2 (line 15)
CREATE MATERIALIZED VIEW IF NOT EXISTS redpoll.co_purchase_history_mv 
TO redpoll.co_purchase_history
AS SELECT
    if(user_id != '', concat('u:', user_id), concat('o:', order_id)) AS pair_key,
    toUnixTimestamp64Milli(ts) AS ts_ms,
    item_id,
    batch
FROM redpoll.events
WHERE event_type = 'purchase' AND (user_id != '' OR order_id != '');

-- statement 3 (line 25)
CREATE TABLE IF NOT EXISTS redpoll.co_purchase 
(
    item_id String,
    other_item_id String,
    pairs UInt64
)
ENGINE = SummingMergeTree(pairs)
ORDER BY (item_id, other_item_id);

-- statement 4 (line 34)
CREATE MATERIALIZED VIEW IF NOT EXISTS redpoll.co_purchase_mv 
TO redpoll.co_purchase
AS WITH
    2592000000 AS window_ms,
    new_purchases AS (
        SELECT
            event_id,
            if(user_id != '', concat('u:', user_id), concat('o:', order_id)) AS pair_key,
            toUnixTimestamp64Milli(ts) AS ts_ms,
            item_id
        FROM redpoll.events_landing
        WHERE event_type = 'purchase'
          AND (user_id != '' OR order_id != '')
          AND event_id NOT IN (
              SELECT event_id
              FROM redpoll.event_ids
              WHERE event_id IN (SELECT event_id FROM redpoll.events_landing)
                AND batch < (SELECT max(batch) FROM redpoll.events_landing)
          )
        LIMIT 1 BY event_id
    ),
    earlier_purchases AS (
        SELECT pair_key, ts_ms, item_id
        FROM redpoll.co_purchase_history
        WHERE pair_key IN (SELECT pair_key FROM new_purchases)
          AND ts_ms >= (SELECT min(ts_ms) FROM new_purchases) - window_ms
          AND ts_ms <= (SELECT max(ts_ms) FROM new_purchases) + window_ms
          AND batch < (SELECT max(batch) FROM redpoll.events_landing)
    )
SELECT item_id, other_item_id, count() AS pairs
FROM
(
    SELECT n1.item_id AS item_id, n2.item_id AS other_item_id
    FROM new_purchases AS n1
    INNER JOIN new_purchases AS n2 ON n1.pair_key = n2.pair_key
    WHERE n1.item_id != n2.item_id AND abs(n1.ts_ms - n2.ts_ms) <= window_ms
    UNION ALL
    SELECT
        tupleElement(pair, 1) AS item_id,
        tupleElement(pair, 2) AS other_item_id
    FROM new_purchases AS n
    INNER JOIN earlier_purchases AS e ON n.pair_key = e.pair_key
    ARRAY JOIN [(n.item_id, e.item_id), (e.item_id, n.item_id)] AS pair
    WHERE n.item_id != e.item_id AND abs(n.ts_ms - e.ts_ms) <= window_ms
)
GROUP BY item_id, other_item_id;

