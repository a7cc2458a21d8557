package aggregate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/schema"
)

// event is the part of a usage event the rollups read.
type event struct {
	id, workspace, key, model, status string
	at                                time.Time
	prompt, cached, completion, reas  uint64
}

// insertEvents writes events into usage_events as ingest does, ingested now.
func insertEvents(t testing.TB, conn driver.Conn, db string, evs []event) {
	t.Helper()
	out := make([]schema.UsageEvent, len(evs))
	for i, e := range evs {
		status := e.status
		if status == "" {
			status = "ok"
		}
		out[i] = schema.UsageEvent{SchemaVersion: 1, EventID: e.id, OccurredAt: e.at, WorkspaceID: e.workspace, APIKeyID: e.key,
			Model: e.model, Upstream: "up", UpstreamModel: "up-" + e.model, RequestID: "req-" + e.id, Status: status,
			HTTPStatus: 200, LatencyMS: 10, PromptTokens: int64(e.prompt), CachedTokens: int64(e.cached),
			CompletionTokens: int64(e.completion), ReasoningTokens: int64(e.reas), TotalTokens: int64(e.prompt + e.completion)}
	}
	testenv.InsertEvents(t, conn, db, out)
}

func newAggregator(t testing.TB, conn driver.Conn, db string) *Aggregator {
	t.Helper()
	a, err := New(Config{Database: db}, conn)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// sums is one rollup row's numbers, keyed by window and dimensions.
type sums struct{ requests, prompt, cached, completion, reasoning, total uint64 }

// readSums runs a query whose rows are (key, requests, prompt, cached, completion, reasoning, total).
func readSums(t testing.TB, conn driver.Conn, q string) map[string]sums {
	t.Helper()
	rows, err := conn.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	out := map[string]sums{}
	for rows.Next() {
		var k string
		var s sums
		if err := rows.Scan(&k, &s.requests, &s.prompt, &s.cached, &s.completion, &s.reasoning, &s.total); err != nil {
			t.Fatal(err)
		}
		out[k] = s
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

const sumCols = "count(), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens), sum(reasoning_tokens), sum(total_tokens)"
const rollupCols = "sum(requests), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens), sum(reasoning_tokens), sum(total_tokens)"

// truth is the from-scratch GROUP BY over deduplicated billable raw events, by window of
// the given width ("Hour" or "Day").
func truth(t testing.TB, conn driver.Conn, db, width string) map[string]sums {
	return readSums(t, conn, fmt.Sprintf(`SELECT concat(workspace_id, '|', toString(toStartOf%s(occurred_at)), '|', model, '|', api_key_id) AS k, %s
		FROM (SELECT * FROM %s.usage_events WHERE status = 'ok' LIMIT 1 BY event_id) GROUP BY k`, width, sumCols, db))
}

func rollup(t testing.TB, conn driver.Conn, db, table, col string) map[string]sums {
	return readSums(t, conn, fmt.Sprintf(`SELECT concat(workspace_id, '|', toString(%s), '|', model, '|', api_key_id) AS k, %s
		FROM %s.%s FINAL GROUP BY k`, col, rollupCols, db, table))
}

func compare(t *testing.T, what string, got, want map[string]sums) {
	t.Helper()
	if len(want) == 0 {
		t.Fatalf("%s: no raw usage to compare with", what)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s %s: rollup %+v, raw events %+v", what, k, got[k], w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s %s: rollup has %+v, raw events nothing", what, k, g)
		}
	}
}

var jan = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestRollupsMatchRawEvents(t *testing.T) {
	cfg, conn := testenv.ClickHouse(t)
	db := cfg.Database
	evs := []event{
		{id: "e1", workspace: "ws_a", key: "k1", model: "m1", at: jan.Add(10 * time.Minute), prompt: 100, cached: 40, completion: 20, reas: 5},
		{id: "e2", workspace: "ws_a", key: "k1", model: "m1", at: jan.Add(50 * time.Minute), prompt: 7, completion: 3},
		{id: "e3", workspace: "ws_a", key: "k2", model: "m1", at: jan.Add(70 * time.Minute), prompt: 1, completion: 1},
		{id: "e4", workspace: "ws_b", key: "k3", model: "m2", at: jan.Add(25 * time.Hour), prompt: 9, completion: 9},
		{id: "e5", workspace: "ws_b", key: "k3", model: "m2", at: jan.Add(47 * time.Hour), prompt: 2, completion: 2},
		{id: "e6", workspace: "ws_b", key: "k3", model: "m2", at: jan.Add(47 * time.Hour), prompt: 1000, status: "error"},
	}
	insertEvents(t, conn, db, evs)
	insertEvents(t, conn, db, evs[:2]) // redelivered: must not count twice
	a := newAggregator(t, conn, db)
	res, err := a.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Hours) != 4 || len(res.Days) != 2 {
		t.Errorf("run recomputed hours %v and days %v, want 4 hours on 2 days", res.Hours, res.Days)
	}
	for i := 0; i < 2; i++ { // a rerun writes the same numbers
		compare(t, "hourly", rollup(t, conn, db, "usage_hourly", "hour"), truth(t, conn, db, "Hour"))
		compare(t, "daily", rollup(t, conn, db, "usage_daily", "day"), truth(t, conn, db, "Day"))
		if err := a.Recompute(context.Background(), res.Hours); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("late event recomputes its hour and day", func(t *testing.T) {
		insertEvents(t, conn, db, []event{{id: "late", workspace: "ws_b", key: "k3", model: "m2", at: jan.Add(25*time.Hour + time.Minute), prompt: 5, completion: 6}})
		if _, err := a.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		compare(t, "hourly", rollup(t, conn, db, "usage_hourly", "hour"), truth(t, conn, db, "Hour"))
		daily := rollup(t, conn, db, "usage_daily", "day")
		compare(t, "daily", daily, truth(t, conn, db, "Day"))
		if got := daily["ws_b|2026-01-02 00:00:00|m2|k3"]; got.requests != 3 || got.prompt != 16 {
			t.Errorf("ws_b day 2 after a late event: %+v, want 3 requests and 16 prompt tokens", got)
		}
	})
}

// TestReplicaClocksDoNotDecide: a replica whose clock runs ahead recomputes an hour, then
// the hour gets another event and a replica whose clock runs behind recomputes it. With
// clock versions the stale computation would win for good; the hour must show both events.
func TestReplicaClocksDoNotDecide(t *testing.T) {
	cfg, conn := testenv.ClickHouse(t)
	db := cfg.Database
	ahead, behind := newAggregator(t, conn, db), newAggregator(t, conn, db)
	ahead.now = func() time.Time { return time.Now().Add(time.Hour) }
	behind.now = func() time.Time { return time.Now().Add(-time.Hour) }
	hour := jan.Add(5 * time.Hour)
	insertEvents(t, conn, db, []event{{id: "a", workspace: "ws", key: "k", model: "m", at: hour, prompt: 1, completion: 1}})
	if err := ahead.Recompute(context.Background(), []time.Time{hour}); err != nil {
		t.Fatal(err)
	}
	insertEvents(t, conn, db, []event{{id: "b", workspace: "ws", key: "k", model: "m", at: hour.Add(time.Minute), prompt: 2, completion: 2}})
	if err := behind.Recompute(context.Background(), []time.Time{hour}); err != nil {
		t.Fatal(err)
	}
	compare(t, "hourly", rollup(t, conn, db, "usage_hourly", "hour"), truth(t, conn, db, "Hour"))
	compare(t, "daily", rollup(t, conn, db, "usage_daily", "day"), truth(t, conn, db, "Day"))
}

// TestConcurrentAggregators runs two aggregators in loops while events keep arriving
// (duplicates and errors among them). At every moment a rollup total may lag the raw
// events but never exceed them; once the events stop and both have run again, every
// hourly and daily row equals a from-scratch GROUP BY over deduplicated raw events.
func TestConcurrentAggregators(t *testing.T) {
	cfg, conn := testenv.ClickHouse(t)
	db := cfg.Database
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	replicas := []*Aggregator{newAggregator(t, conn, db), newAggregator(t, conn, db)}

	var writing atomic.Bool
	writing.Store(true)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	var runs atomic.Int64
	for _, a := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Keep running until the writer stops, then twice more: the last runs see every event.
			for extra := 0; extra < 2; {
				if !writing.Load() {
					extra++
				}
				if _, err := a.Run(ctx); err != nil {
					errs <- err
					return
				}
				runs.Add(1)
			}
		}()
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var sent []event
	for batch := 0; batch < 40; batch++ {
		var evs []event
		for i := 0; i < 50; i++ {
			e := event{id: fmt.Sprintf("e%d-%d", batch, i), workspace: fmt.Sprintf("ws_%d", rng.IntN(4)), key: fmt.Sprintf("k%d", rng.IntN(2)),
				model: fmt.Sprintf("m%d", rng.IntN(3)), at: jan.Add(time.Duration(rng.IntN(72*60)) * time.Minute),
				prompt: uint64(rng.IntN(1000)), completion: uint64(rng.IntN(500))}
			e.cached = e.prompt / 3
			if rng.IntN(10) == 0 {
				e.status = "upstream_error"
			}
			evs = append(evs, e)
		}
		if len(sent) > 0 { // redeliveries of earlier events
			for i := 0; i < 5; i++ {
				evs = append(evs, sent[rng.IntN(len(sent))])
			}
		}
		insertEvents(t, conn, db, evs)
		sent = append(sent, evs...)
		if batch%10 == 9 { // meanwhile: never more than the raw events
			raw := totals(t, conn, "SELECT "+sumCols+" FROM (SELECT * FROM "+db+".usage_events WHERE status = 'ok' LIMIT 1 BY event_id)")
			for _, table := range []string{"usage_hourly", "usage_daily"} {
				got := totals(t, conn, "SELECT "+rollupCols+" FROM "+db+"."+table+" FINAL")
				if got.requests > raw.requests || got.prompt > raw.prompt || got.completion > raw.completion {
					t.Errorf("after batch %d %s totals %+v exceed the raw events' %+v", batch, table, got, raw)
				}
			}
		}
	}
	writing.Store(false)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d runs by 2 replicas over %d inserted events", runs.Load(), len(sent))
	compare(t, "hourly", rollup(t, conn, db, "usage_hourly", "hour"), truth(t, conn, db, "Hour"))
	compare(t, "daily", rollup(t, conn, db, "usage_daily", "day"), truth(t, conn, db, "Day"))
}

