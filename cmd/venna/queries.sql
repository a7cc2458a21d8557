-- The statements the venna command itself sends to ClickHouse (see internal/sqlset); the
-- roles send their packages'.
-- Placeholders: {db} the database; {workspaces} a list of quoted workspace IDs.

-- name: count_events
-- The demo's wait for ingest: distinct events of the demo's workspaces in ClickHouse.
SELECT count() FROM (SELECT event_id FROM {db}.usage_events WHERE workspace_id IN ({workspaces}) LIMIT 1 BY event_id);
