package schema

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/sqlset"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one ordered, idempotent DDL file from schema/migrations.
type Migration struct {
	Version    int
	Name       string
	Statements []string
}

// Migrations returns the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	sort.Strings(names)
	out := make([]Migration, 0, len(names))
	for _, path := range names {
		base := strings.TrimPrefix(path, "migrations/")
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: name must start with NNNN_", base)
		}
		body, err := migrationFiles.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", base, err)
		}
		out = append(out, Migration{Version: v, Name: strings.TrimSuffix(base, ".sql"), Statements: splitStatements(string(body))})
	}
	return out, nil
}

// splitStatements cuts a file at semicolons that end a line, dropping comment lines.
func splitStatements(body string) []string {
	var stmts []string
	var cur strings.Builder
	for _, line := range strings.Split(body, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(trimmed, ";") {
			stmts = append(stmts, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		stmts = append(stmts, s)
	}
	return stmts
}

//go:embed migrate.sql
var migrateFile string

// Queries is every statement this package sends to ClickHouse besides the migrations
// (migrate.sql).
var Queries = sqlset.MustParse("schema", migrateFile)

var (
	createDatabaseSQL     = Queries.Get("create_database")
	createMigrationsTable = Queries.Get("create_schema_migrations")
	appliedSQL            = Queries.Get("applied_migrations")
	recordMigrationSQL    = Queries.Get("record_migration")
	tablesSQL             = Queries.Get("tables")
)

// Migrate creates database if needed and applies, in order, every migration not yet
// recorded in its schema_migrations table. Each statement is idempotent (IF NOT EXISTS),
// so a crash halfway or two concurrent runs converge on the same schema.
// It returns the versions it applied.
func Migrate(ctx context.Context, conn driver.Conn, database string) ([]int, error) {
	return MigrateCluster(ctx, conn, database, Cluster{})
}

// MigrateCluster is Migrate on a ClickHouse cluster: every table is created as
// cluster.Statements transforms it (the zero Cluster is one server, as Migrate). It refuses
// a database whose existing tables were created for another layout, e.g. a single-server
// database migrated with a cluster, before it runs any DDL.
func MigrateCluster(ctx context.Context, conn driver.Conn, database string, cluster Cluster) ([]int, error) {
	if err := cluster.Validate(); err != nil {
		return nil, err
	}
	migs, err := Migrations()
	if err != nil {
		return nil, err
	}
	// Transform everything first: a migration the cluster layout cannot express fails
	// before any DDL has run.
	plan := make([][]string, len(migs))
	for i, m := range migs {
		for _, stmt := range m.Statements {
			out, err := cluster.Statements(database, stmt)
			if err != nil {
				return nil, fmt.Errorf("migration %s: %w", m.Name, err)
			}
			plan[i] = append(plan[i], out...)
		}
	}
	ledger, err := cluster.Statements(database, createMigrationsTable)
	if err != nil {
		return nil, fmt.Errorf("schema_migrations: %w", err)
	}
	if err := cluster.checkLayout(ctx, conn, database); err != nil {
		return nil, err
	}

	if err := conn.Exec(ctx, cluster.createDatabase(database)); err != nil {
		return nil, fmt.Errorf("create database %s: %w", database, err)
	}
	for _, stmt := range ledger {
		if err := conn.Exec(ctx, stmt); err != nil {
			return nil, fmt.Errorf("create schema_migrations: %w", err)
		}
	}
	done := map[int]bool{}
	rows, err := conn.Query(ctx, sqlset.Fill(appliedSQL, "db", quoteIdent(database)))
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, fmt.Errorf("scan schema_migrations: %w", err)
		}
		done[int(v)] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}

	var applied []int
	for i, m := range migs {
		if done[m.Version] {
			continue
		}
		for j, stmt := range plan[i] {
			if err := conn.Exec(ctx, stmt); err != nil {
				return applied, fmt.Errorf("migration %s statement %d: %w", m.Name, j+1, err)
			}
		}
		if err := chdb.Insert(ctx, conn, sqlset.Fill(recordMigrationSQL, "db", quoteIdent(database)),
			[][]any{{uint32(m.Version), m.Name, time.Now().UTC()}}); err != nil {
			return applied, fmt.Errorf("record migration %s: %w", m.Name, err)
		}
		applied = append(applied, m.Version)
	}
	if err := cluster.checkLayout(ctx, conn, database); err != nil {
		return applied, err
	}
	return applied, nil
}

// checkLayout verifies that the tables database already holds are laid out as this
// Cluster creates them: IF NOT EXISTS would otherwise keep a single-server table where a
// cluster wants a Distributed one (or the reverse) and go on adding tables of the other
// layout beside it.
func (c Cluster) checkLayout(ctx context.Context, conn driver.Conn, database string) error {
	rows, err := conn.Query(ctx, tablesSQL, database)
	if err != nil {
		return fmt.Errorf("read tables of %s: %w", database, err)
	}
	engines := map[string]string{}
	for rows.Next() {
		var name, engine string
		if err := rows.Scan(&name, &engine); err != nil {
			rows.Close()
			return fmt.Errorf("scan tables of %s: %w", database, err)
		}
		engines[name] = engine
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read tables of %s: %w", database, err)
	}
	layout := "one server (VENNA_CLICKHOUSE_CLUSTER empty)"
	if c.Name != "" {
		layout = fmt.Sprintf("cluster %s (replicated: %t)", c.Name, c.Replicated)
	}
	for table, key := range placements {
		engine, ok := engines[table]
		if !ok {
			continue
		}
		want := c.Name != "" && key != onEveryServer // Distributed
		wrong := (engine == "Distributed") != want
		if !want && !wrong && c.Name != "" {
			wrong = strings.HasPrefix(engine, "Replicated") != c.Replicated
		}
		if local, ok := engines[table+"_local"]; want && !wrong && ok {
			wrong, engine = strings.HasPrefix(local, "Replicated") != c.Replicated, engine+" over "+local
		}
		if wrong {
			return fmt.Errorf("database %s: table %s is %s, which is not how %s lays it out: "+
				"a database keeps the layout it was created with (see deploy/README.md to move to a cluster)", database, table, engine, layout)
		}
	}
	return nil
}

// qualify prefixes the table a CREATE TABLE statement names with the database, so the
// migrations never depend on the connection's default database.
func qualify(stmt, database string) string {
	const p = "CREATE TABLE IF NOT EXISTS "
	if i := strings.Index(stmt, p); i >= 0 {
		return stmt[:i+len(p)] + quoteIdent(database) + "." + stmt[i+len(p):]
	}
	return stmt
}

func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }
