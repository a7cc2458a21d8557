-- Plans and subscriptions. Plans are defined in the price file (versions, fee, commitment,
-- included usage, rate cards) and synced here for analysts with every price-book sync,
-- stamped with the sync's version like prices: the book in force is max(prices.version).

-- Which plan a workspace is on from effective_from (a whole UTC hour) until its next row;
-- plan_id '' is the default plan (the price book, no fee): a cancellation. The row of a
-- (workspace_id, effective_from) with the highest version stands.
CREATE TABLE IF NOT EXISTS subscriptions (
    workspace_id String,
    effective_from DateTime('UTC'),
    plan_id String,
    created_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (workspace_id, effective_from);

-- A plan's versions: monthly fee, minimum commitment and included usage, in the book's
-- currency, prorated by the hour of subscription.
CREATE TABLE IF NOT EXISTS plans (
    plan_id String,
    effective_from DateTime('UTC'),
    name String,
    fee Decimal(38, 12),
    commitment Decimal(38, 12),
    included_usage Decimal(38, 12),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (plan_id, effective_from);

-- A plan version's rate card: one row per model, token class and tier. pricing: per_unit
-- (tier 1, up_to 0), graduated or volume (tiers from 1; up_to 0 on the last, unbounded),
-- package (package_size tokens for package_price).
CREATE TABLE IF NOT EXISTS plan_rates (
    plan_id String,
    effective_from DateTime('UTC'),
    model String,
    token_class String,
    pricing String,
    tier UInt16,
    up_to UInt64,
    usd_per_million Decimal(38, 12),
    package_size UInt64,
    package_price Decimal(38, 12),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (plan_id, effective_from, model, token_class, tier);