func totals(t testing.TB, conn driver.Conn, q string) sums {
	t.Helper()
	var s sums
	if err := conn.QueryRow(context.Background(), q).Scan(&s.requests, &s.prompt, &s.cached, &s.completion, &s.reasoning, &s.total); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return s
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"ok", Config{Database: "venna"}, true},
		{"no database", Config{}, false},
		{"negative lag", Config{Database: "venna", SafetyLag: -time.Second}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.cfg, nil)
			if (err == nil) != c.ok {
				t.Errorf("New(%+v) error = %v, want ok=%v", c.cfg, err, c.ok)
			}
		})
	}
}

// TestFirstRunFillsDaysRolledUpBeforeTheDailyTable: hourly rows written before usage_daily
// existed get their daily rows on an aggregator's first run, so nothing that reads days
// misses them.
func TestFirstRunFillsDaysRolledUpBeforeTheDailyTable(t *testing.T) {
	cfg, conn := testenv.ClickHouse(t)
	db := cfg.Database
	insertEvents(t, conn, db, []event{
		{id: "old1", workspace: "ws", key: "k", model: "m", at: jan.Add(3 * time.Hour), prompt: 10, completion: 1},
		{id: "old2", workspace: "ws", key: "k", model: "m", at: jan.Add(50 * time.Hour), prompt: 20, completion: 2},
	})
	// What an aggregator of before migration 0003 wrote: hourly rows with a clock version.
	err := conn.Exec(context.Background(), `INSERT INTO `+db+`.usage_hourly (workspace_id, hour, model, api_key_id, requests, prompt_tokens,
		cached_tokens, completion_tokens, reasoning_tokens, accepted_prediction_tokens, rejected_prediction_tokens, total_tokens, version)
		SELECT workspace_id, toStartOfHour(occurred_at), model, api_key_id, 1, prompt_tokens, cached_tokens, completion_tokens,
		reasoning_tokens, 0, 0, total_tokens, toUInt64(1767225600000000000) FROM `+db+`.usage_events`)
	if err != nil {
		t.Fatal(err)
	}
	a := newAggregator(t, conn, db)
	// A watermark past the old events: this run touches no hour, it only fills the days.
	if err := conn.Exec(context.Background(), "INSERT INTO "+db+".aggregate_watermarks (job, watermark, version) SELECT 'usage_hourly', now() + 60, 1"); err != nil {
		t.Fatal(err)
	}
	res, err := a.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Hours) != 0 {
		t.Fatalf("run recomputed hours %v, want none (watermark after the events)", res.Hours)
	}
	compare(t, "daily", rollup(t, conn, db, "usage_daily", "day"), truth(t, conn, db, "Day"))
}
