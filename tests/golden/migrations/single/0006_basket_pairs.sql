-- statement 1 (line 5)
-- 0006_basket_pairs: exact incremental same-order (basket) item pair counts, orders of
-- at most 50 distinct items. Mirrored, with the full commentary and the backfill query, in
-- materialized_views/basket_pairs.sql.

CREATE TABLE IF NOT EXISTS redpoll.basket_items 
(
    order_id String,
    item_id String,
    batch UInt64
)
ENGINE = MergeTree
ORDER BY (order_id, item_id);

-- statement 2 (line 14)
CREATE MATERIALIZED VIEW IF NOT EXISTS redpoll.basket_items_mv 
TO redpoll.basket_items
AS SELECT order_id, item_id, batch
FROM redpoll.events
WHERE event_type = 'purchase' AND order_id != '';

-- statement 3 (line 20)
CREATE TABLE IF NOT EXISTS redpoll.basket_pairs 
(
    item_id String,
    other_item_id String,
    orders Int64
)
ENGINE = SummingMergeTree(orders)
ORDER BY (item_id, other_item_id);

-- statement 4 (line 29)
CREATE MATERIALIZED VIEW IF NOT EXISTS redpoll.basket_pairs_mv 
TO redpoll.basket_pairs
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
            FROM redpoll.events
            WHERE event_type = 'purchase' AND order_id != ''
            UNION ALL
            SELECT order_id, item_id, 1 AS earlier
            FROM redpoll.basket_items
            WHERE order_id IN (
                      SELECT order_id FROM redpoll.events
                      WHERE event_type = 'purchase' AND order_id != '')
              AND batch < (SELECT max(batch) FROM redpoll.events)
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

