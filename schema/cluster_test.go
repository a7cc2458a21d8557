package schema_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/venna/metering/aggregate"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/schema"
)

// shardedTables are the tables a cluster splits over its shards, by workspace; every other
// table is kept whole on every server.
var shardedTables = map[string]string{
	"usage_events": "cityHash64(workspace_id)",
	"usage_hourly": "cityHash64(workspace_id)",
	"usage_daily":  "cityHash64(workspace_id)",
}

var createRe = regexp.MustCompile(`(?s)^CREATE TABLE IF NOT EXISTS (\w+) (\(.*\))\s*ENGINE = (\w+)\((.*?)\)\s*(.*)$`)

// migrationTable is one CREATE TABLE of the embedded migrations, cut into its parts the
// way a reader of the file sees them.
type migrationTable struct {
	migration, stmt                     string
	name, columns, engine, args, clause string
}

func migrationTables(t *testing.T) []migrationTable {
	t.Helper()
	migs, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var out []migrationTable
	for _, m := range migs {
		for _, s := range m.Statements {
			p := createRe.FindStringSubmatch(strings.TrimSpace(s))
			if p == nil {
				t.Fatalf("%s: statement is not a CREATE TABLE IF NOT EXISTS … ENGINE = X(…) the test can read:\n%s", m.Name, s)
			}
			out = append(out, migrationTable{m.Name, s, p[1], p[2], p[3], p[4], p[5]})
		}
	}
	return out
}

// balanced reports whether s's parentheses and quotes pair up.
func balanced(s string) bool {
	depth := 0
	var quote rune
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			escaped = false
		case quote != 0 && r == '\\':
			escaped = true
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
		case r == '\'' || r == '`':
			quote = r
		case r == '(':
			depth++
		case r == ')':
			depth--
			if depth < 0 {
				return false
			}
		}
	}
	return depth == 0 && quote == 0
}

// TestClusterStatements checks the cluster transform of every embedded migration: each
// table becomes a sharded <t>_local with the Replicated variant of its engine plus a
// Distributed <t> over it, or one replicated table on every server, all ON CLUSTER in
// replicated mode; columns, ORDER BY and partitioning carried over unchanged.
func TestClusterStatements(t *testing.T) {
	tables := migrationTables(t)
	seen := map[string]bool{}
	for _, mode := range []schema.Cluster{{Name: "prod", Replicated: true}, {Name: "prod"}} {
		for _, tb := range tables {
			seen[tb.name] = true
			t.Run(fmt.Sprintf("%s/%s/replicated=%t", tb.migration, tb.name, mode.Replicated), func(t *testing.T) {
				out, err := mode.Statements("venna", tb.stmt)
				if err != nil {
					t.Fatalf("Statements: %v", err)
				}
				for _, s := range out {
					switch {
					case !strings.HasPrefix(s, "CREATE TABLE IF NOT EXISTS `venna`.`"):
						t.Errorf("not an idempotent CREATE of a qualified table:\n%s", s)
					case strings.Count(s, "CREATE ") != 1 || strings.Contains(s, ";"):
						t.Errorf("not exactly one statement:\n%s", s)
					case !balanced(s):
						t.Errorf("unbalanced parentheses or quotes:\n%s", s)
					case strings.Contains(s, " ON CLUSTER `prod` ") != mode.Replicated:
						t.Errorf("ON CLUSTER `prod` present = %t, want %t (replicated mode only):\n%s", !mode.Replicated, mode.Replicated, s)
					case !strings.Contains(s, tb.columns):
						t.Errorf("the column list of the migration is not carried over:\n%s", s)
					}
				}
				engine := func(path, replica string) string {
					if !mode.Replicated {
						return "ENGINE = " + tb.engine + "(" + tb.args + ")"
					}
					args := "'" + path + "', '" + replica + "'"
					if tb.args != "" {
						args += ", " + tb.args
					}
					return "ENGINE = Replicated" + tb.engine + "(" + args + ")"
				}
				onCluster := ""
				if mode.Replicated {
					onCluster = " ON CLUSTER `prod`"
				}
				key, sharded := shardedTables[tb.name]
				if !sharded {
					if len(out) != 1 {
						t.Fatalf("%d statements, want one table on every server:\n%s", len(out), strings.Join(out, "\n\n"))
					}
					want := "CREATE TABLE IF NOT EXISTS `venna`.`" + tb.name + "`" + onCluster + " " + tb.columns + "\n" +
						engine("/clickhouse/tables/all/venna/"+tb.name, "{shard}_{replica}") + "\n" + tb.clause
					if mode.Replicated {
						// A crash may leave a small table's only part unknown to Keeper.
						want += "\nSETTINGS replicated_max_ratio_of_wrong_parts = 1"
					}
					if out[0] != want {
						t.Errorf("got\n%s\nwant\n%s", out[0], want)
					}
					return
				}
				if len(out) != 2 {
					t.Fatalf("%d statements, want %s_local and a Distributed %s:\n%s", len(out), tb.name, tb.name, strings.Join(out, "\n\n"))
				}
				local := "CREATE TABLE IF NOT EXISTS `venna`.`" + tb.name + "_local`" + onCluster + " " + tb.columns + "\n" +
					engine("/clickhouse/tables/{shard}/venna/"+tb.name, "{replica}") + "\n" + tb.clause
				dist := "CREATE TABLE IF NOT EXISTS `venna`.`" + tb.name + "`" + onCluster + " " + tb.columns + "\n" +
					"ENGINE = Distributed('prod', 'venna', '" + tb.name + "_local', " + key + ")"
				if out[0] != local {
					t.Errorf("local table: got\n%s\nwant\n%s", out[0], local)
				}
				if out[1] != dist {
					t.Errorf("Distributed table: got\n%s\nwant\n%s", out[1], dist)
				}
				// Rows ReplacingMergeTree folds share the whole sorting key: sharding by its
				// first column sends them to one shard, where merges and FINAL meet them.
				order := regexp.MustCompile(`ORDER BY \(?(\w+)`).FindStringSubmatch(tb.clause)
				if order == nil || order[1] != "workspace_id" {
					t.Errorf("ORDER BY of %s = %v does not start with workspace_id, the sharding key's column", tb.name, order)
				}
			})
		}
	}
	for name := range shardedTables {
		if !seen[name] {
			t.Errorf("no migration creates %s, which the cluster layout shards", name)
		}
	}
}

