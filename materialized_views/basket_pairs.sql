-- Materialized view `basket_pairs`: how many orders (baskets) contain two items.
--
-- Definition: for items a != b, basket_pairs(a, b) = the number of distinct order_ids
-- (order_id != ''; guest orders count too) with at most 50 distinct purchased items
-- (`max_basket_items`) that have at least one purchase event of a and at least one of b.
-- Symmetric: (a, b) and (b, a) hold the same count. An item bought on several lines of
-- one order counts once for that order. The virtual item '' is in every order, whatever
-- its size: basket_pairs('', b) = the number of orders with b (popularity), so one read
-- of item_id IN (a, '') gives an item's co-purchases and the popular items that fill
-- short lists (`also_bought`). Bigger orders (wholesale restocking: on Online
-- Retail the 10% of orders above 50 items would make 88% of the pair counts) are left
-- out: they cost most of the ingest time and, offline, made the rankings slightly worse.
-- Read it as
--   SELECT other_item_id, sum(orders) AS orders FROM basket_pairs
--   WHERE item_id = {item:String} GROUP BY other_item_id HAVING orders > 0
--   ORDER BY orders DESC LIMIT 10
-- (always sum: SummingMergeTree collapses rows only in background merges; a sum can be
-- 0 until then, see below). One primary-key range per item. Unlike `co_purchase` (same
-- buyer within 30 days) there is no time window: a basket is one moment.
--
-- How it stays exact (see sql/events.sql and app/redpoll/ingest/writer.py): an (order,
-- item) is "new" in the batch that first stores a purchase of that item in that order.
-- Per INSERT (one block, one batch number) `basket_pairs_mv`, chained on `events` (which
-- receives each distinct event once: the dedup is done by events_mv), takes the block's
-- purchases and the (order, item)s stored by earlier batches for the same orders
-- (`basket_items`, batch < current; in a view, `events` in a subquery is the block too),
-- and per order, with n_old earlier and n_new new items: +1 for ('', x) for every new x,
-- and
--   * n_old + n_new <= 50: +1 for (x, y) for every new x and every other item y of the
--     order, and +1 for (y, x) when y is old (when y is new too, y emits it itself);
--   * n_old <= 50 < n_old + n_new (the order grows past the cap in this batch): -1 for
--     every pair of old items, which earlier batches counted;
--   * n_old > 50: nothing.
-- So each pair of items of an order of at most 50 items is counted exactly once, in the
-- batch that stores the later of the two, and an order that grows past 50 items is taken
-- back out, whatever the batch split, arrival order and redelivery.
-- `basket_items` (order_id, item_id): one row per stored purchase event with an order,
-- filled from `events` (already deduplicated).
--
-- Bound per event (N = max_basket_items = 50): writes 1 `basket_items` row; emits 1 row
-- ('', x) plus, while its order has at most N items, at most 2 (N - 1) = 98 pair
-- increments, and once per order, in the batch where the order passes N, at most
-- N (N - 1) = 2,450 decrements (each taking back an earlier increment). Reads the
-- stored items of its order: as many rows as the order's distinct items, which the cap
-- does not bound (an order is one checkout; the largest of Online Retail has 1,110
-- distinct items). Unlike `buyer_pairs`, `basket_items` keeps every item of an order,
-- because ('', x) counts orders of any size.
--
-- Backfill (`redpoll backfill basket_pairs`, ingestion stopped): the tables this file
-- creates are truncated, then recomputed from `events` by (`{{ max_basket_items }}` is the
-- constant of basket_pairs_mv; tests/test_views_exact.py compares the view and this
-- recomputation with an oracle):
-- recompute:
--   INSERT INTO {{ database }}.basket_items (order_id, item_id, batch)
--   SELECT order_id, item_id, batch
--   FROM {{ database }}.events WHERE event_type = 'purchase' AND order_id != '';
--   INSERT INTO {{ database }}.basket_pairs (item_id, other_item_id, orders)
--   WITH lines AS (
--       SELECT DISTINCT order_id, item_id FROM {{ database }}.basket_items
--       WHERE order_id IN (SELECT order_id FROM {{ database }}.basket_items GROUP BY order_id
--                          HAVING uniqExact(item_id) <= {{ max_basket_items }}))
--   SELECT a.item_id, b.item_id, count()
--   FROM lines AS a INNER JOIN lines AS b ON a.order_id = b.order_id
--   WHERE a.item_id != b.item_id
--   GROUP BY a.item_id, b.item_id;
--   INSERT INTO {{ database }}.basket_pairs (item_id, other_item_id, orders)
--   SELECT '', item_id, uniqExact(order_id) FROM {{ database }}.basket_items GROUP BY item_id;
-- end recompute

