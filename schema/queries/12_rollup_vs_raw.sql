-- Consistency check: per day, billable requests in usage_hourly against deduplicated raw
-- events. A difference in the last minutes is events the aggregator has not reached yet
-- (it runs every minute); an older one is a bug worth reporting.
SELECT
    day,
    rolled_up,
    raw,
    toInt64(raw) - toInt64(rolled_up) AS not_rolled_up
FROM (
    SELECT toDate(hour) AS day, sum(requests) AS rolled_up
    FROM usage_hourly FINAL
    WHERE hour >= toStartOfDay(now()) - INTERVAL 6 DAY
    GROUP BY day
)
ALL FULL OUTER JOIN (
    SELECT toDate(occurred_at) AS day, count() AS raw
    FROM (
        SELECT event_id, occurred_at
        FROM usage_events
        WHERE occurred_at >= toStartOfDay(now()) - INTERVAL 6 DAY AND status = 'ok'
        LIMIT 1 BY event_id
    )
    GROUP BY day
) USING (day)
ORDER BY day
