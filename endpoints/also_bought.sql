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
-- New items (cold start): a catalog item in fewer than `new_max_orders` orders and never
-- ordered with this item would only ever appear as a near-zero popular fill. Up to
-- `new_slots` of them (default 1) that share title words or the category with this item
-- take the LAST slots of the list (after the best limit - k other items, k = the number
-- shown), ranked by content similarity: the sum over shared terms (title words of
-- `items_latest.words`, and the category) of idf^2, idf = ln((items + 1) / (items with
-- the term + 1)), as `for_user` variant a weighs words; `score` is that similarity.
-- Bound: at most min(new_slots, limit - 1) new items per answer, never the first slot;
-- none with fallback=false or new_slots=0.
-- `reason`: co_purchase, popular (the fill) or new_similar (a new-item slot).
--
-- Business rules: exclude=<ids>, category=<cat>, max_per_category=<n> (diversity cap; 0 =
-- none). The catalog (`items_latest`, latest version) only refines: an item it marks
-- unavailable is left out, an item it does not know is kept (empty title and category).
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
    ),
{% if Boolean(fallback, True, description="Fill with popular items (and new items) when co-purchases run short") and Int32(new_slots, 1, min=0, max=10, description="At most this many new items (few orders, similar title or category), in the last slots") > 0 %}
    -- the item's title words and its category, as terms (none for an unknown item)
    (
        SELECT groupArrayArray(arrayFilter(t -> t != 'category:', arrayConcat(words, [concat('category:', category)])))
        FROM items_latest
        WHERE item_id = {{ String(item_id) }}
    ) AS seed_terms,
    -- per available catalog item sharing a term: the sum of idf^2 over the shared terms
    similar AS (
        SELECT item_id, sum(ifNull(idf2, 0)) AS similarity
        FROM
        (
            SELECT
                pow(log(((SELECT count() FROM items_latest) + 1) / (count() + 1)), 2) AS idf2,
                groupArrayIf(item_id, available) AS items
            FROM items_latest
            ARRAY JOIN arrayIntersect(arrayConcat(words, [concat('category:', category)]), seed_terms) AS term
            GROUP BY term
        )
        ARRAY JOIN items AS item_id
        GROUP BY item_id
    ),
    merged AS (
        SELECT item_id, sum(pairs) AS pairs, sum(popularity) AS popularity, sum(similarity) AS similarity
        FROM
        (
            SELECT item_id, pairs, popularity, 0 AS similarity FROM counts
            UNION ALL
            SELECT item_id, 0 AS pairs, 0 AS popularity, similarity FROM similar
        )
        GROUP BY item_id
    ),
{% else %}
    merged AS (SELECT item_id, pairs, popularity, 0 AS similarity FROM counts),
{% end %}
    filtered AS (
        SELECT
            c.item_id AS item_id,
            i.title AS title,
            i.category AS category,
            i.price AS price,
            c.pairs = 0
              AND c.popularity < {{ Int32(new_max_orders, 3, min=1, max=1000, description="An item in fewer orders than this is new") }}
              AND c.similarity > 0 AS is_new,
            -- co-purchased items first (damped by popularity if popularity_damping > 0),
            -- then popular items, scored far below; new items: their similarity
            if(is_new, round(c.similarity, 9),
               round(if(c.pairs > 0,
                        c.pairs / pow(c.popularity + 10, {{ Float64(popularity_damping, 0, min=0, max=1, description="Discount of popular items (0..1; 0 = raw counts)") }}),
                        1e-9 * c.popularity)
{% if Float64(popularity_weight, 0, min=0, description="Add this many co-orders times the item's share of the most ordered item's orders") > 0 %}
                     + {{ Float64(popularity_weight, 0) }} * c.popularity / max(c.popularity) OVER ()
{% end %}
                     , 9)) AS score,
            multiIf(is_new, 'new_similar', c.pairs > 0, 'co_purchase', 'popular') AS reason,
            c.popularity AS popularity
        FROM merged AS c
        ANY LEFT JOIN items_latest AS i ON i.item_id = c.item_id
        -- (an item missing from the catalog joins default values: item_id '')
        WHERE (i.available OR i.item_id = '')
          AND c.item_id != {{ String(item_id) }}
{% if not Boolean(fallback, True) %}
          AND c.pairs > 0
{% end %}
{% if defined(exclude) %}
          AND c.item_id NOT IN {{ Array(exclude, 'String', description="Item ids to leave out") }}
{% end %}
{% if defined(category) %}
          AND i.category = {{ String(category, description="Only this category") }}
{% end %}
    ),
    ranked AS (
        SELECT
            *,
            -- (equal scores: the more ordered item first)
            row_number() OVER (PARTITION BY is_new ORDER BY score DESC, popularity DESC, item_id) AS rnk,
            -- new items shown: at most new_slots, never the first slot
            least(countIf(is_new) OVER (), {{ Int32(new_slots, 1) + 0 }}, {{ Int32(limit, 10, min=1, max=100, description="Items to return") - 1 }}) AS new_shown
        FROM filtered
    )
SELECT
    item_id,
    title,
    category,
    price,
    score,
    {% if defined(rec_id) %}{{ String(rec_id, description="Recommendation id to echo (default: the query id)") }}{% else %}queryID(){% end %} AS rec_id,
    concat('also_bought:', {{ String(variant, 'a') }}) AS source,
    reason
FROM ranked
WHERE NOT is_new OR rnk <= new_shown
-- new items after the best limit - new_shown others
ORDER BY if(is_new, {{ Int32(limit, 10) + 0 }} - new_shown + 0.5 + rnk / 1000, toFloat64(rnk)), item_id
{% if Int32(max_per_category, 0, min=0, max=100, description="At most this many items per category (0: no cap)") > 0 %}
LIMIT {{ Int32(max_per_category, 0) + 0 }} BY category
{% end %}
LIMIT {{ Int32(limit, 10) }}
