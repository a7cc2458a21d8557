-- The statements package aggregate sends to ClickHouse (see internal/sqlset).
-- Placeholders: {db} the database; {windows} a list of toDateTime(unix, 'UTC') window
-- starts; {lo}, {hi} Unix seconds bounding them; {base} the version base (2^62).

-- name: read_watermark
-- The ingested_at up to which raw events are rolled up (1970 before the first run).
SELECT argMax(watermark, version) FROM {db}.aggregate_watermarks WHERE job = ?;

-- name: touched_hours
-- The hours of events ingested at or after the watermark: the windows to recompute.
SELECT DISTINCT toStartOfHour(occurred_at) AS h FROM {db}.usage_events WHERE ingested_at >= ? ORDER BY h;

-- name: advance_watermark
-- Args: job, watermark (Unix seconds), version (a clock: the latest write wins).
INSERT INTO {db}.aggregate_watermarks (job, watermark, version) SELECT ?, toDateTime(?, 'UTC'), ?;

-- name: days_without_daily_rollup
-- Days with hourly rows but no daily row: rolled up before usage_daily existed (0003).
SELECT DISTINCT toStartOfDay(hour) AS d FROM {db}.usage_hourly WHERE d GLOBAL NOT IN (SELECT day FROM {db}.usage_daily) ORDER BY d;

-- name: recompute_hours
-- Rewrites the usage_hourly rows of the hours {windows} from raw events deduplicated by
-- event_id (LIMIT 1 BY: merges fold duplicates only eventually), billable (status ok)
-- ones only, per workspace x hour x model x key. Each row's version is {base} + its
-- hour's request count: the rows of one hour are gathered into an array beside that
-- count and spread out again, so the count in every row's version comes from the very
-- read that produced its sums.
INSERT INTO {db}.usage_hourly (workspace_id, hour, model, api_key_id, requests,
    prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
    accepted_prediction_tokens, rejected_prediction_tokens, total_tokens, version)
SELECT r.1, hour, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11, {base} + n
FROM (
    SELECT hour, sum(requests) AS n,
        groupArray((workspace_id, model, api_key_id, requests, p, c, o, rs, ap, rp, t)) AS grouped
    FROM (
        SELECT workspace_id, toStartOfHour(occurred_at) AS hour, model, api_key_id, count() AS requests,
            sum(prompt_tokens) AS p, sum(cached_tokens) AS c, sum(completion_tokens) AS o, sum(reasoning_tokens) AS rs,
            sum(accepted_prediction_tokens) AS ap, sum(rejected_prediction_tokens) AS rp, sum(total_tokens) AS t
        FROM (
            SELECT event_id, workspace_id, occurred_at, model, api_key_id, prompt_tokens, cached_tokens,
                completion_tokens, reasoning_tokens, accepted_prediction_tokens, rejected_prediction_tokens, total_tokens
            FROM {db}.usage_events
            WHERE occurred_at >= toDateTime({lo}, 'UTC') AND occurred_at < toDateTime({hi}, 'UTC')
                AND toStartOfHour(occurred_at) IN ({windows}) AND status = 'ok'
            LIMIT 1 BY event_id
        )
        GROUP BY workspace_id, hour, model, api_key_id
    )
    GROUP BY hour
)
ARRAY JOIN grouped AS r;

-- name: recompute_days
-- Rewrites the usage_daily rows of the days {windows} from their hourly rows (FINAL: the
-- winning version of each hour), per workspace x model x key, versioned like
-- recompute_hours with the day's request count.
INSERT INTO {db}.usage_daily (workspace_id, day, model, api_key_id, requests,
    prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
    accepted_prediction_tokens, rejected_prediction_tokens, total_tokens, version)
SELECT r.1, day, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11, {base} + n
FROM (
    SELECT day, sum(requests) AS n,
        groupArray((workspace_id, model, api_key_id, requests, p, c, o, rs, ap, rp, t)) AS grouped
    FROM (
        SELECT workspace_id, toStartOfDay(hour) AS day, model, api_key_id, sum(requests) AS requests,
            sum(prompt_tokens) AS p, sum(cached_tokens) AS c, sum(completion_tokens) AS o, sum(reasoning_tokens) AS rs,
            sum(accepted_prediction_tokens) AS ap, sum(rejected_prediction_tokens) AS rp, sum(total_tokens) AS t
        FROM {db}.usage_hourly FINAL
        WHERE hour >= toDateTime({lo}, 'UTC') AND hour < toDateTime({hi}, 'UTC') AND toStartOfDay(hour) IN ({windows})
        GROUP BY workspace_id, day, model, api_key_id
    )
    GROUP BY day
)
ARRAY JOIN grouped AS r;
