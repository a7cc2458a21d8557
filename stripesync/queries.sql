-- The statements package stripesync sends to ClickHouse (see internal/sqlset).
-- Placeholders: {db} the database; {since} Unix seconds of the first invoice period pushed;
-- {where} a condition with bound values.

-- name: pending
-- The finalized and void invoices of periods from {since} on whose push is not complete
-- for their current status: never pushed, pushed halfway, or pushed and voided since.
-- Oldest period first, so a backlog is pushed in the order it was billed.
SELECT invoice_id, workspace_id, period_start, status, version
FROM {db}.invoices FINAL
WHERE status IN ('finalized', 'void') AND period_start >= toDateTime({since}, 'UTC')
    AND (invoice_id, status) NOT IN (SELECT invoice_id, done_for FROM {db}.stripe_invoice_sync FINAL)
ORDER BY period_start, workspace_id, invoice_id;

-- name: sync_states
-- Where the pushes matching {where} stand, newest period first.
SELECT invoice_id, workspace_id, period_start, invoice_version, state, done_for, stripe_customer_id, stripe_invoice_id,
    items_done, items_total, amount, currency, attempts, last_error, next_attempt_at, updated_at, version
FROM {db}.stripe_invoice_sync FINAL
WHERE {where}
ORDER BY period_start DESC, workspace_id, invoice_id;

-- name: customer
-- The Stripe customer of a workspace. Args: workspace_id.
SELECT stripe_customer_id FROM {db}.stripe_customers FINAL WHERE workspace_id = ?;

-- name: workspace_name
-- A workspace's name, for its Stripe customer. Args: workspace_id.
SELECT name FROM {db}.workspaces FINAL WHERE workspace_id = ?;

-- name: insert_customer
INSERT INTO {db}.stripe_customers (workspace_id, stripe_customer_id, created_at, version);

-- name: insert_sync_state
INSERT INTO {db}.stripe_invoice_sync (invoice_id, workspace_id, period_start, invoice_version, state, done_for,
    stripe_customer_id, stripe_invoice_id, items_done, items_total, amount, currency, attempts, last_error,
    next_attempt_at, updated_at, version);
