-- Best-sellers: purchases per item over the last `days` days, most bought first. No
-- decay: every purchase counts the same.
--
-- Days are UTC calendar days: days=7 is now's day up to now and the 6 days before. Exact
-- as of `now`: no purchase after it counts. Whole days come from the daily
-- `trending_daily` view; with `now` given, now's day, up to now, from `events` itself,
-- read only for the items bought that day (events is ORDER BY (event_type, item_id, ts):
-- one short range per item). Without `now` (the current time) today's row is read whole:
-- it holds nothing later, unless clients send future timestamps.
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
    toDate(t_now) AS t_day,
    bought AS (
        SELECT item_id, sum(events) AS purchases
        FROM
        (
            -- whole days before now's day
            SELECT item_id, events
            FROM trending_daily
            WHERE event_type = 'purchase'
              AND day > t_day - {{ Int32(days, 30, min=1, max=90, description="Look-back window, days (today included)") }}
{% if defined(now) %}
              AND day < t_day
            UNION ALL
            -- now's day up to now, purchase by purchase
            SELECT item_id, toUInt64(1) AS events
            FROM events
            WHERE event_type = 'purchase'
              AND item_id IN (SELECT item_id FROM trending_daily
                              WHERE day = t_day AND event_type = 'purchase')
              AND toDate(ts) = t_day AND ts <= t_now
{% else %}
              -- (today's row: nothing in it is later than now)
              AND day <= t_day
{% end %}
        )
        WHERE item_id != ''
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
-- (an item missing from the catalog joins default values: item_id '')
WHERE (i.available OR i.item_id = '')
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
