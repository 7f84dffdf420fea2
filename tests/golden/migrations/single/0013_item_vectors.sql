-- statement 1 (line 5)
-- 0013_item_vectors: item embeddings written by `redpoll train` and the model registry
-- that makes each new model visible at once. Mirrored, with the full commentary, in
-- sql/embeddings.sql.

CREATE TABLE IF NOT EXISTS redpoll.item_vectors 
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

-- statement 2 (line 17)
CREATE TABLE IF NOT EXISTS redpoll.item_vector_models 
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

