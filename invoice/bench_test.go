package invoice

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/testenv"
)

// benchBook prices the three benchmark models, with a price change mid-month so that the
// run splits usage at a breakpoint as a real month can.
const benchBook = `currency: USD
prices:
  - {model: m-0, effective_from: "2026-01-01T00:00:00Z", input: "2.50", cached_input: "1.25", output: "10.00"}
  - {model: m-0, effective_from: "2026-01-15T00:00:00Z", input: "2.00", cached_input: "1.00", output: "8.00"}
  - {model: m-1, effective_from: "2026-01-01T00:00:00Z", input: "0.15", cached_input: "0.075", output: "0.60"}
  - {model: m-2, effective_from: "2026-01-01T00:00:00Z", input: "1.10", cached_input: "0.275", output: "4.40"}
`

// benchPlan is a plan with graduated output rates for every benchmark model, a fee and a
// commitment, which the "graduated" case subscribes every workspace to.
const benchPlan = `plans:
  - id: grad
    name: Graduated
    versions:
      - effective_from: "2026-01-01T00:00:00Z"
        fee: "20.00"
        commitment: "50.00"
        rates:
          - {model: m-0, token_class: input, pricing: per_unit, usd_per_million: "2.00"}
          - {model: m-0, token_class: output, pricing: graduated, tiers: [{up_to: 100000, usd_per_million: "10.00"}, {up_to: 1000000, usd_per_million: "8.00"}, {usd_per_million: "6.00"}]}
          - {model: m-1, token_class: output, pricing: graduated, tiers: [{up_to: 500000, usd_per_million: "0.60"}, {usd_per_million: "0.40"}]}
          - {model: m-2, token_class: output, pricing: graduated, tiers: [{up_to: 200000, usd_per_million: "4.40"}, {up_to: 2000000, usd_per_million: "4.00"}, {usd_per_million: "3.50"}]}
`

const (
	benchModels = 3
	benchEvents = 10_000_000 // raw events a month, whatever the number of workspaces
	monthHours  = 31 * 24
)

// loadHourly fills usage_hourly (and usage_daily from it) with a month of rollups for n workspaces x 3 models x
// one key: each workspace x model is active in hours hours spread over January, and the
// rows add up to about scale x benchEvents requests. Rows come straight from numbers(), without
// raw events, so that 10M-event months load in seconds.
func loadHourly(b *testing.B, conn driver.Conn, db string, n, hours, scale int) (rows, events uint64) {
	b.Helper()
	total := n * benchModels * hours
	perRow := max(1, benchEvents/total) * scale
	q := fmt.Sprintf(`INSERT INTO %[1]s.usage_hourly (workspace_id, hour, model, api_key_id, requests, prompt_tokens, cached_tokens,
    completion_tokens, reasoning_tokens, accepted_prediction_tokens, rejected_prediction_tokens, total_tokens, version)
SELECT concat('ws_', toString(number %% %[2]d)) AS ws,
    toDateTime(%[3]d + 3600 * intDiv(intDiv(number, %[2]d * 3) * %[5]d, %[4]d), 'UTC'),
    concat('m-', toString(intDiv(number, %[2]d) %% 3)), concat('key_', ws), %[6]d,
    %[6]d * (800 + number %% 400), %[6]d * (number %% 200), %[6]d * (100 + number %% 300), %[6]d * (number %% 50), 0, 0,
    %[6]d * (900 + number %% 400 + number %% 300), 1
FROM numbers(%[7]d)`, db, n, jan.Unix(), hours, monthHours, perRow, total)
	if err := conn.Exec(context.Background(), q); err != nil {
		b.Fatal(err)
	}
	// The daily rollup, as the aggregator derives it from the hours.
	q = fmt.Sprintf(`INSERT INTO %[1]s.usage_daily (workspace_id, day, model, api_key_id, requests, prompt_tokens, cached_tokens,
    completion_tokens, reasoning_tokens, accepted_prediction_tokens, rejected_prediction_tokens, total_tokens, version)
SELECT workspace_id, toStartOfDay(hour) AS day, model, api_key_id, sum(requests), sum(prompt_tokens), sum(cached_tokens),
    sum(completion_tokens), sum(reasoning_tokens), sum(accepted_prediction_tokens), sum(rejected_prediction_tokens), sum(total_tokens), 1
FROM %[1]s.usage_hourly GROUP BY workspace_id, day, model, api_key_id`, db)
	if err := conn.Exec(context.Background(), q); err != nil {
		b.Fatal(err)
	}
	return uint64(total), uint64(total * perRow)
}

// loadRawEvents fills usage_events with benchEvents events of n workspaces in January.
func loadRawEvents(b *testing.B, conn driver.Conn, db string, n int) {
	b.Helper()
	q := fmt.Sprintf(`INSERT INTO %[1]s.usage_events (event_id, schema_version, occurred_at, ingested_at, workspace_id, api_key_id,
    model, upstream, upstream_model, request_id, status, http_status, stream, estimated, latency_ms, prompt_tokens, cached_tokens,
    completion_tokens, reasoning_tokens, accepted_prediction_tokens, rejected_prediction_tokens, total_tokens, kafka_partition, kafka_offset)
SELECT concat('ev-', toString(number)), 1, toDateTime(%[3]d + intDiv(number * %[4]d, %[5]d), 'UTC'), now(),
    concat('ws_', toString(number %% %[2]d)) AS ws, concat('key_', ws), concat('m-', toString(intDiv(number, %[2]d) %% 3)),
    'up', 'up-model', concat('req-', toString(number)), 'ok', 200, 0, 0, 100,
    800 + number %% 400, number %% 200, 100 + number %% 300, number %% 50, 0, 0, 900 + number %% 400 + number %% 300,
    toInt32(number %% 8), toInt64(number)
FROM numbers(%[5]d)`, db, n, jan.Unix(), monthHours*3600, benchEvents)
	if err := conn.Exec(context.Background(), q); err != nil {
		b.Fatal(err)
	}
}

