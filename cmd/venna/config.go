package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"github.com/venna/metering/internal/chdb"
)

// Config is every setting of every role, read once from flags and environment variables.
// A command fills only the groups it takes (see groups); the rest keep their zero values.
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

	StripeAPIKey       string
	StripeAPIBase      string
	StripeCollection   string
	StripeDaysUntilDue int
	StripeSince        time.Time
	StripeSchedule     string
	WebhookSchedule    string
	WebhookTimeout     time.Duration
	WebhookConcurrency int
	WebhookRetryFor    time.Duration

	SimAddr   string
	SimAPIKey string
	LogLevel  string
}

// group is a set of settings that one part of the system reads. A command takes the
// groups its code reads and accepts only their flags, so that `venna key create -h` is
// about keys, and a flag a command would ignore is refused rather than silently dropped.
type group struct {
	name, title string
}

// groups, in the order -h and the configuration table show them.
var groups = []group{
	{"clickhouse", "ClickHouse connection"},
	{"kafka", "Kafka"},
	{"dlq", "Dead-letter topic"},
	{"migrate", "Schema and topic creation"},
	{"gateway", "Gateway"},
	{"keys", "API keys"},
	{"prices", "Price book"},
	{"invoices", "Invoices"},
	{"stripe", "Stripe"},
	{"spool", "Usage spool"},
	{"limits", "Budgets and rate limits"},
	{"redis", "Shared limits (Redis)"},
	{"ingest", "Ingest"},
	{"aggregate", "Aggregate schedules"},
	{"webhooks", "Webhook delivery"},
	{"api", "REST API"},
	{"sim", "Simulated upstream"},
	{"log", "Logging"},
}

// setting is one flag with its environment variable; the table is the config reference.
type setting struct {
	group, flag, env, def, help string
	// bind registers the flag with default def; an error says def is not a valid value.
	bind func(fs *flag.FlagSet, name, def, help string) error
}

func str(p *string) func(*flag.FlagSet, string, string, string) error {
	return func(fs *flag.FlagSet, n, d, h string) error { fs.StringVar(p, n, d, h); return nil }
}

// parsed binds a flag.Value whose Set checks values, flags and defaults alike.
func parsed(v flag.Value) func(*flag.FlagSet, string, string, string) error {
	return func(fs *flag.FlagSet, n, d, h string) error {
		if err := v.Set(d); err != nil {
			return err
		}
		fs.Var(v, n, h)
		return nil
	}
}

func boolean(p *bool) func(*flag.FlagSet, string, string, string) error {
	return func(fs *flag.FlagSet, n, d, h string) error {
		v, err := strconv.ParseBool(d)
		if err != nil {
			return errors.New("want true or false")
		}
		fs.BoolVar(p, n, v, h)
		return nil
	}
}

func num(p *int) func(*flag.FlagSet, string, string, string) error {
	return func(fs *flag.FlagSet, n, d, h string) error {
		v, err := strconv.Atoi(d)
		if err != nil {
			return errors.New("want an integer")
		}
		fs.IntVar(p, n, v, h)
		return nil
	}
}

func num64(p *int64) func(*flag.FlagSet, string, string, string) error {
	return func(fs *flag.FlagSet, n, d, h string) error {
		v, err := strconv.ParseInt(d, 10, 64)
		if err != nil {
			return errors.New("want an integer")
		}
		fs.Int64Var(p, n, v, h)
		return nil
	}
}

func dur(p *time.Duration) func(*flag.FlagSet, string, string, string) error {
	return func(fs *flag.FlagSet, n, d, h string) error {
		v, err := time.ParseDuration(d)
		if err != nil {
			return errors.New("want a duration, e.g. 90s or 2h")
		}
		fs.DurationVar(p, n, v, h)
		return nil
	}
}

// choiceValue is a string flag that takes one of a few values.
type choiceValue struct {
	p    *string
	from []string
}

func (v choiceValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v choiceValue) Set(s string) error {
	if !slices.Contains(v.from, s) {
		return fmt.Errorf("want %s", orList(v.from))
	}
	*v.p = s
	return nil
}

func oneOf(p *string, from ...string) func(*flag.FlagSet, string, string, string) error {
	return parsed(choiceValue{p, from})
}

// cronValue is a cron schedule, checked the way the aggregator's scheduler parses it.
type cronValue struct{ p *string }

func (v cronValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v cronValue) Set(s string) error {
	if _, err := cron.ParseStandard(s); err != nil {
		return fmt.Errorf("want a cron schedule, e.g. \"@every 1m\" or \"*/5 * * * *\": %v", err)
	}
	*v.p = s
	return nil
}

// levelValue is a log level.
type levelValue struct{ p *string }

func (v levelValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v levelValue) Set(s string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return errors.New("want debug, info, warn or error")
	}
	*v.p = s
	return nil
}

