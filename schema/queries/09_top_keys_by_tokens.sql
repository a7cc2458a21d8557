-- The keys that used the most tokens in the last 7 days, with their names (api_keys keeps
-- every version of a key: FINAL reads the latest).
SELECT
    workspace_id,
    api_key_id,
    key_name,
    tokens,
    requests
FROM (
    SELECT workspace_id, api_key_id, sum(total_tokens) AS tokens, sum(requests) AS requests
    FROM usage_hourly FINAL
    WHERE hour >= now() - INTERVAL 7 DAY
    GROUP BY workspace_id, api_key_id
) AS usage
ANY LEFT JOIN (
    SELECT key_id AS api_key_id, name AS key_name
    FROM api_keys FINAL
) AS keys USING (api_key_id)
ORDER BY tokens DESC
LIMIT 20
