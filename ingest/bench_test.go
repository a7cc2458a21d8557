package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"
	"github.com/venna/metering/internal/kafkaadmin"
	"github.com/venna/metering/internal/sqlset"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/schema"
)

// realisticEvents returns n events shaped like the gateway's: UUIDv7 ids, 200 workspaces,
// three models, millisecond timestamps, 1% upstream errors. The same seed gives the same
// events.
func realisticEvents(n int, seed uint64) []schema.UsageEvent {
	rng := rand.New(rand.NewPCG(seed, seed))
	word := func(k int) string {
		const abc = "abcdefghijklmnopqrstuvwxyz0123456789"
		b := make([]byte, k)
		for i := range b {
			b[i] = abc[rng.IntN(len(abc))]
		}
		return string(b)
	}
	workspaces := make([]string, 200)
	keys := make([]string, 400)
	for i := range workspaces {
		workspaces[i] = "ws_" + word(16)
		keys[2*i], keys[2*i+1] = "key_"+word(12), "key_"+word(12)
	}
	models := []struct{ model, upstream, upstreamModel string }{
		{"venna-1", "openai", "gpt-4.1"}, {"venna-1-mini", "openai", "gpt-4.1-mini"}, {"venna-1-reasoning", "sim", "sim-reasoner"},
	}
	base := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	evs := make([]schema.UsageEvent, n)
	for i := range evs {
		w := rng.IntN(len(workspaces))
		m := models[rng.IntN(len(models))]
		at := base.Add(time.Duration(rng.Int64N(int64(48 * time.Hour))).Truncate(time.Millisecond))
		var u uuid.UUID
		for j := range u {
			u[j] = byte(rng.Uint32())
		}
		ms := at.UnixMilli()
		u[0], u[1], u[2], u[3], u[4], u[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
		u[6], u[8] = 0x70|u[6]&0x0f, 0x80|u[8]&0x3f
		e := schema.UsageEvent{
			SchemaVersion: schema.EventVersion, EventID: u.String(), OccurredAt: at, WorkspaceID: workspaces[w],
			APIKeyID: keys[2*w+rng.IntN(2)], Model: m.model, Upstream: m.upstream, UpstreamModel: m.upstreamModel,
			RequestID: "chatcmpl-" + word(24), Status: schema.StatusOK, HTTPStatus: 200, LatencyMS: 50 + rng.Int64N(5000),
		}
		if rng.IntN(100) == 0 {
			e.Status, e.HTTPStatus = schema.StatusUpstreamError, 502
		} else {
			e.PromptTokens = 10 + rng.Int64N(8000)
			e.CachedTokens = rng.Int64N(e.PromptTokens/2 + 1)
			e.CompletionTokens = 1 + rng.Int64N(2000)
			if m.model == "venna-1-reasoning" {
				e.ReasoningTokens = rng.Int64N(e.CompletionTokens + 1)
			}
			e.TotalTokens = e.PromptTokens + e.CompletionTokens
		}
		evs[i] = e
	}
	return evs
}

// memSampler records the highest heap in use while it runs.
type memSampler struct {
	peakHeap, peakSys atomic.Uint64
	stop              chan struct{}
	done              sync.WaitGroup
}

func sampleMemory() *memSampler {
	s := &memSampler{stop: make(chan struct{})}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > s.peakHeap.Load() {
				s.peakHeap.Store(ms.HeapInuse)
			}
			if ms.Sys > s.peakSys.Load() {
				s.peakSys.Store(ms.Sys)
			}
			select {
			case <-t.C:
			case <-s.stop:
				return
			}
		}
	}()
	return s
}

func (s *memSampler) Stop() { close(s.stop); s.done.Wait() }

