-- Billing: daily rollup, per-workspace price overrides, invoice lines with kinds.

-- Daily rollup per workspace x model x key, recomputed from usage_hourly for every day whose
-- hours were recomputed. version = 2^62 + the day's request count in the snapshot it was
-- computed from (as in usage_hourly since this migration): usage only grows, so the most
-- complete computation of a day always wins, whatever order replicas write in.
CREATE TABLE IF NOT EXISTS usage_daily (
    workspace_id String,
    day DateTime('UTC'),
    model String,
    api_key_id String,
    requests UInt64,
    prompt_tokens UInt64,
    cached_tokens UInt64,
    completion_tokens UInt64,
    reasoning_tokens UInt64,
    accepted_prediction_tokens UInt64,
    rejected_prediction_tokens UInt64,
    total_tokens UInt64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (workspace_id, day, model, api_key_id);

-- Per-workspace custom prices (the overrides section of the price file): USD per 1M tokens
-- of a model's token class for one workspace from effective_from on, instead of the price
-- book's. Each price-book sync stamps every row of prices, workspace_prices and
-- workspace_discounts with one version: the book in force is the rows whose version is
-- max(prices.version).
CREATE TABLE IF NOT EXISTS workspace_prices (
    workspace_id String,
    model String,
    token_class String,
    effective_from DateTime('UTC'),
    usd_per_million Decimal(38, 12),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (workspace_id, model, token_class, effective_from);

-- Per-workspace discounts: percent off usage from effective_from on (0 ends a discount).
CREATE TABLE IF NOT EXISTS workspace_discounts (
    workspace_id String,
    effective_from DateTime('UTC'),
    discount_percent Decimal(38, 12),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (workspace_id, effective_from);

-- Invoice lines with their kind and service period; supersedes invoice_lines (0001), which is
-- no longer written (ClickHouse 18.16 cannot add columns idempotently). Keyed, like it, by
-- the header version they belong to: a reader takes the lines whose version equals the
-- header's. kind: usage (the invoice's own period), adjustment (usage of an earlier
-- period billed after that period's invoice was finalized or voided), discount (quantity 0,
-- negative amount, discount_percent set). period_start is the invoice's period,
-- service_period_start/end the period whose usage the line bills.
CREATE TABLE IF NOT EXISTS invoice_items (
    invoice_id String,
    version UInt64,
    line_no UInt32,
    workspace_id String,
    period_start DateTime('UTC'),
    kind String,
    service_period_start DateTime('UTC'),
    service_period_end DateTime('UTC'),
    model String,
    token_class String,
    quantity UInt64,
    usd_per_million Decimal(38, 12),
    discount_percent Decimal(38, 12),
    amount Decimal(38, 12)
) ENGINE = ReplacingMergeTree(version)
ORDER BY (invoice_id, version, line_no);
