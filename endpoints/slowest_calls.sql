-- The slowest endpoint calls of a recent window, from `pipe_stats` (written by the
-- server for every call: sql/service_logs.sql). One row per call, slowest first.
-- tags: operations
-- max_execution_time: 5
%
SELECT
    start_datetime,
    pipe_name,
    duration,
    status_code,
    read_rows,
    read_bytes,
    result_rows,
    error,
    request_id,
    token_name,
    parameters
FROM pipe_stats
WHERE start_datetime > now64(3) - INTERVAL {{ Int32(minutes, 60, min=1, max=43200, description="Look-back window, minutes") }} MINUTE
{% if defined(pipe) %}
  AND pipe_name = {{ String(pipe, description="Only this endpoint") }}
{% end %}
{% if Boolean(errors_only, False, description="Only calls answered with an error") %}
  AND status_code >= 400
{% end %}
ORDER BY duration DESC, start_datetime DESC
LIMIT {{ Int32(limit, 20, min=1, max=1000, description="Calls to return") }}
