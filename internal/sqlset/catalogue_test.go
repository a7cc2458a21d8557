package sqlset_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
	"github.com/venna/metering/aggregate"
	"github.com/venna/metering/api"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/ingest"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/sqlset"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/schema"
	"github.com/venna/metering/spend"
	"github.com/venna/metering/stripesync"
	"github.com/venna/metering/webhook"
)

// catalogues is every package's statements, as the packages send them.
var catalogues = []*sqlset.Set{schema.Queries, ingest.Queries, apikey.Queries, aggregate.Queries, invoice.Queries, api.Queries,
	spend.Queries, stripesync.Queries, webhook.Queries, mainQueries()}

// mainQueries reads cmd/venna's catalogue (a main package cannot be imported).
func mainQueries() *sqlset.Set {
	b, err := os.ReadFile("../../cmd/venna/queries.sql")
	if err != nil {
		panic(err)
	}
	return sqlset.MustParse("cmd/venna", string(b))
}

// example is how the catalogue test runs one statement against the fixture: its
// placeholders, bound values, rows (for a batch INSERT) and what the answer must look
// like there. Examples run in order, so a statement can read what an earlier one wrote.
type example struct {
	set, name string
	fill      []string // placeholder, value pairs; {db} is always the fixture's database
	args      []any
	rows      [][]any // a batch INSERT's rows
	empty     bool    // the answer on the fixture is no rows (else: at least one)
	volatile  string  // why the values may differ between servers (only types are compared)
	wantErr   string  // the statement must fail on the fixture with an error containing it
	prepare   func(sql, db string) string
}

// side is one ClickHouse server under comparison, with the fixture's database.
type side struct {
	name    string
	cfg     chdb.Config
	conn    driver.Conn // default database "default": statements name theirs
	inDB    driver.Conn // default database: the fixture's (analyst queries are unqualified)
	version string
}

func open(t *testing.T, name string, cfg chdb.Config) *side {
	t.Helper()
	ctx := context.Background()
	conn, err := chdb.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() {
		if os.Getenv("VENNA_TEST_KEEP") == "" {
			conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.Database)
		}
		conn.Close()
	})
	if _, err := schema.Migrate(ctx, conn, cfg.Database); err != nil {
		t.Fatalf("%s: migrate: %v", name, err)
	}
	inDB, err := chdb.OpenDB(ctx, cfg)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() { inDB.Close() })
	s := &side{name: name, cfg: cfg, conn: conn, inDB: inDB}
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&s.version); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	s.name = fmt.Sprintf("%s (ClickHouse %s)", name, s.version)
	return s
}

