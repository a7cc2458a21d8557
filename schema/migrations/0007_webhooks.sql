-- Signed webhooks: endpoints and their secrets, the events detected, and the delivery of
-- each event to each endpoint, every attempt logged (package webhook, README "Webhooks").

-- Endpoints, per workspace or global (workspace_id ''), versioned like keys: the row of an
-- endpoint_id with the highest version (a clock: the latest write wins) is the endpoint.
-- enabled_events lists the event types it receives, ['*'] for all of them. A disabled
-- endpoint gets no new deliveries and its pending ones wait until it is enabled again.
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    endpoint_id String,
    workspace_id String,
    url String,
    description String,
    enabled_events Array(String),
    enabled UInt8,
    created_at DateTime('UTC'),
    updated_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY endpoint_id;

-- The signing secrets of the endpoints, apart from the endpoints so that no change of an
-- endpoint can bring back a rotated secret. HMAC needs the secret itself, so it is stored
-- as is (it is never logged, and the API shows it only when it is created or rotated). A
-- delivery is signed with every secret of its endpoint not expired (expires_at
-- 1970-01-01: never); a rotation adds a secret and gives the older ones an expires_at.
-- The row of (endpoint_id, secret) with the highest version (a clock) is the secret.
CREATE TABLE IF NOT EXISTS webhook_secrets (
    endpoint_id String,
    secret String,
    created_at DateTime('UTC'),
    expires_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (endpoint_id, secret);

-- Events: one row per fact (an invoice created, finalized or voided, a budget alert, a
-- credit grant created or voided, a prepaid balance used up). event_id is a hash of the
-- event's type and of what the fact is about, so a fact detected twice (overlapping scans,
-- two aggregators) is one event. payload is the JSON body delivered, byte for byte, on
-- every attempt. created_at is when the fact happened (the payload's created);
-- version = 2^63 minus the detection time in nanoseconds: the earliest detection is kept.
CREATE TABLE IF NOT EXISTS webhook_events (
    event_id String,
    type String,
    workspace_id String,
    object_id String,
    created_at DateTime('UTC'),
    detected_at DateTime('UTC'),
    payload String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY event_id;

-- Deliveries: the state of one event's delivery to one endpoint (delivery_id: a hash of
-- both, or of both and the request time for a replay). status: pending (next attempt at
-- next_attempt_at), succeeded, failed (retried for the retry window, then given up).
-- Every write is a new version: version = seq * 2^53 + phase * 2^52 + a time in
-- microseconds, seq counting the writes since the delivery was created, so that a later
-- step always wins; a dispatcher claims a delivery (phase 1, claimed_by, claimed_until)
-- before sending it, the earliest claim of a step winning (its time is stored as 2^52 - 1
-- minus the claim time), and records the outcome at the next step (webhook/dispatch.go).
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id String,
    event_id String,
    endpoint_id String,
    workspace_id String,
    event_type String,
    replay UInt8,
    created_at DateTime('UTC'),
    status String,
    attempts UInt32,
    next_attempt_at DateTime('UTC'),
    last_attempt_at DateTime('UTC'),
    last_status_code UInt16,
    last_error String,
    claimed_by String,
    claimed_until DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY delivery_id;

-- The delivery log: one row per attempt, never rewritten. status_code 0: no HTTP answer
-- (error says why: timeout, refused, ...). outcome: succeeded, retrying (next_attempt_at
-- set) or failed (given up). response is the start of the answer's body. dispatcher names
-- the process that sent it. Two rows of one attempt number mean two processes sent it.
CREATE TABLE IF NOT EXISTS webhook_attempts (
    endpoint_id String,
    delivery_id String,
    attempt UInt32,
    event_id String,
    event_type String,
    workspace_id String,
    url String,
    started_at DateTime('UTC'),
    duration_ms UInt32,
    status_code UInt16,
    error String,
    response String,
    outcome String,
    next_attempt_at DateTime('UTC'),
    dispatcher String
) ENGINE = ReplacingMergeTree()
ORDER BY (endpoint_id, delivery_id, attempt, started_at, dispatcher);
