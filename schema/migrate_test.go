package schema_test

import (
	"context"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/schema"
)

// strings1 runs a query whose rows are one string each.
func strings1(t *testing.T, conn driver.Conn, q string, args ...any) []string {
	t.Helper()
	rows, err := conn.Query(t.Context(), q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatalf("scan %s: %v", q, err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return out
}

func TestMigrateCreatesTables(t *testing.T) {
	cfg, conn := testenv.ClickHouse(t)
	got := map[string]bool{}
	for _, name := range strings1(t, conn, "SELECT name FROM system.tables WHERE database = ?", cfg.Database) {
		got[name] = true
	}
	for _, want := range []string{"usage_events", "usage_hourly", "aggregate_watermarks", "prices", "invoices",
		"invoice_lines", "workspaces", "api_keys", "schema_migrations"} {
		t.Run(want, func(t *testing.T) {
			if !got[want] {
				t.Errorf("table %s.%s missing after Migrate; have %v", cfg.Database, want, got)
			}
		})
	}
}

func TestMigrateTwiceAppliesNothing(t *testing.T) {
	cfg, conn := testenv.ClickHouse(t)
	applied, err := schema.Migrate(t.Context(), conn, cfg.Database)
	if err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if len(applied) != 0 {
		t.Errorf("second Migrate applied %v, want nothing", applied)
	}
	migs, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, m := range migs {
		all = append(all, strconv.Itoa(m.Version))
	}
	versions := strings1(t, conn, "SELECT toString(version) FROM "+cfg.Database+".schema_migrations ORDER BY version")
	if !reflect.DeepEqual(versions, all) {
		t.Errorf("schema_migrations versions = %v, want every migration %v recorded once", versions, all)
	}
	names := strings1(t, conn, "SELECT name FROM "+cfg.Database+".schema_migrations WHERE version = 1")
	if !reflect.DeepEqual(names, []string{"0001_core"}) {
		t.Errorf("schema_migrations name of version 1 = %v, want [0001_core]", names)
	}
}

func TestMigrateNewDatabase(t *testing.T) {
	_, conn := testenv.ClickHouse(t)
	db := testenv.Name(t)
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db) })
	migs, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var want []int
	for _, m := range migs {
		want = append(want, m.Version)
	}
	applied, err := schema.Migrate(t.Context(), conn, db)
	if err != nil {
		t.Fatalf("Migrate into a database that does not exist yet: %v", err)
	}
	if !reflect.DeepEqual(applied, want) {
		t.Errorf("applied %v, want every migration %v", applied, want)
	}
}

// TestUsageEventsStoresEveryEventField guards the contract between the event and its
// table: a field without a column would be dropped on ingest.
func TestUsageEventsStoresEveryEventField(t *testing.T) {
	cfg, conn := testenv.ClickHouse(t)
	cols := map[string]bool{}
	for _, c := range strings1(t, conn, "SELECT name FROM system.columns WHERE database = ? AND table = 'usage_events'", cfg.Database) {
		cols[c] = true
	}
	typ := reflect.TypeFor[schema.UsageEvent]()
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		t.Run(name, func(t *testing.T) {
			if !cols[name] {
				t.Errorf("usage_events has no column %s", name)
			}
		})
	}
}

func TestMigrations(t *testing.T) {
	migs, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(migs) == 0 || migs[0].Version != 1 {
		t.Fatalf("migrations = %+v, want them to start at version 1", migs)
	}
	for i, m := range migs {
		t.Run(m.Name, func(t *testing.T) {
			if i > 0 && m.Version <= migs[i-1].Version {
				t.Errorf("version %d follows %d; versions must strictly ascend", m.Version, migs[i-1].Version)
			}
			if len(m.Statements) == 0 {
				t.Errorf("migration %s has no statements", m.Name)
			}
			for j, s := range m.Statements {
				if strings.TrimSpace(s) == "" {
					t.Errorf("statement %d is empty", j+1)
				}
				if strings.HasSuffix(strings.TrimSpace(s), ";") || strings.Contains(s, "\n--") {
					t.Errorf("statement %d keeps a semicolon or comment:\n%s", j+1, s)
				}
				if strings.HasPrefix(s, "CREATE TABLE") && !strings.HasPrefix(s, "CREATE TABLE IF NOT EXISTS") {
					t.Errorf("statement %d is not idempotent:\n%s", j+1, s)
				}
				if n := strings.Count(s, "CREATE "); n > 1 {
					t.Errorf("statement %d holds %d statements; the split missed a semicolon:\n%s", j+1, n, s)
				}
			}
		})
	}
}
