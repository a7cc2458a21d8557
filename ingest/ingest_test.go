package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"
	"github.com/venna/metering/internal/kafkaadmin"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/schema"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func testEvents(n int, workspace string) []schema.UsageEvent {
	evs := make([]schema.UsageEvent, n)
	base := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	for i := range evs {
		evs[i] = schema.UsageEvent{
			SchemaVersion: schema.EventVersion, EventID: fmt.Sprintf("%s-%06d", workspace, i),
			OccurredAt: base.Add(time.Duration(i) * time.Second), WorkspaceID: workspace, APIKeyID: "key_t",
			Model: "venna-1", Status: schema.StatusOK, HTTPStatus: 200,
			PromptTokens: int64(100 + i%7), CachedTokens: int64(i % 5), CompletionTokens: int64(20 + i%3),
		}
		evs[i].TotalTokens = evs[i].PromptTokens + evs[i].CompletionTokens
	}
	return evs
}

func messages(evs []schema.UsageEvent) []kafka.Message {
	msgs := make([]kafka.Message, len(evs))
	for i, ev := range evs {
		b, _ := json.Marshal(ev)
		// Keys spread events over every partition, as many workspaces would.
		msgs[i] = kafka.Message{Key: []byte(ev.EventID), Value: b}
	}
	return msgs
}

func newTestWriter(brokers []string, topic string) *kafka.Writer {
	return &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond,
		BatchSize: 1000, RequiredAcks: kafka.RequireAll, Transport: &kafka.Transport{}} // a transport of its own: the default one caches topic metadata
}

func produce(t *testing.T, brokers []string, topic string, evs []schema.UsageEvent, raw ...[]byte) {
	t.Helper()
	msgs := messages(evs)
	for _, r := range raw {
		msgs = append(msgs, kafka.Message{Key: []byte("poison"), Value: r})
	}
	produceMessages(t, brokers, topic, msgs)
}

func produceMessages(t *testing.T, brokers []string, topic string, msgs []kafka.Message) {
	t.Helper()
	w := newTestWriter(brokers, topic)
	defer w.Close()
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatalf("produce %d messages: %v", len(msgs), err)
	}
}

type counts struct{ rows, distinct, prompt, completion uint64 }

