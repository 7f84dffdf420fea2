-- Trending items: recent events per item, weighted by event type and decayed in time.
--
-- score = sum over the last `hours` of events * weight(event type) * 2^(-age / half-life),
-- age = now - the start of the event's hour. Returns (cart, click, purchase ...)
-- weighted counts; `return` events count negatively by default.
--
-- Exact as of `now`: no event after it counts. The whole hours before now's hour come
-- from the hourly `trending` view (materialized_views/trending.sql; rows older than 90
-- days are deleted by its TTL, so hours <= 2160); with `now` given, now's own hour, up
-- to now, from `events` itself, read only for the (event type, item) keys of that
-- hour's buckets (events is ORDER BY (event_type, item_id, ts): one short range per
-- key). Without `now` (the current time) the current hour's bucket is read whole: it
-- holds nothing later, unless clients send future timestamps.
--
-- Business rules: exclude=<ids>, category=<cat>, max_per_category=<n> (diversity cap; 0 =
-- none). The catalog (`items_latest`, latest version) only refines: an item it marks
-- unavailable is left out, an item it does not know is kept (empty title and category).
-- rec_id (default): the id of the query that answered, one per response.
-- tags: recommendations
-- max_execution_time: 2
-- settings: max_threads=1
%
WITH
    ifNull({{ DateTime(now, defined=False, description="Evaluate as of this time (default: now)") }}, now()) AS t_now,
    toStartOfHour(t_now) AS t_hour,
    counts AS (
        -- whole hours before now's hour
        SELECT hour, item_id, event_type, events
        FROM trending
        WHERE hour > t_now - INTERVAL {{ Int32(hours, 72, min=1, max=2160, description="Look-back window, hours") }} HOUR
{% if defined(now) %}
          AND hour < t_hour
        UNION ALL
        -- now's hour up to now, event by event
        SELECT t_hour AS hour, item_id, event_type, toUInt64(1) AS events
        FROM events
        WHERE (event_type, item_id) IN (SELECT event_type, item_id FROM trending WHERE hour = t_hour)
          AND ts >= t_hour AND ts <= t_now
{% else %}
          -- (the current hour's bucket: nothing in it is later than now)
          AND hour <= t_now
{% end %}
    ),
    scored AS (
        SELECT
            item_id,
            sum(
                events
                * multiIf(
                    event_type = 'purchase', {{ Float64(purchase_weight, 5, description="Weight of a purchase") }},
                    event_type = 'cart', {{ Float64(cart_weight, 3, description="Weight of an add-to-cart") }},
                    event_type = 'click', {{ Float64(click_weight, 2, description="Weight of a click") }},
                    event_type = 'view', {{ Float64(view_weight, 1, description="Weight of a view") }},
                    event_type = 'return', {{ Float64(return_weight, -5, description="Weight of a return") }},
                    0)
                * exp2(-greatest(dateDiff('second', hour, t_now), 0)
                       / (3600 * {{ Float64(half_life_hours, 24, min=0.1, description="Half-life of an event's weight, hours") }}))
            ) AS score
        FROM counts
        WHERE item_id != ''
        GROUP BY item_id
        HAVING score > 0
    )
SELECT
    s.item_id AS item_id,
    i.title AS title,
    i.category AS category,
    i.price AS price,
    round(s.score, 6) AS score,
    {% if defined(rec_id) %}{{ String(rec_id, description="Recommendation id to echo (default: the query id)") }}{% else %}queryID(){% end %} AS rec_id,
    concat('trending:', {{ String(variant, 'a', enum=['a', 'b'], description="A/B variant label recorded in `source` (same query)") }}) AS source
FROM scored AS s
ANY LEFT JOIN items_latest AS i ON i.item_id = s.item_id
-- (an item missing from the catalog joins default values: item_id '')
WHERE (i.available OR i.item_id = '')
{% if defined(exclude) %}
  AND s.item_id NOT IN {{ Array(exclude, 'String', description="Item ids to leave out") }}
{% end %}
{% if defined(category) %}
  AND i.category = {{ String(category, description="Only this category") }}
{% end %}
ORDER BY s.score DESC, item_id
{% if Int32(max_per_category, 0, min=0, max=100, description="At most this many items per category (0: no cap)") > 0 %}
LIMIT {{ Int32(max_per_category, 0) + 0 }} BY category
{% end %}
LIMIT {{ Int32(limit, 10, min=1, max=100, description="Items to return") }}
