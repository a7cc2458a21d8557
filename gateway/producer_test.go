package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/schema"
)

func event(i int) schema.UsageEvent {
	return schema.UsageEvent{SchemaVersion: schema.EventVersion, EventID: fmt.Sprintf("ev-%04d", i), OccurredAt: time.Now().UTC(),
		WorkspaceID: fmt.Sprintf("ws_%d", i%3), Model: "venna-1", Status: schema.StatusOK, PromptTokens: int64(i), TotalTokens: int64(i)}
}

// readAll reads every message of topic from the beginning until n arrived.
func readAll(t *testing.T, brokers []string, topic string, n int) map[string]kafka.Message {
	t.Helper()
	conn, err := kafka.Dial("tcp", brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]kafka.Message{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, p := range parts {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p.ID, MaxWait: 100 * time.Millisecond})
		r.SetOffset(kafka.FirstOffset)
		for {
			lag, _ := r.ReadLag(ctx)
			if lag == 0 {
				break
			}
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("read partition %d: %v", p.ID, err)
			}
			var ev schema.UsageEvent
			if err := json.Unmarshal(m.Value, &ev); err != nil {
				t.Fatalf("message is not an event: %v", err)
			}
			if string(m.Key) != ev.WorkspaceID {
				t.Errorf("message key %q, want the workspace %q", m.Key, ev.WorkspaceID)
			}
			got[ev.EventID] = m
		}
		r.Close()
	}
	if len(got) != n {
		t.Fatalf("topic holds %d distinct events, want %d", len(got), n)
	}
	return got
}

// Events published while Kafka is unreachable wait in the spool, survive the process
// stopping, and are shipped by the next process once Kafka is reachable.
func TestProducerShipsSpoolAfterOutageAndRestart(t *testing.T) {
	brokers, topic := testenv.Topic(t, 3)
	dir := t.TempDir()

	down, err := NewProducer(ProducerConfig{Brokers: []string{"127.0.0.1:1"}, Topic: topic, MaxBackoff: 50 * time.Millisecond,
		Spool: SpoolConfig{Dir: dir, SyncInterval: 10 * time.Millisecond}}, quietLog)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if err := down.Publish(context.Background(), event(i)); err != nil {
			t.Fatalf("publish while Kafka is down: %v", err)
		}
	}
	time.Sleep(200 * time.Millisecond) // let it fail a few times
	if down.Stats().Failures == 0 || down.Stats().Shipped != 0 {
		t.Fatalf("stats while down: %+v; want failures and nothing shipped", down.Stats())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	if err := down.Close(ctx); err == nil {
		t.Error("Close reported a full drain although Kafka was unreachable")
	}
	cancel()

	up, err := NewProducer(ProducerConfig{Brokers: brokers, Topic: topic, Spool: SpoolConfig{Dir: dir}}, quietLog)
	if err != nil {
		t.Fatal(err)
	}
	for i := 300; i < 400; i++ {
		if err := up.Publish(context.Background(), event(i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := up.Close(ctx); err != nil {
		t.Fatalf("drain with Kafka up: %v", err)
	}
	readAll(t, brokers, topic, 400)

	// Everything shipped: a third process finds nothing to replay.
	again, err := NewProducer(ProducerConfig{Brokers: brokers, Topic: topic, Spool: SpoolConfig{Dir: dir}}, quietLog)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if s := again.Stats(); s.Shipped != 0 {
		t.Errorf("a restart after a full drain shipped %d events again", s.Shipped)
	}
	closeCtx, cancelClose := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelClose()
	if err := again.Close(closeCtx); err != nil {
		t.Errorf("close with nothing to ship: %v", err)
	}
}
