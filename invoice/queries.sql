-- The statements package invoice sends to ClickHouse (see internal/sqlset).
-- Placeholders: {db} the database; {start}, {end} Unix seconds of a service period;
-- {segment} the price-segment expression of the column hour (how many price changes
-- happened at or before it); {workspaces} a filter on workspace_id or nothing; {split} a
-- list of toDateTime(unix, 'UTC') days that some price change falls inside of.
-- The usage statements give, per workspace x model x price segment of a period, input
-- (uncached prompt), cached input and output tokens, ordered.

-- name: usage_from_rollups
-- What invoices bill: whole days from usage_daily. A month is ~31 rows per workspace x
-- model x key instead of ~744 hours. For a period without price changes inside a day.
SELECT workspace_id, model, {segment} AS segment, toUInt64(sum(p) - sum(c)), sum(c), sum(o)
FROM (
    SELECT workspace_id, model, day AS hour, prompt_tokens AS p, cached_tokens AS c, completion_tokens AS o
    FROM {db}.usage_daily FINAL
    WHERE day >= toDateTime({start}, 'UTC') AND day < toDateTime({end}, 'UTC') {workspaces}
)
GROUP BY workspace_id, model, segment
ORDER BY workspace_id, model, segment;

-- name: usage_from_rollups_split
-- usage_from_rollups for a period with price changes inside some days ({split}): those
-- days are read hour by hour from usage_hourly, every other day from usage_daily.
SELECT workspace_id, model, {segment} AS segment, toUInt64(sum(p) - sum(c)), sum(c), sum(o)
FROM (
    SELECT workspace_id, model, day AS hour, prompt_tokens AS p, cached_tokens AS c, completion_tokens AS o
    FROM {db}.usage_daily FINAL
    WHERE day >= toDateTime({start}, 'UTC') AND day < toDateTime({end}, 'UTC') AND day NOT IN ({split}) {workspaces}
    UNION ALL
    SELECT workspace_id, model, hour, prompt_tokens AS p, cached_tokens AS c, completion_tokens AS o
    FROM {db}.usage_hourly FINAL
    WHERE hour >= toDateTime({start}, 'UTC') AND hour < toDateTime({end}, 'UTC') AND toStartOfDay(hour) IN ({split}) {workspaces}
)
GROUP BY workspace_id, model, segment
ORDER BY workspace_id, model, segment;

-- name: usage_from_raw_events
-- The same sums straight from raw events deduplicated by event_id, billable (status ok)
-- ones only: what reconciliation checks invoices against.
SELECT workspace_id, model, {segment} AS segment,
    toUInt64(sum(prompt_tokens) - sum(cached_tokens)), sum(cached_tokens), sum(completion_tokens)
FROM (
    SELECT event_id, workspace_id, model, occurred_at AS hour, prompt_tokens, cached_tokens, completion_tokens
    FROM {db}.usage_events
    WHERE occurred_at >= toDateTime({start}, 'UTC') AND occurred_at < toDateTime({end}, 'UTC') AND status = 'ok' {workspaces}
    LIMIT 1 BY event_id
)
GROUP BY workspace_id, model, segment
ORDER BY workspace_id, model, segment;

-- name: billed
-- What the current version of every non-void invoice bills, line by line (credits aside),
-- for the service periods {periods} (a list of toDateTime(unix, 'UTC')), leaving out the
-- invoices of period {except} (Unix seconds: the one being computed). No GROUP BY: 18.16
-- crashes grouping by Decimal keys; the lines are few, Go sums them.
SELECT workspace_id, service_period_start, kind, model, token_class, usd_per_million, discount_percent,
    quantity, amount
FROM {db}.invoice_items FINAL
WHERE service_period_start IN ({periods}) AND period_start != toDateTime({except}, 'UTC') AND kind != 'credit' {workspaces}
    AND (invoice_id, version) IN (SELECT invoice_id, version FROM {db}.invoices FINAL WHERE status != 'void');

-- name: pending
-- The (workspace, month as YYYYMM) before {q} (Unix seconds) whose rolled-up usage
-- differs, for some model and token class, from what every non-void invoice except those
-- of month {q} bills for it: the only months that can need an adjustment. Reading the
-- daily rollup and the stored lines (never raw events or hours) keeps it cheap. A line's
-- token class may be qualified by a plan's tier or package ("output/tier:2"); reversal
-- lines take tokens back.
SELECT DISTINCT workspace_id, p FROM (
    SELECT workspace_id, p, model, sum(i) AS di, sum(c) AS dc, sum(o) AS dout FROM (
        SELECT workspace_id, toYYYYMM(day) AS p, model, toInt64(sum(prompt_tokens)) - toInt64(sum(cached_tokens)) AS i,
            toInt64(sum(cached_tokens)) AS c, toInt64(sum(completion_tokens)) AS o
        FROM {db}.usage_daily FINAL
        WHERE day < toDateTime({q}, 'UTC') {workspaces}
        GROUP BY workspace_id, p, model
        UNION ALL
        SELECT workspace_id, toYYYYMM(service_period_start) AS p, model,
            toInt64(sumIf(quantity, base = 'input' AND kind = 'reversal')) - toInt64(sumIf(quantity, base = 'input' AND kind != 'reversal')),
            toInt64(sumIf(quantity, base = 'cached_input' AND kind = 'reversal')) - toInt64(sumIf(quantity, base = 'cached_input' AND kind != 'reversal')),
            toInt64(sumIf(quantity, base = 'output' AND kind = 'reversal')) - toInt64(sumIf(quantity, base = 'output' AND kind != 'reversal'))
        FROM (SELECT *, splitByChar('/', token_class)[1] AS base FROM {db}.invoice_items FINAL)
        WHERE kind IN ('usage', 'adjustment', 'reversal') AND service_period_start < toDateTime({q}, 'UTC') AND period_start != toDateTime({q}, 'UTC') {workspaces}
            AND (invoice_id, version) IN (SELECT invoice_id, version FROM {db}.invoices FINAL WHERE status != 'void')
        GROUP BY workspace_id, p, model
    )
    GROUP BY workspace_id, p, model
    HAVING di != 0 OR dc != 0 OR dout != 0
);