func TestClusterStatementsOneServer(t *testing.T) {
	for _, tb := range migrationTables(t) {
		out, err := schema.Cluster{}.Statements("venna", tb.stmt)
		if err != nil {
			t.Fatal(err)
		}
		want := strings.Replace(tb.stmt, "CREATE TABLE IF NOT EXISTS ", "CREATE TABLE IF NOT EXISTS `venna`.", 1)
		if !reflect.DeepEqual(out, []string{want}) {
			t.Errorf("%s: one server: got %q, want the migration's statement qualified, %q", tb.name, out, want)
		}
	}
}

func TestClusterStatementsRefuse(t *testing.T) {
	prod := schema.Cluster{Name: "prod", Replicated: true}
	cases := []struct {
		name    string
		cluster schema.Cluster
		db      string
		stmt    string
	}{
		{"alter", prod, "venna", "ALTER TABLE usage_events ADD COLUMN x UInt8"},
		{"view", prod, "venna", "CREATE MATERIALIZED VIEW IF NOT EXISTS v ENGINE = MergeTree() ORDER BY a AS SELECT 1 AS a"},
		{"not a MergeTree", prod, "venna", "CREATE TABLE IF NOT EXISTS usage_events (a UInt8) ENGINE = Log"},
		{"already replicated", prod, "venna", "CREATE TABLE IF NOT EXISTS usage_events (a UInt8) ENGINE = ReplicatedMergeTree('/p', 'r') ORDER BY a"},
		{"old MergeTree syntax", prod, "venna", "CREATE TABLE IF NOT EXISTS usage_events (d Date) ENGINE = MergeTree(d, (d), 8192)"},
		{"qualified", prod, "venna", "CREATE TABLE IF NOT EXISTS venna.usage_events (a UInt8) ENGINE = MergeTree() ORDER BY a"},
		{"no placement", prod, "venna", "CREATE TABLE IF NOT EXISTS usage_monthly (a UInt8) ENGINE = MergeTree() ORDER BY a"},
		{"bad cluster name", schema.Cluster{Name: "prod cluster"}, "venna", "CREATE TABLE IF NOT EXISTS prices (a UInt8) ENGINE = MergeTree() ORDER BY a"},
		{"replicated without a name", schema.Cluster{Replicated: true}, "venna", "CREATE TABLE IF NOT EXISTS prices (a UInt8) ENGINE = MergeTree() ORDER BY a"},
		{"database unsafe in a Keeper path", prod, "ven'na", "CREATE TABLE IF NOT EXISTS prices (a UInt8) ENGINE = MergeTree() ORDER BY a"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if out, err := c.cluster.Statements(c.db, c.stmt); err == nil {
				t.Errorf("accepted, gave:\n%s", strings.Join(out, "\n"))
			}
		})
	}
}

