-- Webhook delivery health per endpoint over the last 7 days: deliveries by status (each
-- one's latest state: FINAL), the attempts they took, and the endpoint's URL. Pending
-- ones are being retried; failed ones were given up after the retry window (72 h); the
-- attempts themselves, with status codes and errors, are in webhook_attempts.
SELECT
    endpoint_id,
    url,
    enabled,
    succeeded,
    pending,
    failed,
    attempts
FROM (
    SELECT
        endpoint_id,
        countIf(status = 'succeeded') AS succeeded,
        countIf(status = 'pending') AS pending,
        countIf(status = 'failed') AS failed,
        sum(attempts) AS attempts
    FROM webhook_deliveries FINAL
    WHERE created_at >= now() - INTERVAL 7 DAY
    GROUP BY endpoint_id
) AS d
ALL LEFT JOIN (SELECT endpoint_id, url, enabled FROM webhook_endpoints FINAL) AS e USING (endpoint_id)
ORDER BY failed DESC, pending DESC, endpoint_id