// TestCatalogueOnEveryVersion runs every statement of every package's catalogue, and every
// analyst query of schema/queries, against one fixture on the ClickHouse under test — and,
// when VENNA_TEST_CLICKHOUSE_COMPARE names a server of another version (scripts/test.sh
// sets it: 26.9 beside 18.16 and the reverse), on that one too, and fails on any
// difference: in the answer's column types, its rows (in order where the statement
// orders them), or what a write left in its table. A statement that parses on both but
// answers differently fails here.
func TestCatalogueOnEveryVersion(t *testing.T) {
	db := testenv.Name(t)
	sides := []*side{open(t, "under test", testenv.ClickHouseConfig(testenv.ClickHouseAddr(t), db))}
	if raw := os.Getenv("VENNA_TEST_CLICKHOUSE_COMPARE"); raw != "" {
		cfg, err := testenv.ParseURL(raw, db)
		if err != nil {
			t.Fatal(err)
		}
		sides = append(sides, open(t, "compared", cfg))
		t.Logf("comparing %s with %s", sides[0].name, sides[1].name)
	} else {
		t.Log("VENNA_TEST_CLICKHOUSE_COMPARE is not set: every statement runs on one server, nothing is compared (scripts/test.sh sets it)")
	}

	fx := newFixture(time.Now().UTC())
	examples := fx.examples()
	for _, s := range sides {
		// Lines of an invoice from before migration 0003, which only the upgrade reads.
		if err := chdb.Insert(context.Background(), s.conn, chdb.InsertInto(db+".invoice_lines", legacyColumns), fx.legacyLines()); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}

	// Every catalogued statement has exactly one example, and every example a statement.
	have := map[string]int{}
	for _, ex := range examples {
		have[ex.set+"."+ex.name]++
	}
	for _, set := range catalogues {
		for _, st := range set.Statements {
			key := set.Package + "." + st.Name
			if have[key] != 1 {
				t.Errorf("%s has %d examples in catalogue_test.go, want 1: every statement runs here", key, have[key])
			}
			delete(have, key)
		}
	}
	for _, q := range analystQueries(t) {
		delete(have, "analyst."+q.Name)
	}
	for key := range have {
		t.Errorf("example %s names no catalogued statement", key)
	}
	if t.Failed() {
		t.FailNow()
	}

	for _, ex := range examples {
		sql, ok := statement(t, ex)
		if !ok {
			continue
		}
		t.Run(ex.set+"/"+ex.name, func(t *testing.T) {
			var answers []answer
			for _, s := range sides {
				q := sqlset.Fill(sql, append([]string{"db", db}, ex.fill...)...)
				if ex.prepare != nil {
					q = ex.prepare(q, db)
				}
				if left := regexp.MustCompile(`\{[a-z_]+\}`).FindString(q); left != "" {
					t.Fatalf("placeholder %s has no value in the example", left)
				}
				args := make([]any, len(ex.args))
				for i, a := range ex.args {
					if a == "{db}" {
						a = db
					}
					args[i] = a
				}
				a, err := s.run(ex, q, args)
				if err != nil {
					t.Fatalf("%s: %v\n%s", s.name, err, q)
				}
				answers = append(answers, a)
			}
			for i, a := range answers {
				switch {
				case a.write:
				case ex.empty && len(a.rows) > 0:
					t.Errorf("%s: %d rows, want none on the fixture: %v", sides[i].name, len(a.rows), a.rows)
				case !ex.empty && len(a.rows) == 0:
					t.Errorf("%s: no rows on the fixture; the example must exercise the statement", sides[i].name)
				}
			}
			for i := 1; i < len(answers); i++ {
				compare(t, ex, sides[0].name, answers[0], sides[i].name, answers[i])
			}
			// A write: what it left in its table, right away.
			if answers[0].table != "" && len(sides) > 1 {
				var tables []answer
				for _, s := range sides {
					a, err := s.table(answers[0].table)
					if err != nil {
						t.Fatalf("%s: %v", s.name, err)
					}
					tables = append(tables, a)
				}
				for i := 1; i < len(tables); i++ {
					compare(t, example{name: answers[0].table}, sides[0].name, tables[0], sides[i].name, tables[i])
				}
			}
		})
	}

	// Whatever the writes left: every table, whole, the same on every server.
	t.Run("tables", func(t *testing.T) {
		tables := tablesOf(t, sides[0], db)
		for _, table := range tables {
			var answers []answer
			for _, s := range sides {
				a, err := s.table(db + "." + table)
				if err != nil {
					t.Fatalf("%s: %v", s.name, err)
				}
				answers = append(answers, a)
			}
			for i := 1; i < len(answers); i++ {
				compare(t, example{name: table}, sides[0].name, answers[0], sides[i].name, answers[i])
			}
		}
		// The schema itself: the same columns of the same types.
		for i := 1; i < len(sides); i++ {
			q := "SELECT table, name, type FROM system.columns WHERE database = '" + db + "' ORDER BY table, name"
			a0, err := sides[0].query(q)
			if err != nil {
				t.Fatal(err)
			}
			ai, err := sides[i].query(q)
			if err != nil {
				t.Fatal(err)
			}
			compare(t, example{name: "system.columns"}, sides[0].name, a0, sides[i].name, ai)
		}
	})
}