// orList renders values as "a, b or c".
func orList(values []string) string {
	if len(values) < 2 {
		return strings.Join(values, "")
	}
	return strings.Join(values[:len(values)-1], ", ") + " or " + values[len(values)-1]
}

func (c *Config) settings() []setting {
	return []setting{
		{"clickhouse", "clickhouse-addr", "VENNA_CLICKHOUSE_ADDR", "127.0.0.1:9000", "ClickHouse address, host:port of the protocol chosen (native: 9000, 9440 with TLS; http: 8123, 8443 with TLS)", str(&c.ClickHouse.Addr)},
		{"clickhouse", "clickhouse-protocol", "VENNA_CLICKHOUSE_PROTOCOL", "native", "ClickHouse protocol: native or http", str(&c.ClickHouse.Protocol)},
		{"clickhouse", "clickhouse-secure", "VENNA_CLICKHOUSE_SECURE", "false", "TLS to ClickHouse (ClickHouse Cloud: true, with port 9440 native or 8443 http)", boolean(&c.ClickHouse.Secure)},
		{"clickhouse", "clickhouse-ca-file", "VENNA_CLICKHOUSE_CA_FILE", "", "PEM file of the CAs that sign ClickHouse's certificate (empty: the system's)", str(&c.ClickHouse.CAFile)},
		{"clickhouse", "clickhouse-database", "VENNA_CLICKHOUSE_DATABASE", "venna", "ClickHouse database", str(&c.ClickHouse.Database)},
		{"clickhouse", "clickhouse-user", "VENNA_CLICKHOUSE_USER", "default", "ClickHouse user", str(&c.ClickHouse.User)},
		{"clickhouse", "clickhouse-password", "VENNA_CLICKHOUSE_PASSWORD", "", "ClickHouse password", str(&c.ClickHouse.Password)},
		{"kafka", "kafka-brokers", "VENNA_KAFKA_BROKERS", "127.0.0.1:9092", "Kafka bootstrap brokers, comma-separated", str(&c.KafkaBrokers)},
		{"kafka", "kafka-topic", "VENNA_KAFKA_TOPIC", "venna.usage.v1", "Kafka topic of usage events", str(&c.KafkaTopic)},
		{"dlq", "ingest-dlq-topic", "VENNA_INGEST_DLQ_TOPIC", "", "dead-letter topic for invalid usage events (empty: <kafka-topic>.dlq)", str(&c.IngestDLQTopic)},
		{"migrate", "clickhouse-cluster", "VENNA_CLICKHOUSE_CLUSTER", "", "ClickHouse cluster (remote_servers) migrate creates the schema on: ON CLUSTER, Replicated engines, Distributed tables; empty: one server", str(&c.ClickHouseCluster)},
		{"migrate", "kafka-partitions", "VENNA_KAFKA_PARTITIONS", "8", "partitions when migrate creates the topic", num(&c.KafkaPartitions)},
		{"migrate", "kafka-replication", "VENNA_KAFKA_REPLICATION", "1", "replication factor when migrate creates the topic", num(&c.KafkaReplication)},
		{"migrate", "kafka-min-insync-replicas", "VENNA_KAFKA_MIN_INSYNC_REPLICAS", "0", "min.insync.replicas of the topics migrate creates (0: the broker's default)", num(&c.KafkaMinISR)},
		{"migrate", "kafka-retention", "VENNA_KAFKA_RETENTION", "0s", "retention of the topics migrate creates (0: the broker's default)", dur(&c.KafkaRetention)},
		{"gateway", "gateway-addr", "VENNA_GATEWAY_ADDR", "127.0.0.1:8080", "gateway listen address", str(&c.GatewayAddr)},
		{"gateway", "routes-file", "VENNA_ROUTES_FILE", "deploy/routes.yaml", "model → upstream routes (YAML)", str(&c.RoutesFile)},
		{"gateway", "upstream-timeout", "VENNA_UPSTREAM_TIMEOUT", "10m", "longest upstream exchange", dur(&c.UpstreamTimeout)},
		{"keys", "key-refresh", "VENNA_KEY_REFRESH", "2s", "how often gateways and the API reload API keys", dur(&c.KeyRefresh)},
		{"prices", "prices-file", "VENNA_PRICES_FILE", "deploy/prices.yaml", "price book (YAML)", str(&c.PricesFile)},
		{"invoices", "invoice-grace", "VENNA_INVOICE_GRACE", "72h", "how long after a period ends its invoice stays a draft", dur(&c.InvoiceGrace)},
		{"stripe", "stripe-api-key", "VENNA_STRIPE_API_KEY", "", "Stripe secret key finalized invoices are pushed to Stripe with (empty: Stripe off, nothing is pushed)", str(&c.StripeAPIKey)},
		{"stripe", "stripe-api-base", "VENNA_STRIPE_API_BASE", "https://api.stripe.com", "Stripe API URL (stripe-mock in tests)", str(&c.StripeAPIBase)},
		{"stripe", "stripe-collection-method", "VENNA_STRIPE_COLLECTION_METHOD", "send_invoice", "how Stripe collects an invoice: send_invoice (emailed, due in --stripe-days-until-due days) or charge_automatically (the customer's default payment method)", oneOf(&c.StripeCollection, "send_invoice", "charge_automatically")},
		{"stripe", "stripe-days-until-due", "VENNA_STRIPE_DAYS_UNTIL_DUE", "30", "days a send_invoice Stripe invoice is due in, 1 to 3650", num(&c.StripeDaysUntilDue)},
		{"stripe", "stripe-since", "VENNA_STRIPE_SINCE", "", "first invoice period pushed to Stripe, YYYY-MM (empty: every finalized invoice)", parsed(optionalMonth{&c.StripeSince})},
		{"spool", "spool-dir", "VENNA_SPOOL_DIR", "data/spool", "gateway's write-ahead spool of usage events (one per gateway process)", str(&c.SpoolDir)},
		{"spool", "spool-max-bytes", "VENNA_SPOOL_MAX_BYTES", "1073741824", "spool size at which the gateway refuses completions (503)", num64(&c.SpoolMaxBytes)},
		{"spool", "spool-sync-interval", "VENNA_SPOOL_SYNC_INTERVAL", "100ms", "fsync period of the spool; negative = fsync every event", dur(&c.SpoolSync)},
		{"limits", "spend-refresh", "VENNA_SPEND_REFRESH", "2s", "how often gateways read budgets, rate limits and month-to-date spend from ClickHouse", dur(&c.SpendRefresh)},
		{"redis", "redis-addr", "VENNA_REDIS_ADDR", "", "Redis host:port the gateways share spend and rate limits through (empty: each gateway counts alone)", str(&c.RedisAddr)},
		{"redis", "redis-password", "VENNA_REDIS_PASSWORD", "", "Redis password", str(&c.RedisPassword)},
		{"redis", "spend-sync-interval", "VENNA_SPEND_SYNC_INTERVAL", "100ms", "how often a gateway exchanges its spend and liveness with Redis", dur(&c.SpendSync)},
		{"redis", "limits-on-failure", "VENNA_LIMITS_ON_FAILURE", "open", "when Redis or ClickHouse cannot be read: open (serve within the last known state) or closed (503 for limited workspaces)", oneOf(&c.LimitsFail, "open", "closed")},
		{"ingest", "ingest-group", "VENNA_INGEST_GROUP", "venna-ingest", "Kafka consumer group of the ingest role", str(&c.IngestGroup)},
		{"ingest", "ingest-batch-size", "VENNA_INGEST_BATCH_SIZE", "50000", "events per ClickHouse insert", num(&c.IngestBatchSize)},
		{"ingest", "ingest-flush-interval", "VENNA_INGEST_FLUSH_INTERVAL", "1s", "longest wait before a partial batch is inserted", dur(&c.IngestFlushInterval)},
		{"ingest", "ingest-metrics-addr", "VENNA_INGEST_METRICS_ADDR", "127.0.0.1:9101", "ingest role's /metrics, /healthz and /readyz listen address (empty: none)", str(&c.IngestMetricsAddr)},
		{"aggregate", "aggregate-schedule", "VENNA_AGGREGATE_SCHEDULE", "@every 1m", "cron schedule of the hourly rollup", parsed(cronValue{&c.AggregateSchedule})},
		{"aggregate", "invoice-schedule", "VENNA_INVOICE_SCHEDULE", "@every 5m", "cron schedule of the invoice run (current and previous month)", parsed(cronValue{&c.InvoiceSchedule})},
		{"aggregate", "alert-schedule", "VENNA_ALERT_SCHEDULE", "@every 1m", "cron schedule of the budget alerts job", parsed(cronValue{&c.AlertSchedule})},
		{"aggregate", "stripe-schedule", "VENNA_STRIPE_SCHEDULE", "@every 5m", "cron schedule of the Stripe push (with --stripe-api-key; failed pushes retried with backoff)", parsed(cronValue{&c.StripeSchedule})},
		{"aggregate", "aggregate-metrics-addr", "VENNA_AGGREGATE_METRICS_ADDR", "127.0.0.1:9102", "aggregate role's /healthz, /readyz and /metrics listen address (empty: none)", str(&c.AggregateMetrics)},
		{"webhooks", "webhook-schedule", "VENNA_WEBHOOK_SCHEDULE", "@every 10s", "cron schedule of the webhook job: record new events, then send what is due (retries included)", parsed(cronValue{&c.WebhookSchedule})},
		{"webhooks", "webhook-timeout", "VENNA_WEBHOOK_TIMEOUT", "10s", "longest webhook delivery attempt: connecting, sending, reading the answer", dur(&c.WebhookTimeout)},
		{"webhooks", "webhook-concurrency", "VENNA_WEBHOOK_CONCURRENCY", "16", "webhook attempts in flight per aggregate process (a quarter of them at most to one endpoint)", num(&c.WebhookConcurrency)},
		{"webhooks", "webhook-retry-for", "VENNA_WEBHOOK_RETRY_FOR", "72h", "how long a webhook delivery is retried (backoff from 30s, doubling, at most 6h apart) before it is given up", dur(&c.WebhookRetryFor)},
		{"api", "api-addr", "VENNA_API_ADDR", "127.0.0.1:8081", "REST API listen address", str(&c.APIAddr)},
		{"api", "admin-token", "VENNA_ADMIN_TOKEN", "", "bearer token of the REST API's admin routes under /v1/admin/, 16+ characters (empty: admin API off)", str(&c.AdminToken)},
		{"sim", "sim-addr", "VENNA_SIM_ADDR", "127.0.0.1:18090", "listen address of the simulated upstream", str(&c.SimAddr)},
		{"sim", "sim-api-key", "VENNA_SIM_API_KEY", "", "API key the simulated upstream requires (empty: none)", str(&c.SimAPIKey)},
		{"log", "log-level", "VENNA_LOG_LEVEL", "info", "debug, info, warn or error", parsed(levelValue{&c.LogLevel})},
	}
}

