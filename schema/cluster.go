package schema

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"

	"github.com/venna/metering/internal/sqlset"
)

// Cluster names the ClickHouse cluster a schema is created on. The migrations are written
// for one server; in cluster mode each CREATE TABLE is transformed (Statements) so that the
// migrations stay the one source of truth and every query of the code base keeps working
// unchanged, whatever the mode:
//
//   - A sharded table t (the raw events and the rollups, see placements) becomes t_local,
//     holding a shard's rows, and t, a Distributed table over every shard's t_local. Reads
//     and inserts name t, as on one server.
//   - Every other table is small (price book, keys, invoices, progress) and is kept whole on
//     every server, under its own name. Queries that join or filter one of them against a
//     sharded table (`IN (SELECT … FROM invoices)`, a JOIN with prices) then run on each
//     shard against a local copy; were both sides Distributed, ClickHouse would refuse them
//     (distributed_product_mode = deny) or read the small table once per shard.
//
// The zero Cluster is one server: Statements only qualifies the table with the database.
type Cluster struct {
	// Name is the cluster's entry in the servers' <remote_servers>.
	Name string
	// Replicated is the production mode. Tables get the Replicated variant of their engine
	// (ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/<db>/<t>', '{replica}', …)),
	// which needs the {shard} and {replica} macros on every server and ZooKeeper or
	// ClickHouse Keeper; every CREATE runs ON CLUSTER, i.e. through distributed DDL, which
	// needs Keeper too, so one `venna migrate` creates the schema on every server.
	//
	// Without it, tables keep their engines and the DDL runs on the connected server only:
	// `venna migrate` must run once against every server, and nothing copies the small
	// tables between servers. That mode is for a cluster without Keeper (ClickHouse 18.16
	// refuses ON CLUSTER without it): the tests use it to prove the Distributed layer on a
	// real server; in production only a one-shard cluster could use it.
	Replicated bool
}

// Sharding keys. A sharded table's key must take one value for all the rows
// ReplacingMergeTree has to fold — the copies of an event, the versions of a rollup row —
// so that they land on one shard: merges and FINAL work per shard, and across shards
// nothing folds them (FINAL through a Distributed table would count a rollup row once per
// shard holding a version of it). Columns of the sorting key qualify by definition.
//
// byWorkspace: the copies of a redelivered event are the same event, so they carry the
// same workspace_id and land on the same shard, where merges fold them (readers'
// `LIMIT 1 BY event_id` would dedup across shards too, but storage would keep both); the
// versions of a rollup row share (workspace_id, hour|day, model, api_key_id). It also keeps
// a workspace's raw events and rollups together, so that the queries of one workspace (its
// /v1/usage, its invoice, a reconciliation) can be answered by one shard
// (optimize_skip_unused_shards). Sharding by event_id would spread a giant workspace more
// evenly but scatter every workspace over all shards, and cannot shard the rollups; if one
// workspace outgrows a shard, use cityHash64(workspace_id, api_key_id) for all three tables
// instead: api_key_id is the same in every copy of an event and in the rollups' key.
const byWorkspace = "cityHash64(workspace_id)"

// onEveryServer marks a table kept whole on every server (replicated to all of them).
const onEveryServer = ""

// placements says, for every table of the migrations, how a cluster holds it: its sharding
// key, or onEveryServer. A new table must be added here, deliberately: a cluster migration
// of a table missing from the map fails (and so does the unit test over every migration).
var placements = map[string]string{
	"usage_events": byWorkspace,
	"usage_hourly": byWorkspace, // the versions of a row share (workspace_id, hour, model, api_key_id)
	"usage_daily":  byWorkspace,

	"schema_migrations":    onEveryServer, // every server's migrate must see what was applied
	"aggregate_watermarks": onEveryServer,
	"prices":               onEveryServer,
	"workspace_prices":     onEveryServer,
	"workspace_discounts":  onEveryServer,
	"workspaces":           onEveryServer,
	"api_keys":             onEveryServer, // read by every gateway every few seconds: locally
	// Invoices are a few rows per workspace and month, and the invoice queries filter lines
	// by `(invoice_id, version) IN (SELECT … FROM invoices)`: both kept whole, every server
	// answers that locally.
	"invoices":      onEveryServer,
	"invoice_lines": onEveryServer,
	"invoice_items": onEveryServer,
	// Spend control: a few rows per workspace, read by every gateway's snapshot.
	"budgets":      onEveryServer,
	"rate_limits":  onEveryServer,
	"spend_alerts": onEveryServer,
	// Credits: a few rows per workspace, read with the invoices.
	"credit_grants": onEveryServer,
	"billing_modes": onEveryServer,
	// Plans: the price file's plans (synced like prices) and who is on which.
	"subscriptions": onEveryServer,
	"plans":         onEveryServer,
	"plan_rates":    onEveryServer,
	// Stripe pushes: a few rows per workspace and invoice.
	"stripe_customers":    onEveryServer,
	"stripe_invoice_sync": onEveryServer,
	// Webhooks: a few rows per endpoint, event and attempt; the dispatchers of every
	// aggregator read and claim deliveries, each on the server it is connected to.
	"webhook_endpoints":  onEveryServer,
	"webhook_secrets":    onEveryServer,
	"webhook_events":     onEveryServer,
	"webhook_deliveries": onEveryServer,
	"webhook_attempts":   onEveryServer,
}

