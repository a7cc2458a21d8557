-- Gateway latency (receive → upstream answer complete) per model, last 24 hours, served
-- completions only. quantile() is approximate (a sample of up to 8192 values);
-- quantileExact() is exact and costlier. (toFloat64: ClickHouse 18.16 answers quantile()
-- of an integer column as that integer type, truncating the interpolation; 24+ as Float64.)
SELECT
    model,
    count() AS requests,
    quantile(0.5)(toFloat64(latency_ms)) AS p50_ms,
    quantile(0.99)(toFloat64(latency_ms)) AS p99_ms,
    max(latency_ms) AS max_ms
FROM (
    SELECT event_id, model, latency_ms
    FROM usage_events
    WHERE occurred_at >= now() - INTERVAL 24 HOUR AND status = 'ok'
    LIMIT 1 BY event_id
)
GROUP BY model
ORDER BY p50_ms DESC
