-- Served completions whose token counts the gateway estimated because the upstream
-- reported no usage, per upstream, last 7 days: a provider to look at if this is high.
SELECT
    upstream,
    count() AS completions,
    countIf(estimated = 1) AS estimated,
    round(estimated / completions, 4) AS estimated_share
FROM (
    SELECT event_id, upstream, estimated
    FROM usage_events
    WHERE occurred_at >= now() - INTERVAL 7 DAY AND status = 'ok'
    LIMIT 1 BY event_id
)
GROUP BY upstream
ORDER BY estimated_share DESC, upstream
