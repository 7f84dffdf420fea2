-- Best-sellers: purchases per item over the last `days` (from the hourly `trending`
-- view, kept 90 days), most bought first. No decay: every purchase counts the same.
--
-- Business rules: exclude=<ids>, category=<cat>, only available catalog items (latest
-- version of `items`), max_per_category=<n> (diversity cap; 0 = none).
-- tags: recommendations
-- max_execution_time: 2
%
WITH
    ifNull({{ DateTime(now, defined=False, description="Evaluate as of this time (default: now)") }}, now()) AS t_now,
    bought AS (
        SELECT item_id, sum(events) AS purchases
        FROM trending
        WHERE event_type = 'purchase'
          AND hour > t_now - INTERVAL {{ Int32(days, 30, min=1, max=90, description="Look-back window, days") }} DAY
          AND hour <= t_now
        GROUP BY item_id
    )
SELECT
    b.item_id AS item_id,
    i.title AS title,
    i.category AS category,
    i.price AS price,
    b.purchases AS purchases,
    {% if defined(rec_id) %}{{ String(rec_id, description="Recommendation id to echo (default: a new UUID)") }}{% else %}assumeNotNull((SELECT toString(generateUUIDv4()))){% end %} AS rec_id,
    concat('popular:', {{ String(variant, 'a', enum=['a', 'b'], description="A/B variant label recorded in `source` (same query)") }}) AS source
FROM bought AS b
INNER JOIN
(
    SELECT item_id, title, category, price
    FROM items FINAL
    WHERE available
      AND item_id NOT IN {{ Array(exclude, 'String', default='', description="Item ids to leave out") }}
{% if defined(category) %}
      AND category = {{ String(category, description="Only this category") }}
{% end %}
) AS i ON i.item_id = b.item_id
ORDER BY purchases DESC, item_id
{% if Int32(max_per_category, 0, min=0, max=100, description="At most this many items per category (0: no cap)") > 0 %}
LIMIT {{ Int32(max_per_category, 0) + 0 }} BY category
{% end %}
LIMIT {{ Int32(limit, 10, min=1, max=100, description="Items to return") }}
