// Package testenv gives tests the real ClickHouse server and Kafka broker that
// scripts/test.sh starts once per run (or any servers named by VENNA_CLICKHOUSE_ADDR and
// VENNA_KAFKA_BROKERS), with a fresh database or topic per test.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/kafkaadmin"
	"github.com/venna/metering/schema"
)

const hint = "start the services with scripts/test.sh (or scripts/services.sh start and export what it prints)"

// ClickHouseAddr returns the server's native address, failing the test if none is set.
func ClickHouseAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("VENNA_CLICKHOUSE_ADDR")
	if addr == "" {
		t.Fatalf("VENNA_CLICKHOUSE_ADDR is not set: %s", hint)
	}
	return addr
}

// KafkaBrokers returns the broker list, failing the test if none is set.
func KafkaBrokers(t testing.TB) []string {
	t.Helper()
	b := os.Getenv("VENNA_KAFKA_BROKERS")
	if b == "" {
		t.Fatalf("VENNA_KAFKA_BROKERS is not set: %s", hint)
	}
	return strings.Split(b, ",")
}

var unsafe = regexp.MustCompile(`[^a-z0-9_]+`)

// Name returns a short identifier unique to this test run, safe for databases and topics.
func Name(t testing.TB) string {
	b := make([]byte, 4)
	rand.Read(b)
	n := unsafe.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(n) > 40 {
		n = n[:40]
	}
	return "t_" + n + "_" + hex.EncodeToString(b)
}

// ClickHouseConfig is the config of database db on the server at addr, with the protocol,
// TLS and credentials the environment names (VENNA_CLICKHOUSE_PROTOCOL, _SECURE,
// _CA_FILE, _USER, _PASSWORD), as the roles read them.
func ClickHouseConfig(addr, db string) chdb.Config {
	return chdb.Config{
		Addr:     addr,
		Protocol: os.Getenv("VENNA_CLICKHOUSE_PROTOCOL"),
		Secure:   os.Getenv("VENNA_CLICKHOUSE_SECURE") == "true",
		CAFile:   os.Getenv("VENNA_CLICKHOUSE_CA_FILE"),
		Database: db,
		User:     os.Getenv("VENNA_CLICKHOUSE_USER"),
		Password: os.Getenv("VENNA_CLICKHOUSE_PASSWORD"),
	}
}

// ClickHouse returns a config for a new, migrated database and a connection to it.
// The database is dropped when the test ends.
func ClickHouse(t testing.TB) (chdb.Config, driver.Conn) {
	t.Helper()
	return ClickHouseAt(t, ClickHouseAddr(t))
}

// ClickHouseAt is ClickHouse on the server at addr (e.g. a PrivateServices' CHAddr).
func ClickHouseAt(t testing.TB, addr string) (chdb.Config, driver.Conn) {
	t.Helper()
	cfg := ClickHouseConfig(addr, Name(t))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := chdb.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("clickhouse: %v (%s)", err, hint)
	}
	if _, err := schema.Migrate(ctx, conn, cfg.Database); err != nil {
		t.Fatalf("migrate %s: %v", cfg.Database, err)
	}
	t.Cleanup(func() {
		if os.Getenv("VENNA_TEST_KEEP") == "" {
			conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.Database)
		}
		conn.Close()
	})
	return cfg, conn
}

// Topic creates a new topic with the given partitions and returns the brokers and its name.
func Topic(t testing.TB, partitions int) ([]string, string) {
	t.Helper()
	brokers := KafkaBrokers(t)
	return brokers, TopicAt(t, brokers, partitions)
}

