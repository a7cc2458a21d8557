-- The statements package spend sends to ClickHouse (see internal/sqlset).
-- Placeholders: {db} the database; {seg} the price-segment expression of the time column
-- (how many price changes happened at or before it); {cond} a time range of that column.

-- name: budgets
-- Every budget row (each key's latest version): the gateway's snapshot takes, per
-- workspace and key, the row in force now.
SELECT workspace_id, api_key_id, effective_from, active, monthly_usd, thresholds, hard_limit, version
FROM {db}.budgets FINAL
ORDER BY workspace_id, api_key_id, effective_from;

-- name: rate_limits
SELECT workspace_id, api_key_id, effective_from, rpm, tpm, version
FROM {db}.rate_limits FINAL
ORDER BY workspace_id, api_key_id, effective_from;

-- name: insert_budget
INSERT INTO {db}.budgets (workspace_id, api_key_id, effective_from, active, monthly_usd, thresholds, hard_limit, version);

-- name: insert_rate_limit
INSERT INTO {db}.rate_limits (workspace_id, api_key_id, effective_from, rpm, tpm, version);

-- name: watermark
-- The aggregator's progress: raw events ingested before it are rolled up.
SELECT argMax(watermark, version) FROM {db}.aggregate_watermarks WHERE job = 'usage_hourly';

-- name: spend_daily
-- Month-to-date usage of every workspace and key, per model and price segment, from the
-- three disjoint sources /v1/usage reads: whole days rolled up (usage_daily, FINAL),
-- hours rolled up (usage_hourly, FINAL), and raw events after the rollups' cutoff
-- (deduplicated by event_id, billable only). Columns: workspace, key, model, segment,
-- input (uncached prompt), cached input, output tokens.
SELECT workspace_id, api_key_id, model, {seg} AS seg,
    toUInt64(sum(prompt_tokens) - sum(cached_tokens)), sum(cached_tokens), sum(completion_tokens)
FROM {db}.usage_daily FINAL
WHERE {cond}
GROUP BY workspace_id, api_key_id, model, seg;

-- name: spend_hourly
SELECT workspace_id, api_key_id, model, {seg} AS seg,
    toUInt64(sum(prompt_tokens) - sum(cached_tokens)), sum(cached_tokens), sum(completion_tokens)
FROM {db}.usage_hourly FINAL
WHERE {cond}
GROUP BY workspace_id, api_key_id, model, seg;

-- name: spend_raw
SELECT workspace_id, api_key_id, model, {seg} AS seg,
    toUInt64(sum(prompt_tokens) - sum(cached_tokens)), sum(cached_tokens), sum(completion_tokens)
FROM (
    SELECT event_id, workspace_id, api_key_id, model, occurred_at, prompt_tokens, cached_tokens, completion_tokens
    FROM {db}.usage_events
    WHERE {cond} AND status = 'ok'
    LIMIT 1 BY event_id
)
GROUP BY workspace_id, api_key_id, model, seg;

-- name: insert_alert
INSERT INTO {db}.spend_alerts (alert_id, type, workspace_id, api_key_id, period_start, threshold_percent, budget_usd,
    spend_usd, hard_limit, created_at, version);

-- name: alerts
-- A workspace's alerts from {since} (Unix seconds) on, newest first. Args: workspace.
SELECT alert_id, type, workspace_id, api_key_id, period_start, threshold_percent, budget_usd, spend_usd, hard_limit, created_at
FROM {db}.spend_alerts FINAL
WHERE workspace_id = ? AND period_start >= toDateTime({since}, 'UTC')
ORDER BY created_at DESC, alert_id;

-- name: alerted
-- The alerts already raised for period {period} (Unix seconds), to raise each once.
SELECT alert_id FROM {db}.spend_alerts WHERE period_start = toDateTime({period}, 'UTC');
