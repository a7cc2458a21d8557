-- Prepaid credits: grants burned down by usage, and which workspaces are prepaid.

-- Credit grants: amount_usd a workspace may use from effective_from until expires_at
-- (1970-01-01: never), both on whole UTC hours. Invoices apply them as credit lines, month
-- by month, hour by hour of usage: among the grants in force when the usage happened, the
-- one expiring first, then the lowest priority number, then the oldest. voided = 1 stops a
-- grant from being applied from then on (what invoices already applied stays). The row of
-- a grant_id with the highest version is the grant.
CREATE TABLE IF NOT EXISTS credit_grants (
    grant_id String,
    workspace_id String,
    amount_usd Decimal(38, 12),
    effective_from DateTime('UTC'),
    expires_at DateTime('UTC'),
    priority UInt16,
    reason String,
    created_at DateTime('UTC'),
    voided UInt8,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (workspace_id, grant_id);

-- Billing modes, versioned like prices: prepaid = 1 from effective_from on makes gateways
-- refuse the workspace's completions (429 insufficient_quota) once its credits are used up.
CREATE TABLE IF NOT EXISTS billing_modes (
    workspace_id String,
    effective_from DateTime('UTC'),
    prepaid UInt8,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (workspace_id, effective_from);