-- name: earlier_invoices
-- The statuses of the invoices of periods before {q} (Unix seconds).
SELECT workspace_id, period_start, status FROM {db}.invoices FINAL WHERE period_start < toDateTime({q}, 'UTC') {workspaces};

-- name: upgrade_invoice_lines
-- Copies the lines of invoices written before migration 0003 (in invoice_lines) into
-- invoice_items — kind usage, service period the invoice's own — so that what they billed
-- counts, and they read as before. Lines already copied are left alone.
INSERT INTO {db}.invoice_items (invoice_id, version, line_no, workspace_id, period_start, kind,
    service_period_start, service_period_end, model, token_class, quantity, usd_per_million, discount_percent, amount)
SELECT invoice_id, version, line_no, workspace_id, period_start, 'usage', period_start, period_end,
    model, token_class, quantity, usd_per_million, toDecimal128(0, 12), amount
FROM {db}.invoice_lines AS l
ALL INNER JOIN (SELECT invoice_id, version, period_start, period_end FROM {db}.invoices FINAL) AS h USING (invoice_id, version)
WHERE (invoice_id, version) NOT IN (SELECT invoice_id, version FROM {db}.invoice_items);

-- name: invoice_headers
-- Invoice headers matching {where} (a condition with bound values), newest period first.
SELECT invoice_id, workspace_id, period_start, period_end, status, currency, subtotal, total, computed_at, finalized_at, version
FROM {db}.invoices FINAL
WHERE {where}
ORDER BY period_start DESC, invoice_id;

-- name: invoice_lines
-- The lines of one invoice version. Args: invoice_id, version.
SELECT line_no, kind, service_period_start, service_period_end, model, token_class, quantity, usd_per_million, discount_percent, amount
FROM {db}.invoice_items FINAL
WHERE invoice_id = ? AND version = ?
ORDER BY line_no;

-- name: insert_invoice_items
INSERT INTO {db}.invoice_items (invoice_id, version, line_no, workspace_id, period_start, kind, service_period_start,
    service_period_end, model, token_class, quantity, usd_per_million, discount_percent, amount);

-- name: insert_invoices
INSERT INTO {db}.invoices (invoice_id, workspace_id, period_start, period_end, status, currency, subtotal, total,
    computed_at, finalized_at, version);

-- name: insert_prices
INSERT INTO {db}.prices (model, token_class, effective_from, usd_per_million, version);

-- name: insert_workspace_prices
INSERT INTO {db}.workspace_prices (workspace_id, model, token_class, effective_from, usd_per_million, version);

-- name: insert_workspace_discounts
INSERT INTO {db}.workspace_discounts (workspace_id, effective_from, discount_percent, version);

-- name: grants
-- Credit grants (each grant's latest version), of the workspaces {workspaces} filters.
SELECT grant_id, workspace_id, amount_usd, effective_from, expires_at, priority, reason, created_at, voided
FROM {db}.credit_grants FINAL
WHERE 1 = 1 {workspaces}
ORDER BY workspace_id, grant_id;

-- name: insert_grant
INSERT INTO {db}.credit_grants (grant_id, workspace_id, amount_usd, effective_from, expires_at, priority, reason, created_at,
    voided, version);

-- name: credits_applied
-- The credit lines of every non-void invoice (each invoice's current version): on credit
-- lines, model holds the grant the credit comes from.
SELECT workspace_id, model, period_start, amount
FROM {db}.invoice_items FINAL
WHERE kind = 'credit' {workspaces}
    AND (invoice_id, version) IN (SELECT invoice_id, version FROM {db}.invoices FINAL WHERE status != 'void');

-- name: billing_modes
SELECT workspace_id, effective_from, prepaid
FROM {db}.billing_modes FINAL
ORDER BY workspace_id, effective_from;

-- name: insert_billing_mode
INSERT INTO {db}.billing_modes (workspace_id, effective_from, prepaid, version);

-- name: subscriptions
-- Subscription changes (each (workspace, effective_from)'s latest row), of the workspaces
-- {workspaces} filters, in time order.
SELECT workspace_id, effective_from, plan_id, created_at
FROM {db}.subscriptions FINAL
WHERE 1 = 1 {workspaces}
ORDER BY workspace_id, effective_from;

-- name: insert_subscription
INSERT INTO {db}.subscriptions (workspace_id, effective_from, plan_id, created_at, version);

-- name: insert_plans
INSERT INTO {db}.plans (plan_id, effective_from, name, fee, commitment, included_usage, version);

-- name: insert_plan_rates
INSERT INTO {db}.plan_rates (plan_id, effective_from, model, token_class, pricing, tier, up_to, usd_per_million, package_size,
    package_price, version);
