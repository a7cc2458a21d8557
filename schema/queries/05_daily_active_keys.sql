-- Keys and workspaces with billable usage per day, last 30 days.
SELECT
    toDate(hour) AS day,
    uniqExact(api_key_id) AS active_keys,
    uniqExact(workspace_id) AS active_workspaces
FROM usage_hourly FINAL
WHERE hour >= toStartOfDay(now()) - INTERVAL 29 DAY
GROUP BY day
ORDER BY day
