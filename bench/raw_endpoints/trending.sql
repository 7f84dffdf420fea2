-- trending over raw `events` and the `items` catalog, no view: system (d) of
-- bench/bench_serving.py. The answer of endpoints/trending.sql (default weights) computed
-- at request time: events of the last `hours` hour buckets, weighted by type, halved
-- every `half_life_hours` since the start of their hour.
-- max_execution_time: 10
%
WITH
    now() AS t_now,
    scored AS (
        SELECT
            item_id,
            sum(multiIf(event_type = 'purchase', 5, event_type = 'cart', 3, event_type = 'click', 2,
                        event_type = 'view', 1, event_type = 'return', -5, 0)
                * exp2(-greatest(dateDiff('second', toStartOfHour(ts), t_now), 0)
                       / (3600 * {{ Float64(half_life_hours, 24, min=0.1, description="Half-life of an event's weight, hours") }}))
            ) AS score
        FROM events
        WHERE toStartOfHour(ts) > t_now - INTERVAL {{ Int32(hours, 72, min=1, max=2160, description="Look-back window, hours") }} HOUR
        GROUP BY item_id
        HAVING score > 0
    ),
    catalog AS (SELECT item_id, title, category, price, available FROM items FINAL)
SELECT
    s.item_id AS item_id,
    i.title AS title,
    i.category AS category,
    i.price AS price,
    round(s.score, 6) AS score
FROM scored AS s
INNER JOIN catalog AS i ON i.item_id = s.item_id
WHERE i.available
ORDER BY s.score DESC, item_id
LIMIT {{ Int32(limit, 10, min=1, max=100, description="Items to return") }}
