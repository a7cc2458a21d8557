package api_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/venna/metering/aggregate"
	"github.com/venna/metering/api"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
)

// benchEventsSQL generates n raw events spread evenly over the 30 days before now: 50
// workspaces with 4 keys each, three models, 1% failed exchanges. Placeholders: {db},
// {n}, {start}, {span} (seconds).
const benchEventsSQL = `INSERT INTO {db}.usage_events (event_id, schema_version, occurred_at, ingested_at, workspace_id,
    api_key_id, model, upstream, upstream_model, request_id, status, http_status, stream, estimated, latency_ms,
    prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, accepted_prediction_tokens,
    rejected_prediction_tokens, total_tokens, kafka_partition, kafka_offset)
SELECT concat('e', toString(number)), 1, toDateTime({start} + intDiv(number * {span}, {n}), 'UTC') AS t, t,
    concat('ws_', toString(number % 50)), concat('key_', toString(number % 50), '_', toString(intDiv(number, 50) % 4)),
    ['venna-1', 'venna-1-mini', 'venna-1-reasoning'][number % 3 + 1], 'sim', 'sim-model', '',
    if(number % 100 = 0, 'upstream_error', 'ok'), 200, 0, 0, toUInt32(50 + number % 1000),
    toUInt64(500 + number % 1500) AS p, toUInt64(intDiv(number % 1500, 3)), toUInt64(100 + number % 700) AS c,
    toUInt64(if(number % 3 = 2, intDiv(number % 700, 2), 0)), 0, 0, p + c, 0, toInt64(number)
FROM system.numbers LIMIT {n}`

// BenchmarkUsage measures GET /v1/usage for one workspace over a database of
// VENNA_BENCH_EVENTS raw events (default 10M) and their rollups: 30 days in daily buckets
// and 24 hours in hourly buckets, grouped by model, next to the ClickHouse queries that
// answer the same from one rollup table alone (usage_daily, usage_hourly; the baseline,
// run alternately with the API so that both meet the same load) and from raw events
// alone. It reports p50 and p99 in ms and the API's as ratios to the baseline's. Run it with
//
//	go test -run '^$' -bench BenchmarkUsage -benchtime 300x -timeout 30m ./api/
//
// VENNA_TEST_KEEP=1 keeps the generated database; VENNA_BENCH_DB=<it> measures it again
// without generating.
func BenchmarkUsage(b *testing.B) {
	n := 10_000_000
	if v := os.Getenv("VENNA_BENCH_EVENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatalf("VENNA_BENCH_EVENTS=%q: %v", v, err)
		}
	}
	ctx := context.Background()
	cfg, conn := testenv.ClickHouse(b)
	db := cfg.Database
	if reuse := os.Getenv("VENNA_BENCH_DB"); reuse != "" {
		db = reuse // a database a previous run kept (VENNA_TEST_KEEP=1): no generation
	} else {
		generate(b, conn, db, n)
	}
	now := time.Now().UTC()
	store := apikey.NewStore(conn, db)
	if _, err := store.CreateWorkspace(ctx, "ws_7", "bench"); err != nil {
		b.Fatal(err)
	}
	_, token, err := store.IssueKey(ctx, "ws_7", "bench")
	if err != nil {
		b.Fatal(err)
	}
	prices, err := invoice.LoadPriceBook("../deploy/prices.yaml")
	if err != nil {
		b.Fatal(err)
	}
	inv, err := invoice.New(invoice.Config{Database: db}, conn, prices)
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	auth, err := apikey.NewAuthenticator(ctx, store, log)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := api.New(api.Config{Database: db}, conn, auth, inv, log, api.WithPrices(prices))
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	b.Cleanup(hs.Close)

	scenarios := []struct {
		name, width string
		from        time.Time
		buckets     int
		rollup      string // the rollup table a direct query would read
		bucketSQL   string
	}{
		{"30d_daily", "1d", now.Add(-30 * 24 * time.Hour), 31, "usage_daily", "toStartOfDay(day)"},
		{"24h_hourly", "1h", now.Add(-24 * time.Hour), 25, "usage_hourly", "hour"},
	}
	for _, sc := range scenarios {
		col := map[string]string{"usage_daily": "day", "usage_hourly": "hour"}[sc.rollup]
		rollupSQL := fmt.Sprintf(`SELECT %s AS b, model, sum(requests), sum(prompt_tokens), sum(cached_tokens),
    sum(completion_tokens), sum(reasoning_tokens), sum(accepted_prediction_tokens), sum(rejected_prediction_tokens)
FROM %s.%s FINAL WHERE workspace_id = 'ws_7' AND %s >= toDateTime(%d, 'UTC') AND %s < toDateTime(%d, 'UTC')
GROUP BY b, model ORDER BY b, model`, sc.bucketSQL, db, sc.rollup, col, sc.from.Unix(), col, now.Unix())
		rawSQL := fmt.Sprintf(`SELECT intDiv(toUInt32(occurred_at), %d) AS b, model, count(), sum(prompt_tokens), sum(cached_tokens),
    sum(completion_tokens), sum(reasoning_tokens), sum(accepted_prediction_tokens), sum(rejected_prediction_tokens)
FROM (SELECT * FROM %s.usage_events WHERE workspace_id = 'ws_7' AND occurred_at >= toDateTime(%d, 'UTC')
    AND occurred_at < toDateTime(%d, 'UTC') AND status = 'ok' LIMIT 1 BY event_id)
GROUP BY b, model ORDER BY b, model`, map[string]int{"1d": 86400, "1h": 3600}[sc.width], db, sc.from.Unix(), now.Unix())
		url := fmt.Sprintf("%s/v1/usage?bucket_width=%s&start_time=%d&limit=%d&group_by=model", hs.URL, sc.width, sc.from.Unix(), sc.buckets)

		chQuery := func(sql string) func() error {
			return func() error {
				rows, err := conn.Query(ctx, sql)
				if err != nil {
					return err
				}
				for rows.Next() {
				}
				rows.Close()
				return rows.Err()
			}
		}
		get := func() error {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		}
		// The API and its baseline alternate, so both meet the same load on the machine.
		b.Run(sc.name+"/api_vs_rollup_query", func(b *testing.B) {
			lat := measure(b, get, chQuery(rollupSQL))
			api, base := lat[0], lat[1]
			report(b, "api_", api)
			report(b, "rollup_", base)
			b.ReportMetric(float64(pct(api, 50))/float64(pct(base, 50)), "api/rollup_p50")
			b.ReportMetric(float64(pct(api, 99))/float64(pct(base, 99)), "api/rollup_p99")
		})
		b.Run(sc.name+"/raw_events_query", func(b *testing.B) { report(b, "raw_", measure(b, chQuery(rawSQL))[0]) })
	}
}

