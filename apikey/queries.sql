-- The statements package apikey sends to ClickHouse (see internal/sqlset).
-- Placeholders: {db} the database; {where} a condition with bound values (or nothing).

-- name: workspaces
SELECT workspace_id, name, created_at FROM {db}.workspaces FINAL ORDER BY workspace_id;

-- name: workspace_exists
-- Args: workspace_id.
SELECT count() FROM {db}.workspaces WHERE workspace_id = ?;

-- name: keys
-- Every key's latest version (FINAL), only the SHA-256 of its secret.
SELECT key_id, workspace_id, name, secret_sha256, created_at, revoked_at FROM {db}.api_keys FINAL {where} ORDER BY key_id;

-- name: insert_workspace
INSERT INTO {db}.workspaces (workspace_id, name, created_at, version);

-- name: insert_key
INSERT INTO {db}.api_keys (key_id, workspace_id, name, secret_sha256, created_at, revoked_at, version);