var (
	clusterName  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)
	plainDBName  = regexp.MustCompile(`^[A-Za-z0-9_]+$`)
	identChars   = func(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }
	createPrefix = "CREATE TABLE IF NOT EXISTS "
)

// Validate names what is wrong with a Cluster (nothing for the zero Cluster).
func (c Cluster) Validate() error {
	switch {
	case c.Name == "" && c.Replicated:
		return errors.New("schema: Cluster.Replicated needs a cluster Name (VENNA_CLICKHOUSE_CLUSTER)")
	case c.Name != "" && !clusterName.MatchString(c.Name):
		return fmt.Errorf("schema: cluster name %q (VENNA_CLICKHOUSE_CLUSTER): want letters, digits, _ . -", c.Name)
	}
	return nil
}

func (c Cluster) onCluster() string {
	if c.Replicated {
		return " ON CLUSTER " + quoteIdent(c.Name)
	}
	return ""
}

// createDatabase is the statement creating database.
func (c Cluster) createDatabase(database string) string {
	return sqlset.Fill(createDatabaseSQL, "db", quoteIdent(database), "on_cluster", c.onCluster())
}

// Statements returns what creates, in database, the table of stmt — one CREATE TABLE IF
// NOT EXISTS of a migration, its table unqualified — on this cluster, in order. On one
// server (the zero Cluster) that is stmt with its table qualified by the database.
func (c Cluster) Statements(database, stmt string) ([]string, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Name == "" {
		return []string{qualify(stmt, database)}, nil
	}
	if !plainDBName.MatchString(database) {
		return nil, fmt.Errorf("schema: database %q: cluster mode wants letters, digits and _ only (it goes into Keeper paths)", database)
	}
	t, err := parseCreateTable(stmt)
	if err != nil {
		return nil, err
	}
	key, ok := placements[t.name]
	if !ok {
		return nil, fmt.Errorf("schema: table %s has no cluster placement: add it to placements in schema/cluster.go (a sharding key, or onEveryServer)", t.name)
	}
	if key == onEveryServer {
		// One replica per server: the Keeper path has no {shard}, and the replica name
		// is {shard}_{replica}, unique across the whole cluster.
		tail := c.engine(t, "/clickhouse/tables/all/"+database+"/"+t.name, "{shard}_{replica}") + "\n" + t.rest
		if c.Replicated {
			tail = withSetting(tail, wrongPartsSetting)
		}
		return []string{c.create(database, t.name, t.columns, tail)}, nil
	}
	local := t.name + "_local"
	return []string{
		c.create(database, local, t.columns, c.engine(t, "/clickhouse/tables/{shard}/"+database+"/"+t.name, "{replica}")+"\n"+t.rest),
		c.create(database, t.name, t.columns, fmt.Sprintf("ENGINE = Distributed(%s, %s, %s, %s)",
			quoteString(c.Name), quoteString(database), quoteString(local), key)),
	}, nil
}

// wrongPartsSetting lets a replica of a table kept on every server start after a crash
// whatever share of its rows sits in parts Keeper does not know. Those are parts written
// locally whose commit to Keeper the crash cut off: inserts never acknowledged, which the
// writer retried. ClickHouse refuses to start a table when more than half its rows are in
// such parts (replicated_max_ratio_of_wrong_parts = 0.5), a guard against a server whose
// {shard} macro points it at another shard's data; these tables have no {shard} in their
// Keeper path, so the guard protects nothing, while a table of a few rows (invoices,
// watermarks, prices) is all one fresh part and, killed at the wrong moment, kept the
// whole server down (found by kill -9 on the test cluster, e2e/cluster_test.go). The
// unknown parts are moved to detached/ and the replica fetches what Keeper knows. The
// sharded tables keep the guard (deploy/README.md says what to do when it trips).
const wrongPartsSetting = "replicated_max_ratio_of_wrong_parts = 1"

