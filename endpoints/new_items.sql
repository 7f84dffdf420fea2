-- New items: exposure for items that have not had a chance yet (cold start).
--
-- An item is new when, as of `now`, it has fewer than `max_events` events (any type but
-- impressions) or its first event was at most `days` days ago (UTC days, now's day
-- included); a catalog item with no event at all is new. Counts are exact as of `now`:
-- whole days from `trending_daily`; with `now` given, now's day up to now from `events`
-- itself, read only for the (event type, item) keys of that day (events is ORDER BY
-- (event_type, item_id, ts)); without it, today's rows whole (nothing in them is later,
-- unless clients send future timestamps). Items seen in events but missing from the
-- catalog are new items too.
--
-- Without a seed the newest come first: items never seen, then by first event (latest
-- first), then more events first (reason `new`, score 0). With a seed (`items`, and/or
-- the items a session viewed, clicked or carted in the last `minutes`: `session_id`),
-- items similar in content come first: score = sum over the terms they share with the
-- seeds (title words, `items_latest.words`, and the category) of idf^2 * (seeds with the
-- term), idf = ln((items + 1) / (items with the term + 1)), as `for_user` variant a
-- weighs words (reason `new_similar`); the other new items follow as without a seed.
-- The seeds themselves are left out.
--
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
{% set seeded = defined(items) or defined(session_id) %}
WITH
    ifNull({{ DateTime(now, defined=False, description="Evaluate as of this time (default: now)") }}, now()) AS t_now,
    toDate(t_now) AS t_day,
{% if seeded %}
    -- (only with a seed: without one every score is 0, and neither the seeds, their
    -- terms nor the similarity are read or planned)
    -- the seeds
    seeds AS (
        SELECT DISTINCT item_id
        FROM
        (
{% if defined(items) %}
            SELECT arrayJoin({{ Array(items, 'String', description="Seed items: rank new items by similarity to these") }}) AS item_id
{% if defined(session_id) %}
            UNION ALL
{% end %}
{% end %}
{% if defined(session_id) %}
            SELECT item_id
            FROM session_history
            WHERE session_id = {{ String(session_id, description="Seed: the items this session viewed, clicked or carted", example="s1") }}
              AND ts > t_now - INTERVAL {{ Int32(minutes, 30, min=1, max=1440, description="Session look-back, minutes") }} MINUTE
              AND ts <= t_now
              AND event_type != 'impression'
{% end %}
        )
        WHERE item_id != ''
    ),
    -- the seeds' terms (title words and category) and how many seeds have each
    (
        SELECT (groupArray(term), groupArray(n))
        FROM
        (
            SELECT term, count() AS n
            FROM items_latest
            ARRAY JOIN arrayConcat(words, [concat('category:', category)]) AS term
            WHERE item_id IN (SELECT item_id FROM seeds) AND term != 'category:'
            GROUP BY term
        )
    ) AS seed_terms,
    -- per catalog item sharing a term: sum of idf^2 * (seeds with it) over shared terms
    similar AS (
        SELECT item_id, sum(w) AS similarity
        FROM
        (
            SELECT
                ifNull(pow(log(((SELECT count() FROM items_latest) + 1) / (count() + 1)), 2), 0)
                  * transform(term, seed_terms.1, seed_terms.2, 0) AS w,
                groupArray(item_id) AS items
            FROM items_latest
            ARRAY JOIN arrayIntersect(arrayConcat(words, [concat('category:', category)]), seed_terms.1) AS term
            GROUP BY term
        )
        ARRAY JOIN items AS item_id
        GROUP BY item_id
    ),
{% end %}
    -- per item: events (no impressions) and first day, as of now
    stats AS (
        SELECT item_id, sum(events) AS events, min(day) AS first_day
        FROM
        (
            SELECT item_id, events, day
            FROM trending_daily
{% if defined(now) %}
            WHERE day < t_day AND event_type != 'impression'
            UNION ALL
            SELECT item_id, toUInt64(1) AS events, t_day AS day
            FROM events
            WHERE (event_type, item_id) IN (SELECT event_type, item_id FROM trending_daily
                                            WHERE day = t_day AND event_type != 'impression')
              AND toDate(ts) = t_day AND ts <= t_now
{% else %}
            WHERE day <= t_day AND event_type != 'impression'
{% end %}
        )
        WHERE item_id != ''
        GROUP BY item_id
    ),
    -- every item of the catalog or the events, with its counts (0 events: never seen)
    pool AS (
        SELECT item_id, sum(n) AS events, max(first) AS first_day
        FROM
        (
            SELECT item_id, events AS n, first_day AS first FROM stats
            UNION ALL
            SELECT item_id, 0 AS n, toDate(0) AS first FROM items_latest
        )
        GROUP BY item_id
        HAVING events < {{ Int32(max_events, 5, min=1, max=1000000, description="An item with fewer events than this is new") }}
            OR first_day > t_day - {{ Int32(days, 7, min=1, max=3650, description="An item first seen at most this many days ago is new") }}
    )
SELECT
    p.item_id AS item_id,
    i.title AS title,
    i.category AS category,
    i.price AS price,
    {% if seeded %}round(ifNull(m.similarity, 0), 6){% else %}0.{% end %} AS score,
    p.events AS events,
    if(p.events = 0, NULL, p.first_day) AS first_seen,
    if(score > 0, 'new_similar', 'new') AS reason,
    {% if defined(rec_id) %}{{ String(rec_id, description="Recommendation id to echo (default: the query id)") }}{% else %}queryID(){% end %} AS rec_id,
    concat('new_items:', {{ String(variant, 'a', enum=['a', 'b'], description="A/B variant label recorded in `source` (same query)") }}) AS source
FROM pool AS p
ANY LEFT JOIN items_latest AS i ON i.item_id = p.item_id
{% if seeded %}
LEFT JOIN similar AS m ON m.item_id = p.item_id
{% end %}
-- (an item missing from the catalog joins default values: item_id '')
WHERE (i.available OR i.item_id = '')
{% if seeded %}
  AND p.item_id NOT IN (SELECT item_id FROM seeds)
{% else %}
  AND p.item_id != ''
{% end %}
{% if defined(exclude) %}
  AND p.item_id NOT IN {{ Array(exclude, 'String', description="Item ids to leave out") }}
{% end %}
{% if defined(category) %}
  AND i.category = {{ String(category, description="Only this category") }}
{% end %}
ORDER BY score DESC, p.events = 0 DESC, p.first_day DESC, p.events DESC, item_id
{% if Int32(max_per_category, 0, min=0, max=100, description="At most this many items per category (0: no cap)") > 0 %}
LIMIT {{ Int32(max_per_category, 0) + 0 }} BY category
{% end %}
LIMIT {{ Int32(limit, 10, min=1, max=100, description="Items to return") }}
