-- Materialized view `co_purchase`: how often two items are bought by the same buyer.
--
-- OPT-IN, not installed by default (migrations/0009_buyer_pairs.sql drops it; the
-- loader reads materialized_views/*.sql only, so this folder is neither migrated nor
-- repaired). Its work per event is unbounded: an event pairs with every purchase of the
-- same buyer within 30 days, ~200 pair increments per event on Online Retail (109 M
-- pair counts for 541,909 events, ~2/3 of the ingest time of all views together, see
-- docs/adr/0017-bounded-buyer-co-purchase.md); the default buyer-level view is
-- `buyer_pairs` (bounded). To opt in, in a project:
--   cp materialized_views/optional/co_purchase.sql materialized_views/
--   redpoll migrate new --from-views && redpoll migrate up
--   redpoll backfill co_purchase
-- and read it from an endpoint (as `also_bought` variant b did before 0009).
-- Bound per event: none (every earlier purchase of the buyer within W is read and
-- paired: O(purchases of the buyer in 60 days)).
--
-- Definition: for items a != b, co_purchase(a, b) = the number of distinct pairs of
-- purchase events {e, f} (distinct event_ids) with e.item = a, f.item = b, bought by the
-- same user (user_id != '') or, for purchases without a user, in the same order_id, and
-- |e.ts - f.ts| <= W (W = 30 days = 2592000000 ms, inclusive). Counted in both
-- directions: each such pair adds 1 to (a, b) and 1 to (b, a). Purchases with neither a
-- user nor an order never pair. Read it as
--   SELECT other_item_id, sum(pairs) AS pairs FROM co_purchase
--   WHERE item_id = {item:String} GROUP BY other_item_id ORDER BY pairs DESC LIMIT 10
-- (always sum: SummingMergeTree collapses rows only in background merges).
--
-- How it stays exact (see sql/events.sql and app/redpoll/ingest/writer.py): per INSERT
-- (one block, one batch number) `co_purchase_mv` takes the block's purchases whose
-- event_id was not stored by an earlier batch (first copy per id), pairs them with each
-- other (both directions arise from the self-join) and with the earlier purchases of the
-- same buyer key in `co_purchase_history` (batch < current, both directions emitted), within
-- the time range of the block +- W. Each pair of distinct events is counted once, in the
-- batch of the later-stored event, whatever the arrival order (late events included).
-- `co_purchase_history` (pair_key, ts_ms): purchases per buyer key ('u:'+user_id or
-- 'o:'+order_id), filled from `events` (already deduplicated).
--
-- Backfill (`redpoll backfill co_purchase`, ingestion stopped): the tables this file
-- creates are truncated, then recomputed from `events` by (app/redpoll/materialized.py;
-- tests/test_views_exact.py compares the result with an oracle):
-- recompute:
--   INSERT INTO {{ database }}.co_purchase_history (pair_key, ts_ms, item_id, batch)
--   SELECT if(user_id != '', concat('u:', user_id), concat('o:', order_id)),
--          toUnixTimestamp64Milli(ts), item_id, batch
--   FROM {{ database }}.events
--   WHERE event_type = 'purchase' AND (user_id != '' OR order_id != '');
--   INSERT INTO {{ database }}.co_purchase (item_id, other_item_id, pairs)
--   SELECT a.item_id, b.item_id, count()
--   FROM {{ database }}.co_purchase_history AS a
--   INNER JOIN {{ database }}.co_purchase_history AS b ON a.pair_key = b.pair_key
--   WHERE a.item_id != b.item_id AND abs(a.ts_ms - b.ts_ms) <= {{ window_ms }}
--   GROUP BY a.item_id, b.item_id;
-- end recompute

CREATE TABLE IF NOT EXISTS {{ database }}.co_purchase_history {{ on_cluster }}
(
    pair_key String,
    ts_ms Int64,
    item_id String,
    batch UInt64
)
ENGINE = MergeTree
ORDER BY (pair_key, ts_ms);

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.co_purchase_history_mv {{ on_cluster }}
TO {{ database }}.co_purchase_history
AS SELECT
    if(user_id != '', concat('u:', user_id), concat('o:', order_id)) AS pair_key,
    toUnixTimestamp64Milli(ts) AS ts_ms,
    item_id,
    batch
FROM {{ database }}.events
WHERE event_type = 'purchase' AND (user_id != '' OR order_id != '');

CREATE TABLE IF NOT EXISTS {{ database }}.co_purchase {{ on_cluster }}
(
    item_id String,
    other_item_id String,
    pairs UInt64
)
ENGINE = SummingMergeTree(pairs)
ORDER BY (item_id, other_item_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.co_purchase_mv {{ on_cluster }}
TO {{ database }}.co_purchase
AS WITH
    2592000000 AS window_ms,
    new_purchases AS (
        SELECT
            event_id,
            if(user_id != '', concat('u:', user_id), concat('o:', order_id)) AS pair_key,
            toUnixTimestamp64Milli(ts) AS ts_ms,
            item_id
        FROM {{ database }}.events_landing
        WHERE event_type = 'purchase'
          AND (user_id != '' OR order_id != '')
          AND event_id NOT IN (
              SELECT event_id
              FROM {{ database }}.event_ids
              WHERE event_id IN (SELECT event_id FROM {{ database }}.events_landing)
                AND batch < (SELECT max(batch) FROM {{ database }}.events_landing)
          )
        LIMIT 1 BY event_id
    ),
    earlier_purchases AS (
        SELECT pair_key, ts_ms, item_id
        FROM {{ database }}.co_purchase_history
        WHERE pair_key IN (SELECT pair_key FROM new_purchases)
          AND ts_ms >= (SELECT min(ts_ms) FROM new_purchases) - window_ms
          AND ts_ms <= (SELECT max(ts_ms) FROM new_purchases) + window_ms
          AND batch < (SELECT max(batch) FROM {{ database }}.events_landing)
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
