-- also_bought over raw `events` and the `items` catalog, no view: system (d) of
-- bench/bench_serving.py. The answer of endpoints/also_bought.sql (variant a, default
-- parameters) computed at request time: orders with at most 50 distinct purchased items
-- that contain both items (basket_pairs' definition, materialized_views/basket_pairs.sql);
-- the most ordered items (orders of any size) fill short lists.
-- max_execution_time: 10
%
WITH
    orders_with AS (
        SELECT DISTINCT order_id FROM events
        WHERE event_type = 'purchase' AND order_id != ''
          AND item_id = {{ String(item_id, required=True, description="The item shown", example="85123A") }}
    ),
    -- the items of those orders, counted only in orders of at most 50 distinct items
    pairs AS (
        SELECT item_id, count() AS pairs
        FROM
        (
            SELECT order_id, groupUniqArray(item_id) AS basket FROM events
            WHERE event_type = 'purchase' AND order_id IN orders_with
            GROUP BY order_id
            HAVING length(basket) <= 50
        )
        ARRAY JOIN basket AS item_id
        GROUP BY item_id
    ),
    popular AS (
        SELECT item_id, uniqExact(order_id) AS popularity FROM events
        WHERE event_type = 'purchase' AND order_id != ''
        GROUP BY item_id
    ),
    catalog AS (SELECT item_id, title, category, price, available FROM items FINAL)
SELECT
    p.item_id AS item_id,
    i.title AS title,
    i.category AS category,
    i.price AS price,
    round(if(c.pairs > 0, toFloat64(c.pairs), 1e-9 * p.popularity), 9) AS score
FROM popular AS p
LEFT JOIN pairs AS c ON c.item_id = p.item_id
INNER JOIN catalog AS i ON i.item_id = p.item_id
WHERE i.available AND p.item_id != {{ String(item_id) }}
ORDER BY score DESC, p.popularity DESC, item_id
LIMIT {{ Int32(limit, 10, min=1, max=100, description="Items to return") }}
