-- Spend per model per day over the last 30 days at price-book prices, each hour priced at
-- the price in force then (the latest effective_from at or before the hour). Workspaces'
-- own prices and discounts are not applied here: what a workspace owes is in invoices.
-- The book in force is the prices rows of the latest sync: version = max(version).
SELECT
    day,
    model,
    sum(tokens * usd_per_million) / 1000000 AS spend_usd
FROM (
    SELECT
        toDate(hour) AS day, hour, model, workspace_id, api_key_id, token_class, tokens,
        argMax(usd_per_million, effective_from) AS usd_per_million
    FROM (
        SELECT hour, model, workspace_id, api_key_id, c.1 AS token_class, c.2 AS tokens
        FROM usage_hourly FINAL
        ARRAY JOIN [('input', toUInt64(prompt_tokens - cached_tokens)),
                    ('cached_input', cached_tokens),
                    ('output', completion_tokens)] AS c
        WHERE hour >= toStartOfDay(now()) - INTERVAL 29 DAY
    ) AS usage
    ALL INNER JOIN (
        SELECT model, token_class, effective_from, usd_per_million
        FROM prices FINAL
        WHERE version = (SELECT max(version) FROM prices)
    ) AS book USING (model, token_class)
    WHERE effective_from <= hour
    GROUP BY day, hour, model, workspace_id, api_key_id, token_class, tokens
)
GROUP BY day, model
ORDER BY day, spend_usd DESC
