-- Personalized recommendations for one user ("recommended for you"), v2: what the user
-- buys again (repeat) blended with what to discover (explore).
--
-- Modes (`mode`, default `mixed`):
--   * `repeat`: the user's own purchases, ranked by a decayed purchase frequency with an
--     optional repurchase-cycle boost:
--       repeat = sum over the item's purchase events of 2^(-age / repeat_half_life_days)
--                * (1 + cycle_boost * exp(-ln(elapsed / cycle)^2 / (2 * cycle_width^2)))
--     where, once the item was bought in >= cycle_min_purchases distinct hours, cycle =
--     the mean gap between them ((last - first) / (hours - 1)) and elapsed = the time
--     since the last one: the boost is whole when one cycle has just elapsed and fades
--     before and after (no cycle: no boost). cycle_boost is 0 by default: on Online
--     Retail's next baskets a boost of 0.5 or 1 lowered Recall@10 (0.2034 -> 0.2020,
--     0.2004; repeat_half_life_days 365 and repeat_weight 0.5 were the best tried).
--     Items never bought follow by popularity.
--   * `explore`: v1's ranking, unchanged (what was `for_user` before `mode` existed):
--     variant `a` (default): what is trending now, re-ranked by how close each item's
--     title is to the titles of the user's items. score = trend * (profile_floor +
--     similarity), both scaled to [0, 1]:
--       - trend: events per item in the last `trending_hours`, weighted by event type
--         (purchase 1, cart 0.7, click 0.5, view 0.3) and halved every
--         `trending_half_life_hours` (age = now - the start of the event's hour);
--       - similarity: the user's items (weighted by event type and halved every
--         `half_life_days` since the last event of that type) give each title word a
--         weight; an item's similarity is the sum over its title words of idf(word)^2 *
--         (weight of the user's items with that word), idf = ln((items + 1) / (items with
--         the word + 1)) over the catalog (`items_latest.words`), so rare words count more.
--     Variant `b`: co-purchase neighbours of the user's `max_seeds` heaviest items (buyers
--     who bought both items in the same 7-day period, `buyer_pairs`; neighbours
--     discounted by sqrt(purchases + 10)) plus `trending_weight` * trend, both scaled.
--   * `mixed`: score = repeat_weight * repeat / (max repeat) + explore / (max possible
--     explore: 1 + profile_floor for a, 1 + trending_weight for b), so both parts are in
--     [0, 1] before weighting.
-- Ties (and every item without a score: no recent event, not bought) follow by purchases
-- in the `popular_days` whole days before now's day (`trending_daily`), then by title
-- similarity, then item_id: with no signal at all the answer is the popular items.
--
-- `reason` (per row): `repeat` (the repeat part is the larger one), `similar_title` (a:
-- the title similarity outweighs profile_floor), `co_purchase` (b: the neighbour part
-- outweighs the trend part), `trending` (the trend carries it, e.g. for an unknown user),
-- `popular` (no recent event: the popularity fallback), `cold_start` (no purchase in the
-- popularity window and no recent event: an item known only from the catalog or from
-- older events, placed by title similarity to the user's items).
--
-- Works from events alone: every item seen in the windows read (trend, popularity, the
-- user's whole history) is a candidate, with or without a catalog row; the catalog
-- (`items_latest`, latest version) adds its items, the title, category and price, and
-- leaves out an item it explicitly marks unavailable. An item it does not know has an empty title
-- and category (so `category=` never returns it).
--
-- Exactness of `now` (replays, evaluations): with `now`, no event after it is used: the
-- user's events are read up to now (`user_history`, ORDER BY (user_id, ts)); the trend
-- reads the whole hours before now's hour from `trending` and now's hour up to now from
-- `events_by_time` (ORDER BY ts: one short range); the popularity reads whole days
-- before now's day. Without `now` (live), everything stored counts and the current hour
-- comes from its `trending` bucket (cheaper; only an event stamped in the future by a
-- client's clock would count early). Variant b's `buyer_pairs` holds all-time counts: it
-- is not cut at `now`.
--
-- exclude_purchased: default true with mode=explore (as v1), false with repeat/mixed
-- (repeat candidates are purchases). With exclude_purchased=true, mixed ranks like
-- explore apart from the score scale.
-- Repetition control: items shown to the user (events with event_type 'impression', any
-- source) at least `max_impressions` times in the last `impression_hours` (as of now)
-- with no click on the item after them are left out; default 3 times in 24 hours;
-- max_impressions=0 turns it off. Reads the user's own events (`user_history`): an item
-- is out when its max_impressions-th latest impression in the window is after the
-- user's last click on it.
--
-- Business rules: exclude=<ids>, category=<cat>, max_per_category=<n> (diversity cap; 0 =
-- none). rec_id (default): the id of the query that answered, one per response. Clients
-- record `source` (= for_user:<variant>) and `rec_id` on impression/click events.
-- tags: recommendations
-- max_execution_time: 2
-- (query_plan_enable_optimizations=0: ~4k items; skipping plan optimization saves ~1.5 ms,
-- the primary key is still used)
-- settings: max_threads=1, query_plan_enable_optimizations=0
%
{% set m = String(mode, 'mixed', enum=['mixed', 'repeat', 'explore'], description="repeat (the user's purchases again), explore (new items: v1), mixed (both, default)") %}
{% set b = String(variant, 'a', enum=['a', 'b'], description="A/B variant of the exploration part: a (trend re-ranked by title similarity) or b (co-purchase neighbours + trend)") == 'b' %}
{% set cap = Int32(max_impressions, 3, min=0, max=1000, description="Leave out items shown to the user at least this many times in the last impression_hours with no click since (0: off)") %}
WITH
    ifNull({{ DateTime(now, defined=False, description="Evaluate as of this time (default: now)") }}, now()) AS t_now,
{% if m != 'repeat' %}
    -- the user's items, weighted by event type and by the recency of the last event of
    -- each type (raw events, so the answer does not depend on background merges)
    mine AS (
        SELECT
            item_id,
            sum(events
                * multiIf(
                    event_type = 'purchase', {{ Float64(purchase_weight, 1.0, min=0, description="Weight of a purchased item") }},
                    event_type = 'cart', {{ Float64(cart_weight, 0.7, min=0, description="Weight of an item added to the cart") }},
                    event_type = 'click', {{ Float64(click_weight, 0.5, min=0, description="Weight of a clicked item") }},
                    event_type = 'view', {{ Float64(view_weight, 0.3, min=0, description="Weight of a viewed item") }},
                    0)
                * exp2(-greatest(dateDiff('second', last_ts, t_now), 0)
                       / (86400 * {{ Float64(half_life_days, 30, min=0.01, description="Recency half-life of the user's items, days") }}))
            ) AS weight
        FROM
        (
            SELECT item_id, event_type, count() AS events, max(ts) AS last_ts
            FROM user_history
            WHERE user_id = {{ String(user_id, required=True, description="The user to recommend for", example="17850") }}
{% if defined(now) %}
              AND ts <= t_now
{% end %}
            GROUP BY item_id, event_type
        )
        GROUP BY item_id
    ),
{% end %}
    -- per item the user touched: purchases, the repeat score, unclicked recent impressions
    own AS (
        SELECT
            item_id,
            countIf(event_type = 'purchase') AS purchases,
{% if m != 'explore' %}
            -- purchases decayed by age; with a cycle boost, n = distinct purchase hours
            -- and the cycle = the mean gap between them ((last - first) / (n - 1))
            toUnixTimestamp(t_now) AS now_s,
            sumIf(exp2((toUnixTimestamp(ts) - now_s) / (86400 * {{ Float64(repeat_half_life_days, 365, min=0.01, description="Half-life of a purchase in the repeat score, days") }})), event_type = 'purchase')
{% if Float64(cycle_boost, 0, min=0, description="Extra weight of an item whose repurchase cycle is due (0: none)") > 0 %}
              * (1 + {{ Float64(cycle_boost, 0) }}
                     * exp(-pow(log(if((uniqExactIf(intDiv(toUnixTimestamp(ts), 3600), event_type = 'purchase') AS n)
                                           >= {{ Int32(cycle_min_purchases, 3, min=2, max=100, description="Distinct purchase hours of an item before its repurchase cycle counts") }},
                                       (now_s - (toUnixTimestamp(maxIf(ts, event_type = 'purchase')) AS last_s)) * (n - 1)
                                       / (last_s - toUnixTimestamp(minIf(ts, event_type = 'purchase'))), 0)), 2)
                           / (2 * pow({{ Float64(cycle_width, 0.5, min=0.01, description="Width of the due window, in ln(elapsed / cycle)") }}, 2))))
{% end %}
              AS repeat,
{% else %}
            0. AS repeat,
{% end %}
{% if cap > 0 %}
            -- shown: the k-th latest impression in the window is after the last click
            arrayElement(arrayReverseSort(groupArrayIf(ts, event_type = 'impression'
                    AND ts > t_now - INTERVAL {{ Int32(impression_hours, 24, min=1, max=2160, description="Look-back of the impression count, hours") }} HOUR)), {{ Int32(max_impressions, 3) }})
                > maxIf(ts, event_type = 'click') AS shown
{% else %}
            0 AS shown
{% end %}
        FROM user_history
        WHERE user_id = {{ String(user_id) }}
{% if defined(now) %}
          AND ts <= t_now
{% end %}
        GROUP BY item_id
    ),
    -- every candidate: the trend, purchases in the popularity window, the user's items
    -- and the catalog's, one row per item
    signals AS (
        SELECT
            item_id,
            -- the trend: events per item in the look-back, weighted by type, decayed
            sumIf(events
                  * multiIf(event_type = 'purchase', 1.0, event_type = 'cart', 0.7,
                            event_type = 'click', 0.5, event_type = 'view', 0.3, 0)
                  * exp2(-greatest(dateDiff('second', hour, t_now), 0)
                         / (3600 * {{ Float64(trending_half_life_hours, 72, min=1, description="Half-life of the trend, hours") }})),
                  src = 1) AS trend,
            sumIf(events, src = 1 AND event_type = 'purchase') AS buys,
            sumIf(events, src = 2) AS pop,
            sum(purchases) AS purchases, sum(repeat) AS repeat, sum(shown) AS shown
        FROM
        (
            -- src 1: trend counts per hour; 2: purchases per day; 3: the user's items;
            -- 4: the catalog's items
{% if m != 'repeat' %}
            SELECT 1 AS src, hour, item_id, event_type, events, 0 AS purchases, 0. AS repeat, 0 AS shown
            FROM trending
            WHERE hour > t_now - INTERVAL {{ Int32(trending_hours, 168, min=1, max=2160, description="Trend look-back, hours") }} HOUR
{% if defined(now) %}
              -- whole hours before now's hour; now's hour up to now from events_by_time
              AND hour < toStartOfHour(t_now)
            UNION ALL
            SELECT 1, toStartOfHour(t_now), item_id, event_type, 1, 0, 0., 0
            FROM events_by_time
            WHERE ts >= toStartOfHour(t_now) AND ts <= t_now
{% end %}
            UNION ALL
{% end %}
{% if Int32(popular_days, 30, min=0, max=3650, description="Popularity fallback: purchases in this many whole days before now's day (0: none)") > 0 %}
            SELECT 2 AS src, t_now AS hour, item_id, event_type, events, 0 AS purchases, 0. AS repeat, 0 AS shown
            FROM trending_daily
            WHERE event_type = 'purchase'
              AND day >= toDate(t_now) - {{ Int32(popular_days, 30) }} AND day < toDate(t_now)
            UNION ALL
{% end %}
            SELECT 3 AS src, t_now AS hour, item_id, '' AS event_type, 0 AS events, purchases, repeat, shown
            FROM own
            UNION ALL
            SELECT 4, t_now, item_id, '', 0, 0, 0., 0
            FROM items_latest
        )
        WHERE item_id != ''
        GROUP BY item_id
    ),
{% if m != 'repeat' and not b %}
    -- per title word of the catalog: how many items have it (df), the weight of the
    -- user's items with it, and its items; then per item, the sum over its words of
    -- idf^2 * weight, idf = ln((items + 1) / (df + 1)) (rare words count more)
    similar AS (
        SELECT item_id, sum(pow(log(((SELECT count() FROM items_latest) + 1) / (df + 1)), 2) * weight) AS similarity
        FROM
        (
            SELECT word, count() AS df, sum(m.weight) AS weight, groupArray(i.item_id) AS items
            FROM items_latest AS i
            ARRAY JOIN i.words AS word
            LEFT JOIN mine AS m ON m.item_id = i.item_id
            GROUP BY word
            HAVING weight > 0
        )
        ARRAY JOIN items AS item_id
        GROUP BY item_id
    ),
{% elif m != 'repeat' %}
    -- the heaviest items
    seeds AS (
        SELECT item_id, weight FROM mine WHERE weight > 0
        ORDER BY weight DESC, item_id
        LIMIT {{ Int32(max_seeds, 10, min=1, max=500, description="Variant b: seed items used (the heaviest)") }}
    ),
    -- co-purchase neighbours of the seeds: sum over seeds of weight * buyers
    neighbours AS (
        SELECT p.other_item_id AS candidate,
               sum(s.weight * p.buyers) AS score
        FROM buyer_pairs AS p
        INNER JOIN seeds AS s ON s.item_id = p.item_id
        WHERE p.item_id IN (SELECT item_id FROM seeds)
        GROUP BY candidate
    ),
{% end %}
    -- every candidate the catalog does not mark unavailable, with its score (maxima over
    -- all of them, so that the filters below never change a score)
    scored AS (
        SELECT
            g.item_id AS item_id, i.title AS title, i.category AS category, i.price AS price,
            g.pop AS pop, g.purchases AS purchases, g.shown AS shown,
            g.trend / greatest(max(g.trend) OVER (), 1e-12) AS trend_s,
{% if m == 'repeat' %}
            0. AS similarity,
            0. AS explore,
            0. AS personal,
{% elif not b %}
            -- (the item count comes from a scalar subquery, so `similarity` is Nullable:
            -- items that share no word get 0, not NULL)
            ifNull(s.similarity, 0) AS similarity,
            similarity / greatest(max(similarity) OVER (), 1e-12) AS personal,
            trend_s * ({{ Float64(profile_floor, 0.1, min=0, description="Score share of an item with no title word in common with the user's items") }} + personal) AS explore,
{% else %}
            0. AS similarity,
            n.score / pow(g.buys + 10, 0.5) AS neighbour,
            neighbour / greatest(max(neighbour) OVER (), 1e-12) AS personal,
            personal + {{ Float64(trending_weight, 5.0, min=0, description="Variant b: weight of the trend") }} * trend_s AS explore,
{% end %}
{% if m == 'explore' %}
            0. AS repeat_part,
            explore AS score
{% else %}
            {% if m == 'mixed' %}{{ Float64(repeat_weight, 0.5, min=0, description="mixed: weight of the repeat part (the exploration part weighs 1)") }} * {% end %}g.repeat / greatest(max(g.repeat) OVER (), 1e-12) AS repeat_part,
            {% if m == 'mixed' %}repeat_part + explore / (1 + {% if b %}{{ Float64(trending_weight, 5.0) }}{% else %}{{ Float64(profile_floor, 0.1) }}{% end %}){% else %}repeat_part{% end %} AS score
{% end %}
        FROM signals AS g
        ANY LEFT JOIN items_latest AS i ON i.item_id = g.item_id
{% if m != 'repeat' and not b %}
        LEFT JOIN similar AS s ON s.item_id = g.item_id
{% elif m != 'repeat' %}
        LEFT JOIN neighbours AS n ON n.candidate = g.item_id
{% end %}
        -- (an item missing from the catalog joins default values: item_id '')
        WHERE i.available OR i.item_id = ''
    )
SELECT
    item_id,
    title,
    category,
    price,
    round(score, 6) AS score,
    {% if defined(rec_id) %}{{ String(rec_id, description="Recommendation id to echo (default: the query id)") }}{% else %}queryID(){% end %} AS rec_id,
    concat('for_user:', {{ String(variant, 'a') }}) AS source,
    multiIf(repeat_part > 0 AND repeat_part >= score - repeat_part, 'repeat',
{% if b %}
            explore > 0 AND personal >= explore - personal, 'co_purchase',
{% else %}
            explore > 0 AND personal > {{ Float64(profile_floor, 0.1) }}, 'similar_title',
{% end %}
            explore > 0, 'trending',
            pop > 0, 'popular',
            'cold_start') AS reason
FROM scored
WHERE 1
{% if Boolean(exclude_purchased, m == 'explore', description="Leave out items the user already bought (default: true with mode=explore, false otherwise)") %}
  AND purchases = 0
{% end %}
{% if cap > 0 %}
  AND NOT shown
{% end %}
{% if defined(exclude) %}
  AND item_id NOT IN {{ Array(exclude, 'String', description="Item ids to leave out") }}
{% end %}
{% if defined(category) %}
  AND category = {{ String(category, description="Only this category") }}
{% end %}
ORDER BY score DESC, pop DESC, similarity DESC, item_id
{% if Int32(max_per_category, 0, min=0, max=100, description="At most this many items per category (0: no cap)") > 0 %}
LIMIT {{ Int32(max_per_category, 0) + 0 }} BY category
{% end %}
LIMIT {{ Int32(limit, 10, min=1, max=100, description="Items to return") }}
