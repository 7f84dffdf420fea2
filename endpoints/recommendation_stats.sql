-- Feedback loop: impressions, clicks and CTR per recommendation source and day.
--
-- Clients post what they showed and what was clicked as events
-- (POST /v0/events?name=events) with event_type = 'impression' or 'click', the
-- `rec_id` of the recommendation response and `source` = its `source` column
-- (endpoint:variant, e.g. for_user:b). A click counts when it carries a rec_id.
-- `purchases` counts purchase events that carry a rec_id (attributed conversions).
-- endpoint and variant are split from source; CTR = clicks / impressions.
-- tags: recommendations, analytics
-- max_execution_time: 5
%
WITH
    ifNull({{ DateTime(now, defined=False, description="Report up to this time (default: now)") }}, now()) AS t_now
SELECT
    toDate(ts) AS day,
    splitByChar(':', source)[1] AS endpoint,
    if(length(splitByChar(':', source)) > 1, splitByChar(':', source)[2], '') AS variant,
    countIf(event_type = 'impression') AS impressions,
    countIf(event_type = 'click') AS clicks,
    countIf(event_type = 'purchase') AS purchases,
    uniqExactIf(rec_id, event_type = 'impression') AS recommendations,
    round(if(impressions > 0, clicks / impressions, 0), 4) AS ctr
FROM events
WHERE event_type IN ('impression', 'click', 'purchase')
  AND rec_id != ''
  AND ts > t_now - INTERVAL {{ Int32(days, 30, min=1, max=3650, description="Days to report") }} DAY
  AND ts <= t_now
{% if defined(endpoint) %}
  AND splitByChar(':', source)[1] = {{ String(endpoint, description="Only this endpoint") }}
{% end %}
GROUP BY day, endpoint, variant
ORDER BY day DESC, endpoint, variant
LIMIT {{ Int32(limit, 1000, min=1, max=10000, description="Rows to return") }}