// statement is the SQL of ex: a catalogued statement or an analyst query.
func statement(t *testing.T, ex example) (string, bool) {
	t.Helper()
	if ex.set == "analyst" {
		for _, q := range analystQueries(t) {
			if q.Name == ex.name {
				return q.SQL, true
			}
		}
		t.Errorf("no analyst query %s", ex.name)
		return "", false
	}
	for _, set := range catalogues {
		if set.Package != ex.set {
			continue
		}
		for _, st := range set.Statements {
			if st.Name == ex.name {
				return st.SQL, true
			}
		}
	}
	t.Errorf("no statement %s.%s", ex.set, ex.name)
	return "", false
}

// analystQueries are schema/queries/*.sql, named by file.
func analystQueries(t *testing.T) []sqlset.Statement {
	t.Helper()
	files, err := filepath.Glob("../../schema/queries/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("analyst queries: %v (%d files)", err, len(files))
	}
	var out []sqlset.Statement
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sqlset.Statement{Name: strings.TrimSuffix(filepath.Base(f), ".sql"), SQL: string(b)})
	}
	return out
}

// answer is what a statement gave: its column types and rows, each row as strings.
type answer struct {
	write   bool
	table   string // a write's table, compared whole afterwards
	types   []string
	rows    [][]string
	ordered bool
}

var (
	insertInto = regexp.MustCompile(`(?is)^\s*INSERT\s+INTO\s+([a-z0-9_.` + "`" + `]+)`)
	hasSelect  = regexp.MustCompile(`(?i)\bSELECT\b`)
)

func (s *side) run(ex example, q string, args []any) (answer, error) {
	ctx := context.Background()
	trimmed := strings.TrimSpace(strings.ToUpper(q))
	switch {
	case ex.wantErr != "":
		err := s.conn.Exec(ctx, q, args...)
		if err == nil || !strings.Contains(err.Error(), ex.wantErr) {
			return answer{}, fmt.Errorf("got error %v, want one containing %q", err, ex.wantErr)
		}
		return answer{write: true}, nil
	case strings.HasPrefix(trimmed, "INSERT") && !hasSelect.MatchString(q):
		if err := chdb.Insert(ctx, s.conn, q, ex.rows); err != nil {
			return answer{}, err
		}
		return answer{write: true, table: insertInto.FindStringSubmatch(q)[1]}, nil
	case strings.HasPrefix(trimmed, "INSERT"), strings.HasPrefix(trimmed, "CREATE"):
		if err := s.conn.Exec(ctx, q, args...); err != nil {
			return answer{}, err
		}
		a := answer{write: true}
		if m := insertInto.FindStringSubmatch(q); m != nil {
			a.table = m[1]
		}
		return a, nil
	}
	conn := s.conn
	if ex.set == "analyst" {
		conn = s.inDB
	}
	return s.queryOn(conn, q, args...)
}

func (s *side) query(q string, args ...any) (answer, error) { return s.queryOn(s.conn, q, args...) }

func (s *side) queryOn(conn driver.Conn, q string, args ...any) (answer, error) {
	rows, err := conn.Query(context.Background(), q, args...)
	if err != nil {
		return answer{}, err
	}
	defer rows.Close()
	a := answer{ordered: ordered(q)}
	cols := rows.ColumnTypes()
	for _, c := range cols {
		a.types = append(a.types, c.DatabaseTypeName())
	}
	for rows.Next() {
		ptrs := make([]any, len(cols))
		for i, c := range cols {
			ptrs[i] = reflect.New(c.ScanType()).Interface()
		}
		if err := rows.Scan(ptrs...); err != nil {
			return answer{}, fmt.Errorf("scan: %w", err)
		}
		r := make([]string, len(cols))
		for i := range cols {
			r[i] = canonical(reflect.ValueOf(ptrs[i]).Elem().Interface())
		}
		a.rows = append(a.rows, r)
	}
	return a, rows.Err()
}

// clockFree are the columns compared of a table one of whose columns is written from the
// clock of the process writing (Migrate stamps applied_at with time.Now).
var clockFree = map[string]string{"schema_migrations": "version, name"}