// generate loads n events spread over the last 30 days and rolls them up, then waits for
// ClickHouse's background merges to settle: the steady state, not the load spike.
func generate(b *testing.B, conn driver.Conn, db string, n int) {
	ctx := context.Background()
	const span = 30 * 24 * 3600
	start := time.Now().UTC().Add(-span * time.Second).Unix()
	t0 := time.Now()
	q := strings.NewReplacer("{db}", db, "{n}", strconv.Itoa(n), "{start}", strconv.FormatInt(start, 10), "{span}", strconv.Itoa(span)).Replace(benchEventsSQL)
	if err := conn.Exec(ctx, q); err != nil {
		b.Fatalf("generate events: %v", err)
	}
	b.Logf("inserted %d events in %s", n, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	agg, err := aggregate.New(aggregate.Config{Database: db}, conn)
	if err != nil {
		b.Fatal(err)
	}
	res, err := agg.Run(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("rolled up %d hours in %s", len(res.Hours), time.Since(t0).Round(time.Millisecond))
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		var merging uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.merges WHERE database = ?", db).Scan(&merging); err != nil {
			b.Fatal(err)
		}
		if merging == 0 {
			break
		}
	}
	var hourly, daily uint64
	if err := conn.QueryRow(ctx, "SELECT (SELECT count() FROM "+db+".usage_hourly), (SELECT count() FROM "+db+".usage_daily)").Scan(&hourly, &daily); err != nil {
		b.Fatal(err)
	}
	b.Logf("usage_hourly holds %d rows, usage_daily %d (database %s)", hourly, daily, db)
}

// measure runs each of fs in turn, b.N rounds, and returns each one's latencies, sorted.
func measure(b *testing.B, fs ...func() error) [][]time.Duration {
	b.Helper()
	lat := make([][]time.Duration, len(fs))
	for _, f := range fs {
		if err := f(); err != nil { // warm caches and connections
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		for i, f := range fs {
			t := time.Now()
			if err := f(); err != nil {
				b.Fatal(err)
			}
			lat[i] = append(lat[i], time.Since(t))
		}
	}
	b.StopTimer()
	for _, l := range lat {
		slices.Sort(l)
	}
	return lat
}

// pct is the p-th percentile of sorted latencies.
func pct(sorted []time.Duration, p int) time.Duration {
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

func report(b *testing.B, prefix string, sorted []time.Duration) {
	b.ReportMetric(float64(pct(sorted, 50).Microseconds())/1000, prefix+"p50_ms")
	b.ReportMetric(float64(pct(sorted, 99).Microseconds())/1000, prefix+"p99_ms")
}
