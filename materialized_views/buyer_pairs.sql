-- Materialized view `buyer_pairs`: how many buyers bought two items in the same week.
--
-- Definition (recomputable from `events` alone): take the distinct purchase events
-- (event_type = 'purchase') with a user or an order. Each falls in one group
--   buyer  = 'u:' || user_id when user_id != '', else 'o:' || order_id (guest orders),
--   bucket = intDiv(unix seconds of ts, 86400 * 7)  (`bucket_days`: fixed 7-day UTC
--            periods counted from 1970-01-01, a Thursday, so bucket = ts_ms // 604_800_000).
-- A group's items are the distinct item_ids of its purchases; a group with more than 50
-- distinct items (`max_group_items`) is left out entirely. For items a != b,
-- buyer_pairs(a, b) = the number of groups of at most 50 items that contain a and b.
-- Symmetric: (a, b) and (b, a) hold the same count. Purchases with neither a user nor an
-- order never count. In pandas (ev: the distinct events, ts_ms = ts in epoch ms):
--   p = ev[(ev.event_type == 'purchase') & ((ev.user_id != '') | (ev.order_id != ''))]
--   g = p.assign(buyer=np.where(p.user_id != '', 'u:' + p.user_id, 'o:' + p.order_id),
--                bucket=p.ts_ms // (86_400_000 * 7))[['buyer', 'bucket', 'item_id']]
--   g = g.drop_duplicates()
--   g = g[g.groupby(['buyer', 'bucket']).item_id.transform('size') <= 50]
--   m = g.merge(g, on=['buyer', 'bucket']); m = m[m.item_id_x != m.item_id_y]
--   buyer_pairs = m.groupby(['item_id_x', 'item_id_y']).size()
-- Read it as
--   SELECT other_item_id, sum(buyers) AS buyers FROM buyer_pairs
--   WHERE item_id = {item:String} GROUP BY other_item_id HAVING buyers > 0
--   ORDER BY buyers DESC LIMIT 10
-- (always sum: SummingMergeTree collapses rows only in background merges; a sum can be
-- 0 until then). This is the bounded replacement of the 30-day sliding window of
-- `co_purchase` (materialized_views/optional/co_purchase.sql, opt-in): a buyer's items
-- across orders still pair, but within one period and one bounded group. The bucket and
-- the cap were chosen offline (docs/adr/0017-bounded-buyer-co-purchase.md,
-- bench/choose_buyer_pairs.py).
--
-- How it stays exact (see sql/events.sql and app/redpoll/ingest/writer.py): as
-- `basket_pairs` does for orders. A (group, item) is "new" in the batch that first
-- stores a purchase of it. Per INSERT (one block, one batch number) `buyer_pairs_mv`,
-- chained on `events` (each distinct event once), takes the block's purchases and the
-- items stored for the same groups by earlier batches (`buyer_items`, batch < current),
-- and per group, with n_old stored and n_new new items:
--   * n_old + n_new <= 50: +1 for (x, y) for every new x and every other item y of the
--     group, and +1 for (y, x) when y is old (when y is new too, y emits it itself);
--   * n_old <= 50 < n_old + n_new (the group grows past the cap in this batch): -1 for
--     every pair of old items, which earlier batches counted;
--   * n_old > 50: nothing.
-- `buyer_items` (buyer, bucket, item_id, batch) keeps at most 51 items per group: its
-- view stores a group's new items only while the group has room, the first ones by
-- (batch, item_id), up to 51 (one past the cap marks the group as over it). So n_old is
-- exact while a group has at most 50 items, and 51 (> 50) once it has more: a group past
-- the cap is never read whole and never grows. Each pair of items of a group of at most
-- 50 items is counted once, in the batch that stores the later of the two, and a group
-- that grows past 50 is taken back out, whatever the batch split, arrival order,
-- redelivery and restarts (tests/test_views_exact.py checks it against a plain-Python
-- oracle with hypothesis).
--
-- Bound per event (N = max_group_items = 50): reads at most N + 1 = 51 `buyer_items`
-- rows (its group's stored items; a primary-key range); writes at most 1 `buyer_items`
-- row; emits at most 2 (N - 1) = 98 pair increments while its group has room, and once
-- per group, in the batch where the group passes N, at most N (N - 1) = 2,450 decrements
-- (each taking back an increment made earlier, so over any stream the decrements are at
-- most the increments: amortized <= 4 (N - 1) = 196 per event). On Online Retail,
-- replayed in 1-hour batches: 12.6 increments and 0.4 decrements per purchase event,
-- 12.2 pair counts per event in the final table (co_purchase: ~200), see the ADR.
--
-- Backfill (`redpoll backfill buyer_pairs`, ingestion stopped): the tables this file
-- creates are truncated, then recomputed from `events` by (the constants are those of
-- the views below):
-- recompute:
--   INSERT INTO {{ database }}.buyer_items (buyer, bucket, item_id, batch)
--   SELECT buyer, bucket, item_id, min(batch) AS first_batch
--   FROM
--   (
--       SELECT if(user_id != '', concat('u:', user_id), concat('o:', order_id)) AS buyer,
--              toUInt32(intDiv(toUnixTimestamp(ts), 86400 * {{ bucket_days }})) AS bucket,
--              item_id, batch
--       FROM {{ database }}.events
--       WHERE event_type = 'purchase' AND (user_id != '' OR order_id != '')
--   )
--   GROUP BY buyer, bucket, item_id
--   ORDER BY first_batch, item_id
--   LIMIT {{ max_group_items | int + 1 }} BY buyer, bucket;
--   INSERT INTO {{ database }}.buyer_pairs (item_id, other_item_id, buyers)
--   WITH lines AS (
--       SELECT buyer, bucket, item_id FROM {{ database }}.buyer_items
--       WHERE (buyer, bucket) IN (SELECT buyer, bucket FROM {{ database }}.buyer_items
--                                 GROUP BY buyer, bucket HAVING count() <= {{ max_group_items }}))
--   SELECT a.item_id, b.item_id, count()
--   FROM lines AS a INNER JOIN lines AS b ON a.buyer = b.buyer AND a.bucket = b.bucket
--   WHERE a.item_id != b.item_id
--   GROUP BY a.item_id, b.item_id;
-- end recompute

CREATE TABLE IF NOT EXISTS {{ database }}.buyer_items {{ on_cluster }}
(
    buyer String,
    bucket UInt32,
    item_id String,
    batch UInt64
)
ENGINE = MergeTree
ORDER BY (buyer, bucket, item_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.buyer_items_mv {{ on_cluster }}
TO {{ database }}.buyer_items
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
            FROM {{ database }}.events
            WHERE event_type = 'purchase' AND (user_id != '' OR order_id != '')
            UNION ALL
            SELECT buyer, bucket, item_id, 1 AS earlier
            FROM {{ database }}.buyer_items
            WHERE (buyer, bucket) IN (
                      SELECT
                          if(user_id != '', concat('u:', user_id), concat('o:', order_id)),
                          toUInt32(intDiv(toUnixTimestamp(ts), 86400 * bucket_days))
                      FROM {{ database }}.events
                      WHERE event_type = 'purchase' AND (user_id != '' OR order_id != ''))
              AND batch < (SELECT max(batch) FROM {{ database }}.events)
        )
        GROUP BY buyer, bucket, item_id
    )
SELECT buyer, bucket, item_id, (SELECT max(batch) FROM {{ database }}.events) AS batch
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

CREATE TABLE IF NOT EXISTS {{ database }}.buyer_pairs {{ on_cluster }}
(
    item_id String,
    other_item_id String,
    buyers Int64
)
ENGINE = SummingMergeTree(buyers)
ORDER BY (item_id, other_item_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.buyer_pairs_mv {{ on_cluster }}
TO {{ database }}.buyer_pairs
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
            FROM {{ database }}.events
            WHERE event_type = 'purchase' AND (user_id != '' OR order_id != '')
            UNION ALL
            -- at most max_group_items + 1 rows per group (see buyer_items_mv)
            SELECT buyer, bucket, item_id, 1 AS earlier
            FROM {{ database }}.buyer_items
            WHERE (buyer, bucket) IN (
                      SELECT
                          if(user_id != '', concat('u:', user_id), concat('o:', order_id)),
                          toUInt32(intDiv(toUnixTimestamp(ts), 86400 * bucket_days))
                      FROM {{ database }}.events
                      WHERE event_type = 'purchase' AND (user_id != '' OR order_id != ''))
              AND batch < (SELECT max(batch) FROM {{ database }}.events)
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
