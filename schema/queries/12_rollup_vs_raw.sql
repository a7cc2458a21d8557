-- Consistency check: per day, billable requests in usage_hourly against deduplicated raw
-- events. A difference in the last minutes is events the aggregator has not reached yet
-- (it runs every minute); an older one is a bug worth reporting.
-- (The two sides are summed over a UNION ALL rather than a FULL JOIN: a day on one side
-- only would take the join key's default on the other, differently across versions.)
SELECT
    day,
    sum(hourly) AS rolled_up,
    sum(event) AS raw,
    toInt64(sum(event)) - toInt64(sum(hourly)) AS not_rolled_up
FROM (
    SELECT toDate(hour) AS day, requests AS hourly, toUInt64(0) AS event
    FROM usage_hourly FINAL
    WHERE hour >= toStartOfDay(now()) - INTERVAL 6 DAY
    UNION ALL
    SELECT toDate(occurred_at) AS day, toUInt64(0) AS hourly, toUInt64(1) AS event
    FROM (
        SELECT event_id, occurred_at
        FROM usage_events
        WHERE occurred_at >= toStartOfDay(now()) - INTERVAL 6 DAY AND status = 'ok'
        LIMIT 1 BY event_id
    )
)
GROUP BY day
ORDER BY day
