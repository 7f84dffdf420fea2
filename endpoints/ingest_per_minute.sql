-- Ingestion per minute and data source, from `datasources_ops_log` (one row per ingest
-- request and backfill, written by the server: sql/service_logs.sql). Newest minute first.
-- tags: operations
-- max_execution_time: 5
%
SELECT
    toStartOfMinute(timestamp) AS minute,
    datasource,
    operation,
    count() AS requests,
    sum(rows) AS rows,
    countIf(result = 'error') AS errors,
    round(max(elapsed), 4) AS max_elapsed,
    round(avg(elapsed), 4) AS avg_elapsed
FROM datasources_ops_log
WHERE timestamp > now64(3) - INTERVAL {{ Int32(minutes, 60, min=1, max=43200, description="Look-back window, minutes") }} MINUTE
{% if defined(datasource) %}
  AND datasource = {{ String(datasource, description="Only this data source (or view, for backfills)") }}
{% end %}
GROUP BY minute, datasource, operation
ORDER BY minute DESC, datasource, operation
LIMIT {{ Int32(limit, 1000, min=1, max=10000, description="Rows to return") }}
