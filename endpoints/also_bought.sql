-- Customers who bought this item also bought... (item-to-item).
--
-- Variant `a` (default) ranks by the number of orders that contain both items (same
-- basket: the `basket_pairs` view, orders of at most 50 items). Variant `b` ranks by
-- the `buyer_pairs` view (buyers who bought both items in the same 7-day period, of at
-- most 50 items; materialized_views/buyer_pairs.sql). Offline on Online Retail,
-- same-basket counts rank better (docs/recommendations.md).
-- When the item has fewer co-purchased items than `limit`, the most ordered items fill
-- the list (fallback=false turns that off): basket_pairs('', x) counts the orders with
-- x, so variant a reads co-purchases and popularity in one pass (item_id IN (item, '')).
-- popularity_damping > 0 divides the co-purchase count by (orders with the other item +
-- 10)^damping; popularity_weight > 0 adds that weight times the item's orders / the most
-- orders of any row (offline: 2 gave +0.4 points). Equal scores: the item in more orders
-- first. Both views hold everything ingested: there is no `now` here.
--
-- Business rules: exclude=<ids>, category=<cat>, only available catalog items (the latest
-- version, `items_latest`), max_per_category=<n> (diversity cap; 0 = none).
-- rec_id (default): the id of the query that answered, one per response.
-- tags: recommendations
-- max_execution_time: 2
-- (query_plan_enable_optimizations=0: a few thousand rows; skipping plan optimization
-- saves ~1.3 ms, the primary key is still used)
-- settings: max_threads=1, query_plan_enable_optimizations=0
%
WITH
    -- per other item: orders (a) or buyer pairs (b) with the item, and its popularity
    counts AS (
{% if String(variant, 'a', enum=['a', 'b'], description="A/B variant: a (same order) or b (same buyer, same period)") == 'b' %}
        SELECT item_id, sum(pairs) AS pairs, sum(popularity) AS popularity
        FROM
        (
            SELECT c.other_item_id AS item_id, c.buyers AS pairs, 0 AS popularity
            FROM buyer_pairs AS c
            WHERE c.item_id = {{ String(item_id, required=True, description="The item shown", example="85123A") }}
            UNION ALL
            SELECT p.other_item_id AS item_id, 0 AS pairs, p.orders AS popularity
            FROM basket_pairs AS p
            WHERE p.item_id = ''
        )
        GROUP BY item_id
{% else %}
        SELECT
            p.other_item_id AS item_id,
            sumIf(p.orders, p.item_id != '') AS pairs,
            sumIf(p.orders, p.item_id = '') AS popularity
        FROM basket_pairs AS p
        WHERE p.item_id IN ({{ String(item_id) }}, '')
        GROUP BY item_id
{% end %}
    )
SELECT
    c.item_id AS item_id,
    i.title AS title,
    i.category AS category,
    i.price AS price,
    -- co-purchased items first (damped by popularity if popularity_damping > 0), then
    -- popular items, scored far below
    round(if(c.pairs > 0,
             c.pairs / pow(c.popularity + 10, {{ Float64(popularity_damping, 0, min=0, max=1, description="Discount of popular items (0..1; 0 = raw counts)") }}),
             1e-9 * c.popularity)
{% if Float64(popularity_weight, 0, min=0, description="Add this many co-orders times the item's share of the most ordered item's orders") > 0 %}
          + {{ Float64(popularity_weight, 0) }} * c.popularity / max(c.popularity) OVER ()
{% end %}
          , 9) AS score,
    {% if defined(rec_id) %}{{ String(rec_id, description="Recommendation id to echo (default: the query id)") }}{% else %}queryID(){% end %} AS rec_id,
    concat('also_bought:', {{ String(variant, 'a') }}) AS source
FROM counts AS c
ANY LEFT JOIN items_latest AS i ON i.item_id = c.item_id
WHERE i.available
  AND c.item_id != {{ String(item_id) }}
{% if not Boolean(fallback, True, description="Fill with popular items when co-purchases run short") %}
  AND c.pairs > 0
{% end %}
{% if defined(exclude) %}
  AND c.item_id NOT IN {{ Array(exclude, 'String', description="Item ids to leave out") }}
{% end %}
{% if defined(category) %}
  AND i.category = {{ String(category, description="Only this category") }}
{% end %}
-- (equal counts: the more ordered item first)
ORDER BY score DESC, c.popularity DESC, item_id
{% if Int32(max_per_category, 0, min=0, max=100, description="At most this many items per category (0: no cap)") > 0 %}
LIMIT {{ Int32(max_per_category, 0) + 0 }} BY category
{% end %}
LIMIT {{ Int32(limit, 10, min=1, max=100, description="Items to return") }}
