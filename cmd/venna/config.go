package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/venna/metering/internal/chdb"
)

// Config is every setting of every role, read once from flags and environment variables.
type Config struct {
	ClickHouse        chdb.Config
	ClickHouseCluster string

	KafkaBrokers     string
	KafkaTopic       string
	KafkaPartitions  int
	KafkaReplication int
	KafkaMinISR      int
	KafkaRetention   time.Duration

	GatewayAddr     string
	APIAddr         string
	AdminToken      string
	RoutesFile      string
	PricesFile      string
	KeyRefresh      time.Duration
	UpstreamTimeout time.Duration
	SpoolDir        string
	SpoolMaxBytes   int64
	SpoolSync       time.Duration

	RedisAddr     string
	RedisPassword string
	SpendRefresh  time.Duration
	SpendSync     time.Duration
	LimitsFail    string
	AlertSchedule string

	IngestGroup         string
	IngestBatchSize     int
	IngestFlushInterval time.Duration
	IngestDLQTopic      string
	IngestMetricsAddr   string

	AggregateSchedule string
	InvoiceSchedule   string
	InvoiceGrace      time.Duration
	AggregateMetrics  string

	SimAddr   string
	SimAPIKey string
	LogLevel  string
}

// setting is one flag with its environment variable; the table is the config reference.
type setting struct {
	flag, env, def, help string
	bind                 func(fs *flag.FlagSet, name, def, help string)
}

func str(p *string) func(*flag.FlagSet, string, string, string) {
	return func(fs *flag.FlagSet, n, d, h string) { fs.StringVar(p, n, d, h) }
}

func boolean(p *bool) func(*flag.FlagSet, string, string, string) {
	return func(fs *flag.FlagSet, n, d, h string) {
		v, err := strconv.ParseBool(d)
		if err != nil {
			fatalf("%s: %q is not true or false", n, d)
		}
		fs.BoolVar(p, n, v, h)
	}
}

func num(p *int) func(*flag.FlagSet, string, string, string) {
	return func(fs *flag.FlagSet, n, d, h string) {
		v, err := strconv.Atoi(d)
		if err != nil {
			fatalf("%s: %q is not an integer", n, d)
		}
		fs.IntVar(p, n, v, h)
	}
}

func num64(p *int64) func(*flag.FlagSet, string, string, string) {
	return func(fs *flag.FlagSet, n, d, h string) {
		v, err := strconv.ParseInt(d, 10, 64)
		if err != nil {
			fatalf("%s: %q is not an integer", n, d)
		}
		fs.Int64Var(p, n, v, h)
	}
}

func dur(p *time.Duration) func(*flag.FlagSet, string, string, string) {
	return func(fs *flag.FlagSet, n, d, h string) {
		v, err := time.ParseDuration(d)
		if err != nil {
			fatalf("%s: %q is not a duration", n, d)
		}
		fs.DurationVar(p, n, v, h)
	}
}

