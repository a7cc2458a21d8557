-- The statements package webhook sends to ClickHouse (see internal/sqlset).
-- Placeholders: {db} the database; {where} a condition with bound values; {since} Unix
-- seconds, {since_ns} Unix nanoseconds: where a scan for new facts starts; {now} Unix
-- seconds of the dispatcher's clock; {per_endpoint}, {limit} row counts.

-- name: insert_endpoint
INSERT INTO {db}.webhook_endpoints (endpoint_id, workspace_id, url, description, enabled_events, enabled, created_at,
    updated_at, version);

-- name: endpoints
-- Endpoints (each one's latest version) matching {where}, oldest first.
SELECT endpoint_id, workspace_id, url, description, enabled_events, enabled, created_at, updated_at
FROM {db}.webhook_endpoints FINAL
WHERE {where}
ORDER BY created_at, endpoint_id;

-- name: insert_secret
INSERT INTO {db}.webhook_secrets (endpoint_id, secret, created_at, expires_at, version);

-- name: secrets
-- The secrets of the endpoints {where} selects, newest first per endpoint.
SELECT endpoint_id, secret, created_at, expires_at
FROM {db}.webhook_secrets FINAL
WHERE {where}
ORDER BY endpoint_id, created_at DESC, secret;

-- name: read_watermark
-- Where the last scan for new facts started (1970 before the first scan).
SELECT argMax(watermark, version) FROM {db}.aggregate_watermarks WHERE job = 'webhook_events';

-- name: advance_watermark
-- Args: watermark (Unix seconds), version (a clock: the latest write wins).
INSERT INTO {db}.aggregate_watermarks (job, watermark, version) SELECT 'webhook_events', toDateTime(?, 'UTC'), ?;

-- name: changed_invoices
-- Invoice headers written at or after {since}: a header's version holds its write time in
-- nanoseconds below its status rank (invoice.headerVersion, 2^62).
SELECT invoice_id, workspace_id, status, computed_at, finalized_at, version
FROM {db}.invoices FINAL
WHERE intDiv(bitAnd(version, 4611686018427387903), 1000000000) >= {since}
ORDER BY workspace_id, invoice_id;

-- name: changed_alerts
-- Budget alerts raised at or after {since}.
SELECT alert_id, type, workspace_id, api_key_id, period_start, threshold_percent, budget_usd, spend_usd, hard_limit, created_at
FROM {db}.spend_alerts FINAL
WHERE created_at >= toDateTime({since}, 'UTC')
ORDER BY workspace_id, alert_id;

-- name: changed_grants
-- Credit grants written at or after {since_ns} (their version is the write time in
-- nanoseconds).
SELECT grant_id, workspace_id, amount_usd, effective_from, expires_at, priority, reason, created_at, voided, version
FROM {db}.credit_grants FINAL
WHERE version >= {since_ns}
ORDER BY workspace_id, grant_id;

-- name: recorded_events
-- Which of the event IDs given are recorded already. Args: the IDs (an array).
SELECT DISTINCT event_id FROM {db}.webhook_events WHERE has(?, event_id);

-- name: insert_events
INSERT INTO {db}.webhook_events (event_id, type, workspace_id, object_id, created_at, detected_at, payload, version);

-- name: insert_deliveries
INSERT INTO {db}.webhook_deliveries (delivery_id, event_id, endpoint_id, workspace_id, event_type, replay, created_at,
    status, attempts, next_attempt_at, last_attempt_at, last_status_code, last_error, claimed_by, claimed_until, version);

-- name: due_deliveries
-- Pending deliveries due at {now} and not claimed, of the endpoints not excluded (args:
-- endpoint IDs, then delivery IDs, arrays), oldest due first, at most {per_endpoint} of
-- each endpoint, so that the backlog of one endpoint never hides another's. FINAL reads only
-- the deliveries that have a pending row (the subquery reads two columns of every row, the
-- primary key finds those), so a round costs what is pending, not every delivery kept
-- (BenchmarkDueDeliveries).
SELECT delivery_id, event_id, endpoint_id, workspace_id, event_type, replay, created_at, status, attempts,
    next_attempt_at, last_attempt_at, last_status_code, last_error, claimed_by, claimed_until, version
FROM {db}.webhook_deliveries FINAL
WHERE delivery_id IN (SELECT delivery_id FROM {db}.webhook_deliveries WHERE status = 'pending')
    AND status = 'pending' AND next_attempt_at <= toDateTime({now}, 'UTC') AND claimed_until <= toDateTime({now}, 'UTC')
    AND NOT has(?, endpoint_id) AND NOT has(?, delivery_id)
ORDER BY next_attempt_at, created_at, delivery_id
LIMIT {per_endpoint} BY endpoint_id
LIMIT {limit};

-- name: deliveries
-- Deliveries (each one's latest version) matching {where}, newest first.
SELECT delivery_id, event_id, endpoint_id, workspace_id, event_type, replay, created_at, status, attempts,
    next_attempt_at, last_attempt_at, last_status_code, last_error, claimed_by, claimed_until, version
FROM {db}.webhook_deliveries FINAL
WHERE {where}
ORDER BY created_at DESC, delivery_id
LIMIT {limit};

-- name: payloads
-- The bodies of the events given (args: their IDs, an array).
SELECT event_id, payload FROM {db}.webhook_events FINAL WHERE has(?, event_id);

-- name: events
-- Events matching {where}, newest first.
SELECT event_id, type, workspace_id, created_at, payload
FROM {db}.webhook_events FINAL
WHERE {where}
ORDER BY created_at DESC, event_id
LIMIT {limit};

-- name: insert_attempt
INSERT INTO {db}.webhook_attempts (endpoint_id, delivery_id, attempt, event_id, event_type, workspace_id, url, started_at,
    duration_ms, status_code, error, response, outcome, next_attempt_at, dispatcher);

-- name: attempts
-- The logged attempts of the deliveries given (args: their IDs, an array), in order.
SELECT delivery_id, attempt, url, started_at, duration_ms, status_code, error, response, outcome, next_attempt_at, dispatcher
FROM {db}.webhook_attempts FINAL
WHERE has(?, delivery_id)
ORDER BY delivery_id, attempt, started_at, dispatcher;

-- name: deliveries_engine
-- The deliveries table's engine: Replicated… on a cluster (Shared… on ClickHouse Cloud),
-- where claims written on other servers reach this one by replication.
SELECT engine FROM system.tables WHERE database = ? AND name = 'webhook_deliveries';

-- name: sync_deliveries
-- Makes this server fetch what the other replicas wrote to the deliveries table (the
-- claims of the dispatchers connected to them) before the claims are read back. Only for a
-- replicated table (deliveries_engine): on one server ClickHouse refuses it.
SYSTEM SYNC REPLICA {db}.webhook_deliveries;
