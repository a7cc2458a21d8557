-- Spend control: budgets, rate limits and the alerts budgets raise.

-- Monthly budgets, per workspace (api_key_id '') or per key, versioned like prices: the row
-- in force at t is the one with the latest effective_from at or before t (its latest
-- version). active = 0 removes the budget from effective_from on. thresholds are the
-- percentages of monthly_usd that raise an alert (spend_alerts); hard_limit = 1 makes the
-- gateway refuse completions (429 insufficient_quota) once the month's spend reaches
-- monthly_usd. Spend is priced as invoices price it, the workspace's discount included.
CREATE TABLE IF NOT EXISTS budgets (
    workspace_id String,
    api_key_id String,
    effective_from DateTime('UTC'),
    active UInt8,
    monthly_usd Decimal(38, 12),
    thresholds Array(UInt8),
    hard_limit UInt8,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (workspace_id, api_key_id, effective_from);

-- Rate limits, per workspace (api_key_id '') or per key, versioned like budgets:
-- requests and tokens (prompt + completion) per minute, 0 for no limit of that kind.
CREATE TABLE IF NOT EXISTS rate_limits (
    workspace_id String,
    api_key_id String,
    effective_from DateTime('UTC'),
    rpm UInt32,
    tpm UInt64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (workspace_id, api_key_id, effective_from);

-- Alerts raised by budgets: one per budget, month and threshold crossed (alert_id is a
-- hash of the four), so detectors that race write the same row. type:
-- budget.threshold_reached (a soft threshold) or budget.exceeded (100 % of a budget).
-- spend_usd is the month's spend when the alert was raised; version = 2^63 minus the
-- detection time in nanoseconds, so the earliest detection of an alert is the one kept.
CREATE TABLE IF NOT EXISTS spend_alerts (
    alert_id String,
    type String,
    workspace_id String,
    api_key_id String,
    period_start DateTime('UTC'),
    threshold_percent UInt16,
    budget_usd Decimal(38, 12),
    spend_usd Decimal(38, 12),
    hard_limit UInt8,
    created_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (workspace_id, period_start, alert_id);