func (c *Config) settings() []setting {
	return []setting{
		{"clickhouse-addr", "VENNA_CLICKHOUSE_ADDR", "127.0.0.1:9000", "ClickHouse address, host:port of the protocol chosen (native: 9000, 9440 with TLS; http: 8123, 8443 with TLS)", str(&c.ClickHouse.Addr)},
		{"clickhouse-protocol", "VENNA_CLICKHOUSE_PROTOCOL", "native", "ClickHouse protocol: native or http", str(&c.ClickHouse.Protocol)},
		{"clickhouse-secure", "VENNA_CLICKHOUSE_SECURE", "false", "TLS to ClickHouse (ClickHouse Cloud: true, with port 9440 native or 8443 http)", boolean(&c.ClickHouse.Secure)},
		{"clickhouse-ca-file", "VENNA_CLICKHOUSE_CA_FILE", "", "PEM file of the CAs that sign ClickHouse's certificate (empty: the system's)", str(&c.ClickHouse.CAFile)},
		{"clickhouse-database", "VENNA_CLICKHOUSE_DATABASE", "venna", "ClickHouse database", str(&c.ClickHouse.Database)},
		{"clickhouse-user", "VENNA_CLICKHOUSE_USER", "default", "ClickHouse user", str(&c.ClickHouse.User)},
		{"clickhouse-password", "VENNA_CLICKHOUSE_PASSWORD", "", "ClickHouse password", str(&c.ClickHouse.Password)},
		{"clickhouse-cluster", "VENNA_CLICKHOUSE_CLUSTER", "", "ClickHouse cluster (remote_servers) migrate creates the schema on: ON CLUSTER, Replicated engines, Distributed tables; empty: one server", str(&c.ClickHouseCluster)},
		{"kafka-brokers", "VENNA_KAFKA_BROKERS", "127.0.0.1:9092", "Kafka bootstrap brokers, comma-separated", str(&c.KafkaBrokers)},
		{"kafka-topic", "VENNA_KAFKA_TOPIC", "venna.usage.v1", "Kafka topic of usage events", str(&c.KafkaTopic)},
		{"kafka-partitions", "VENNA_KAFKA_PARTITIONS", "8", "partitions when migrate creates the topic", num(&c.KafkaPartitions)},
		{"kafka-replication", "VENNA_KAFKA_REPLICATION", "1", "replication factor when migrate creates the topic", num(&c.KafkaReplication)},
		{"kafka-min-insync-replicas", "VENNA_KAFKA_MIN_INSYNC_REPLICAS", "0", "min.insync.replicas of the topics migrate creates (0: the broker's default)", num(&c.KafkaMinISR)},
		{"kafka-retention", "VENNA_KAFKA_RETENTION", "0s", "retention of the topics migrate creates (0: the broker's default)", dur(&c.KafkaRetention)},
		{"gateway-addr", "VENNA_GATEWAY_ADDR", "127.0.0.1:8080", "gateway listen address", str(&c.GatewayAddr)},
		{"api-addr", "VENNA_API_ADDR", "127.0.0.1:8081", "REST API listen address", str(&c.APIAddr)},
		{"admin-token", "VENNA_ADMIN_TOKEN", "", "bearer token of the REST API's admin routes under /v1/admin/, 16+ characters (empty: admin API off)", str(&c.AdminToken)},
		{"routes-file", "VENNA_ROUTES_FILE", "deploy/routes.yaml", "model → upstream routes (YAML)", str(&c.RoutesFile)},
		{"prices-file", "VENNA_PRICES_FILE", "deploy/prices.yaml", "price book (YAML)", str(&c.PricesFile)},
		{"key-refresh", "VENNA_KEY_REFRESH", "2s", "how often gateways and the API reload API keys", dur(&c.KeyRefresh)},
		{"upstream-timeout", "VENNA_UPSTREAM_TIMEOUT", "10m", "longest upstream exchange", dur(&c.UpstreamTimeout)},
		{"spool-dir", "VENNA_SPOOL_DIR", "data/spool", "gateway's write-ahead spool of usage events (one per gateway process)", str(&c.SpoolDir)},
		{"spool-max-bytes", "VENNA_SPOOL_MAX_BYTES", "1073741824", "spool size at which the gateway refuses completions (503)", num64(&c.SpoolMaxBytes)},
		{"spool-sync-interval", "VENNA_SPOOL_SYNC_INTERVAL", "100ms", "fsync period of the spool; negative = fsync every event", dur(&c.SpoolSync)},
		{"redis-addr", "VENNA_REDIS_ADDR", "", "Redis host:port the gateways share spend and rate limits through (empty: each gateway counts alone)", str(&c.RedisAddr)},
		{"redis-password", "VENNA_REDIS_PASSWORD", "", "Redis password", str(&c.RedisPassword)},
		{"spend-refresh", "VENNA_SPEND_REFRESH", "2s", "how often gateways read budgets, rate limits and month-to-date spend from ClickHouse", dur(&c.SpendRefresh)},
		{"spend-sync-interval", "VENNA_SPEND_SYNC_INTERVAL", "100ms", "how often a gateway exchanges its spend and liveness with Redis", dur(&c.SpendSync)},
		{"limits-on-failure", "VENNA_LIMITS_ON_FAILURE", "open", "when Redis or ClickHouse cannot be read: open (serve within the last known state) or closed (503 for limited workspaces)", str(&c.LimitsFail)},
		{"ingest-group", "VENNA_INGEST_GROUP", "venna-ingest", "Kafka consumer group of the ingest role", str(&c.IngestGroup)},
		{"ingest-batch-size", "VENNA_INGEST_BATCH_SIZE", "50000", "events per ClickHouse insert", num(&c.IngestBatchSize)},
		{"ingest-flush-interval", "VENNA_INGEST_FLUSH_INTERVAL", "1s", "longest wait before a partial batch is inserted", dur(&c.IngestFlushInterval)},
		{"ingest-dlq-topic", "VENNA_INGEST_DLQ_TOPIC", "", "dead-letter topic for invalid usage events (empty: <kafka-topic>.dlq)", str(&c.IngestDLQTopic)},
		{"ingest-metrics-addr", "VENNA_INGEST_METRICS_ADDR", "127.0.0.1:9101", "ingest role's /metrics, /healthz and /readyz listen address (empty: none)", str(&c.IngestMetricsAddr)},
		{"aggregate-schedule", "VENNA_AGGREGATE_SCHEDULE", "@every 1m", "cron schedule of the hourly rollup", str(&c.AggregateSchedule)},
		{"invoice-schedule", "VENNA_INVOICE_SCHEDULE", "@every 5m", "cron schedule of the invoice run (current and previous month)", str(&c.InvoiceSchedule)},
		{"invoice-grace", "VENNA_INVOICE_GRACE", "72h", "how long after a period ends its invoice stays a draft", dur(&c.InvoiceGrace)},
		{"alert-schedule", "VENNA_ALERT_SCHEDULE", "@every 1m", "cron schedule of the budget alerts job", str(&c.AlertSchedule)},
		{"aggregate-metrics-addr", "VENNA_AGGREGATE_METRICS_ADDR", "127.0.0.1:9102", "aggregate role's /healthz, /readyz and /metrics listen address (empty: none)", str(&c.AggregateMetrics)},
		{"sim-addr", "VENNA_SIM_ADDR", "127.0.0.1:18090", "listen address of the simulated upstream", str(&c.SimAddr)},
		{"sim-api-key", "VENNA_SIM_API_KEY", "", "API key the simulated upstream requires (empty: none)", str(&c.SimAPIKey)},
		{"log-level", "VENNA_LOG_LEVEL", "info", "debug, info, warn or error", str(&c.LogLevel)},
	}
}