// count reads usage_events raw (rows) and deduplicated the way every reader does
// (LIMIT 1 BY event_id, as aggregate and invoice do).
func count(t *testing.T, conn driver.Conn, db string) counts {
	t.Helper()
	var c counts
	err := conn.QueryRow(context.Background(), "SELECT count(), uniqExact(event_id), "+
		"(SELECT sum(prompt_tokens) FROM (SELECT event_id, prompt_tokens FROM "+db+".usage_events LIMIT 1 BY event_id)), "+
		"(SELECT sum(completion_tokens) FROM (SELECT event_id, completion_tokens FROM "+db+".usage_events LIMIT 1 BY event_id)) "+
		"FROM "+db+".usage_events").Scan(&c.rows, &c.distinct, &c.prompt, &c.completion)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// billedOnce checks that the deduplicated read of usage_events is exactly evs: as many
// distinct events, the same token sums. It returns the counts.
func billedOnce(t *testing.T, conn driver.Conn, db string, evs []schema.UsageEvent) counts {
	t.Helper()
	got := count(t, conn, db)
	prompt, completion := sums(evs)
	if got.distinct != uint64(len(evs)) || got.prompt != prompt || got.completion != completion {
		t.Errorf("deduplicated: %d events, tokens %d/%d; want %d, %d/%d", got.distinct, got.prompt, got.completion, len(evs), prompt, completion)
	}
	return got
}

func sums(evs []schema.UsageEvent) (prompt, completion uint64) {
	for _, e := range evs {
		prompt += uint64(e.PromptTokens)
		completion += uint64(e.CompletionTokens)
	}
	return prompt, completion
}

// ensureDLQ creates topic's dead-letter topic, as `venna migrate` does.
func ensureDLQ(t *testing.T, brokers []string, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafkaadmin.EnsureTopic(ctx, brokers, DLQTopicFor(topic), 2, 1); err != nil {
		t.Fatal(err)
	}
}

func testConfig(brokers []string, topic, group, db string, batch int) Config {
	return Config{Brokers: brokers, Topic: topic, GroupID: group, Database: db, BatchSize: batch,
		FlushInterval: 100 * time.Millisecond, MaxBackoff: time.Second}
}

func newConsumer(t *testing.T, brokers []string, topic, group, db string, conn driver.Conn, batch int) *Consumer {
	t.Helper()
	return newConsumerWith(t, testConfig(brokers, topic, group, db, batch), conn)
}

func newConsumerWith(t *testing.T, cfg Config, conn driver.Conn) *Consumer {
	t.Helper()
	ensureDLQ(t, cfg.Brokers, cfg.Topic)
	c, err := New(cfg, conn, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// start runs c until the returned stop is called; stop returns Run's error.
// Calling stop again returns the same error.
func start(c *Consumer) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	return sync.OnceValue(func() error { cancel(); return <-done })
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitFor(t, 60*time.Second, what, cond)
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metric returns the value of a counter, gauge or histogram (its sample count) of c's
// registry, summed over the series whose labels include the given name/value pairs.
func metric(t *testing.T, c *Consumer, name string, labels ...string) float64 {
	t.Helper()
	fams, err := c.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// lagSeries returns how many partitions the lag gauge reports.
func lagSeries(t *testing.T, c *Consumer) int {
	t.Helper()
	fams, err := c.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "venna_ingest_consumer_lag" {
			return len(f.GetMetric())
		}
	}
	return 0
}

func TestConfigValidateNamesTheBadField(t *testing.T) {
	good := Config{Brokers: []string{"k:9092"}, Topic: "t", GroupID: "g", Database: "d"}
	cases := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"no brokers", func(c *Config) { c.Brokers = nil }, "Brokers"},
		{"no topic", func(c *Config) { c.Topic = "" }, "Topic"},
		{"no group", func(c *Config) { c.GroupID = "" }, "GroupID"},
		{"no database", func(c *Config) { c.Database = "" }, "Database"},
		{"dlq is the topic", func(c *Config) { c.DLQTopic = "t" }, "DLQTopic"},
		{"negative batch", func(c *Config) { c.BatchSize = -1 }, "BatchSize"},
		{"negative interval", func(c *Config) { c.FlushInterval = -time.Second }, "FlushInterval"},
	}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.edit(&cfg)
			if _, err := New(cfg, nil, quiet); err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("New: %v, want an error naming %s", err, tc.field)
			}
		})
	}
}

// A consumer that stops halfway (gracefully) commits what it inserted; a new member of
// the same group resumes from the committed offsets: every event lands exactly once,
// with no redelivered copy at all.
func TestGroupResumesFromCommittedOffset(t *testing.T) {
	chCfg, conn := testenv.ClickHouse(t)
	brokers, topic := testenv.Topic(t, 4)
	evs := testEvents(2000, "ws_a")
	produce(t, brokers, topic, evs)

	first := newConsumer(t, brokers, topic, "g1", chCfg.Database, conn, 100)
	stop := start(first)
	waitUntil(t, "the first consumer to insert some batches", func() bool { return first.Stats().Inserted >= 300 })
	if err := stop(); err != nil {
		t.Fatalf("first consumer: %v", err)
	}
	half := count(t, conn, chCfg.Database)
	if half.rows == 0 || half.rows >= 2000 {
		t.Fatalf("first consumer stored %d rows; the test needs it to stop halfway", half.rows)
	}

	second := newConsumer(t, brokers, topic, "g1", chCfg.Database, conn, 100)
	stop = start(second)
	waitUntil(t, "all events", func() bool { return count(t, conn, chCfg.Database).distinct == 2000 })
	if err := stop(); err != nil {
		t.Fatalf("second consumer: %v", err)
	}
	got := count(t, conn, chCfg.Database)
	prompt, _ := sums(evs)
	if got.rows != 2000 || got.prompt != prompt {
		t.Errorf("after resume: %d rows (want 2000: the second consumer re-read committed offsets), prompt sum %d want %d", got.rows, got.prompt, prompt)
	}
	if s := second.Stats().Inserted; s != int64(2000-half.rows) {
		t.Errorf("second consumer inserted %d, want the %d the first left", s, 2000-half.rows)
	}
}

