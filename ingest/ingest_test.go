package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"
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

func produce(t *testing.T, brokers []string, topic string, evs []schema.UsageEvent, raw ...[]byte) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll, Transport: &kafka.Transport{}} // a transport of its own: the default one caches topic metadata
	defer w.Close()
	msgs := make([]kafka.Message, 0, len(evs)+len(raw))
	for _, ev := range evs {
		b, _ := json.Marshal(ev)
		// Keys spread events over every partition, as many workspaces would.
		msgs = append(msgs, kafka.Message{Key: []byte(ev.EventID), Value: b})
	}
	for _, r := range raw {
		msgs = append(msgs, kafka.Message{Key: []byte("poison"), Value: r})
	}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatalf("produce %d messages: %v", len(msgs), err)
	}
}

type counts struct{ rows, distinct, prompt uint64 }

func count(t *testing.T, conn driver.Conn, db string) counts {
	t.Helper()
	var c counts
	err := conn.QueryRow(context.Background(), "SELECT count(), uniqExact(event_id), (SELECT sum(prompt_tokens) FROM (SELECT event_id, prompt_tokens FROM "+db+".usage_events LIMIT 1 BY event_id)) FROM "+db+".usage_events").Scan(&c.rows, &c.distinct, &c.prompt)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newConsumer(t *testing.T, brokers []string, topic, group, db string, conn driver.Conn, batch int) *Consumer {
	t.Helper()
	c, err := New(Config{Brokers: brokers, Topic: topic, GroupID: group, Database: db, BatchSize: batch, FlushInterval: 100 * time.Millisecond}, conn, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// start runs c until the returned stop is called; stop returns Run's error.
func start(c *Consumer) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	return func() error { cancel(); return <-done }
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sumPrompt(evs []schema.UsageEvent) uint64 {
	var s uint64
	for _, e := range evs {
		s += uint64(e.PromptTokens)
	}
	return s
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
	if got.rows != 2000 || got.prompt != sumPrompt(evs) {
		t.Errorf("after resume: %d rows (want 2000: the second consumer re-read committed offsets), prompt sum %d want %d", got.rows, got.prompt, sumPrompt(evs))
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
	got := count(t, conn, chCfg.Database)
	if got.rows <= 500 {
		t.Errorf("%d raw rows: the batch was not redelivered, so this test proves nothing", got.rows)
	}
	if got.distinct != 500 || got.prompt != sumPrompt(evs) {
		t.Errorf("deduplicated: %d events, prompt sum %d; want 500 and %d", got.distinct, got.prompt, sumPrompt(evs))
	}
}

// Bad messages are skipped and counted; the good ones around them land.
func TestInvalidMessagesDoNotStopThePartition(t *testing.T) {
	chCfg, conn := testenv.ClickHouse(t)
	brokers, topic := testenv.Topic(t, 1)
	evs := testEvents(100, "ws_c")
	bad := testEvents(1, "ws_c")[0]
	bad.EventID, bad.CachedTokens = "bad", bad.PromptTokens+1
	badJSON, _ := json.Marshal(bad)
	produce(t, brokers, topic, evs[:50], []byte("not json"), []byte(`{"schema_version":99}`), badJSON)
	produce(t, brokers, topic, evs[50:])

	c := newConsumer(t, brokers, topic, "g3", chCfg.Database, conn, 1000)
	stop := start(c)
	waitUntil(t, "good events", func() bool { return count(t, conn, chCfg.Database).distinct == 100 })
	waitUntil(t, "invalid count", func() bool { return c.Stats().Invalid == 3 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := count(t, conn, chCfg.Database); got.rows != 100 {
		t.Errorf("%d rows, want the 100 valid events only", got.rows)
	}
}
