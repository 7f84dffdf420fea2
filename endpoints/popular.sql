-- Best-sellers: purchases per item over the last `days` days, most bought first. No
-- decay: every purchase counts the same.
--
-- Days are UTC calendar days from the daily `trending_daily` view: days=7 is today (up to
-- now) and the 6 days before; with `now` in the past, that day counts whole.
--
-- Business rules: exclude=<ids>, category=<cat>, only available catalog items (the latest
-- version, `items_latest`), max_per_category=<n> (diversity cap; 0 = none).
-- rec_id (default): the id of the query that answered, one per response.
-- tags: recommendations
-- max_execution_time: 2
-- settings: max_threads=1
%
WITH
    ifNull({{ DateTime(now, defined=False, description="Evaluate as of this time (default: now)") }}, now()) AS t_now,
    bought AS (
        SELECT item_id, sum(events) AS purchases
        FROM trending_daily
        WHERE event_type = 'purchase'
          AND day > toDate(t_now) - {{ Int32(days, 30, min=1, max=90, description="Look-back window, days (today included)") }}
{% if defined(now) %}
          AND day <= toDate(t_now)
{% end %}
        GROUP BY item_id
    )
SELECT
    b.item_id AS item_id,
    i.title AS title,
    i.category AS category,
    i.price AS price,
    b.purchases AS purchases,
    {% if defined(rec_id) %}{{ String(rec_id, description="Recommendation id to echo (default: the query id)") }}{% else %}queryID(){% end %} AS rec_id,
    concat('popular:', {{ String(variant, 'a', enum=['a', 'b'], description="A/B variant label recorded in `source` (same query)") }}) AS source
FROM bought AS b
ANY LEFT JOIN items_latest AS i ON i.item_id = b.item_id
WHERE i.available
{% if defined(exclude) %}
  AND b.item_id NOT IN {{ Array(exclude, 'String', description="Item ids to leave out") }}
{% end %}
{% if defined(category) %}
  AND i.category = {{ String(category, description="Only this category") }}
{% end %}
ORDER BY purchases DESC, item_id
{% if Int32(max_per_category, 0, min=0, max=100, description="At most this many items per category (0: no cap)") > 0 %}
LIMIT {{ Int32(max_per_category, 0) + 0 }} BY category
{% end %}
LIMIT {{ Int32(limit, 10, min=1, max=100, description="Items to return") }}
