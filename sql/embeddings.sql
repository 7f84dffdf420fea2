-- Item embeddings: `item_vectors` (one vector per item and model version) and
-- `item_vector_models` (one row per finished training), written by `redpoll train`
-- (app/redpoll/embeddings/, docs/embeddings.md) and read by endpoints/similar_items.sql
-- and endpoints/model_freshness.sql. The file is named after neither table on purpose:
-- a file of sql/ named like its table is an ingestible data source
-- (ingest/datasources.py), and these tables have one writer, the training job.
--
-- Atomic swap: a training writes all its vectors under a new `model_version` (its own
-- partition), and only then inserts its row into `item_vector_models`; readers take the
-- greatest model_version of `item_vector_models`, so they see the previous model until
-- the new one is complete, never a half-written one. The job then drops partitions older
-- than the previous model (kept for readers that picked the version just before the swap).
--
-- `vector`: 64 Float32 (shorter factorizations are padded with zeros, which changes no
-- cosine distance); the HNSW vector similarity index (generally available in ClickHouse
-- 25.8+, the embedded chDB is 26.9) serves `ORDER BY cosineDistance(vector, ref) LIMIT n`.
-- Its vectors are kept as f32 (the default, bf16, returned distances off in the third
-- decimal, since the index's distances are returned without rescoring); 32 connections
-- per layer and 128 candidates at construction are the defaults, written out.
--
-- `item_vector_models`: what the model was trained from, for the freshness report:
-- `max_batch` is the last ingest batch read (events with a greater batch arrived after
-- the training), `events` the events read, `data_until` the latest event time read.

CREATE TABLE IF NOT EXISTS {{ database }}.item_vectors {{ on_cluster }}
(
    model_version UInt64,
    item_id String,
    vector Array(Float32),
    trained_at DateTime64(3, 'UTC'),
    INDEX vector_index vector TYPE vector_similarity('hnsw', 'cosineDistance', 64, 'f32', 32, 128)
)
ENGINE = MergeTree
PARTITION BY model_version
ORDER BY (model_version, item_id);

CREATE TABLE IF NOT EXISTS {{ database }}.item_vector_models {{ on_cluster }}
(
    model_version UInt64,
    trained_at DateTime64(3, 'UTC'),
    method LowCardinality(String),
    dimensions UInt16,
    items UInt32,
    contexts UInt64,
    events UInt64,
    max_batch UInt64,
    data_until DateTime64(3, 'UTC'),
    seconds Float64
)
ENGINE = MergeTree
ORDER BY model_version;
