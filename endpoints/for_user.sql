-- Personalized recommendations for one user ("recommended for you").
--
-- Variant `a` (default): what is trending now, re-ranked by how close each item's title
-- is to the titles of the user's items. score = trend * (profile_floor + similarity),
-- both scaled to [0, 1]:
--   * trend: events per item in the last `trending_hours` (`trending`), weighted by event
--     type and halved every `trending_half_life_hours`;
--   * similarity: the user's items (`user_item_stats`, weighted by event type and halved
--     every `half_life_days` since the last event) give each title word a weight; an
--     item's similarity is the sum over its title words of idf(word) * idf(word) *
--     (weight of the user's items with that word), idf = ln((items + 1) / (items with
--     the word + 1)) over the catalog (`items_latest.words`), so rare words count more.
-- Variant `b`: co-purchase neighbours of the user's `max_seeds` heaviest items (buyers
-- who bought both items in the same 7-day period, `buyer_pairs`; neighbours discounted
-- by sqrt(purchases + 10)) plus `trending_weight` * trend, both scaled to [0, 1].
-- Offline on Online Retail `a` finds clearly more of the next basket's new items than
-- `b` or popularity (docs/recommendations.md). Unknown users (cold start) get trending;
-- items without a score (no recent events) follow by item_id, so the answer has `limit`
-- rows whenever the catalog has that many available items. Items the user already
-- bought are left out unless exclude_purchased=false. Clients record `source`
-- (= for_user:<variant>) and `rec_id` on impression/click events.
--
-- Business rules: exclude=<ids>, category=<cat>, only available catalog items (the latest
-- version, `items_latest`), max_per_category=<n> (diversity cap; 0 = none).
-- `now` replays history: events after `now` are not used (the user's items: those first
-- seen at or before `now`).
-- rec_id (default): the id of the query that answered, one per response.
-- tags: recommendations
-- max_execution_time: 2
-- (query_plan_enable_optimizations=0: ~4k items; skipping plan optimization saves ~1.5 ms,
-- the primary key is still used)
-- settings: max_threads=1, query_plan_enable_optimizations=0
%
WITH
    ifNull({{ DateTime(now, defined=False, description="Evaluate as of this time (default: now)") }}, now()) AS t_now,
    -- the user's items, weighted by event type and by the recency of the last event
    -- (user_item_stats is an AggregatingMergeTree: rows are summed per key first, so
    -- the answer does not depend on how far background merges have got)
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
            SELECT item_id, event_type, sum(events) AS events, max(last_ts) AS last_ts
            FROM user_item_stats
            WHERE user_id = {{ String(user_id, required=True, description="The user to recommend for", example="17850") }}
{% if defined(now) %}
              AND first_ts <= t_now
{% end %}
            GROUP BY item_id, event_type
        )
        -- (no HAVING weight > 0: weights are >= 0 and a 0 adds nothing below; the extra
        -- filter step cost ~0.8 ms)
        GROUP BY item_id
    ),
    -- events per item in the last `trending_hours`, weighted by type, decayed
    recent AS (
        SELECT
            item_id,
            sum(events * multiIf(event_type = 'purchase', 1.0, event_type = 'cart', 0.7,
                                 event_type = 'click', 0.5, event_type = 'view', 0.3, 0)
                * exp2(-greatest(dateDiff('second', hour, t_now), 0) / (3600 * {{ Float64(trending_half_life_hours, 72, min=1, description="Half-life of the trend, hours") }}))) AS trend,
            toFloat64(sumIf(events, event_type = 'purchase')) AS buys
        FROM trending
        WHERE hour > t_now - INTERVAL {{ Int32(trending_hours, 168, min=1, max=2160, description="Trend look-back, hours") }} HOUR
{% if defined(now) %}
          AND hour <= t_now
{% end %}
        GROUP BY item_id
    ),
{% if String(variant, 'a', enum=['a', 'b'], description="A/B variant: a (trend re-ranked by title similarity) or b (co-purchase neighbours + trend)") == 'a' %}
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
    -- every available item with its score (scaled over all of them, so that filters
    -- below never change a score)
    scored AS (
        SELECT
            i.item_id AS item_id, i.title AS title, i.category AS category, i.price AS price,
            -- (the item count comes from a scalar subquery, so `similarity` is Nullable:
            -- items that share no word get 0, not NULL)
            ifNull(s.similarity, 0) AS similarity,
            r.trend / greatest(max(r.trend) OVER (), 1e-12)
              * ({{ Float64(profile_floor, 0.1, min=0, description="Score share of an item with no title word in common with the user's items") }}
                 + similarity / greatest(max(similarity) OVER (), 1e-12)) AS score
        FROM items_latest AS i
        LEFT JOIN recent AS r ON r.item_id = i.item_id
        LEFT JOIN similar AS s ON s.item_id = i.item_id
        WHERE i.available
    )
{% else %}
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
    scored AS (
        SELECT
            i.item_id AS item_id, i.title AS title, i.category AS category, i.price AS price,
            n.score / pow(r.buys + 10, 0.5) AS neighbour,
            neighbour / greatest(max(neighbour) OVER (), 1e-12)
              + {{ Float64(trending_weight, 5.0, min=0, description="Variant b: weight of the trend") }} * r.trend / greatest(max(r.trend) OVER (), 1e-12) AS score
        FROM items_latest AS i
        LEFT JOIN recent AS r ON r.item_id = i.item_id
        LEFT JOIN neighbours AS n ON n.candidate = i.item_id
        WHERE i.available
    )
{% end %}
SELECT
    item_id,
    title,
    category,
    price,
    round(score, 6) AS score,
    {% if defined(rec_id) %}{{ String(rec_id, description="Recommendation id to echo (default: the query id)") }}{% else %}queryID(){% end %} AS rec_id,
    concat('for_user:', {{ String(variant, 'a') }}) AS source
FROM scored
WHERE 1
{% if Boolean(exclude_purchased, True, description="Leave out items the user already bought") %}
  -- (a hash set: NOT IN a subquery)
  AND item_id NOT IN (
      SELECT item_id FROM user_item_stats
      WHERE user_id = {{ String(user_id) }} AND event_type = 'purchase'
{% if defined(now) %}
        AND first_ts <= t_now
{% end %}
  )
{% end %}
{% if defined(exclude) %}
  AND item_id NOT IN {{ Array(exclude, 'String', description="Item ids to leave out") }}
{% end %}
{% if defined(category) %}
  AND category = {{ String(category, description="Only this category") }}
{% end %}
ORDER BY score DESC, item_id
{% if Int32(max_per_category, 0, min=0, max=100, description="At most this many items per category (0: no cap)") > 0 %}
LIMIT {{ Int32(max_per_category, 0) + 0 }} BY category
{% end %}
LIMIT {{ Int32(limit, 10, min=1, max=100, description="Items to return") }}
