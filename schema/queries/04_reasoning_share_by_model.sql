-- Share of completion tokens spent on hidden reasoning, per model, last 7 days.
-- completion_tokens includes reasoning_tokens (both are billed as output).
SELECT
    model,
    sum(reasoning_tokens) AS reasoning,
    sum(completion_tokens) AS completion,
    if(completion = 0, 0, round(reasoning / completion, 4)) AS reasoning_share
FROM usage_hourly FINAL
WHERE hour >= now() - INTERVAL 7 DAY
GROUP BY model
ORDER BY reasoning_share DESC, model
