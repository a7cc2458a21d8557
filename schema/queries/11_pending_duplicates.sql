-- Why every reader dedups: raw rows versus distinct events over the last 7 days. Each
-- duplicate is a redelivery (a retried produce, a batch redelivered after a crash) that
-- ReplacingMergeTree has not folded yet; merges run in the background, eventually.
SELECT
    count() AS raw_rows,
    uniqExact(event_id) AS events,
    raw_rows - events AS unmerged_duplicates
FROM usage_events
WHERE occurred_at >= now() - INTERVAL 7 DAY
