-- for_user over raw `events` and the `items` catalog, no view: system (d) of
-- bench/bench_serving.py. The answer of endpoints/for_user.sql (variant a, default
-- parameters) computed at request time: trending items (last 168 hours, half-life 72
-- hours) re-ranked by how close their title is to the titles of the user's items
-- (weighted by event type, halved every 30 days since the last event), items the user
-- bought left out. Title words are split from `items` on every call (`items_latest.words`
-- in Redpoll).
-- max_execution_time: 10
%
WITH
    now() AS t_now,
    catalog AS (
        SELECT item_id, title, category, price, available,
               arrayDistinct(arrayFilter(w -> length(w) >= 3, splitByNonAlpha(upper(title)))) AS words
        FROM items FINAL
    ),
    mine AS (
        SELECT
            item_id,
            sum(events
                * multiIf(event_type = 'purchase', 1.0, event_type = 'cart', 0.7,
                          event_type = 'click', 0.5, event_type = 'view', 0.3, 0)
                * exp2(-greatest(dateDiff('second', last_ts, t_now), 0) / (86400 * 30))
            ) AS weight
        FROM
        (
            SELECT item_id, event_type, count() AS events, max(ts) AS last_ts
            FROM events
            WHERE user_id = {{ String(user_id, required=True, description="The user to recommend for", example="17850") }}
            GROUP BY item_id, event_type
        )
        GROUP BY item_id
    ),
    recent AS (
        SELECT
            item_id,
            sum(multiIf(event_type = 'purchase', 1.0, event_type = 'cart', 0.7,
                        event_type = 'click', 0.5, event_type = 'view', 0.3, 0)
                * exp2(-greatest(dateDiff('second', toStartOfHour(ts), t_now), 0) / (3600 * 72))) AS trend
        FROM events
        WHERE toStartOfHour(ts) > t_now - INTERVAL 168 HOUR
        GROUP BY item_id
    ),
    similar AS (
        SELECT item_id, sum(pow(log(((SELECT count() FROM catalog) + 1) / (df + 1)), 2) * weight) AS similarity
        FROM
        (
            SELECT word, count() AS df, sum(m.weight) AS weight, groupArray(i.item_id) AS items
            FROM catalog AS i
            ARRAY JOIN i.words AS word
            LEFT JOIN mine AS m ON m.item_id = i.item_id
            GROUP BY word
            HAVING weight > 0
        )
        ARRAY JOIN items AS item_id
        GROUP BY item_id
    ),
    scored AS (
        SELECT
            i.item_id AS item_id, i.title AS title, i.category AS category, i.price AS price,
            ifNull(s.similarity, 0) AS similarity,
            r.trend / greatest(max(r.trend) OVER (), 1e-12)
              * (0.1 + similarity / greatest(max(similarity) OVER (), 1e-12)) AS score
        FROM catalog AS i
        LEFT JOIN recent AS r ON r.item_id = i.item_id
        LEFT JOIN similar AS s ON s.item_id = i.item_id
        WHERE i.available
    )
SELECT item_id, title, category, price, round(score, 6) AS score
FROM scored
WHERE item_id NOT IN (
    SELECT item_id FROM events WHERE user_id = {{ String(user_id) }} AND event_type = 'purchase'
)
ORDER BY score DESC, item_id
LIMIT {{ Int32(limit, 10, min=1, max=100, description="Items to return") }}
