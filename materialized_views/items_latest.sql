-- Materialized view `items_latest`: the latest version of every catalog item, in memory.
--
-- What `items FINAL` returns (per item_id the row with the greatest updated_at; among
-- equal updated_at, the one inserted last), kept in a Join-engine table: a hash table
-- built once, at insert time, instead of reading and hashing `items` on every request.
-- Endpoints attach catalog columns and business rules with
--   ... FROM scored AS s ANY LEFT JOIN items_latest AS i ON i.item_id = s.item_id
--   WHERE i.available
-- (a Join table only joins with its own kind, ANY LEFT; a missing item has default
-- values, so `available` is false), or read it whole: SELECT ... FROM items_latest.
-- `words`: the distinct words of the title (letters only, 3+ characters, upper case),
-- for content similarity (`for_user`).
--
-- How it stays exact: `items_latest_mv` takes, per item in the inserted block, its newest
-- row (last among equal updated_at) and stores it only if it is at least as new as the
-- stored version; join_any_take_last_row = 1 makes the stored row the last one written.
-- Assumes one writer of `items` at a time (the Events API commits a data source from one
-- thread). Deleting from `items` (ALTER ... DELETE, TRUNCATE) does not reach
-- `items_latest`: rebuild it then.
--
-- Bound per event (per inserted catalog row; `events` do not reach it): one hash lookup
-- of the stored version (joinGetOrNull) and at most 1 row written.
--
-- Rebuild (`redpoll backfill items_latest`): the table is truncated, then refilled from
-- `items` by:
-- recompute:
--   INSERT INTO {{ database }}.items_latest (item_id, title, category, brand, price,
--                                            available, updated_at, words)
--   SELECT item_id, title, category, brand, price, available, updated_at,
--          arrayDistinct(arrayFilter(w -> length(w) >= 3, splitByNonAlpha(upper(title))))
--   FROM {{ database }}.items FINAL;
-- end recompute

CREATE TABLE IF NOT EXISTS {{ database }}.items_latest {{ on_cluster }}
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

CREATE MATERIALIZED VIEW IF NOT EXISTS {{ database }}.items_latest_mv {{ on_cluster }}
TO {{ database }}.items_latest
AS SELECT
    item_id, title, category, brand, price, available, updated_at,
    arrayDistinct(arrayFilter(w -> length(w) >= 3, splitByNonAlpha(upper(title)))) AS words
FROM
(
    SELECT item_id, title, category, brand, price, available, updated_at
    FROM {{ database }}.items
    ORDER BY updated_at DESC, rowNumberInAllBlocks() DESC
    LIMIT 1 BY item_id
)
WHERE ifNull(updated_at >= joinGetOrNull('{{ database }}.items_latest', 'updated_at', item_id), true);
