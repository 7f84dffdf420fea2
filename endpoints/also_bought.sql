-- Customers who bought this item also bought... (item-to-item).
--
-- Variant `a` (default) counts orders that contain both items (same basket), read at
-- query time from `events` and `user_history`; variant `b` reads the `co_purchase` view
-- (same buyer within 30 days: cheaper, noisier; materialized_views/co_purchase.sql).
-- Offline on Online Retail, same-basket counts rank much better (docs/recommendations.md).
-- popularity_damping > 0 divides by (purchases in the last `days` + 10)^damping. When
-- the item has fewer co-purchased items than `limit`, popular items (last `days`) fill
-- the list (fallback=false turns that off).
--
-- Business rules: exclude=<ids>, category=<cat>, only available catalog items (latest
-- version of `items`), max_per_category=<n> (diversity cap; 0 = none).
-- tags: recommendations
-- max_execution_time: 2
%
WITH
    ifNull({{ DateTime(now, defined=False, description="Evaluate as of this time (default: now)") }}, now()) AS t_now,
    -- how often each other item was bought together with the item
    co AS (
{% if String(variant, 'a', enum=['a', 'b'], description="A/B variant: a (same order) or b (same buyer within 30 days)") == 'b' %}
        -- b: the co_purchase view (pairs of purchases by the same buyer within 30 days;
        -- always sum(): SummingMergeTree). Cheapest: one primary-key range.
        SELECT c.other_item_id AS candidate, sum(c.pairs) AS pairs
        FROM co_purchase AS c
        WHERE c.item_id = {{ String(item_id, required=True, description="The item shown", example="85123A") }}
        GROUP BY candidate
{% else %}
        -- a: same basket: the orders that contain the item (`events`, ORDER BY event_type,
        -- item_id), then the other items of those orders from the buyers' histories
        -- (`user_history`, ORDER BY user_id): number of orders with both items.
        -- Guest orders (no user_id) are not in user_history and do not count.
        SELECT h.item_id AS candidate, uniqExact(h.order_id) AS pairs
        FROM user_history AS h
        WHERE h.user_id IN (
                  SELECT user_id FROM events
                  WHERE event_type = 'purchase' AND item_id = {{ String(item_id) }}
                    AND user_id != '' AND ts <= t_now)
          AND h.order_id IN (
                  SELECT order_id FROM events
                  WHERE event_type = 'purchase' AND item_id = {{ String(item_id) }}
                    AND order_id != '' AND ts <= t_now)
          AND h.event_type = 'purchase'
          AND h.ts <= t_now
        GROUP BY candidate
{% end %}
    ),
    -- purchases per item in the last `days` (popularity)
    buys AS (
        SELECT item_id, toFloat64(sum(events)) AS buys
        FROM trending
        WHERE event_type = 'purchase'
          AND hour > t_now - INTERVAL {{ Int32(days, 30, min=1, max=90, description="Look-back of the popularity fallback (and of variant a's discount), days") }} DAY
          AND hour <= t_now
        GROUP BY item_id
    ),
    scored AS (
        SELECT
            if(co.candidate != '', co.candidate, b.item_id) AS item_id,
            -- co-purchased items first (damped by popularity if popularity_damping > 0),
            -- then popular items, scored far below
            if(co.pairs > 0,
               co.pairs / pow(b.buys + 10, {{ Float64(popularity_damping, 0, min=0, max=1, description="Discount of popular items (0..1; 0 = raw counts)") }}),
               1e-9 * b.buys) AS score
        FROM co
{% if Boolean(fallback, True, description="Fill with popular items when co-purchases run short") %}
        FULL OUTER JOIN buys AS b ON b.item_id = co.candidate
{% else %}
        LEFT JOIN buys AS b ON b.item_id = co.candidate
{% end %}
    )
SELECT
    s.item_id AS item_id,
    i.title AS title,
    i.category AS category,
    i.price AS price,
    round(s.score, 9) AS score,
    {% if defined(rec_id) %}{{ String(rec_id, description="Recommendation id to echo (default: a new UUID)") }}{% else %}assumeNotNull((SELECT toString(generateUUIDv4()))){% end %} AS rec_id,
    concat('also_bought:', {{ String(variant, 'a') }}) AS source
FROM scored AS s
INNER JOIN
(
    SELECT item_id, title, category, price
    FROM items FINAL
    WHERE available
      AND item_id != {{ String(item_id) }}
      AND item_id NOT IN {{ Array(exclude, 'String', default='', description="Item ids to leave out") }}
{% if defined(category) %}
      AND category = {{ String(category, description="Only this category") }}
{% end %}
) AS i ON i.item_id = s.item_id
ORDER BY s.score DESC, item_id
{% if Int32(max_per_category, 0, min=0, max=100, description="At most this many items per category (0: no cap)") > 0 %}
LIMIT {{ Int32(max_per_category, 0) + 0 }} BY category
{% end %}
LIMIT {{ Int32(limit, 10, min=1, max=100, description="Items to return") }}
