-- The statements package api sends to ClickHouse (see internal/sqlset).
-- /v1/usage sums a page per bucket x model x key x price segment from three sources over
-- disjoint time ranges: whole days (usage_daily) and whole hours (usage_hourly) the
-- aggregator has rolled up, read with FINAL (the latest recomputation of a window wins),
-- and the recent rest straight from raw events, deduplicated by event_id.
-- Placeholders: {db} the database; {width} the bucket width in seconds; {key} api_key_id
-- or '' (not grouped by key); {seg} the price-segment expression of the time column;
-- {cond} the time range. Bound values (?): the workspace, then the models and keys
-- filters when {cond} names them. One thread a query: a page's sources are small (one
-- workspace, a bounded range) and run at once, so threads within each would only
-- contend for the cores.

-- name: watermark
-- The aggregator's progress: raw events ingested before it are rolled up.
SELECT argMax(watermark, version) FROM {db}.aggregate_watermarks WHERE job = 'usage_hourly';

-- name: usage_daily
SELECT b, m, k, seg, sum(n), sum(p), sum(c), sum(o), sum(rt), sum(ap), sum(rp)
FROM (
    SELECT toUInt64(intDiv(toUInt32(day), {width}) * {width}) AS b, model AS m, {key} AS k, {seg} AS seg,
        requests AS n, prompt_tokens AS p, cached_tokens AS c, completion_tokens AS o, reasoning_tokens AS rt,
        accepted_prediction_tokens AS ap, rejected_prediction_tokens AS rp
    FROM {db}.usage_daily FINAL
    WHERE {cond}
)
GROUP BY b, m, k, seg
SETTINGS max_threads = 1;

-- name: usage_hourly
SELECT b, m, k, seg, sum(n), sum(p), sum(c), sum(o), sum(rt), sum(ap), sum(rp)
FROM (
    SELECT toUInt64(intDiv(toUInt32(hour), {width}) * {width}) AS b, model AS m, {key} AS k, {seg} AS seg,
        requests AS n, prompt_tokens AS p, cached_tokens AS c, completion_tokens AS o, reasoning_tokens AS rt,
        accepted_prediction_tokens AS ap, rejected_prediction_tokens AS rp
    FROM {db}.usage_hourly FINAL
    WHERE {cond}
)
GROUP BY b, m, k, seg
SETTINGS max_threads = 1;

-- name: usage_raw
-- Raw events, deduplicated by event_id (LIMIT 1 BY: merges fold duplicates only
-- eventually), billable (status ok) ones only.
SELECT b, m, k, seg, sum(n), sum(p), sum(c), sum(o), sum(rt), sum(ap), sum(rp)
FROM (
    SELECT toUInt64(intDiv(toUInt32(occurred_at), {width}) * {width}) AS b, model AS m, {key} AS k, {seg} AS seg,
        toUInt64(1) AS n, prompt_tokens AS p, cached_tokens AS c, completion_tokens AS o, reasoning_tokens AS rt,
        accepted_prediction_tokens AS ap, rejected_prediction_tokens AS rp
    FROM (
        SELECT event_id, occurred_at, model, api_key_id, prompt_tokens, cached_tokens, completion_tokens,
            reasoning_tokens, accepted_prediction_tokens, rejected_prediction_tokens
        FROM {db}.usage_events
        WHERE {cond} AND status = 'ok'
        LIMIT 1 BY event_id
    )
)
GROUP BY b, m, k, seg
SETTINGS max_threads = 1;