// settle waits for the merges the load started, so that they do not slow what is timed.
func settle(b *testing.B, conn driver.Conn, db string) {
	b.Helper()
	for deadline := time.Now().Add(10 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		var n uint64
		if err := conn.QueryRow(context.Background(), "SELECT count() FROM system.merges WHERE database = ?", db).Scan(&n); err != nil {
			b.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
}

// groupBy is the baseline: one plain ClickHouse GROUP BY workspace x model of the token
// sums of a table, nothing else.
func groupBy(b *testing.B, conn driver.Conn, table string) time.Duration {
	b.Helper()
	start := time.Now()
	rows, err := conn.Query(context.Background(), "SELECT workspace_id, model, sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens) FROM "+
		table+" GROUP BY workspace_id, model")
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for rows.Next() {
		n++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// heapPeak samples the heap in use while it runs f.
func heapPeak(f func()) uint64 {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	f()
	close(done)
	wg.Wait()
	return peak.Load()
}

// BenchmarkRun times one invoice run of January for 1,000 and 10,000 workspaces over a
// month of about 10M events, next to a plain GROUP BY over the same hourly rollup rows and
// over the 10M raw events, measured in the same run; and 10,000 workspaces on a plan with
// graduated rate cards for every model, a fee and a commitment. The run reads only rollups: its cost
// follows workspaces x models (x active hours), not raw events; the "10x events" case has
// ten times the events in the same rollup rows, and takes the same time.
//
//	go test -run XXX -bench BenchmarkRun -benchtime 3x -timeout 1h ./invoice/
func BenchmarkRun(parent *testing.B) {
	for _, c := range []struct {
		name       string
		workspaces int
		hours      int // active hours per workspace x model
		tenX       bool
		plan       bool // every workspace on benchPlan (graduated rate cards, a fee, a commitment)
	}{
		{"workspaces=1000", 1000, monthHours, false, false},
		{"workspaces=1000,events=10x", 1000, monthHours, true, false},
		{"workspaces=10000", 10_000, benchEvents / (10_000 * benchModels), false, false},
		{"workspaces=10000,graduated", 10_000, benchEvents / (10_000 * benchModels), false, true},
	} {
		// Loaded on the sub-benchmark's first call only (it is called again with a larger
		// b.N), into a database of the parent's, dropped when the parent ends.
		var (
			iv           *Invoicer
			conn         driver.Conn
			db           string
			rows, events uint64
			raw          bool
		)
		setup := func() {
			if iv != nil {
				return
			}
			var cfg chdb.Config
			cfg, conn = testenv.ClickHouse(parent)
			scale := 1
			if c.tenX {
				scale = 10 // the same rows with ten times the requests and tokens
			}
			rows, events = loadHourly(parent, conn, cfg.Database, c.workspaces, c.hours, scale)
			raw = !c.tenX
			if raw {
				loadRawEvents(parent, conn, cfg.Database, c.workspaces)
			}
			book := benchBook
			if c.plan {
				book += benchPlan
				q := fmt.Sprintf(`INSERT INTO %s.subscriptions (workspace_id, effective_from, plan_id, created_at, version)
SELECT concat('ws_', toString(number)), toDateTime(%d, 'UTC'), 'grad', now(), 1 FROM numbers(%d)`, cfg.Database, jan.Unix(), c.workspaces)
				if err := conn.Exec(context.Background(), q); err != nil {
					parent.Fatal(err)
				}
			}
			pb, err := ParsePriceBook([]byte(book))
			if err != nil {
				parent.Fatal(err)
			}
			iv, err = New(Config{Database: cfg.Database}, conn, pb)
			if err != nil {
				parent.Fatal(err)
			}
			iv.now = func() time.Time { return jan.AddDate(0, 0, 20) }
			db = cfg.Database
			settle(parent, conn, db)
		}
		parent.Run(c.name, func(b *testing.B) {
			setup()
			b.ReportAllocs()
			var hourly, rawDur, run time.Duration
			var peak uint64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				var res RunResult
				var err error
				peak = max(peak, heapPeak(func() { res, err = iv.Run(context.Background(), jan, feb) }))
				run += time.Since(start)
				if err != nil || len(res.Written) != c.workspaces || len(res.Failed) > 0 {
					b.Fatalf("run: %v, %d invoices written, failed %v", err, len(res.Written), res.Failed)
				}
				b.StopTimer()
				hourly += groupBy(b, conn, db+".usage_hourly")
				if raw {
					rawDur += groupBy(b, conn, db+".usage_events")
				}
				b.StartTimer()
			}
			n := float64(b.N)
			b.ReportMetric(float64(rows), "rollup-rows")
			b.ReportMetric(float64(events), "events")
			b.ReportMetric(run.Seconds()/n, "run-s")
			b.ReportMetric(hourly.Seconds()/n, "groupby-hourly-s")
			b.ReportMetric(run.Seconds()/hourly.Seconds(), "x-groupby-hourly")
			if raw {
				b.ReportMetric(rawDur.Seconds()/n, "groupby-raw-s")
				b.ReportMetric(run.Seconds()/rawDur.Seconds(), "x-groupby-raw")
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
			b.ReportMetric(run.Seconds()/n/float64(c.workspaces*benchModels)*1e6, "µs-per-workspace-model")
		})
	}
}
