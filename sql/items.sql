-- Data source `items`: the catalog. Inserted directly (no landing table).
-- Several versions of an item may be inserted; the latest `updated_at` wins
-- (ReplacingMergeTree). Read it with FINAL (or argMax by updated_at) for exact results:
--   SELECT * FROM items FINAL WHERE available

CREATE TABLE IF NOT EXISTS {{ database }}.items {{ on_cluster }}
(
    item_id String,
    title String,
    category LowCardinality(String),
    brand LowCardinality(String),
    price Float64,
    available Bool DEFAULT true,
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY item_id;
