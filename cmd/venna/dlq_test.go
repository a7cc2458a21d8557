package main

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/venna/metering/ingest"
	"github.com/venna/metering/internal/kafkaadmin"
	"github.com/venna/metering/internal/testenv"
)

// `venna dlq redrive` puts what now validates back on the usage topic and reports counts.
func TestDLQRedriveCommand(t *testing.T) {
	brokers, topic := testenv.Topic(t, 1)
	dlq := ingest.DLQTopicFor(topic)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := kafkaadmin.EnsureTopic(ctx, brokers, dlq, 1, 1); err != nil {
		t.Fatal(err)
	}
	good := `{"schema_version":1,"event_id":"e1","occurred_at":"2026-11-25T12:45:54Z","workspace_id":"ws_a","model":"venna-1","status":"ok","prompt_tokens":3,"total_tokens":3}`
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: dlq, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, Transport: &kafka.Transport{}}
	defer w.Close()
	err := w.WriteMessages(ctx,
		kafka.Message{Key: []byte("ws_a"), Value: []byte(good), Headers: []kafka.Header{{Key: ingest.HeaderReason, Value: []byte("a since-fixed bug")}}},
		kafka.Message{Key: []byte("x"), Value: []byte("not json")},
		kafka.Message{Key: []byte("y"), Value: []byte("still not json")})
	if err != nil {
		t.Fatal(err)
	}

	// Twice: a redrive leaves the DLQ as it was, and it shows progress only on a terminal.
	cases := []struct {
		name     string
		terminal bool
		stderr   string
	}{
		{"terminal", true, "\rre-driven 1 event (read 2 of 2 dead letters)\n"},
		{"not a terminal", false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errs strings.Builder
			args := []string{"dlq", "redrive", "--limit", "2", "--kafka-brokers", strings.Join(brokers, ","), "--kafka-topic", topic, "--log-level", "error"}
			if err := runWith(ctx, args, streams{Out: &out, Err: &errs, Terminal: c.terminal}); err != nil {
				t.Fatal(err)
			}
			var res ingest.RedriveResult
			if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
				t.Fatalf("output %q: %v", out.String(), err)
			}
			if res.Read != 2 || res.Redriven != 1 || res.StillBad != 1 {
				t.Errorf("venna dlq redrive --limit 2 printed %s, want 2 read, 1 redriven, 1 still bad", out.String())
			}
			if errs.String() != c.stderr {
				t.Errorf("stderr %q, want %q", errs.String(), c.stderr)
			}
		})
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	m, err := r.ReadMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Value) != good || string(m.Key) != "ws_a" {
		t.Errorf("usage topic got %q (key %q), want the redriven event", m.Value, m.Key)
	}
	if err := run(ctx, []string{"dlq", "nope", "--kafka-brokers", strings.Join(brokers, ",")}, io.Discard); exitCode(err) != exitUsage {
		t.Errorf("unknown dlq subcommand: %v, want a usage error", err)
	}
}
