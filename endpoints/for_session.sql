-- Recommendations for an anonymous session ("based on what you just looked at").
--
-- Seeds: the items the session (`session_id`) viewed, clicked or added to the cart in the
-- last `minutes` (`session_history`, ORDER BY (session_id, ts): one range per session;
-- materialized_views/session_history.sql), each weighted by event type (view 1, click 1,
-- cart 3) and halved every `half_life_minutes` since the event; and/or an explicit
-- `items` list (weight 1 each). Real time: an event is in the next answer.
-- Candidates: co-purchase neighbours of the seeds, score = sum over seeds of weight *
-- co-orders (variant a: same order, `basket_pairs`; variant b: same buyer and 7-day
-- period, `buyer_pairs`; as `also_bought`), reason `co_purchase`. When they run short,
-- the trend fills the list (reason `trending`, score = the trend): events of the last
-- `trending_hours`, purchase 5, cart 3, click 2, view 1, halved every 24 hours, exact as
-- of now as in `trending`. The session's own items (any event in the window but
-- impressions, and `items`) are left out.
--
-- Repetition control (session_id only): items shown to the session (impression events)
-- at least `max_shown` times (default 3) in the last `shown_hours` (default 24) without
-- a click on them in that time are left out; max_shown=0 turns it off.
--
-- `now` replays: session events and the trend after `now` are not used (co-purchase
-- counts hold everything ingested, as in `also_bought`).
-- Business rules: exclude=<ids>, category=<cat>, max_per_category=<n> (diversity cap; 0 =
-- none). The catalog (`items_latest`, latest version) only refines: an item it marks
-- unavailable is left out, an item it does not know is kept (empty title and category).
-- rec_id (default): the id of the query that answered, one per response.
-- tags: recommendations
-- max_execution_time: 2
-- (query_plan_enable_optimizations=0: small reads; skipping plan optimization saves
-- time, the primary keys are still used)
-- settings: max_threads=1, query_plan_enable_optimizations=0
%
{% if not defined(session_id) and not defined(items) %}{{ error('session_id or items is required', 400) }}{% end %}
WITH
    ifNull({{ DateTime(now, defined=False, description="Evaluate as of this time (default: now)") }}, now()) AS t_now,
    toStartOfHour(t_now) AS t_hour,
{% if defined(session_id) %}
    -- one read of the session: its items in the last `minutes` (any event but
    -- impressions) with their weights, and the items shown to it max_shown times in the
    -- last shown_hours without a click (repetition control)
    (
        SELECT (groupArrayIf(item_id, seen), groupArrayIf(weight, seen), groupArrayIf(item_id, tired))
        FROM
        (
            SELECT
                item_id,
                sumIf(w, recent) AS weight,
                countIf(recent) > 0 AS seen,
{% if Int32(max_shown, 3, min=0, max=1000, description="Leave out items shown to the session this many times in shown_hours without a click (0: off)") > 0 %}
                countIf(event_type = 'impression' AND shown) >= {{ Int32(max_shown, 3) + 0 }}
                  AND countIf(event_type = 'click' AND shown) = 0 AS tired
{% else %}
                false AS tired
{% end %}
            FROM
            (
                SELECT
                    item_id,
                    event_type,
                    event_type != 'impression'
                      AND ts > t_now - INTERVAL {{ Int32(minutes, 30, min=1, max=1440, description="Session look-back, minutes") }} MINUTE AS recent,
                    ts > t_now - INTERVAL {{ Int32(shown_hours, 24, min=1, max=2160, description="Look-back of the repetition control, hours") }} HOUR AS shown,
                    multiIf(
                        event_type = 'cart', {{ Float64(cart_weight, 3, min=0, description="Weight of an add-to-cart") }},
                        event_type = 'click', {{ Float64(click_weight, 1, min=0, description="Weight of a click") }},
                        event_type = 'view', {{ Float64(view_weight, 1, min=0, description="Weight of a view") }},
                        0)
                    * exp2(-greatest(dateDiff('millisecond', ts, t_now), 0)
                           / (60000 * {{ Float64(half_life_minutes, 10, min=0.1, description="Recency half-life of the session's events, minutes") }})) AS w
                FROM session_history
                WHERE session_id = {{ String(session_id, description="The session", example="s1") }}
                  AND ts > t_now - INTERVAL greatest({{ Int32(minutes, 30) + 0 }}, {{ Int32(shown_hours, 24) * 60 }}) MINUTE
                  AND ts <= t_now
                  AND item_id != ''
            )
            GROUP BY item_id
        )
    ) AS session,
    session.3 AS tired_items,
{% end %}
{% if defined(items) and defined(session_id) %}
    -- explicit items weigh 1 (an item the session has keeps the session's weight)
    {{ Array(items, 'String', description="Items of the session (instead of or besides session_id)") }} AS listed,
    arrayConcat(session.1, listed) AS own_items,
    arrayConcat(CAST(session.2, 'Array(Float64)'), arrayMap(x -> 1., listed)) AS own_weights,
{% elif defined(items) %}
    -- explicit items weigh 1 (no session: nothing shown to leave out)
    {{ Array(items, 'String', description="Items of the session (instead of or besides session_id)") }} AS own_items,
    arrayMap(x -> 1., own_items) AS own_weights,
{% else %}
    session.1 AS own_items,
    CAST(session.2, 'Array(Float64)') AS own_weights,
{% end %}
    -- co-purchase neighbours of the weighted items
    neighbours AS (
{% if String(variant, 'a', enum=['a', 'b'], description="A/B variant: a (same order) or b (same buyer, same period)") == 'b' %}
        SELECT p.other_item_id AS item_id, sum(transform(p.item_id, own_items, own_weights, 0.) * p.buyers) AS score
        FROM buyer_pairs AS p
{% else %}
        SELECT p.other_item_id AS item_id, sum(transform(p.item_id, own_items, own_weights, 0.) * p.orders) AS score
        FROM basket_pairs AS p
{% end %}
        WHERE p.item_id IN (SELECT arrayJoin(own_items))
        GROUP BY item_id
        HAVING score > 0
    ),
    -- the trend, exact as of now: whole hours from `trending`, now's hour from `events`
    trend AS (
        SELECT
            item_id,
            sum(events
                * multiIf(event_type = 'purchase', 5, event_type = 'cart', 3, event_type = 'click', 2,
                          event_type = 'view', 1, event_type = 'return', -5, 0)
                * exp2(-greatest(dateDiff('second', hour, t_now), 0) / (3600 * 24))) AS score
        FROM
        (
            SELECT hour, item_id, event_type, events
            FROM trending
            WHERE hour > t_now - INTERVAL {{ Int32(trending_hours, 24, min=1, max=2160, description="Trend look-back of the fill, hours") }} HOUR
{% if defined(now) %}
              AND hour < t_hour
            UNION ALL
            SELECT t_hour AS hour, item_id, event_type, toUInt64(1) AS events
            FROM events
            WHERE (event_type, item_id) IN (SELECT event_type, item_id FROM trending WHERE hour = t_hour)
              AND ts >= t_hour AND ts <= t_now
{% else %}
              AND hour <= t_now
{% end %}
        )
        WHERE item_id != ''
        GROUP BY item_id
        HAVING score > 0
    ),
    candidates AS (
        -- (an item both co-purchased and trending keeps its co-purchase score)
        SELECT item_id, max(t) AS tier, argMax(s, t) AS score
        FROM
        (
            SELECT item_id, 1 AS t, score AS s FROM neighbours
            UNION ALL
            SELECT item_id, 0 AS t, score AS s FROM trend
        )
        GROUP BY item_id
    )
SELECT
    c.item_id AS item_id,
    i.title AS title,
    i.category AS category,
    i.price AS price,
    round(c.score, 6) AS score,
    if(c.tier = 1, 'co_purchase', 'trending') AS reason,
    {% if defined(rec_id) %}{{ String(rec_id, description="Recommendation id to echo (default: the query id)") }}{% else %}queryID(){% end %} AS rec_id,
    concat('for_session:', {{ String(variant, 'a') }}) AS source
FROM candidates AS c
ANY LEFT JOIN items_latest AS i ON i.item_id = c.item_id
-- (an item missing from the catalog joins default values: item_id '')
WHERE (i.available OR i.item_id = '')
  AND NOT has(own_items, c.item_id)
{% if defined(session_id) %}
  AND NOT has(tired_items, c.item_id)
{% end %}
{% if defined(exclude) %}
  AND c.item_id NOT IN {{ Array(exclude, 'String', description="Item ids to leave out") }}
{% end %}
{% if defined(category) %}
  AND i.category = {{ String(category, description="Only this category") }}
{% end %}
ORDER BY c.tier DESC, c.score DESC, item_id
{% if Int32(max_per_category, 0, min=0, max=100, description="At most this many items per category (0: no cap)") > 0 %}
LIMIT {{ Int32(max_per_category, 0) + 0 }} BY category
{% end %}
LIMIT {{ Int32(limit, 10, min=1, max=100, description="Items to return") }}
