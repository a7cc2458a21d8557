-- Requests and tokens per workspace over the last 7 whole days and today, with the
-- workspace's name, from the daily rollup (one row per workspace x day x model x key;
-- FINAL keeps each day's latest recomputation).
SELECT
    workspace_id,
    name,
    requests,
    input_tokens,
    output_tokens
FROM (
    SELECT workspace_id, sum(requests) AS requests, sum(prompt_tokens) AS input_tokens,
        sum(completion_tokens) AS output_tokens
    FROM usage_daily FINAL
    WHERE day >= toStartOfDay(now()) - INTERVAL 7 DAY
    GROUP BY workspace_id
) AS usage
ANY LEFT JOIN (
    SELECT workspace_id, name
    FROM workspaces FINAL
) AS names USING (workspace_id)
ORDER BY requests DESC
