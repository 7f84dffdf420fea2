-- Items similar to this one by their learned embedding (item-to-item).
--
-- `redpoll train` learns one vector per item from the interactions (a truncated SVD of
-- the items' PPMI co-occurrence in baskets and sessions: docs/embeddings.md) into
-- `item_vectors`; this endpoint ranks the other items of the current model (the greatest
-- version in `item_vector_models`, so a training in progress is never seen) by cosine
-- distance to the item's vector, through the table's vector similarity index (HNSW).
-- score = 1 - cosine distance (cosine similarity); only items with score > min_score.
--
-- An item without a vector (unknown, never in a basket or session with another item at
-- the last training, or no model trained yet) falls back to popularity, as `also_bought`
-- fills short lists: the most ordered items (`basket_pairs('', x)` = orders with x, all
-- time), score = 1e-9 * orders, reason `popular`; fallback=false gives an empty answer
-- instead. `model_freshness` tells whether a model exists and how many events arrived
-- since it was trained. Each row carries the model's version and training time (0 and
-- 1970-01-01 before the first training).
--
-- Works from events alone: an item missing from the catalog is kept (no title); the
-- catalog (`items_latest`) refines it and excludes the items it marks unavailable.
-- Business rules: exclude=<ids>, category=<cat>, max_per_category=<n> (0 = none).
-- rec_id (default): the id of the query that answered, one per response.
-- tags: recommendations
-- max_execution_time: 2
-- settings: max_threads=1
%
WITH
    -- the current model: its version and training time (one read of the models table)
    (SELECT (max(model_version), argMax(trained_at, model_version)) FROM item_vector_models) AS model,
    model.1 AS version,
    (
        SELECT any(vector) FROM item_vectors
        WHERE model_version = version
          AND item_id = {{ String(item_id, required=True, description="The item shown", example="85123A") }}
    ) AS ref,
    -- the nearest neighbours from the index: enough of them to survive the filters below
    neighbours AS (
        SELECT item_id, cosineDistance(vector, ref) AS distance, trained_at
        FROM item_vectors
        WHERE model_version = version
          AND notEmpty(ref)
        ORDER BY distance
        LIMIT {{ Int32(limit, 10, min=1, max=100, description="Items to return") * 4 + 20 }}
    ),
    candidates AS (
        SELECT item_id, round(1 - distance, 6) AS score, 'embedding' AS reason, trained_at
        FROM neighbours
{% if Boolean(fallback, True, description="Without a vector for the item: the most ordered items (false: an empty list)") %}
        UNION ALL
        -- no vector: the most ordered items (read only when the item has no vector)
        SELECT other_item_id, round(1e-9 * sum(orders), 9), 'popular', model.2
        FROM basket_pairs
        WHERE item_id = '' AND empty(ref)
        GROUP BY other_item_id
        HAVING sum(orders) > 0
{% end %}
    )
SELECT
    n.item_id AS item_id,
    i.title AS title,
    i.category AS category,
    i.price AS price,
    n.score AS score,
    n.reason AS reason,
    version AS model_version,
    n.trained_at AS trained_at,
    {% if defined(rec_id) %}{{ String(rec_id, description="Recommendation id to echo (default: the query id)") }}{% else %}queryID(){% end %} AS rec_id,
    'similar_items' AS source
FROM candidates AS n
ANY LEFT JOIN items_latest AS i ON i.item_id = n.item_id
-- a catalog item is kept only if available; one the catalog lacks (no match: item_id '') is kept
WHERE (i.available OR i.item_id = '')
  AND n.item_id != {{ String(item_id) }}
  -- (min_score applies to the similarity, not to the popularity fallback)
  AND (n.score > {{ Float64(min_score, 0, min=-1, max=1, description="Only items more similar than this (cosine similarity)") }} OR n.reason = 'popular')
{% if defined(exclude) %}
  AND n.item_id NOT IN {{ Array(exclude, 'String', description="Item ids to leave out") }}
{% end %}
{% if defined(category) %}
  AND i.category = {{ String(category, description="Only this category") }}
{% end %}
ORDER BY score DESC, item_id
{% if Int32(max_per_category, 0, min=0, max=100, description="At most this many items per category (0: no cap)") > 0 %}
LIMIT {{ Int32(max_per_category, 0) + 0 }} BY category
{% end %}
LIMIT {{ Int32(limit, 10) }}
