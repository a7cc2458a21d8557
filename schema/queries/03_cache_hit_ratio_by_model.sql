-- Share of prompt tokens served from the provider's cache, per model, last 7 days.
-- prompt_tokens includes cached_tokens, so the ratio is between 0 and 1.
SELECT
    model,
    sum(cached_tokens) AS cached,
    sum(prompt_tokens) AS prompt,
    if(prompt = 0, 0, round(cached / prompt, 4)) AS cache_hit_ratio
FROM usage_hourly FINAL
WHERE hour >= now() - INTERVAL 7 DAY
GROUP BY model
ORDER BY cache_hit_ratio DESC, model