// bind registers every setting on fs, each defaulting to its environment variable.
func (c *Config) bind(fs *flag.FlagSet) {
	for _, s := range c.settings() {
		def := s.def
		v, fromEnv := os.LookupEnv(s.env)
		if fromEnv {
			def = v
		}
		if secretSettings[s.env] {
			// Bind with an empty default so that -h never prints the secret, then take the
			// environment's value unless the flag is given.
			s.bind(fs, s.flag, "", fmt.Sprintf("%s (env %s)", s.help, s.env))
			if fromEnv {
				fs.Lookup(s.flag).Value.Set(v)
			}
			continue
		}
		s.bind(fs, s.flag, def, fmt.Sprintf("%s (env %s)", s.help, s.env))
	}
}

// secretSettings are never shown as flag defaults in -h.
var secretSettings = map[string]bool{"VENNA_CLICKHOUSE_PASSWORD": true, "VENNA_ADMIN_TOKEN": true, "VENNA_SIM_API_KEY": true, "VENNA_REDIS_PASSWORD": true}

func (c *Config) brokers() []string {
	var out []string
	for _, b := range strings.Split(c.KafkaBrokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// topicConfigs are the topic-level settings migrate creates the topics with: only those
// configured, so that the broker's defaults stand otherwise. cleanup.policy is always
// delete: the key is the workspace, and compaction would keep one event per workspace.
func (c *Config) topicConfigs() map[string]string {
	m := map[string]string{"cleanup.policy": "delete"}
	if c.KafkaMinISR > 0 {
		m["min.insync.replicas"] = strconv.Itoa(c.KafkaMinISR)
	}
	if c.KafkaRetention > 0 {
		m["retention.ms"] = strconv.FormatInt(c.KafkaRetention.Milliseconds(), 10)
	}
	return m
}

// configTable renders the settings as the Markdown table README carries.
func configTable() string {
	var b strings.Builder
	b.WriteString("| flag | environment variable | default | meaning |\n|---|---|---|---|\n")
	var c Config
	for _, s := range c.settings() {
		def := "`" + s.def + "`"
		if s.def == "" {
			def = "(empty)"
		}
		fmt.Fprintf(&b, "| `--%s` | `%s` | %s | %s |\n", s.flag, s.env, def, s.help)
	}
	return b.String()
}