// withSetting adds a table setting to the clauses after the engine.
func withSetting(tail, setting string) string {
	if strings.Contains(tail, "\nSETTINGS ") {
		return tail + ", " + setting
	}
	return tail + "\nSETTINGS " + setting
}

func (c Cluster) create(database, table, columns, tail string) string {
	return createPrefix + quoteIdent(database) + "." + quoteIdent(table) + c.onCluster() + " " + columns + "\n" + tail
}

// engine is the ENGINE clause of a MergeTree-family table: its own in plain mode, its
// Replicated variant with the Keeper path and replica name first in replicated mode.
func (c Cluster) engine(t createTable, path, replica string) string {
	if !c.Replicated {
		return "ENGINE = " + t.engine + "(" + t.args + ")"
	}
	args := quoteString(path) + ", " + quoteString(replica)
	if t.args != "" {
		args += ", " + t.args
	}
	return "ENGINE = Replicated" + t.engine + "(" + args + ")"
}

// createTable is a migration's CREATE TABLE IF NOT EXISTS, cut into its parts.
type createTable struct {
	name    string // unqualified
	columns string // the column list, parentheses included
	engine  string // e.g. ReplacingMergeTree
	args    string // the engine's arguments, without parentheses
	rest    string // what follows the engine: PARTITION BY, ORDER BY, SETTINGS…
}

// parseCreateTable cuts stmt into its parts. It knows the shape the migrations use and
// refuses anything else, so that a migration the cluster transform cannot handle (an ALTER,
// a view, an engine outside the MergeTree family) fails loudly instead of being half
// translated.
func parseCreateTable(stmt string) (createTable, error) {
	var t createTable
	s := strings.TrimSpace(stmt)
	fail := func(why string) (createTable, error) {
		first, _, _ := strings.Cut(s, "\n")
		return createTable{}, fmt.Errorf("schema: cluster mode: %s in %q: teach schema/cluster.go this statement", why, first)
	}
	rest, ok := strings.CutPrefix(s, createPrefix)
	if !ok {
		return fail("not a CREATE TABLE IF NOT EXISTS")
	}
	i := strings.IndexFunc(rest, func(r rune) bool { return !identChars(r) })
	if i <= 0 {
		return fail("no table name")
	}
	t.name, rest = rest[:i], strings.TrimLeftFunc(rest[i:], unicode.IsSpace)
	if !strings.HasPrefix(rest, "(") {
		return fail("table name not followed by a column list (qualified, or CREATE … AS?)")
	}
	end, err := closingParen(rest)
	if err != nil {
		return fail(err.Error())
	}
	t.columns, rest = rest[:end+1], strings.TrimLeftFunc(rest[end+1:], unicode.IsSpace)
	kw, after, ok := strings.Cut(rest, "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(kw), "ENGINE") {
		return fail("no ENGINE = after the column list")
	}
	rest = strings.TrimLeftFunc(after, unicode.IsSpace)
	i = strings.IndexFunc(rest, func(r rune) bool { return !identChars(r) })
	if i < 0 {
		i = len(rest)
	}
	t.engine, rest = rest[:i], rest[i:]
	if !strings.HasSuffix(t.engine, "MergeTree") || strings.HasPrefix(t.engine, "Replicated") {
		return fail("engine " + t.engine + " is not a plain MergeTree-family engine")
	}
	if strings.HasPrefix(rest, "(") {
		end, err := closingParen(rest)
		if err != nil {
			return fail(err.Error())
		}
		t.args, rest = strings.TrimSpace(rest[1:end]), rest[end+1:]
	}
	t.rest = strings.TrimSpace(rest)
	if !strings.Contains(strings.ToUpper(t.rest), "ORDER BY") {
		return fail("no ORDER BY (the old MergeTree(date, key, granularity) syntax?)")
	}
	return t, nil
}

// closingParen returns the index of the parenthesis closing the one s starts with,
// skipping quoted strings and identifiers.
func closingParen(s string) (int, error) {
	depth := 0
	var quote byte
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case quote != 0 && ch == '\\':
			i++
		case quote != 0 && ch == quote:
			quote = 0
		case quote != 0:
		case ch == '\'' || ch == '`' || ch == '"':
			quote = ch
		case ch == '(':
			depth++
		case ch == ')':
			depth--
			if depth == 0 {
				return i, nil
			}
		}
	}
	return 0, errors.New("unbalanced parentheses")
}

func quoteString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