// bind registers the settings of the named groups on fs, each defaulting to its
// environment variable. bad names, by flag, the settings whose environment variable holds
// a value their flag would refuse: those are bound with their built-in default instead, so
// that -h still works and the flag, when given, still wins.
func (c *Config) bind(fs *flag.FlagSet, names ...string) (bad map[string]error) {
	bad = map[string]error{}
	for _, s := range c.settings() {
		if !slices.Contains(names, s.group) {
			continue
		}
		help := fmt.Sprintf("%s (env %s)", s.help, s.env)
		v, fromEnv := os.LookupEnv(s.env)
		def := s.def
		switch {
		case secretSettings[s.env]:
			// Bound with an empty default so that -h never prints the secret; the
			// environment's value is set below, unless the flag is given.
			def = ""
		case fromEnv:
			def = v
		}
		if err := s.bind(fs, s.flag, def, help); err != nil {
			bad[s.flag] = fmt.Errorf("%s=%q: %w", s.env, v, err)
			s.bind(fs, s.flag, s.def, help) // valid: TestSettingDefaultsAreValid
			continue
		}
		if secretSettings[s.env] && fromEnv {
			if err := fs.Lookup(s.flag).Value.Set(v); err != nil {
				bad[s.flag] = fmt.Errorf("%s: %w", s.env, err)
			}
		}
	}
	return bad
}

