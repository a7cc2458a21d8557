-- The statements migrate.go sends to ClickHouse besides the migrations themselves
-- (migrations/*.sql, which Cluster.Statements lays out for one server or a cluster).
-- Placeholders: {db} the database, quoted; {on_cluster} " ON CLUSTER name" or nothing.

-- name: create_database
CREATE DATABASE IF NOT EXISTS {db}{on_cluster};

-- name: create_schema_migrations
-- The ledger of applied migrations, created like a migration's table (unqualified here).
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version;

-- name: applied_migrations
SELECT version FROM {db}.schema_migrations;

-- name: record_migration
INSERT INTO {db}.schema_migrations (version, name, applied_at);

-- name: tables
-- The database's tables and their engines, to check its layout. Args: database.
SELECT name, engine FROM system.tables WHERE database = ?;