// testCluster is the one-shard, one-replica cluster of the test server itself that
// scripts/services.sh defines, with the {shard} and {replica} macros.
func testCluster(t *testing.T, conn driver.Conn) string {
	t.Helper()
	name := os.Getenv("VENNA_TEST_CLICKHOUSE_CLUSTER")
	if name == "" {
		name = "venna_test_cluster"
	}
	const hint = "(scripts/services.sh defines it in the server's config: restart the server with it, or name another cluster in VENNA_TEST_CLICKHOUSE_CLUSTER)"
	if got := strings1(t, conn, "SELECT toString(count()) FROM system.clusters WHERE cluster = ?", name); got[0] == "0" {
		t.Fatalf("the server has no cluster %s %s", name, hint)
	}
	if got := strings1(t, conn, "SELECT macro FROM system.macros WHERE macro IN ('shard', 'replica') ORDER BY macro"); !slices.Equal(got, []string{"replica", "shard"}) {
		t.Fatalf("the server defines macros %v, want replica and shard %s", got, hint)
	}
	return name
}

// openCluster connects to the test server with the settings a cluster's venna user gets
// (deploy/clickhouse/cluster): synchronous Distributed inserts, so an insert is on its
// shard when it returns; and no shortcut to the local replica, so that inserts and reads
// really go through the Distributed engine over the network, as they do on a cluster.
func openCluster(t *testing.T) driver.Conn {
	t.Helper()
	user := os.Getenv("VENNA_CLICKHOUSE_USER")
	if user == "" {
		user = "default"
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr: []string{testenv.ClickHouseAddr(t)},
		Auth: clickhouse.Auth{Database: "default", Username: user, Password: os.Getenv("VENNA_CLICKHOUSE_PASSWORD")},
		Settings: clickhouse.Settings{
			"insert_distributed_sync":  1,
			"prefer_localhost_replica": 0,
		},
		DialTimeout: 5 * time.Second,
		ReadTimeout: 60 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Ping(t.Context()); err != nil {
		t.Fatalf("clickhouse: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func newDatabase(t *testing.T, conn driver.Conn) string {
	t.Helper()
	db := testenv.Name(t)
	t.Cleanup(func() {
		if os.Getenv("VENNA_TEST_KEEP") == "" {
			conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		}
	})
	return db
}

// testEvent is one row of usage_events; copies of an event differ only where a
// redelivery differs (ingested_at, Kafka offset).
type testEvent struct {
	id, ws, key, model, status    string
	at                            time.Time
	prompt, cached, completion    uint64
	reasoning, copies, offsetBase int
}

func insertEvents(t *testing.T, conn driver.Conn, db string, evs []testEvent) int {
	t.Helper()
	cols := []string{"event_id", "schema_version", "occurred_at", "ingested_at", "workspace_id", "api_key_id", "model",
		"upstream", "upstream_model", "request_id", "status", "http_status", "stream", "estimated", "latency_ms",
		"prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens", "accepted_prediction_tokens",
		"rejected_prediction_tokens", "total_tokens", "kafka_partition", "kafka_offset"}
	var rows [][]any
	ingested := time.Now().UTC().Add(-10 * time.Minute).Truncate(time.Second)
	for i, e := range evs {
		for c := range max(e.copies, 1) {
			rows = append(rows, []any{e.id, uint8(1), e.at, ingested.Add(time.Duration(c) * time.Second), e.ws, e.key, e.model,
				"sim", "sim-large", "req_" + e.id, e.status, uint16(200), uint8(0), uint8(0), uint32(100),
				e.prompt, e.cached, e.completion, uint64(e.reasoning), uint64(0), uint64(0), e.prompt + e.completion,
				int32(i % 4), int64(c*1000 + i)})
		}
	}
	if err := chdb.Insert(t.Context(), conn, chdb.InsertInto(db+".usage_events", cols), rows); err != nil {
		t.Fatalf("insert into the Distributed usage_events: %v", err)
	}
	return len(rows)
}

type usageSums struct{ requests, prompt, cached, completion uint64 }

func sumsByWorkspace(t *testing.T, conn driver.Conn, q string) map[string]usageSums {
	t.Helper()
	rows, err := conn.Query(t.Context(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	out := map[string]usageSums{}
	for rows.Next() {
		var ws string
		var s usageSums
		if err := rows.Scan(&ws, &s.requests, &s.prompt, &s.cached, &s.completion); err != nil {
			t.Fatal(err)
		}
		out[ws] = s
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestClusterMigrateDistributed proves the Distributed layer on the real server: the
// schema migrated onto a one-shard cluster without replication (this server has no
// Keeper), events inserted through the Distributed usage_events with duplicates, the
// aggregator's own queries run over it, and usage_hourly and usage_daily read back
// deduplicated through their Distributed tables.
func TestClusterMigrateDistributed(t *testing.T) {
	testenv.SkipOnHarness(t, "cluster (remote_servers) and no native port for a Distributed table to reach")
	conn := openCluster(t)
	cluster := schema.Cluster{Name: testCluster(t, conn)}
	db := newDatabase(t, conn)

	migs, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var all []int
	for _, m := range migs {
		all = append(all, m.Version)
	}
	applied, err := schema.MigrateCluster(t.Context(), conn, db, cluster)
	if err != nil {
		t.Fatalf("MigrateCluster: %v", err)
	}
	if !reflect.DeepEqual(applied, all) {
		t.Errorf("applied %v, want every migration %v", applied, all)
	}

	t.Run("layout", func(t *testing.T) {
		engines := map[string]string{}
		for _, s := range strings1(t, conn, "SELECT concat(name, '=', engine) FROM system.tables WHERE database = ?", db) {
			name, engine, _ := strings.Cut(s, "=")
			engines[name] = engine
		}
		for _, tb := range append(migrationTables(t), migrationTable{name: "schema_migrations"}) {
			if _, sharded := shardedTables[tb.name]; sharded {
				if engines[tb.name] != "Distributed" || engines[tb.name+"_local"] != "ReplacingMergeTree" {
					t.Errorf("%s is %q over %s_local %q, want Distributed over ReplacingMergeTree", tb.name, engines[tb.name], tb.name, engines[tb.name+"_local"])
				}
			} else if e, ok := engines[tb.name+"_local"]; ok || engines[tb.name] != "ReplacingMergeTree" {
				t.Errorf("%s is %q (a %s_local: %q), want one ReplacingMergeTree table", tb.name, engines[tb.name], tb.name, e)
			}
		}
	})

	t.Run("rerun applies nothing", func(t *testing.T) {
		applied, err := schema.MigrateCluster(t.Context(), conn, db, cluster)
		if err != nil || len(applied) != 0 {
			t.Errorf("second MigrateCluster = %v, %v; want nothing applied", applied, err)
		}
	})

	t.Run("layouts do not mix", func(t *testing.T) {
		if _, err := schema.Migrate(t.Context(), conn, db); err == nil {
			t.Error("single-server Migrate of a cluster database succeeded")
		}
		single, singleConn := testenv.ClickHouse(t)
		if _, err := schema.MigrateCluster(t.Context(), singleConn, single.Database, cluster); err == nil {
			t.Error("MigrateCluster of a single-server database succeeded")
		}
		if _, err := schema.MigrateCluster(t.Context(), conn, db, schema.Cluster{Name: cluster.Name, Replicated: true}); err == nil {
			t.Error("replicated MigrateCluster of an unreplicated cluster database succeeded")
		}
	})

	hour := time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)
	evs := []testEvent{
		{id: "e1", ws: "ws_a", key: "k1", model: "venna-1", status: "ok", at: hour.Add(5 * time.Minute), prompt: 100, cached: 40, completion: 10, copies: 3},
		{id: "e2", ws: "ws_a", key: "k1", model: "venna-1", status: "ok", at: hour.Add(6 * time.Minute), prompt: 200, cached: 0, completion: 20, copies: 1},
		{id: "e3", ws: "ws_a", key: "k2", model: "venna-1-mini", status: "ok", at: hour.Add(70 * time.Minute), prompt: 50, cached: 5, completion: 5, copies: 2},
		{id: "e4", ws: "ws_a", key: "k1", model: "venna-1", status: "upstream_error", at: hour.Add(7 * time.Minute), copies: 2},
		{id: "e5", ws: "ws_b", key: "k3", model: "venna-1", status: "ok", at: hour.Add(8 * time.Minute), prompt: 1000, cached: 500, completion: 100, copies: 2},
		{id: "e6", ws: "ws_b", key: "k3", model: "venna-1", status: "ok", at: hour.AddDate(0, 0, 1), prompt: 7, cached: 0, completion: 3, copies: 1},
	}
	inserted := insertEvents(t, conn, db, evs)
	want := map[string]usageSums{
		"ws_a": {requests: 3, prompt: 350, cached: 45, completion: 35},
		"ws_b": {requests: 2, prompt: 1007, cached: 500, completion: 103},
	}

	t.Run("inserts reach the shard", func(t *testing.T) {
		got := strings1(t, conn, "SELECT toString(count()) FROM "+db+".usage_events_local")
		if got[0] != fmt.Sprint(inserted) {
			t.Errorf("usage_events_local holds %s rows, want the %d inserted through the Distributed table", got[0], inserted)
		}
	})

	agg, err := aggregate.New(aggregate.Config{Database: db}, conn)
	if err != nil {
		t.Fatal(err)
	}
	const hourlySQL = `SELECT workspace_id, sum(requests), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens)
        FROM %s.usage_hourly FINAL GROUP BY workspace_id`
	const dailySQL = `SELECT workspace_id, sum(requests), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens)
        FROM %s.usage_daily FINAL GROUP BY workspace_id`
	for run := 1; run <= 2; run++ { // a rerun writes new versions of the same rows: FINAL keeps one
		t.Run(fmt.Sprintf("aggregate run %d", run), func(t *testing.T) {
			res, err := agg.Run(t.Context())
			if err != nil {
				t.Fatalf("aggregate over Distributed tables: %v", err)
			}
			if run == 1 && len(res.Hours) != 3 {
				t.Errorf("run recomputed hours %v, want the 3 hours with events", res.Hours)
			}
			if err := agg.Recompute(t.Context(), []time.Time{hour, hour.Add(time.Hour), hour.AddDate(0, 0, 1)}); err != nil {
				t.Fatalf("recompute: %v", err)
			}
			if got := sumsByWorkspace(t, conn, fmt.Sprintf(hourlySQL, db)); !reflect.DeepEqual(got, want) {
				t.Errorf("usage_hourly FINAL = %+v, want each event once, errors excluded: %+v", got, want)
			}
			if got := sumsByWorkspace(t, conn, fmt.Sprintf(dailySQL, db)); !reflect.DeepEqual(got, want) {
				t.Errorf("usage_daily FINAL = %+v, want %+v", got, want)
			}
		})
	}
}

// TestClusterReplicatedDDL runs the replicated mode's statements on the real server as far
// as a server without Keeper lets them go: each is parsed with its ON CLUSTER clause, and
// without it each Replicated table is refused only for want of ZooKeeper — after the
// server checked its engine arguments (version column, ORDER BY, the {shard} and {replica}
// macros) — while each Distributed table is created. Where the server has Keeper and
// distributed DDL, the statements simply succeed.
func TestClusterReplicatedDDL(t *testing.T) {
	testenv.SkipOnHarness(t, "cluster (remote_servers) and no native port for a Distributed table to reach")
	conn := openCluster(t)
	cluster := schema.Cluster{Name: testCluster(t, conn), Replicated: true}
	db := newDatabase(t, conn)
	if err := conn.Exec(t.Context(), "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	const (
		syntaxError = 62
		noZooKeeper = 225
	)
	code := func(err error) int32 {
		var ex *clickhouse.Exception
		if errors.As(err, &ex) {
			return ex.Code
		}
		return -1
	}
	for _, tb := range migrationTables(t) {
		stmts, err := cluster.Statements(db, tb.stmt)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range stmts {
			name := regexp.MustCompile("`([a-z_]+)` ON CLUSTER").FindStringSubmatch(s)[1]
			t.Run(name, func(t *testing.T) {
				if err := conn.Exec(t.Context(), s); err != nil {
					if code(err) == syntaxError {
						t.Errorf("the server cannot parse:\n%s\n%v", s, err)
					}
					t.Logf("ON CLUSTER: %v", err)
				}
				local := strings.Replace(s, " ON CLUSTER `"+cluster.Name+"`", "", 1)
				err := conn.Exec(t.Context(), local)
				switch {
				case strings.Contains(s, "ENGINE = Distributed("):
					if err != nil {
						t.Errorf("Distributed table refused:\n%s\n%v", local, err)
					}
				case err != nil && code(err) != noZooKeeper:
					t.Errorf("refused for another reason than a missing ZooKeeper:\n%s\n%v", local, err)
				case err != nil:
					t.Logf("without ON CLUSTER: %v", err)
				}
			})
		}
	}
}
