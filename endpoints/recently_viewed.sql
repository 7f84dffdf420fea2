-- The items a user viewed most recently, newest first (one row per item), e.g. for a
-- "recently viewed" strip. Reads `user_history` (ORDER BY user_id, ts): one contiguous
-- range per user.
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
    viewed AS (
        SELECT item_id, max(ts) AS last_viewed
        FROM user_history
        WHERE user_id = {{ String(user_id, required=True, description="The user", example="u1") }}
          AND event_type IN {{ Array(event_types, 'String', default='view', description="Event types that count as a view") }}
{% if defined(now) %}
          AND ts <= t_now
{% end %}
        GROUP BY item_id
    )
SELECT
    v.item_id AS item_id,
    i.title AS title,
    i.category AS category,
    i.price AS price,
    v.last_viewed AS last_viewed,
    {% if defined(rec_id) %}{{ String(rec_id, description="Recommendation id to echo (default: the query id)") }}{% else %}queryID(){% end %} AS rec_id,
    concat('recently_viewed:', {{ String(variant, 'a', enum=['a', 'b'], description="A/B variant label recorded in `source` (same query)") }}) AS source
FROM viewed AS v
ANY LEFT JOIN items_latest AS i ON i.item_id = v.item_id
-- (an item missing from the catalog joins default values: item_id '')
WHERE (i.available OR i.item_id = '') AND v.item_id != ''
{% if defined(exclude) %}
  AND v.item_id NOT IN {{ Array(exclude, 'String', description="Item ids to leave out") }}
{% end %}
{% if defined(category) %}
  AND i.category = {{ String(category, description="Only this category") }}
{% end %}
ORDER BY last_viewed DESC, item_id
{% if Int32(max_per_category, 0, min=0, max=100, description="At most this many items per category (0: no cap)") > 0 %}
LIMIT {{ Int32(max_per_category, 0) + 0 }} BY category
{% end %}
LIMIT {{ Int32(limit, 10, min=1, max=100, description="Items to return") }}
