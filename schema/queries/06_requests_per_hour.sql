-- Requests per hour over the last 48 hours, failed ones included, straight from raw
-- events (fresh to the second, unlike the rollups). Raw events may hold a delivery more
-- than once until a merge folds it: LIMIT 1 BY event_id counts each event once.
SELECT
    toStartOfHour(occurred_at) AS hour,
    count() AS requests,
    countIf(status = 'ok') AS ok,
    countIf(status != 'ok') AS failed
FROM (
    SELECT event_id, occurred_at, status
    FROM usage_events
    WHERE occurred_at >= now() - INTERVAL 48 HOUR
    LIMIT 1 BY event_id
)
GROUP BY hour
ORDER BY hour
