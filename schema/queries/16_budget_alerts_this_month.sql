-- Budgets at 80 % or more this month: the alerts they raised (once per budget, month and
-- threshold; FINAL keeps the earliest detection of each), with when they were reached.
SELECT
    workspace_id,
    api_key_id,
    type,
    threshold_percent,
    budget_usd,
    spend_usd,
    created_at
FROM spend_alerts FINAL
WHERE period_start = toDateTime(toStartOfMonth(today()), 'UTC') AND threshold_percent >= 80
ORDER BY created_at, workspace_id, api_key_id, threshold_percent