// TopicAt creates a new topic on the given brokers (e.g. a PrivateServices' Brokers)
// and returns its name.
func TopicAt(t testing.TB, brokers []string, partitions int) string {
	t.Helper()
	topic := Name(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafkaadmin.EnsureTopic(ctx, brokers, topic, partitions, 1); err != nil {
		t.Fatalf("create topic %s: %v (%s)", topic, err, hint)
	}
	return topic
}

// eventColumns are usage_events' columns in the order InsertEvents writes them.
var eventColumns = []string{"event_id", "schema_version", "occurred_at", "ingested_at", "workspace_id", "api_key_id", "model",
	"upstream", "upstream_model", "request_id", "status", "http_status", "stream", "estimated", "latency_ms",
	"prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens", "accepted_prediction_tokens",
	"rejected_prediction_tokens", "total_tokens", "kafka_partition", "kafka_offset"}

// InsertEvents writes events into db.usage_events as ingest stores them, ingested now,
// for tests of what reads raw events (rollups, invoices, the API).
func InsertEvents(t testing.TB, conn driver.Conn, db string, evs []schema.UsageEvent) {
	t.Helper()
	InsertEventsInto(t, conn, db, "usage_events", evs, time.Now().UTC())
}

// InsertEventsInto writes events into db.table as ingest stores them, ingested at now: the
// same events at the same now make the same block (what ClickHouse's insert deduplication
// recognises).
func InsertEventsInto(t testing.TB, conn driver.Conn, db, table string, evs []schema.UsageEvent, now time.Time) {
	t.Helper()
	rows := make([][]any, len(evs))
	b := func(v bool) uint8 {
		if v {
			return 1
		}
		return 0
	}
	for i, e := range evs {
		rows[i] = []any{e.EventID, uint8(e.SchemaVersion), e.OccurredAt.UTC(), now, e.WorkspaceID, e.APIKeyID, e.Model,
			e.Upstream, e.UpstreamModel, e.RequestID, e.Status, uint16(e.HTTPStatus), b(e.Stream), b(e.Estimated),
			uint32(e.LatencyMS), uint64(e.PromptTokens), uint64(e.CachedTokens), uint64(e.CompletionTokens),
			uint64(e.ReasoningTokens), uint64(e.AcceptedPredictionTokens), uint64(e.RejectedPredictionTokens),
			uint64(e.TotalTokens), int32(0), int64(i)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := chdb.Insert(ctx, conn, "INSERT INTO "+db+"."+table+" ("+strings.Join(eventColumns, ", ")+")", rows); err != nil {
		t.Fatalf("insert %d events: %v", len(evs), err)
	}
}

// Engine is the ClickHouse version the suite runs on, as scripts/services.sh names it
// (VENNA_CLICKHOUSE_ENGINE): "18.16", "26.9" or, for servers of your own, empty.
func Engine() string { return os.Getenv("VENNA_CLICKHOUSE_ENGINE") }

// Harness reports whether ClickHouse is the 26.9 engine behind scripts/chdb_http.py: one
// embedded engine serving ClickHouse's HTTP interface, with no native port, no cluster
// and no server process of its own.
func Harness() bool { return Engine() == "26.9" }

// SkipOnHarness skips a test that needs what the harness lacks, saying what.
func SkipOnHarness(t testing.TB, needs string) {
	t.Helper()
	if Harness() {
		t.Skipf("skipped on ClickHouse 26.9: it runs here as the chdb test harness (scripts/chdb_http.py), which has no %s", needs)
	}
}

// ParseURL reads a ClickHouse endpoint written as a URL: clickhouse://host:port (native),
// clickhouses:// (native over TLS), http:// or https://, with user:password@ and
// ?ca_file=PATH, e.g. https://127.0.0.1:28443?ca_file=/tmp/ca.pem.
func ParseURL(raw, db string) (chdb.Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return chdb.Config{}, fmt.Errorf("clickhouse URL %q: %w", raw, err)
	}
	cfg := chdb.Config{Addr: u.Host, Database: db, CAFile: u.Query().Get("ca_file")}
	switch u.Scheme {
	case "clickhouse":
		cfg.Protocol = chdb.Native
	case "clickhouses":
		cfg.Protocol, cfg.Secure = chdb.Native, true
	case "http":
		cfg.Protocol = chdb.HTTP
	case "https":
		cfg.Protocol, cfg.Secure = chdb.HTTP, true
	default:
		return chdb.Config{}, fmt.Errorf("clickhouse URL %q: scheme must be clickhouse, clickhouses, http or https", raw)
	}
	if u.User != nil {
		cfg.User = u.User.Username()
		cfg.Password, _ = u.User.Password()
	}
	return cfg, nil
}

// RedisAddr returns the Redis the suite shares (VENNA_REDIS_ADDR), failing the test if none
// is set.
func RedisAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("VENNA_REDIS_ADDR")
	if addr == "" {
		t.Fatalf("VENNA_REDIS_ADDR is not set: %s", hint)
	}
	return addr
}
