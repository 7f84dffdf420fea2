-- statement 1 (line 6)
-- 0008_items_latest: the latest version of every catalog item in a Join-engine table
-- (filled from `items` by a materialized view), plus its title words.
-- Mirrored, with the full commentary and the rebuild query, in
-- materialized_views/items_latest.sql.

CREATE TABLE IF NOT EXISTS redpoll.items_latest ON CLUSTER `redpoll`
(
    item_id String,
    title String,
    category LowCardinality(String),
    brand LowCardinality(String),
    price Float64,
    available Bool,
    updated_at DateTime64(3, 'UTC'),
    words Array(String)
)
ENGINE = Join(ANY, LEFT, item_id)
SETTINGS join_any_take_last_row = 1;

-- statement 2 (line 20)
CREATE MATERIALIZED VIEW IF NOT EXISTS redpoll.items_latest_mv ON CLUSTER `redpoll`
TO redpoll.items_latest
AS SELECT
    item_id, title, category, brand, price, available, updated_at,
    arrayDistinct(arrayFilter(w -> length(w) >= 3, splitByNonAlpha(upper(title)))) AS words
FROM
(
    SELECT item_id, title, category, brand, price, available, updated_at
    FROM redpoll.items
    ORDER BY updated_at DESC, rowNumberInAllBlocks() DESC
    LIMIT 1 BY item_id
)
WHERE ifNull(updated_at >= joinGetOrNull('redpoll.items_latest', 'updated_at', item_id), true);