// secretSettings are never shown as flag defaults in -h.
var secretSettings = map[string]bool{"VENNA_CLICKHOUSE_PASSWORD": true, "VENNA_ADMIN_TOKEN": true, "VENNA_SIM_API_KEY": true, "VENNA_REDIS_PASSWORD": true, "VENNA_STRIPE_API_KEY": true}

// envDefault is the value a setting takes from its environment variable, or its default:
// for commands that derive a default of their own from another role's setting (probe and
// demo reach a role at its listen address) without taking that setting as a flag.
func envDefault(env string) string {
	if v, ok := os.LookupEnv(env); ok {
		return v
	}
	var c Config
	for _, s := range c.settings() {
		if s.env == env {
			return s.def
		}
	}
	panic("envDefault: no setting reads " + env)
}

// settingGroup is the group of the setting whose flag is name, "" for none.
func settingGroup(name string) string {
	var c Config
	for _, s := range c.settings() {
		if s.flag == name {
			return s.group
		}
	}
	return ""
}

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

// configTable renders the settings as the Markdown tables README carries: every setting
// once, with its group, then which commands take each group.
func configTable() string {
	var b strings.Builder
	b.WriteString("| flag | environment variable | default | group | meaning |\n|---|---|---|---|---|\n")
	var c Config
	for _, s := range c.settings() {
		def := "`" + s.def + "`"
		if s.def == "" {
			def = "(empty)"
		}
		fmt.Fprintf(&b, "| `--%s` | `%s` | %s | %s | %s |\n", s.flag, s.env, def, s.group, s.help)
	}
	b.WriteString("\n| group | settings of | taken by |\n|---|---|---|\n")
	cmds := commands()
	for _, g := range groups {
		var by []string
		for _, cmd := range cmds {
			if slices.Contains(cmd.groups, g.name) {
				by = append(by, "`"+cmd.name+"`")
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", g.name, g.title, strings.Join(by, ", "))
	}
	return b.String()
}
