-- The statements package ingest sends to ClickHouse (see internal/sqlset).
-- Placeholders: {db} the database.

-- name: insert_events
-- A batch of usage events, column by column in this order (columns.go appends each
-- column's slice by position; its init checks that the two lists agree).
INSERT INTO {db}.usage_events (event_id, schema_version, occurred_at, ingested_at, workspace_id, api_key_id, model,
    upstream, upstream_model, request_id, status, http_status, stream, estimated, latency_ms,
    prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, accepted_prediction_tokens,
    rejected_prediction_tokens, total_tokens, kafka_partition, kafka_offset);
