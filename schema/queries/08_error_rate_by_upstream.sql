-- Failed upstream exchanges per upstream provider, last 24 hours. A failed exchange is an
-- event with status upstream_error and no billable tokens.
SELECT
    upstream,
    count() AS requests,
    countIf(status != 'ok') AS errors,
    round(errors / requests, 4) AS error_rate
FROM (
    SELECT event_id, upstream, status
    FROM usage_events
    WHERE occurred_at >= now() - INTERVAL 24 HOUR
    LIMIT 1 BY event_id
)
GROUP BY upstream
ORDER BY error_rate DESC, upstream