CREATE TABLE IF NOT EXISTS {{ database }}.basket_items {{ on_cluster }}
(
    order_id String,
    item_id String,
    batch UInt64
)
ENGINE = MergeTree
ORDER BY (order_id, item_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.basket_items_mv {{ on_cluster }}
TO {{ database }}.basket_items
AS SELECT order_id, item_id, batch
FROM {{ database }}.events
WHERE event_type = 'purchase' AND order_id != '';

CREATE TABLE IF NOT EXISTS {{ database }}.basket_pairs {{ on_cluster }}
(
    item_id String,
    other_item_id String,
    orders Int64
)
ENGINE = SummingMergeTree(orders)
ORDER BY (item_id, other_item_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.basket_pairs_mv {{ on_cluster }}
TO {{ database }}.basket_pairs
AS WITH
    50 AS max_basket_items,
    basket AS (
        -- per (order, item) of the orders in this block: is_new = 1 when no earlier
        -- batch stored that item in that order
        SELECT order_id, item_id, max(earlier) = 0 AS is_new
        FROM
        (
            -- the block: the distinct new events of this INSERT (`events` receives each
            -- event once, from events_mv)
            SELECT order_id, item_id, 0 AS earlier
            FROM {{ database }}.events
            WHERE event_type = 'purchase' AND order_id != ''
            UNION ALL
            SELECT order_id, item_id, 1 AS earlier
            FROM {{ database }}.basket_items
            WHERE order_id IN (
                      SELECT order_id FROM {{ database }}.events
                      WHERE event_type = 'purchase' AND order_id != '')
              AND batch < (SELECT max(batch) FROM {{ database }}.events)
        )
        GROUP BY order_id, item_id
    ),
    per_order AS (
        SELECT groupArrayIf(item_id, is_new) AS new_items, groupArrayIf(item_id, NOT is_new) AS old_items
        FROM basket
        GROUP BY order_id
        HAVING length(new_items) > 0
    )
SELECT
    tupleElement(pair, 1) AS item_id,
    tupleElement(pair, 2) AS other_item_id,
    sum(tupleElement(pair, 3)) AS orders
FROM per_order
ARRAY JOIN arrayConcat(
    -- the virtual item '' is in every order: ('', x) counts the orders with x
    arrayMap(x -> ('', x, 1), new_items),
    multiIf(
        -- still small enough: +1 for (new x, any other y) and (old y, new x)
        length(new_items) + length(old_items) <= max_basket_items,
        arrayConcat(
            arrayFlatten(arrayMap(
                x -> arrayMap(y -> (x, y, 1), arrayFilter(y -> y != x, arrayConcat(new_items, old_items))),
                new_items)),
            arrayFlatten(arrayMap(x -> arrayMap(y -> (y, x, 1), old_items), new_items))),
        -- grows past the cap in this batch: -1 for the pairs counted before
        length(old_items) <= max_basket_items,
        arrayFlatten(arrayMap(
            x -> arrayMap(y -> (x, y, -1), arrayFilter(y -> y != x, old_items)),
            old_items)),
        -- was already past the cap: nothing
        [])) AS pair
GROUP BY item_id, other_item_id;
