-- Personalized recommendations for one user ("recommended for you").
--
-- Score of a candidate item = co-purchase neighbours of the user's recent items
-- (each seed item weighted by event type and recency) + a small share of trending.
-- Items the user already bought are left out unless exclude_purchased=false. Unknown
-- users (cold start) get trending; when trending runs short the available catalog fills
-- the list, so the answer has `limit` rows whenever the catalog has that many items.
--
-- Variants (A/B): `a` (default) normalizes each seed's neighbours by how often the
-- neighbour is bought overall (lift-like, favours specific complements); `b` uses plain
-- conditional co-purchase shares (favours popular complements). Clients record
-- `source` (= for_user:<variant>) and `rec_id` on impression/click events.
--
-- Business rules: exclude=<ids>, category=<cat>, only available catalog items (latest
-- version of `items`), max_per_category=<n> (diversity cap; 0 = none).
-- `now` replays history (evaluation): only events at or before `now` are used.
-- tags: recommendations
-- max_execution_time: 2
%
WITH
    ifNull({{ DateTime(now, defined=False, description="Evaluate as of this time (default: now)") }}, now()) AS t_now,
    -- the seeds: the items of the user's most recent events, each weighted by event type
    -- and recency
    seeds AS (
        SELECT
            item_id,
            sum(
                multiIf(
                    event_type = 'purchase', {{ Float64(purchase_weight, 1.0, min=0, description="Seed weight of a purchase") }},
                    event_type = 'cart', {{ Float64(cart_weight, 0.7, min=0, description="Seed weight of an add-to-cart") }},
                    event_type = 'click', {{ Float64(click_weight, 0.5, min=0, description="Seed weight of a click") }},
                    event_type = 'view', {{ Float64(view_weight, 0.3, min=0, description="Seed weight of a view") }},
                    0)
                * exp2(-greatest(dateDiff('second', ts, t_now), 0)
                       / (86400 * {{ Float64(half_life_days, 30, min=0.01, description="Recency half-life of seed events, days") }}))
            ) AS weight
        FROM
        (
            SELECT item_id, event_type, ts
            FROM user_history
            WHERE user_id = {{ String(user_id, required=True, description="The user to recommend for", example="17850") }}
              AND ts <= t_now
            ORDER BY ts DESC
            LIMIT {{ Int32(history_size, 200, min=1, max=2000, description="Recent events looked at") }}
        )
        GROUP BY item_id
        HAVING weight > 0
        ORDER BY weight DESC, item_id
        LIMIT {{ Int32(max_seeds, 10, min=1, max=500, description="Seed items used (the highest weighted)") }}
    ),
    -- co-purchase neighbours of the seeds: sum over seeds of weight * pairs.
    -- (`IN (SELECT ...)` uses co_purchase's primary key; an IN over an array would not.
    -- Cost grows with max_seeds: each seed reads its co_purchase rows.)
    neighbours AS (
        SELECT c.other_item_id AS candidate, sum(s.weight * c.pairs) AS score
        FROM co_purchase AS c
        INNER JOIN seeds AS s ON s.item_id = c.item_id
        WHERE c.item_id IN (SELECT item_id FROM seeds)
        GROUP BY candidate
    ),
    -- recent activity per item: a decayed, event-type weighted trending score and the
    -- number of purchases (to discount best-sellers among the neighbours)
    recent AS (
        SELECT
            item_id,
            sum(events * multiIf(event_type = 'purchase', 1.0, event_type = 'cart', 0.7,
                                 event_type = 'click', 0.5, event_type = 'view', 0.3, 0)
                * exp2(-greatest(dateDiff('second', hour, t_now), 0) / (3600 * {{ Float64(trending_half_life_hours, 72, min=1, description="Half-life of the trending score, hours") }}))) AS trend,
            toFloat64(sumIf(events, event_type = 'purchase')) AS buys
        FROM trending
        WHERE hour > t_now - INTERVAL {{ Int32(trending_hours, 720, min=1, max=2160, description="Trending look-back, hours") }} HOUR
          AND hour <= t_now
        GROUP BY item_id
    ),
    candidates AS (
        SELECT
            if(n.candidate != '', n.candidate, r.item_id) AS item_id,
{% if String(variant, 'a', enum=['a', 'b'], description="A/B variant: a (neighbours discounted by popularity) or b (plain co-purchase shares)") == 'b' %}
            n.score AS neighbour,
{% else %}
            n.score / pow(r.buys + 10, {{ Float64(popularity_damping, 0.5, min=0, max=1, description="Variant a: how much to discount popular neighbours (0..1)") }}) AS neighbour,
{% end %}
            -- both parts scaled to [0, 1], then blended
{% if String(blend, 'add', enum=['add', 'mul'], description="add: weighted sum; mul: trending re-ranked by the user's neighbours") == 'add' %}
            neighbour / greatest(max(neighbour) OVER (), 1e-12)
              + {{ Float64(trending_weight, 5.0, min=0, description="Weight of trending in the sum (blend=add)") }} * r.trend / greatest(max(r.trend) OVER (), 1e-12) AS score
{% else %}
            (r.trend / greatest(max(r.trend) OVER (), 1e-12) + 1e-6)
              * ({{ Float64(neighbour_floor, 0.1, min=0, description="blend=mul: score of an item with no co-purchase link to the user") }}
                 + neighbour / greatest(max(neighbour) OVER (), 1e-12)) AS score
{% end %}
        FROM neighbours AS n
        FULL OUTER JOIN recent AS r ON r.item_id = n.candidate
    ),
    catalog AS (
        SELECT item_id, title, category, price
        FROM items FINAL
        WHERE available
          AND item_id NOT IN {{ Array(exclude, 'String', default='', description="Item ids to leave out") }}
{% if Boolean(exclude_purchased, True, description="Leave out items the user already bought") %}
          -- items the user bought (a hash set: NOT IN a subquery)
          AND item_id NOT IN (
              SELECT item_id
              FROM user_item_stats
              WHERE user_id = {{ String(user_id) }} AND event_type = 'purchase' AND first_ts <= t_now
          )
{% end %}
{% if defined(category) %}
          AND category = {{ String(category, description="Only this category") }}
{% end %}
    )
SELECT
    c.item_id AS item_id,
    c.title AS title,
    c.category AS category,
    c.price AS price,
    round(ifNull(s.score, 0), 6) AS score,
    {% if defined(rec_id) %}{{ String(rec_id, description="Recommendation id to echo (default: a new UUID)") }}{% else %}assumeNotNull((SELECT toString(generateUUIDv4()))){% end %} AS rec_id,
    concat('for_user:', {{ String(variant, 'a') }}) AS source
FROM catalog AS c
LEFT JOIN candidates AS s ON s.item_id = c.item_id
ORDER BY score DESC, item_id
{% if Int32(max_per_category, 0, min=0, max=100, description="At most this many items per category (0: no cap)") > 0 %}
LIMIT {{ Int32(max_per_category, 0) + 0 }} BY category
{% end %}
LIMIT {{ Int32(limit, 10, min=1, max=100, description="Items to return") }}
