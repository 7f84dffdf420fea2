-- 0001_pageviews: the example data source. Applied files are immutable:
-- change the schema with a new migration (`redpoll migrate new NAME`).
CREATE TABLE IF NOT EXISTS {{ database }}.pageviews {{ on_cluster }}
(
    ts      DateTime64(3, 'UTC'),
    user_id String,
    path    String
)
ENGINE = MergeTree
ORDER BY (path, ts);