// A consumer that dies after its insert but before its commit has its batch redelivered to
// the next member; the second copy is stored but never counted twice.
func TestCrashBeforeCommitBillsOnce(t *testing.T) {
	chCfg, conn := testenv.ClickHouse(t)
	brokers, topic := testenv.Topic(t, 2)
	evs := testEvents(500, "ws_b")
	produce(t, brokers, topic, evs)

	crashing := newConsumer(t, brokers, topic, "g2", chCfg.Database, conn, 10000)
	crash := errors.New("simulated crash between insert and commit")
	crashing.afterInsert = func() error { return crash }
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := crashing.Run(ctx); !errors.Is(err, crash) {
		t.Fatalf("crashing consumer: %v, want the simulated crash", err)
	}
	if c := count(t, conn, chCfg.Database); c.rows == 0 {
		t.Fatal("the crashing consumer inserted nothing; the test needs a stored, uncommitted batch")
	}

	next := newConsumer(t, brokers, topic, "g2", chCfg.Database, conn, 10000)
	stop := start(next)
	waitUntil(t, "the redelivered events", func() bool { return next.Stats().Inserted >= 500 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// (Raw row counts prove nothing here: a background merge may already have folded the
	// copies. The consumer's own count says the stored batch was delivered again.)
	if n := next.Stats().Inserted; n != 500 {
		t.Errorf("the next member inserted %d events, want all 500: nothing was committed", n)
	}
	billedOnce(t, conn, chCfg.Database, evs)
}

// SIGTERM (main cancels Run's context) while a batch is only partly filled: the batch is
// inserted, its offsets committed, and the member leaves the group at once, so the next
// member neither waits for a session timeout nor gets anything redelivered.
func TestStopFlushesCommitsAndLeavesTheGroup(t *testing.T) {
	chCfg, conn := testenv.ClickHouse(t)
	brokers, topic := testenv.Topic(t, 2)
	evs := testEvents(300, "ws_stop")
	produce(t, brokers, topic, evs)

	cfg := testConfig(brokers, topic, "g-stop", chCfg.Database, 10000)
	cfg.FlushInterval = time.Hour // only the stop can flush this batch
	c := newConsumerWith(t, cfg, conn)
	stop := start(c)
	waitUntil(t, "every message fetched", func() bool { return c.Stats().Fetched == 300 })
	if n := count(t, conn, chCfg.Database).rows; n != 0 {
		t.Fatalf("%d rows stored before the stop; the test needs the batch still in hand", n)
	}
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}

	if got := count(t, conn, chCfg.Database); got.rows != 300 {
		t.Errorf("after the stop %d rows stored, want the 300 of the partial batch", got.rows)
	}
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: &kafka.Transport{}}
	lags, err := groupLag(t.Context(), client, topic, "g-stop")
	if err != nil {
		t.Fatal(err)
	}
	for p, lag := range lags {
		if lag != 0 {
			t.Errorf("partition %d: %d messages after the committed offset, want 0 (all committed)", p, lag)
		}
	}
	groups, err := client.DescribeGroups(t.Context(), &kafka.DescribeGroupsRequest{GroupIDs: []string{"g-stop"}})
	if err != nil {
		t.Fatal(err)
	}
	if g := groups.Groups[0]; len(g.Members) != 0 {
		t.Errorf("group %s still has %d members (state %s) after the stop; the consumer did not leave", g.GroupID, len(g.Members), g.GroupState)
	}
}

