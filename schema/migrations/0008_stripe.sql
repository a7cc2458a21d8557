-- Stripe: what Venna pushed to Stripe (package stripesync), so that a push that stopped
-- halfway resumes where it stopped and never does a step twice.

-- One Stripe customer per workspace, created once (its metadata venna_workspace_id names
-- the workspace). The row of a workspace_id with the highest version is the mapping.
CREATE TABLE IF NOT EXISTS stripe_customers (
    workspace_id String,
    stripe_customer_id String,
    created_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY workspace_id;

-- The push of one Venna invoice to Stripe, one row per step done; the row of an
-- invoice_id with the highest version is where the push stands. invoice_version is the
-- Venna invoice version being pushed, fixed at the first step: every Idempotency-Key of
-- the push derives from it. state is the last step done: customer (the workspace's
-- customer exists), invoice_created (a draft Stripe invoice), items (items_done of
-- items_total invoice items attached), finalized, voided (the Venna invoice was voided
-- after finalization in Stripe), deleted (voided while the Stripe invoice was a draft),
-- skipped (nothing to push: no lines, or voided before anything was pushed). done_for is
-- the Venna status this row completes ('finalized' or 'void'; '' while a push is under
-- way). amount is the Stripe invoice's total in minor units of currency (cents for USD).
-- attempts counts failed tries since the last step done, last_error says why the last one
-- failed, next_attempt_at is when the next try may start (1970-01-01: any time).
CREATE TABLE IF NOT EXISTS stripe_invoice_sync (
    invoice_id String,
    workspace_id String,
    period_start DateTime('UTC'),
    invoice_version UInt64,
    state String,
    done_for String,
    stripe_customer_id String,
    stripe_invoice_id String,
    items_done UInt32,
    items_total UInt32,
    amount Int64,
    currency String,
    attempts UInt32,
    last_error String,
    next_attempt_at DateTime('UTC'),
    updated_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (workspace_id, invoice_id);
