-- Raw usage events: one row per completion, as the gateway emitted it.
-- At-least-once delivery can insert an event more than once; duplicates share every
-- column of the sorting key (event_id decides the rest), so ReplacingMergeTree folds
-- them at merge time. Merges are eventual: every reader dedups by event_id itself
-- (LIMIT 1 BY event_id, or FINAL). See schema/README.md.
CREATE TABLE IF NOT EXISTS usage_events (
    event_id String,
    schema_version UInt8,
    occurred_at DateTime('UTC'),
    ingested_at DateTime('UTC'),
    workspace_id String,
    api_key_id String,
    model String,
    upstream String,
    upstream_model String,
    request_id String,
    status String,
    http_status UInt16,
    stream UInt8,
    estimated UInt8,
    latency_ms UInt32,
    prompt_tokens UInt64,
    cached_tokens UInt64,
    completion_tokens UInt64,
    reasoning_tokens UInt64,
    accepted_prediction_tokens UInt64,
    rejected_prediction_tokens UInt64,
    total_tokens UInt64,
    kafka_partition Int32,
    kafka_offset Int64
) ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (workspace_id, occurred_at, event_id);

-- Hourly rollup per workspace x model x key. Rows are whole recomputations of an hour
-- from deduplicated raw events; the highest version of a key wins (read with FINAL).
CREATE TABLE IF NOT EXISTS usage_hourly (
    workspace_id String,
    hour DateTime('UTC'),
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
PARTITION BY toYYYYMM(hour)
ORDER BY (workspace_id, hour, model, api_key_id);

-- Aggregator progress: the ingested_at up to which raw events were rolled up.
CREATE TABLE IF NOT EXISTS aggregate_watermarks (
    job String,
    watermark DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY job;

-- Price book: USD per 1M tokens of a token class, in force from effective_from.
-- token_class: input (uncached prompt), cached_input, output (completion incl. reasoning).
CREATE TABLE IF NOT EXISTS prices (
    model String,
    token_class String,
    effective_from DateTime('UTC'),
    usd_per_million Decimal(38, 12),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (model, token_class, effective_from);

-- Invoice headers; the row with the highest version is the invoice.
CREATE TABLE IF NOT EXISTS invoices (
    invoice_id String,
    workspace_id String,
    period_start DateTime('UTC'),
    period_end DateTime('UTC'),
    status String,
    currency String,
    subtotal Decimal(38, 12),
    total Decimal(38, 12),
    computed_at DateTime('UTC'),
    finalized_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (workspace_id, invoice_id);

-- Invoice lines, keyed by the header version they belong to: a reader takes the lines
-- whose version equals the header's, so a half-written recomputation is never visible.
CREATE TABLE IF NOT EXISTS invoice_lines (
    invoice_id String,
    version UInt64,
    line_no UInt32,
    workspace_id String,
    model String,
    token_class String,
    quantity UInt64,
    usd_per_million Decimal(38, 12),
    amount Decimal(38, 12)
) ENGINE = ReplacingMergeTree(version)
ORDER BY (invoice_id, version, line_no);

CREATE TABLE IF NOT EXISTS workspaces (
    workspace_id String,
    name String,
    created_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY workspace_id;

-- API keys: only the SHA-256 of the secret is stored. revoked_at = 0 means active.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id String,
    workspace_id String,
    name String,
    secret_sha256 String,
    created_at DateTime('UTC'),
    revoked_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY key_id;