// Two members share a topic's partitions; then one leaves and the other takes its
// partitions over (a real rebalance on the broker). Every event is billed once.
func TestRebalanceOneOfTwoConsumersLeaves(t *testing.T) {
	chCfg, conn := testenv.ClickHouse(t)
	brokers, topic := testenv.Topic(t, 4)
	const group = "g-rebalance"
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: &kafka.Transport{}}
	// members returns the group's members with at least one partition, and their partitions.
	members := func() map[string][]int {
		res, err := client.DescribeGroups(t.Context(), &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
		if err != nil || len(res.Groups) == 0 || res.Groups[0].GroupState != "Stable" {
			return nil
		}
		out := map[string][]int{}
		for _, m := range res.Groups[0].Members {
			for _, tp := range m.MemberAssignments.Topics {
				out[m.MemberID] = append(out[m.MemberID], tp.Partitions...)
			}
		}
		return out
	}

	a := newConsumer(t, brokers, topic, group, chCfg.Database, conn, 200)
	b := newConsumer(t, brokers, topic, group, chCfg.Database, conn, 200)
	stopA, stopB := start(a), start(b)
	defer stopB()
	waitUntil(t, "both members to hold partitions", func() bool { m := members(); return len(m) == 2 })

	evs := testEvents(6000, "ws_rb")
	produce(t, brokers, topic, evs[:3000])
	waitUntil(t, "both members to insert", func() bool { return a.Stats().Inserted > 0 && b.Stats().Inserted > 0 })
	if err := stopA(); err != nil {
		t.Fatalf("leaving member: %v", err)
	}
	waitUntil(t, "the remaining member to own every partition", func() bool {
		m := members()
		return len(m) == 1 && len(m[firstKey(m)]) == 4
	})
	produce(t, brokers, topic, evs[3000:])
	waitUntil(t, "every event", func() bool { return count(t, conn, chCfg.Database).distinct == 6000 })
	if err := stopB(); err != nil {
		t.Fatalf("remaining member: %v", err)
	}

	got := billedOnce(t, conn, chCfg.Database, evs)
	if a.Stats().Inserted+b.Stats().Inserted < 6000 {
		t.Errorf("members inserted %d + %d rows, fewer than the 6000 events", a.Stats().Inserted, b.Stats().Inserted)
	}
	t.Logf("member a inserted %d, member b %d; %d raw rows for 6000 events", a.Stats().Inserted, b.Stats().Inserted, got.rows)
}

func firstKey(m map[string][]int) string {
	for k := range m {
		return k
	}
	return ""
}

// Poison messages in the middle of good ones: the good ones land; each poison message is
// in the dead-letter topic with its original bytes, its reason and where it came from;
// the DLQ metric counts them; a copy of an event within a batch is dropped and counted.
func TestPoisonMessagesGoToTheDeadLetterTopic(t *testing.T) {
	chCfg, conn := testenv.ClickHouse(t)
	brokers, topic := testenv.Topic(t, 1)
	evs := testEvents(100, "ws_c")
	bad := func(edit func(*schema.UsageEvent)) []byte {
		e := testEvents(1, "ws_c")[0]
		e.EventID = "bad"
		edit(&e)
		b, _ := json.Marshal(e)
		return b
	}
	poison := []struct {
		name, reason, class string
		value               []byte
	}{
		{"not json", "not a usage event", reasonNotJSON, []byte("not json")},
		{"wrong type", "not a usage event", reasonNotJSON, []byte(`{"schema_version":1,"prompt_tokens":"many"}`)},
		{"unknown schema version", "schema_version 99", reasonSchemaVersion, bad(func(e *schema.UsageEvent) { e.SchemaVersion = 99 })},
		{"missing workspace", "workspace_id is empty", reasonContract, bad(func(e *schema.UsageEvent) { e.WorkspaceID = "" })},
		{"negative tokens", "completion_tokens -5 out of range", reasonContract, bad(func(e *schema.UsageEvent) { e.CompletionTokens = -5 })},
		{"absurd tokens", "prompt_tokens 1000000000000 out of range", reasonContract, bad(func(e *schema.UsageEvent) { e.PromptTokens = 1e12 })},
		{"cached above prompt", "cached_tokens", reasonContract, bad(func(e *schema.UsageEvent) { e.CachedTokens = e.PromptTokens + 1 })},
	}
	var msgs []kafka.Message
	msgs = append(msgs, messages(evs[:50])...)
	for _, p := range poison {
		msgs = append(msgs, kafka.Message{Key: []byte("poison"), Value: p.value, Headers: []kafka.Header{{Key: "trace", Value: []byte(p.name)}}})
	}
	msgs = append(msgs, messages(evs[49:])...) // evs[49] twice, in the same batch
	produceMessages(t, brokers, topic, msgs)

	c := newConsumer(t, brokers, topic, "g3", chCfg.Database, conn, 1000)
	stop := start(c)
	waitUntil(t, "good events", func() bool { return count(t, conn, chCfg.Database).distinct == 100 })
	waitUntil(t, "dead-letter count", func() bool { return c.Stats().Invalid == int64(len(poison)) })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := count(t, conn, chCfg.Database); got.rows != 100 {
		t.Errorf("%d rows, want the 100 valid events only (the in-batch copy dropped)", got.rows)
	}
	if d := c.Stats().Duplicates; d != 1 {
		t.Errorf("%d in-batch duplicates dropped, want 1", d)
	}

	dead := readAll(t, brokers, DLQTopicFor(topic), len(poison))
	if len(dead) != len(poison) {
		t.Fatalf("%d messages in the DLQ, want %d", len(dead), len(poison))
	}
	byTrace := map[string]kafka.Message{}
	for _, m := range dead {
		byTrace[header(m, "trace")] = m
	}
	for i, p := range poison {
		t.Run(p.name, func(t *testing.T) {
			m, ok := byTrace[p.name]
			if !ok {
				t.Fatal("not in the DLQ (or its own headers were not kept)")
			}
			if string(m.Value) != string(p.value) || string(m.Key) != "poison" {
				t.Errorf("DLQ message %q key %q, want the original bytes %q", m.Value, m.Key, p.value)
			}
			if r := header(m, HeaderReason); !strings.Contains(r, p.reason) {
				t.Errorf("reason %q, want it to mention %q", r, p.reason)
			}
			if header(m, HeaderTopic) != topic || header(m, HeaderPartition) != "0" || header(m, HeaderOffset) != fmt.Sprint(50+i) {
				t.Errorf("origin %s/%s/%s, want %s/0/%d", header(m, HeaderTopic), header(m, HeaderPartition), header(m, HeaderOffset), topic, 50+i)
			}
			if _, err := time.Parse(time.RFC3339Nano, header(m, HeaderTime)); err != nil {
				t.Errorf("time header: %v", err)
			}
		})
	}
	classes := map[string]int{}
	for _, p := range poison {
		classes[p.class]++
	}
	for class, n := range classes {
		if got := metric(t, c, "venna_ingest_dlq_messages_total", "reason", class); got != float64(n) {
			t.Errorf("venna_ingest_dlq_messages_total{reason=%q} = %v, want %d", class, got, n)
		}
	}
	if got := metric(t, c, "venna_ingest_duplicates_dropped_total"); got != 1 {
		t.Errorf("venna_ingest_duplicates_dropped_total = %v, want 1", got)
	}
}

