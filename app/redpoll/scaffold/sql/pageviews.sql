-- pageviews: one row per page view (declared here, created by migrations/0001).
CREATE TABLE IF NOT EXISTS {{ database }}.pageviews {{ on_cluster }}
(
    ts      DateTime64(3, 'UTC'),
    user_id String,
    path    String
)
ENGINE = MergeTree
ORDER BY (path, ts);
