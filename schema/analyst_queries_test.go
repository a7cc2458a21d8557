package schema_test

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
	"github.com/venna/metering/aggregate"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/spend"
	"github.com/venna/metering/webhook"
)

// The price book of the seeded database: fixed here so that the expected spend is too.
const analystPrices = `currency: USD
prices:
  - {model: venna-1, effective_from: "2026-01-01T00:00:00Z", input: "2.50", cached_input: "1.25", output: "10.00"}
  - {model: venna-1-mini, effective_from: "2026-01-01T00:00:00Z", input: "0.15", cached_input: "0.075", output: "0.60"}
  - {model: venna-1-reasoning, effective_from: "2026-01-01T00:00:00Z", input: "1.10", cached_input: "0.275", output: "4.40"}
`

// seeded is what the seeded database holds, for the queries' checks.
type seeded struct {
	keys map[string]string // key name → key ID
}

type seedEvent struct {
	ws, key, model, upstream, status string
	latency                          uint32
	prompt, cached, completion, rsn  uint64
	estimated                        uint8
}

// seed fills a fresh database the way the pipeline would: three workspaces with keys, raw
// events over the last ten hours (ws_big spends most, on venna-1 with half its prompt
// cached; ws_mid runs the reasoning model; ws_small runs the mini model through a flaky
// upstream that fails 10 of 40 exchanges and reports no usage for 10 completions), some
// events delivered twice, the rollups, the price book and the invoices.
func seed(t *testing.T, conn driver.Conn, db string) seeded {
	t.Helper()
	ctx := context.Background()
	store := apikey.NewStore(conn, db)
	s := seeded{keys: map[string]string{}}
	for ws, keys := range map[string][]string{"ws_big": {"big-1", "big-2"}, "ws_mid": {"mid-1"}, "ws_small": {"small-1"}} {
		if _, err := store.CreateWorkspace(ctx, ws, strings.ToUpper(ws)); err != nil {
			t.Fatal(err)
		}
		for _, name := range keys {
			k, _, err := store.IssueKey(ctx, ws, name)
			if err != nil {
				t.Fatal(err)
			}
			s.keys[name] = k.ID
		}
	}
	var events []seedEvent
	for i := range 60 {
		events = append(events, seedEvent{ws: "ws_big", key: []string{"big-1", "big-2"}[i%2], model: "venna-1", upstream: "openai",
			status: "ok", latency: uint32(100 + i), prompt: 10000, cached: 5000, completion: 2000})
	}
	for i := range 40 {
		events = append(events, seedEvent{ws: "ws_mid", key: "mid-1", model: "venna-1-reasoning", upstream: "openai",
			status: "ok", latency: uint32(1000 + 10*i), prompt: 2000, completion: 3000, rsn: 2000})
	}
	for i := range 40 {
		e := seedEvent{ws: "ws_small", key: "small-1", model: "venna-1-mini", upstream: "flaky", status: "ok", latency: uint32(20 + i),
			prompt: 1000, completion: 100}
		switch {
		case i < 10:
			e.status, e.prompt, e.completion = "upstream_error", 0, 0
		case i < 20:
			e.estimated = 1
		}
		events = append(events, e)
	}
	now := time.Now().UTC()
	rows := make([][]any, len(events))
	for i, e := range events {
		at := now.Add(-time.Duration(i%10)*time.Hour - 5*time.Minute).Truncate(time.Second)
		id := fmt.Sprintf("evt-%04d", i)
		rows[i] = []any{id, uint8(1), at, now, e.ws, s.keys[e.key], e.model, e.upstream, "up-" + e.model, "req-" + id, e.status,
			uint16(200), uint8(0), e.estimated, e.latency, e.prompt, e.cached, e.completion, e.rsn, uint64(0), uint64(0),
			e.prompt + e.completion, int32(0), int64(i)}
	}
	columns := []string{"event_id", "schema_version", "occurred_at", "ingested_at", "workspace_id", "api_key_id", "model",
		"upstream", "upstream_model", "request_id", "status", "http_status", "stream", "estimated", "latency_ms",
		"prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens", "accepted_prediction_tokens",
		"rejected_prediction_tokens", "total_tokens", "kafka_partition", "kafka_offset"}
	if err := chdb.Insert(ctx, conn, chdb.InsertInto(db+".usage_events", columns), rows); err != nil {
		t.Fatal(err)
	}
	// A redelivery of five ws_big events, in a part of its own.
	if err := chdb.Insert(ctx, conn, chdb.InsertInto(db+".usage_events", columns), rows[:5]); err != nil {
		t.Fatal(err)
	}

	agg, err := aggregate.New(aggregate.Config{Database: db}, conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agg.Run(ctx); err != nil {
		t.Fatal(err)
	}
	book, err := invoice.ParsePriceBook([]byte(analystPrices))
	if err != nil {
		t.Fatal(err)
	}
	if err := book.Sync(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	inv, err := invoice.New(invoice.Config{Database: db}, conn, book)
	if err != nil {
		t.Fatal(err)
	}
	// The events span at most ten hours: this month and perhaps the previous one.
	for _, at := range []time.Time{now.Add(-11 * time.Hour), now} {
		start, end := invoice.Month(at)
		if _, err := inv.Run(ctx, start, end); err != nil {
			t.Fatal(err)
		}
	}
	// A budget ws_big has long passed this month, and the alerts it raised.
	sp := spend.NewStore(conn, db)
	if _, err := sp.SetBudget(ctx, spend.Budget{WorkspaceID: "ws_big", MonthlyUSD: decimal.RequireFromString("0.01"), HardLimit: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := spend.NewAlerter(sp, book, slog.New(slog.DiscardHandler), nil).Run(ctx); err != nil {
		t.Fatal(err)
	}
	// Webhooks: the events of all that, to an endpoint that answers 200 (its deliveries
	// succeeded) and to one that answers 500 (pending, one attempt each).
	hooks := webhook.NewStore(conn, db)
	for _, status := range []int{http.StatusOK, http.StatusInternalServerError} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(status) }))
		t.Cleanup(srv.Close)
		if _, _, err := hooks.CreateEndpoint(ctx, webhook.EndpointSpec{URL: fmt.Sprintf("%s/%d", srv.URL, status)}); err != nil {
			t.Fatal(err)
		}
	}
	d, err := webhook.New(webhook.Config{Database: db}, conn, webhook.Sources{Invoices: inv}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Detect(ctx); err != nil {
		t.Fatal(err)
	}
	for { // rounds of at most four deliveries per endpoint, until none is due
		n, err := d.Dispatch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		d.Wait()
		if n == 0 {
			break
		}
	}
	return s
}

// analystConfig is the read-only analyst user on the test server (deploy/clickhouse).
func analystConfig(t *testing.T, db string) chdb.Config {
	user := os.Getenv("VENNA_CLICKHOUSE_ANALYST_USER")
	if user == "" {
		user = "analyst"
	}
	cfg := testenv.ClickHouseConfig(testenv.ClickHouseAddr(t), db)
	cfg.User, cfg.Password = user, os.Getenv("VENNA_CLICKHOUSE_ANALYST_PASSWORD")
	return cfg
}

type row map[string]any

// query runs sql and returns its rows by column name, whatever their types.
func query(t *testing.T, conn driver.Conn, sql string) []row {
	t.Helper()
	rows, err := conn.Query(context.Background(), sql)
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	defer rows.Close()
	cols := rows.ColumnTypes()
	var out []row
	for rows.Next() {
		ptrs := make([]any, len(cols))
		for i, c := range cols {
			ptrs[i] = reflect.New(c.ScanType()).Interface()
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatalf("scan: %v", err)
		}
		r := row{}
		for i, c := range cols {
			r[c.Name()] = reflect.ValueOf(ptrs[i]).Elem().Interface()
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read rows: %v", err)
	}
	return out
}

// num reads a numeric column as float64, for checks on ratios and sums.
func num(t *testing.T, v any) float64 {
	t.Helper()
	switch n := v.(type) {
	case decimal.Decimal:
		return n.InexactFloat64()
	case float64:
		return n
	case float32:
		return float64(n)
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return float64(rv.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return float64(rv.Uint())
	}
	t.Fatalf("%v (%T) is not a number", v, v)
	return 0
}

func dec(t *testing.T, v any) decimal.Decimal {
	t.Helper()
	d, ok := v.(decimal.Decimal)
	if !ok {
		t.Fatalf("%v (%T) is not a decimal", v, v)
	}
	return d
}

// byKey indexes rows by the string value of one column.
func byKey(rows []row, col string) map[string]row {
	out := map[string]row{}
	for _, r := range rows {
		out[fmt.Sprint(r[col])] = r
	}
	return out
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// Every example query in schema/queries runs, as the analyst, on a seeded database and
// answers what the seed implies.
func TestAnalystQueries(t *testing.T) {
	cfg, conn := testenv.ClickHouse(t)
	s := seed(t, conn, cfg.Database)
	analyst, err := chdb.OpenDB(context.Background(), analystConfig(t, cfg.Database))
	if err != nil {
		t.Fatalf("connect as the analyst user (deploy/clickhouse/users.xml defines it; VENNA_CLICKHOUSE_ANALYST_USER and _PASSWORD name another): %v", err)
	}
	t.Cleanup(func() { analyst.Close() })

	// Spend at the seed's prices: ws_big 60 × 0.03875, ws_mid 40 × 0.0154, ws_small 30 × 0.00021.
	spend := map[string]decimal.Decimal{
		"ws_big": decimal.RequireFromString("2.325"), "ws_mid": decimal.RequireFromString("0.616"), "ws_small": decimal.RequireFromString("0.0063"),
	}
	checks := map[string]func(t *testing.T, rows []row){
		"01_top_workspaces_by_spend": func(t *testing.T, rows []row) {
			if len(rows) != 3 || rows[0]["workspace_id"] != "ws_big" || rows[1]["workspace_id"] != "ws_mid" || rows[2]["workspace_id"] != "ws_small" {
				t.Fatalf("got %v, want ws_big, ws_mid, ws_small by spend", rows)
			}
			total := decimal.Zero
			for _, r := range rows {
				total = total.Add(dec(t, r["spend_usd"]))
			}
			// Each invoice total is rounded to cents, and a month boundary may split a
			// workspace's usage over two invoices: at most half a cent off each of six.
			if want := decimal.RequireFromString("2.9473"); total.Sub(want).Abs().GreaterThan(decimal.RequireFromString("0.03")) {
				t.Errorf("total spend %s, want about %s", total, want)
			}
		},
		"02_spend_per_model_per_day": func(t *testing.T, rows []row) {
			per := map[string]decimal.Decimal{}
			for _, r := range rows {
				per[r["model"].(string)] = per[r["model"].(string)].Add(dec(t, r["spend_usd"]))
			}
			for model, ws := range map[string]string{"venna-1": "ws_big", "venna-1-reasoning": "ws_mid", "venna-1-mini": "ws_small"} {
				if !per[model].Equal(spend[ws]) {
					t.Errorf("%s: spend %s, want exactly %s", model, per[model], spend[ws])
				}
			}
		},
		"03_cache_hit_ratio_by_model": func(t *testing.T, rows []row) {
			m := byKey(rows, "model")
			if len(rows) != 3 || rows[0]["model"] != "venna-1" || !near(num(t, m["venna-1"]["cache_hit_ratio"]), 0.5) || num(t, m["venna-1-mini"]["cache_hit_ratio"]) != 0 {
				t.Errorf("got %v, want venna-1 first at 0.5 and the others at 0", rows)
			}
		},
		"04_reasoning_share_by_model": func(t *testing.T, rows []row) {
			if len(rows) != 3 || rows[0]["model"] != "venna-1-reasoning" || !near(num(t, rows[0]["reasoning_share"]), 0.6667) || num(t, rows[1]["reasoning_share"]) != 0 {
				t.Errorf("got %v, want venna-1-reasoning first at 0.6667 and the others at 0", rows)
			}
		},
		"05_daily_active_keys": func(t *testing.T, rows []row) {
			most := 0.0
			for _, r := range rows {
				most = math.Max(most, num(t, r["active_keys"]))
				if n := num(t, r["active_workspaces"]); n < 1 || n > 3 {
					t.Errorf("%v: active workspaces out of 1..3", r)
				}
			}
			// Four keys, each used every hour of the seed: all four are active on the day
			// holding the most hours (the events span ten hours, at most two days).
			if len(rows) < 1 || len(rows) > 2 || most != 4 {
				t.Errorf("got %v, want one or two days with four active keys at most", rows)
			}
		},
		"06_requests_per_hour": func(t *testing.T, rows []row) {
			var req, ok, failed float64
			for _, r := range rows {
				req, ok, failed = req+num(t, r["requests"]), ok+num(t, r["ok"]), failed+num(t, r["failed"])
			}
			if len(rows) != 10 || req != 140 || ok != 130 || failed != 10 {
				t.Errorf("got %d hours with %v requests (%v ok, %v failed), want 10 hours, 140 (130, 10): duplicates counted once", len(rows), req, ok, failed)
			}
		},
		"07_latency_by_model": func(t *testing.T, rows []row) {
			if len(rows) != 3 || rows[0]["model"] != "venna-1-reasoning" || rows[1]["model"] != "venna-1" || rows[2]["model"] != "venna-1-mini" {
				t.Fatalf("got %v, want reasoning, then venna-1, then mini by p50", rows)
			}
			for _, r := range rows {
				if num(t, r["p99_ms"]) < num(t, r["p50_ms"]) || num(t, r["max_ms"]) < num(t, r["p99_ms"]) {
					t.Errorf("%v: quantiles out of order", r)
				}
			}
		},
		"08_error_rate_by_upstream": func(t *testing.T, rows []row) {
			if len(rows) != 2 || rows[0]["upstream"] != "flaky" || !near(num(t, rows[0]["error_rate"]), 0.25) || num(t, rows[1]["error_rate"]) != 0 {
				t.Errorf("got %v, want flaky at 0.25 first, openai at 0", rows)
			}
		},
		"09_top_keys_by_tokens": func(t *testing.T, rows []row) {
			if len(rows) != 4 || rows[0]["workspace_id"] != "ws_big" || (rows[0]["key_name"] != "big-1" && rows[0]["key_name"] != "big-2") {
				t.Fatalf("got %v, want four keys, a ws_big key with its name first", rows)
			}
			if r := byKey(rows, "api_key_id")[s.keys["mid-1"]]; r == nil || r["key_name"] != "mid-1" || num(t, r["tokens"]) != 40*5000 {
				t.Errorf("mid-1: %v, want 200000 tokens", r)
			}
		},
		"10_tokens_per_request_by_model": func(t *testing.T, rows []row) {
			m := byKey(rows, "model")
			if num(t, m["venna-1"]["avg_prompt_tokens"]) != 10000 || num(t, m["venna-1-reasoning"]["avg_completion_tokens"]) != 3000 || num(t, m["venna-1-mini"]["requests"]) != 30 {
				t.Errorf("got %v", rows)
			}
		},
		"11_pending_duplicates": func(t *testing.T, rows []row) {
			// A background merge may already have folded some of the five redeliveries.
			if d := num(t, rows[0]["unmerged_duplicates"]); len(rows) != 1 || num(t, rows[0]["events"]) != 140 || d < 0 || d > 5 {
				t.Errorf("got %v, want 140 events and 0 to 5 unmerged duplicates", rows)
			}
		},
		"12_rollup_vs_raw": func(t *testing.T, rows []row) {
			var rolled float64
			for _, r := range rows {
				rolled += num(t, r["rolled_up"])
				if num(t, r["not_rolled_up"]) != 0 {
					t.Errorf("%v: rollups and raw events differ", r)
				}
			}
			if rolled != 130 {
				t.Errorf("got %v: %v requests rolled up, want 130", rows, rolled)
			}
		},
		"13_estimated_usage_share": func(t *testing.T, rows []row) {
			if len(rows) != 2 || rows[0]["upstream"] != "flaky" || !near(num(t, rows[0]["estimated_share"]), 0.3333) || num(t, rows[1]["estimated_share"]) != 0 {
				t.Errorf("got %v, want flaky at 0.3333 (10 of 30 completions), openai at 0", rows)
			}
		},
		"14_usage_by_workspace_last_7_days": func(t *testing.T, rows []row) {
			if len(rows) != 3 || rows[0]["workspace_id"] != "ws_big" || rows[0]["name"] != "WS_BIG" || num(t, rows[0]["requests"]) != 60 || num(t, rows[0]["input_tokens"]) != 600000 {
				t.Errorf("got %v, want ws_big (WS_BIG) first with 60 requests and 600000 input tokens", rows)
			}
		},
		"17_webhook_deliveries_by_endpoint": func(t *testing.T, rows []row) {
			if len(rows) != 2 {
				t.Fatalf("%d endpoints, want 2: %v", len(rows), rows)
			}
			good, bad := rows[1], rows[0] // failing ones first
			n := num(t, good["succeeded"])
			if !strings.HasSuffix(fmt.Sprint(good["url"]), "/200") || n < 4 || num(t, good["pending"]) != 0 || num(t, good["attempts"]) != n {
				t.Errorf("the answering endpoint: %v, want every delivery succeeded at its first attempt", good)
			}
			if !strings.HasSuffix(fmt.Sprint(bad["url"]), "/500") || num(t, bad["pending"]) != n || num(t, bad["attempts"]) != n || num(t, bad["succeeded"]) != 0 {
				t.Errorf("the failing endpoint: %v, want its %v deliveries pending after one attempt each", bad, n)
			}
		},
		"16_budget_alerts_this_month": func(t *testing.T, rows []row) {
			got := map[string]bool{}
			for _, r := range rows {
				got[fmt.Sprint(r["workspace_id"], "/", r["type"], "/", r["threshold_percent"])] = true
				if num(t, r["threshold_percent"]) < 80 {
					t.Errorf("%v: below 80 %%", r)
				}
			}
			// ws_big's $0.01 budget is passed by this month's first events (none yet in
			// the first minutes of a month: the seed's latest events are 5 minutes old).
			if monthStart, _ := invoice.Month(time.Now()); time.Since(monthStart) > 10*time.Minute &&
				(!got["ws_big/budget.threshold_reached/80"] || !got["ws_big/budget.exceeded/100"] || len(rows) != 2) {
				t.Errorf("got %v, want ws_big's 80 %% and 100 %% alerts only", rows)
			}
		},
		"15_invoice_lines_this_month": func(t *testing.T, rows []row) {
			models := map[string]bool{}
			for _, r := range rows {
				models[fmt.Sprint(r["workspace_id"], "/", r["model"])] = true
				if r["kind"] != "usage" {
					continue
				}
				want := decimal.NewFromUint64(uint64(num(t, r["quantity"]))).Mul(dec(t, r["usd_per_million"])).Shift(-6)
				if !dec(t, r["amount"]).Equal(want) {
					t.Errorf("%v: amount is not quantity × price / 1M = %s", r, want)
				}
			}
			// The seed spans ten hours: on the 1st, part of it may be last month's.
			if len(rows) == 0 || (time.Now().UTC().Hour() >= 10 && !models["ws_big/venna-1"]) {
				t.Errorf("got %v, want this month's lines, ws_big's venna-1 ones among them", rows)
			}
		},
	}

	files, err := filepath.Glob("queries/*.sql")
	if err != nil || len(files) < 12 {
		t.Fatalf("want at least a dozen example queries in schema/queries, found %d (%v)", len(files), err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".sql")
		t.Run(name, func(t *testing.T) {
			check, ok := checks[name]
			if !ok {
				t.Fatalf("no check for %s: every example query must be asserted", file)
			}
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			check(t, query(t, analyst, string(b)))
		})
	}
}

// The analyst user reads through the driver (the protocol under test), clickhouse-client and HTTP, and can
// neither write nor change the schema.
func TestAnalystUserIsReadOnly(t *testing.T) {
	cfg, conn := testenv.ClickHouse(t)
	seed(t, conn, cfg.Database)
	acfg := analystConfig(t, cfg.Database)
	ctx := context.Background()
	analyst, err := chdb.OpenDB(ctx, acfg)
	if err != nil {
		t.Fatalf("connect as the analyst user (deploy/clickhouse/users.xml defines it; VENNA_CLICKHOUSE_ANALYST_USER and _PASSWORD name another): %v", err)
	}
	t.Cleanup(func() { analyst.Close() })

	const read = "SELECT count() FROM usage_hourly FINAL"
	writes := []string{
		"INSERT INTO workspaces (workspace_id, name, created_at, version) SELECT 'ws_evil', 'x', now(), 1",
		"CREATE TABLE analyst_scratch (a UInt8) ENGINE = Memory",
		"DROP TABLE usage_events",
		"ALTER TABLE usage_events DELETE WHERE 1",
	}
	t.Run("driver", func(t *testing.T) {
		var n uint64
		if err := analyst.QueryRow(ctx, read).Scan(&n); err != nil || n == 0 {
			t.Fatalf("analyst read: %d rows, %v", n, err)
		}
		for _, w := range writes {
			if err := analyst.Exec(ctx, w); err == nil || !strings.Contains(strings.ToLower(err.Error()), "readonly") {
				t.Errorf("%s as analyst: %v, want a readonly refusal", w, err)
			}
		}
		if err := analyst.Exec(ctx, "SET readonly = 0"); err == nil {
			t.Error("the analyst could leave readonly mode")
		}
	})
	t.Run("clickhouse-client", func(t *testing.T) {
		testenv.SkipOnHarness(t, "native port for clickhouse-client")
		bin, err := exec.LookPath("clickhouse-client")
		if err != nil {
			t.Skip("clickhouse-client is not installed here (scripts/services.sh installs it)")
		}
		host, port, _ := strings.Cut(acfg.Addr, ":")
		args := []string{"--host", host, "--port", port, "--user", acfg.User, "--database", acfg.Database}
		if acfg.Password != "" {
			args = append(args, "--password", acfg.Password)
		}
		out, err := exec.Command(bin, append(args, "--query", read)...).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) == "0" {
			t.Fatalf("clickhouse-client read: %s %v", out, err)
		}
		for _, w := range writes[:2] {
			out, err := exec.Command(bin, append(args, "--query", w)...).CombinedOutput()
			if err == nil || !strings.Contains(strings.ToLower(string(out)), "readonly") {
				t.Errorf("clickhouse-client %s: %s %v, want a readonly refusal", w, out, err)
			}
		}
	})
	t.Run("http", func(t *testing.T) {
		port := os.Getenv("VENNA_CH_HTTP_PORT")
		if port == "" {
			t.Skip("VENNA_CH_HTTP_PORT is not set (scripts/test.sh sets it when it starts the server)")
		}
		host, _, _ := strings.Cut(acfg.Addr, ":")
		post := func(sql string) (int, string) {
			u := url.URL{Scheme: "http", Host: host + ":" + port, Path: "/",
				RawQuery: url.Values{"user": {acfg.User}, "password": {acfg.Password}, "database": {acfg.Database}}.Encode()}
			resp, err := http.Post(u.String(), "text/plain", strings.NewReader(sql))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var b strings.Builder
			_, _ = fmt.Fprint(&b, mustRead(t, resp))
			return resp.StatusCode, b.String()
		}
		if code, body := post(read); code != http.StatusOK || strings.TrimSpace(body) == "0" {
			t.Fatalf("HTTP read: %d %s", code, body)
		}
		for _, w := range writes[:2] {
			if code, body := post(w); code == http.StatusOK || !strings.Contains(strings.ToLower(body), "readonly") {
				t.Errorf("HTTP %s: %d %s, want a readonly refusal", w, code, body)
			}
		}
	})
	// Nothing got through.
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+cfg.Database+".workspaces WHERE workspace_id = 'ws_evil'").Scan(&n); err != nil || n != 0 {
		t.Errorf("ws_evil rows: %d %v", n, err)
	}
}

func mustRead(t *testing.T, resp *http.Response) string {
	t.Helper()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}