// table reads a whole table as its readers see it (FINAL: the latest version of every
// key, whatever merges have or have not happened yet on each server).
func (s *side) table(table string) (answer, error) {
	cols := "*"
	if c, ok := clockFree[table[strings.LastIndex(table, ".")+1:]]; ok {
		cols = c
	}
	a, err := s.query("SELECT " + cols + " FROM " + table + " FINAL")
	a.ordered = false
	return a, err
}

func tablesOf(t *testing.T, s *side, db string) []string {
	t.Helper()
	a, err := s.query("SELECT name FROM system.tables WHERE database = ? ORDER BY name", db)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range a.rows {
		name, err := strconv.Unquote(r[0]) // canonical quotes strings
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, name)
	}
	if len(out) < 10 {
		t.Fatalf("tables of %s: %v", db, out)
	}
	return out
}

// ordered reports whether the statement's outermost clause orders its rows: an ORDER BY
// after the last closing parenthesis.
func ordered(q string) bool {
	up := strings.ToUpper(q)
	i := strings.LastIndex(up, "ORDER BY")
	return i >= 0 && i > strings.LastIndex(up, ")")
}

// canonical renders a scanned value the same way whatever the protocol or version.
func canonical(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case decimal.Decimal:
		return x.String()
	case float64:
		return canonicalFloat(x)
	case float32:
		return canonicalFloat(float64(x))
	case string:
		return strconv.Quote(x)
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer:
		if rv.IsNil() {
			return "NULL"
		}
		return canonical(rv.Elem().Interface())
	case reflect.Slice, reflect.Array:
		parts := make([]string, rv.Len())
		for i := range parts {
			parts[i] = canonical(rv.Index(i).Interface())
		}
		return "[" + strings.Join(parts, ",") + "]"
	case reflect.Map:
		keys := rv.MapKeys()
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = canonical(k.Interface()) + ":" + canonical(rv.MapIndex(k).Interface())
		}
		sort.Strings(parts)
		return "{" + strings.Join(parts, ",") + "}"
	}
	return fmt.Sprint(v)
}

// canonicalFloat keeps 12 significant digits: sums of the same floats in another order
// differ in the last bits.
func canonicalFloat(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Sprint(f)
	}
	return strconv.FormatFloat(f, 'g', 12, 64)
}

func compare(t *testing.T, ex example, an string, a answer, bn string, b answer) {
	t.Helper()
	if a.write {
		return // its table is compared after every example
	}
	if !reflect.DeepEqual(typeNames(a.types), typeNames(b.types)) {
		t.Errorf("column types differ:\n  %s: %v\n  %s: %v", an, a.types, bn, b.types)
	}
	if ex.volatile != "" {
		return
	}
	ar, br := flat(a), flat(b)
	if !a.ordered {
		sort.Strings(ar)
		sort.Strings(br)
	}
	if !reflect.DeepEqual(ar, br) {
		t.Errorf("answers differ (%d and %d rows):\n  %s:\n    %s\n  %s:\n    %s", len(ar), len(br),
			an, strings.Join(ar, "\n    "), bn, strings.Join(br, "\n    "))
	}
}

// dateTimeZone is the time zone argument of a DateTime type. The 26.9 harness answers in
// Native at protocol revision 0, at which ClickHouse leaves time zones out of DateTime type
// names (NativeWriter: clients older than revision 54337 do not know them); a server
// answering clickhouse-go at its own revision keeps them. Values are compared as UTC
// instants whatever the zone, so only the name is normalized.
var dateTimeZone = regexp.MustCompile(`DateTime(64)?\(('[^']*')?(, *)?([0-9]*)?(, *)?('[^']*')?\)`)

func typeNames(types []string) []string {
	out := make([]string, len(types))
	for i, t := range types {
		out[i] = dateTimeZone.ReplaceAllStringFunc(t, func(m string) string {
			if strings.HasPrefix(m, "DateTime64") {
				return "DateTime64(" + regexp.MustCompile(`[0-9]+`).FindString(m) + ")"
			}
			return "DateTime"
		})
	}
	return out
}

func flat(a answer) []string {
	out := make([]string, len(a.rows))
	for i, r := range a.rows {
		out[i] = strings.Join(r, " | ")
	}
	return out
}
