package kafkaadmin_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/venna/metering/internal/kafkaadmin"
	"github.com/venna/metering/internal/testenv"
)

func topicConfig(t *testing.T, brokers []string, topic string, names ...string) map[string]string {
	t.Helper()
	got, err := kafkaadmin.TopicConfig(t.Context(), brokers, topic, names...)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// A topic migrate creates carries the production settings it was given; an existing one
// keeps its own.
func TestEnsureTopicConfig(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.Name(t)
	want := map[string]string{"min.insync.replicas": "2", "retention.ms": "1209600000", "cleanup.policy": "delete"}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := kafkaadmin.EnsureTopicConfig(ctx, brokers, topic, 3, 1, want); err != nil {
		t.Fatalf("create: %v", err)
	}
	if got := topicConfig(t, brokers, topic, "min.insync.replicas", "retention.ms", "cleanup.policy"); !maps.Equal(got, want) {
		t.Errorf("created topic's settings = %v, want %v", got, want)
	}
	if err := kafkaadmin.EnsureTopicConfig(ctx, brokers, topic, 3, 1, map[string]string{"retention.ms": "3600000"}); err != nil {
		t.Fatalf("second ensure of an existing topic: %v", err)
	}
	if got := topicConfig(t, brokers, topic, "retention.ms")["retention.ms"]; got != want["retention.ms"] {
		t.Errorf("existing topic's retention.ms = %s after a second ensure, want it left at %s", got, want["retention.ms"])
	}
}