func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// readAll reads a topic from the start until want messages arrived (or a minute passed).
func readAll(t *testing.T, brokers []string, topic string, want int) []kafka.Message {
	t.Helper()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: &kafka.Transport{}}
	parts, err := partitions(t.Context(), client, topic)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var out []kafka.Message
	for _, p := range parts {
		offs, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(p)}}})
		if err != nil {
			t.Fatal(err)
		}
		end := offs.Topics[topic][0].LastOffset
		if end == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond})
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				t.Fatalf("read %s/%d: %v", topic, p, err)
			}
			out = append(out, m)
			if m.Offset+1 >= end {
				break
			}
		}
		r.Close()
	}
	if want >= 0 && len(out) != want {
		t.Logf("read %d messages from %s, expected %d", len(out), topic, want)
	}
	return out
}

// The HTTP side: /metrics serves the registry (with per-partition lag), /healthz and
// /readyz answer.
func TestHandlerServesMetricsAndProbes(t *testing.T) {
	chCfg, conn := testenv.ClickHouse(t)
	brokers, topic := testenv.Topic(t, 3)
	produce(t, brokers, topic, testEvents(50, "ws_h"))
	c := newConsumer(t, brokers, topic, "g-http", chCfg.Database, conn, 1000)
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before Run = %d, want 503", code)
	}
	stop := start(c)
	defer stop()
	waitUntil(t, "the events", func() bool { return c.Stats().Inserted == 50 })
	waitUntil(t, "/readyz 200", func() bool { code, _ := get("/readyz"); return code == http.StatusOK })
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", code)
	}
	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		"venna_ingest_rows_inserted_total 50",
		`venna_ingest_consumer_lag{partition="0",topic="` + topic + `"} 0`,
		`venna_ingest_consumer_lag{partition="2",topic="` + topic + `"} 0`,
		"venna_ingest_batch_size_bucket",
		"venna_ingest_insert_duration_seconds_bucket",
		`venna_ingest_dlq_messages_total{reason="not_json"} 0`,
		"venna_ingest_duplicates_dropped_total 0",
		"go_memstats_heap_inuse_bytes",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