func rowCount(b *testing.B, conn driver.Conn, db string) uint64 {
	var n uint64
	if err := conn.QueryRow(context.Background(), "SELECT count() FROM "+db+".usage_events").Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkIngest measures sustained ingest throughput, Kafka to rows queryable in
// ClickHouse, against the raw clickhouse-go insert rate of the same rows measured in the
// same run, and the consumer's memory. It runs once whatever b.N is:
//
//	scripts/test.sh -run XXX -bench BenchmarkIngest -benchtime 1x ./ingest/
//
// VENNA_BENCH_EVENTS sets the number of events (default 500000), VENNA_BENCH_BATCH the
// batch size of the consumer and of the baseline (default 10000); VENNA_BENCH_DEBUG=1 logs
// each batch's fill, insert and commit times; VENNA_BENCH_CPUPROFILE=FILE profiles the
// end-to-end phase only.
func BenchmarkIngest(b *testing.B) {
	n := 500000
	if v := os.Getenv("VENNA_BENCH_EVENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatalf("VENNA_BENCH_EVENTS: %v", err)
		}
	}
	batchSize, partitions := 10000, 8
	if v := os.Getenv("VENNA_BENCH_BATCH"); v != "" {
		batchSize, _ = strconv.Atoi(v)
	}
	chCfg, conn := testenv.ClickHouse(b)
	brokers, topic := testenv.Topic(b, partitions)
	if err := ensureTopic(brokers, DLQTopicFor(topic)); err != nil {
		b.Fatal(err)
	}

	// 1. Produce, as the gateway does: lz4, batches of 1000, key = workspace.
	var bytes int64
	func() {
		evs := realisticEvents(n, 1)
		w := newTestWriter(brokers, topic)
		w.Compression = kafka.Lz4
		defer w.Close()
		start := time.Now()
		for len(evs) > 0 {
			k := min(50000, len(evs))
			msgs := make([]kafka.Message, k)
			for i, e := range evs[:k] {
				v, _ := json.Marshal(e)
				bytes += int64(len(v))
				msgs[i] = kafka.Message{Key: []byte(e.WorkspaceID), Value: v}
			}
			if err := w.WriteMessages(context.Background(), msgs...); err != nil {
				b.Fatal(err)
			}
			evs = evs[k:]
		}
		b.Logf("produced %d events (%.0f bytes each) in %s", n, float64(bytes)/float64(n), time.Since(start).Round(time.Millisecond))
	}()

	// 2. End to end: a consumer drains the backlog; rows are counted in ClickHouse.
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	logger := quiet
	if os.Getenv("VENNA_BENCH_DEBUG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := New(Config{Brokers: brokers, Topic: topic, GroupID: "bench", Database: chCfg.Database, BatchSize: batchSize}, conn, logger)
	if err != nil {
		b.Fatal(err)
	}
	mem := sampleMemory()
	if f := os.Getenv("VENNA_BENCH_CPUPROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			b.Fatal(err)
		}
		pprof.StartCPUProfile(out)
	}
	cpu0 := cpuTime()
	b.ResetTimer()
	started := time.Now()
	stop := start(c)
	var first time.Time
	var firstRows uint64
	for {
		rows := rowCount(b, conn, chCfg.Database)
		if rows > 0 && first.IsZero() {
			first, firstRows = time.Now(), rows
		}
		if rows >= uint64(n) {
			break
		}
		if time.Since(started) > 10*time.Minute {
			b.Fatalf("only %d of %d rows after 10 minutes", rows, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	end := time.Now()
	b.StopTimer()
	consumerCPU := cpuTime() - cpu0
	pprof.StopCPUProfile()
	mem.Stop()
	if err := stop(); err != nil {
		b.Fatal(err)
	}
	sustained := float64(uint64(n)-firstRows) / end.Sub(first).Seconds()
	overall := float64(n) / end.Sub(started).Seconds()
	heapMB := float64(mem.peakHeap.Load()-min(before.HeapInuse, mem.peakHeap.Load())) / (1 << 20)

	// 3. Baseline: the same rows, already decoded, inserted with clickhouse-go in batches
	// of the same size into a fresh database — once row by row (batch.Append, the plain
	// API) and once column by column (what the consumer does).
	rows := func() []*eventColumns {
		var out []*eventColumns
		evs := realisticEvents(n, 1)
		for i := 0; i < len(evs); i += batchSize {
			cols := &eventColumns{}
			cols.grow(batchSize)
			for j := i; j < min(i+batchSize, len(evs)); j++ {
				cols.add(&evs[j], int32(j%partitions), int64(j))
			}
			out = append(out, cols)
		}
		return out
	}()
	rawRate := func(name string, insert func(*Consumer, *eventColumns) error) float64 {
		chCfg, conn := testenv.ClickHouse(b)
		ins := &Consumer{cfg: Config{Database: chCfg.Database}, conn: conn, now: time.Now}
		start, cpu := time.Now(), cpuTime()
		for _, cols := range rows {
			if err := insert(ins, cols); err != nil {
				b.Fatalf("%s insert: %v", name, err)
			}
		}
		rate := float64(n) / time.Since(start).Seconds()
		b.Logf("%s raw insert: %.0f rows/s, client CPU %.2f µs/row", name, rate, float64((cpuTime()-cpu).Microseconds())/float64(n))
		if got := rowCount(b, conn, chCfg.Database); got != uint64(n) {
			b.Fatalf("%s baseline stored %d rows, want %d", name, got, n)
		}
		return rate
	}
	rowWise := rawRate("row-wise", func(c *Consumer, cols *eventColumns) error {
		return c.insertRows(context.Background(), cols)
	})
	columnar := rawRate("columnar", func(c *Consumer, cols *eventColumns) error {
		return c.insert(context.Background(), cols)
	})
	b.ReportMetric(sustained, "events/s")
	b.ReportMetric(sustained/rowWise, "ratio-to-append")
	b.ReportMetric(sustained/columnar, "ratio-to-columnar")
	b.ReportMetric(heapMB, "heap-MB")
	b.Logf("end to end: %d events, sustained %.0f events/s (first row after %s), %.0f events/s including the group join",
		n, sustained, first.Sub(started).Round(time.Millisecond), overall)
	b.Logf("raw clickhouse-go insert of the same rows: row-wise (batch.Append) %.0f rows/s, columnar %.0f rows/s; end to end / raw: %.2f and %.2f",
		rowWise, columnar, sustained/rowWise, sustained/columnar)
	b.Logf("consumer CPU (this process, whole pipeline): %.2f µs/event", float64(consumerCPU.Microseconds())/float64(n))
	b.Logf("consumer memory: peak heap in use %.1f MiB above the idle process, Go runtime total %.1f MiB; stats %+v",
		heapMB, float64(mem.peakSys.Load())/(1<<20), c.Stats())
}

func ensureTopic(brokers []string, topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return kafkaadmin.EnsureTopic(ctx, brokers, topic, 2, 1)
}

// insertRows is the plain clickhouse-go way: one Append per row (the baseline).
func (c *Consumer) insertRows(ctx context.Context, rows *eventColumns) error {
	b, err := c.conn.PrepareBatch(ctx, sqlset.Fill(insertEventsSQL, "db", c.cfg.Database))
	if err != nil {
		return err
	}
	rows.stamp(c.now())
	for i := range rows.n {
		err := b.Append(rows.eventID[i], rows.schemaVersion[i], rows.occurredAt[i], rows.ingestedAt[i], rows.workspaceID[i],
			rows.apiKeyID[i], rows.model[i], rows.upstream[i], rows.upstreamModel[i], rows.requestID[i], rows.status[i],
			rows.httpStatus[i], rows.stream[i], rows.estimated[i], rows.latencyMS[i], rows.prompt[i], rows.cached[i],
			rows.completion[i], rows.reasoning[i], rows.accepted[i], rows.rejected[i], rows.total[i], rows.partition[i], rows.offset[i])
		if err != nil {
			b.Abort()
			return fmt.Errorf("append: %w", err)
		}
	}
	return b.Send()
}

// cpuTime is the CPU time (user + system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
