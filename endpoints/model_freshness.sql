-- How fresh the current item-embedding model is (similar_items; docs/embeddings.md):
-- its version, when `redpoll train` trained it, from how many events and items, the
-- latest event time it read, and how many events were ingested after it (`events_since`:
-- events of a later ingest batch than the last one it read). No row: no model trained
-- yet, so similar_items answers empty lists.
-- tags: recommendations, operations
-- max_execution_time: 2
-- settings: max_threads=1
%
WITH (SELECT max(model_version) FROM item_vector_models) AS version
SELECT
    m.model_version AS model_version,
    m.trained_at AS trained_at,
    m.method AS method,
    m.dimensions AS dimensions,
    m.items AS items,
    m.events AS events,
    m.data_until AS data_until,
    (SELECT count() FROM events
     WHERE batch > (SELECT max(max_batch) FROM item_vector_models WHERE model_version = version)) AS events_since,
    dateDiff('second', m.trained_at, now64(3)) AS age_seconds,
    m.seconds AS training_seconds
FROM item_vector_models AS m
WHERE m.model_version = version
LIMIT 1
