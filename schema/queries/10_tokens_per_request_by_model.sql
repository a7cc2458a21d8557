-- Average prompt and completion size per request, per model, last 7 days.
SELECT
    model,
    sum(requests) AS requests,
    round(sum(prompt_tokens) / requests, 1) AS avg_prompt_tokens,
    round(sum(completion_tokens) / requests, 1) AS avg_completion_tokens
FROM usage_hourly FINAL
WHERE hour >= now() - INTERVAL 7 DAY
GROUP BY model
ORDER BY requests DESC
