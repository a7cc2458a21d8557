package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"
	"github.com/venna/metering/aggregate"
	"github.com/venna/metering/api"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/gateway"
	"github.com/venna/metering/ingest"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/kafkaadmin"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/schema"
	"github.com/venna/metering/simupstream"
	"github.com/venna/metering/spend"
	"github.com/venna/metering/stripesync"
	"github.com/venna/metering/webhook"
)

func openDB(ctx context.Context, env *Env) (driver.Conn, error) {
	return chdb.Open(ctx, env.Config.ClickHouse)
}

// serveHTTP serves h on addr until ctx ends, then stops accepting and lets in-flight
// requests finish (up to 30s).
func serveHTTP(ctx context.Context, env *Env, name, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: listen on %s: %w", name, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	env.Log.Info("listening", "server", name, "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("%s: %w", name, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("%s: shutdown: %w", name, err)
	}
	return nil
}

func newAuthenticator(ctx context.Context, env *Env, conn driver.Conn) (*apikey.Authenticator, error) {
	auth, err := apikey.NewAuthenticator(ctx, apikey.NewStore(conn, env.Config.ClickHouse.Database), env.Log)
	if err != nil {
		return nil, fmt.Errorf("load api keys (did 'venna migrate' run?): %w", err)
	}
	go auth.Run(ctx, env.Config.KeyRefresh)
	return auth, nil
}

// newLimiter is the gateway's spend and rate limiter, sharing through Redis when
// VENNA_REDIS_ADDR names one; it runs until ctx ends.
func newLimiter(ctx context.Context, env *Env, conn driver.Conn) (*spend.Limiter, error) {
	c := env.Config
	prices, err := invoice.LoadPriceBook(c.PricesFile)
	if err != nil {
		return nil, err
	}
	cfg := c.limiterConfig()
	if c.RedisAddr != "" {
		rdb := redis.NewClient(&redis.Options{Addr: c.RedisAddr, Password: c.RedisPassword,
			DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
		host, _ := os.Hostname()
		id := fmt.Sprintf("%s-%d-%d", host, os.Getpid(), time.Now().UnixNano())
		cfg.Shared = spend.NewRedisShared(rdb, c.ClickHouse.Database, id, max(3*c.SpendSync, time.Second))
	}
	// Prepaid workspaces are stopped when their credits, as invoices apply them, run out.
	credits, err := invoice.New(c.invoiceConfig(), conn, prices)
	if err != nil {
		return nil, err
	}
	cfg.Credits = credits
	l, err := spend.NewLimiter(ctx, cfg, spend.NewStore(conn, c.ClickHouse.Database), prices, env.Log)
	if err != nil {
		return nil, fmt.Errorf("spend limits (did 'venna migrate' run?): %w", err)
	}
	go l.Run(ctx)
	return l, nil
}

// limiterConfig is the gateway's spend limiter configuration, without its stores.
func (c *Config) limiterConfig() spend.LimiterConfig {
	return spend.LimiterConfig{Refresh: c.SpendRefresh, SyncInterval: c.SpendSync, FailClosed: c.LimitsFail == "closed"}
}

func (c *Config) invoiceConfig() invoice.Config {
	return invoice.Config{Database: c.ClickHouse.Database, Grace: c.InvoiceGrace}
}

func (c *Config) webhookConfig() webhook.Config {
	return webhook.Config{Database: c.ClickHouse.Database, Timeout: c.WebhookTimeout, Concurrency: c.WebhookConcurrency, RetryFor: c.WebhookRetryFor}
}

func gatewayCmd() *command {
	return &command{
		name:    "gateway",
		kind:    kindRole,
		summary: "POST /v1/chat/completions → upstream; usage events → Kafka",
		about: "Serves the OpenAI-compatible POST /v1/chat/completions and GET /v1/models to holders of API keys,\n" +
			"routes each model to its upstream, enforces budgets and rate limits, and writes a usage event per\n" +
			"request to its spool and on to Kafka. /healthz, /readyz and /metrics are on the same address.",
		example: []string{"VENNA_CLICKHOUSE_ADDR=clickhouse:9000 VENNA_KAFKA_BROKERS=kafka:9092 venna gateway --gateway-addr 0.0.0.0:8080"},
		groups:  []string{"clickhouse", "kafka", "gateway", "keys", "prices", "invoices", "spool", "limits", "redis", "log"},
		run:     role(runGateway),
	}
}

// role adapts a role, which takes no subcommand and no arguments, to a command body.
func role(f func(context.Context, *Env) error) func(context.Context, *Env, string, []string) error {
	return func(ctx context.Context, env *Env, _ string, _ []string) error { return f(ctx, env) }
}

func runGateway(ctx context.Context, env *Env) error {
	c := env.Config
	routes, err := gateway.LoadRoutes(c.RoutesFile)
	if err != nil {
		return err
	}
	pcfg := gateway.ProducerConfig{Brokers: c.brokers(), Topic: c.KafkaTopic,
		Spool: gateway.SpoolConfig{Dir: c.SpoolDir, MaxBytes: c.SpoolMaxBytes, SyncInterval: c.SpoolSync}}
	gcfg := gateway.Config{Routes: routes, UpstreamTimeout: c.UpstreamTimeout}
	// Everything that can be checked is, before the first connection.
	if err := errors.Join(pcfg.Validate(), gcfg.Validate(), c.invoiceConfig().Validate(), c.limiterConfig().Validate()); err != nil {
		return invalid(err)
	}
	conn, err := openDB(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	auth, err := newAuthenticator(ctx, env, conn)
	if err != nil {
		return err
	}
	prod, err := gateway.NewProducer(pcfg, env.Log)
	if err != nil {
		return err
	}
	gw, err := gateway.New(gcfg, auth, prod, env.Log)
	if err != nil {
		return err
	}
	limiter, err := newLimiter(ctx, env, conn)
	if err != nil {
		return err
	}
	gw.SetLimiter(limiter)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := gw.Instrument(reg); err != nil {
		return err
	}
	if err := limiter.Instrument(reg); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", gw.Handler())
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		// Ready when completions can be metered: the spool takes events.
		if b := prod.Stats().SpoolBytes; b >= c.SpoolMaxBytes && c.SpoolMaxBytes > 0 {
			http.Error(w, "usage spool full", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	serveErr := serveHTTP(ctx, env, "gateway", c.GatewayAddr, mux)
	// Every request has finished: ship what is queued before exiting.
	drainCtx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return errors.Join(serveErr, prod.Close(drainCtx))
}

func ingestCmd() *command {
	return &command{
		name:    "ingest",
		kind:    kindRole,
		summary: "Kafka → ClickHouse consumer (one member of the consumer group)",
		about: "Consumes usage events from Kafka as one member of the consumer group and inserts them into\n" +
			"ClickHouse in batches; invalid events go to the dead-letter topic. /healthz, /readyz and\n" +
			"/metrics are on --ingest-metrics-addr.",
		example: []string{"venna ingest --kafka-brokers kafka:9092 --ingest-metrics-addr 0.0.0.0:9101"},
		groups:  []string{"clickhouse", "kafka", "dlq", "ingest", "log"},
		run:     role(runIngest),
	}
}

func runIngest(ctx context.Context, env *Env) error {
	c := env.Config
	cfg := ingest.Config{
		Brokers: c.brokers(), Topic: c.KafkaTopic, GroupID: c.IngestGroup, Database: c.ClickHouse.Database,
		BatchSize: c.IngestBatchSize, FlushInterval: c.IngestFlushInterval, DLQTopic: c.dlqTopic(),
	}
	if err := cfg.Validate(); err != nil {
		return invalid(err)
	}
	conn, err := openDB(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	cons, err := ingest.New(cfg, conn, env.Log)
	if err != nil {
		return err
	}
	env.Log.Info("consuming", "topic", c.KafkaTopic, "group", c.IngestGroup)
	return withOps(ctx, env, "ingest-metrics", c.IngestMetricsAddr, cons.Handler(), cons.Run)
}

func aggregateCmd() *command {
	var once bool
	return &command{
		name:    "aggregate",
		kind:    kindRole,
		summary: "cron: hourly rollups, invoices, budget alerts, Stripe push, webhooks (--once: now)",
		about: "Rolls raw usage up by hour and day, computes the current and previous month's invoices\n" +
			"(finalizing a month once its grace period is over), raises budget alerts, with\n" +
			"--stripe-api-key pushes finalized invoices to Stripe, and records and delivers webhook\n" +
			"events, each on its cron schedule; --once runs them once and exits. /healthz, /readyz and\n" +
			"/metrics are on --aggregate-metrics-addr.",
		example: []string{"venna aggregate --invoice-schedule '@every 10m'", "venna aggregate --once"},
		groups:  []string{"clickhouse", "prices", "invoices", "stripe", "aggregate", "webhooks", "log"},
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&once, "once", false, "run the rollup, the invoice job, the budget alerts, the Stripe push and the webhook job once (waiting for its deliveries), then exit")
		},
		forms: []form{{opts: "[--once]", flags: []string{"once"}}},
		run:   func(ctx context.Context, env *Env, _ string, _ []string) error { return runAggregate(ctx, env, once) },
	}
}

// jobs are the aggregator's scheduled jobs.
type jobs struct {
	env    *Env
	agg    *aggregate.Aggregator
	inv    *invoice.Invoicer
	alerts *spend.Alerter
	stripe *stripesync.Syncer // nil: Stripe off
	hooks  *webhook.Dispatcher
	// mu: one job at a time in this process (not the Stripe push nor webhooks: neither
	// Stripe nor a receiver ever holds up billing).
	mu sync.Mutex
	// stripeMu keeps Stripe pushes one at a time; the push never takes mu.
	stripeMu sync.Mutex
	now      func() time.Time
	last     error

	metrics *jobMetrics // nil: none (ops.go)
}

// newInvoicer loads the price file and makes the invoicer of the configured settings on
// conn; the price book is returned too, for what else prices with it.
func newInvoicer(env *Env, conn driver.Conn) (*invoice.Invoicer, *invoice.PriceBook, error) {
	prices, err := invoice.LoadPriceBook(env.Config.PricesFile)
	if err != nil {
		return nil, nil, err
	}
	inv, err := invoice.New(env.Config.invoiceConfig(), conn, prices)
	if err != nil {
		return nil, nil, err
	}
	return inv, prices, nil
}

func newJobs(ctx context.Context, env *Env, conn driver.Conn) (*jobs, error) {
	c := env.Config
	agg, err := aggregate.New(aggregate.Config{Database: c.ClickHouse.Database}, conn)
	if err != nil {
		return nil, err
	}
	inv, prices, err := newInvoicer(env, conn)
	if err != nil {
		return nil, err
	}
	if err := prices.Sync(ctx, conn, c.ClickHouse.Database); err != nil {
		return nil, err
	}
	j := &jobs{env: env, agg: agg, inv: inv, now: time.Now}
	store := spend.NewStore(conn, c.ClickHouse.Database)
	j.alerts = spend.NewAlerter(store, prices, env.Log, func(a spend.Alert) { j.metrics.alert(a.Type) })
	if c.stripeOn() {
		if j.stripe, err = newSyncer(env, conn, inv); err != nil {
			return nil, err
		}
	}
	j.hooks, err = webhook.New(c.webhookConfig(), conn, webhook.Sources{Invoices: inv, Credits: inv, Spend: store, Prices: prices}, env.Log)
	if err != nil {
		return nil, err
	}
	return j, nil
}

func (j *jobs) rollup(ctx context.Context) (err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	defer j.metrics.observe(jobRollup, time.Now(), &err)
	res, err := j.agg.Run(ctx)
	if err != nil {
		j.env.Log.Error("rollup failed", "err", err)
		return err
	}
	j.metrics.setWatermark(res.Watermark)
	j.env.Log.Info("rollup done", "hours", len(res.Hours), "watermark", res.Watermark)
	return nil
}

// invoices computes the current month's drafts and the previous month's invoice, which
// is finalized once its grace period is over.
func (j *jobs) invoices(ctx context.Context) (err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	defer j.metrics.observe(jobInvoice, time.Now(), &err)
	cur, _ := invoice.Month(j.now())
	prev, _ := invoice.Month(cur.Add(-time.Hour))
	var errs []error
	unbilled := 0
	defer func() { j.metrics.setUnbilled(unbilled) }()
	for _, start := range []time.Time{prev, cur} {
		end := start.AddDate(0, 1, 0)
		res, err := j.inv.Run(ctx, start, end)
		if err != nil {
			j.env.Log.Error("invoice run failed", "period", start.Format("2006-01"), "err", err)
			errs = append(errs, err)
			continue
		}
		unbilled += len(res.Failed)
		for ws, err := range res.Failed {
			j.env.Log.Error("workspace not invoiced", "workspace", ws, "period", start.Format("2006-01"), "err", err)
			errs = append(errs, err)
		}
		j.env.Log.Info("invoice run done", "period", start.Format("2006-01"), "written", len(res.Written), "frozen", len(res.Frozen))
	}
	return errors.Join(errs...)
}

// budgetAlerts raises the budgets' alerts of the month so far.
func (j *jobs) budgetAlerts(ctx context.Context) (err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	defer j.metrics.observe(jobAlerts, time.Now(), &err)
	raised, err := j.alerts.Run(ctx)
	if err != nil {
		j.env.Log.Error("budget alerts failed", "err", err)
		return err
	}
	if len(raised) > 0 {
		j.env.Log.Info("budget alerts done", "raised", len(raised))
	}
	return nil
}

// webhooks records the webhook events of what the other jobs wrote since its last scan,
// then wakes the dispatcher, which sends what is due in the background: the job itself
// never waits for a receiver.
func (j *jobs) webhooks(ctx context.Context) (err error) {
	defer j.metrics.observe(jobWebhooks, time.Now(), &err)
	defer j.hooks.Poke()
	res, err := j.hooks.Detect(ctx)
	if err != nil {
		j.env.Log.Error("webhook scan failed", "err", err)
		return err
	}
	if len(res.Events) > 0 {
		j.env.Log.Info("webhook events recorded", "events", len(res.Events), "deliveries", res.Deliveries)
	}
	return nil
}

// webhooksOnce is the webhook job of --once: a scan, one round of deliveries, and the
// wait for them.
func (j *jobs) webhooksOnce(ctx context.Context) error {
	if err := j.webhooks(ctx); err != nil {
		return err
	}
	_, err := j.hooks.Dispatch(ctx)
	j.hooks.Wait()
	return err
}

func runAggregate(ctx context.Context, env *Env, once bool) error {
	c := env.Config
	var stripeErr error
	if c.stripeOn() {
		stripeErr = c.stripeConfig().Validate()
	}
	if err := errors.Join((aggregate.Config{Database: c.ClickHouse.Database}).Validate(), c.invoiceConfig().Validate(), stripeErr,
		c.webhookConfig().Validate()); err != nil {
		return invalid(err)
	}
	conn, err := openDB(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	j, err := newJobs(ctx, env, conn)
	if err != nil {
		return err
	}
	if once {
		err := errors.Join(j.rollup(ctx), j.invoices(ctx), j.budgetAlerts(ctx))
		if j.stripe != nil {
			// After the invoice job: what it just finalized is pushed in the same run.
			err = errors.Join(err, j.stripePush(ctx))
		}
		return errors.Join(err, j.webhooksOnce(ctx))
	}
	j.metrics = newJobMetrics()
	if err := j.hooks.Instrument(j.metrics.reg); err != nil {
		return err
	}
	return withOps(ctx, env, "aggregate-ops", env.Config.AggregateMetrics, opsHandler(j.metrics.reg, conn), j.schedule)
}

// schedule runs the jobs on their cron schedules until ctx ends, then waits for a
// running job to finish.
func (j *jobs) schedule(ctx context.Context) error {
	c := cron.New(cron.WithLocation(time.UTC), cron.WithChain(cron.SkipIfStillRunning(cron.DiscardLogger)))
	if _, err := c.AddFunc(j.env.Config.AggregateSchedule, func() { j.rollup(ctx) }); err != nil {
		return fmt.Errorf("aggregate-schedule %q: %w", j.env.Config.AggregateSchedule, err)
	}
	if _, err := c.AddFunc(j.env.Config.InvoiceSchedule, func() { j.invoices(ctx) }); err != nil {
		return fmt.Errorf("invoice-schedule %q: %w", j.env.Config.InvoiceSchedule, err)
	}
	if _, err := c.AddFunc(j.env.Config.AlertSchedule, func() { j.budgetAlerts(ctx) }); err != nil {
		return fmt.Errorf("alert-schedule %q: %w", j.env.Config.AlertSchedule, err)
	}
	stripe := "off"
	if j.stripe != nil {
		stripe = j.env.Config.StripeSchedule
		if _, err := c.AddFunc(stripe, func() { j.stripePush(ctx) }); err != nil {
			return fmt.Errorf("stripe-schedule %q: %w", stripe, err)
		}
	}
	if _, err := c.AddFunc(j.env.Config.WebhookSchedule, func() { j.webhooks(ctx) }); err != nil {
		return fmt.Errorf("webhook-schedule %q: %w", j.env.Config.WebhookSchedule, err)
	}
	dispatched := make(chan error, 1)
	go func() { dispatched <- j.hooks.Run(ctx) }()
	c.Start()
	j.env.Log.Info("scheduled", "rollup", j.env.Config.AggregateSchedule, "invoices", j.env.Config.InvoiceSchedule, "stripe", stripe,
		"webhooks", j.env.Config.WebhookSchedule)
	<-ctx.Done()
	<-c.Stop().Done()
	return <-dispatched // the attempts in flight end within --webhook-timeout
}

func apiCmd() *command {
	return &command{
		name:    "api",
		kind:    kindRole,
		summary: "REST API: /v1/usage, /v1/invoices, /v1/spend, /v1/credits, admin API (webhooks too)",
		about: "Serves the REST read side to holders of API keys — usage, invoices, spend and credits — and,\n" +
			"with --admin-token, the admin API under /v1/admin/. /openapi.json, /healthz, /readyz and\n" +
			"/metrics are on the same address.",
		example: []string{"VENNA_ADMIN_TOKEN=$(openssl rand -hex 16) venna api --api-addr 0.0.0.0:8081"},
		groups:  []string{"clickhouse", "api", "keys", "prices", "invoices", "log"},
		run:     role(runAPI),
	}
}

func runAPI(ctx context.Context, env *Env) error {
	c := env.Config
	if err := errors.Join((api.Config{Database: c.ClickHouse.Database, AdminToken: c.AdminToken}).Validate(), c.invoiceConfig().Validate()); err != nil {
		return invalid(err)
	}
	conn, err := openDB(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	auth, err := newAuthenticator(ctx, env, conn)
	if err != nil {
		return err
	}
	inv, prices, err := newInvoicer(env, conn)
	if err != nil {
		return err
	}
	srv, err := api.New(api.Config{Database: c.ClickHouse.Database, AdminToken: c.AdminToken}, conn, auth, inv, env.Log,
		api.WithPrices(prices), api.WithAdmin(apikey.NewStore(conn, c.ClickHouse.Database), inv),
		api.WithSpend(spend.NewStore(conn, c.ClickHouse.Database)), api.WithCredits(inv), api.WithPlans(inv),
		api.WithStripe(stripesync.NewStore(conn, c.ClickHouse.Database)),
		api.WithWebhooks(webhook.NewStore(conn, c.ClickHouse.Database)))
	if err != nil {
		return err
	}
	return serveHTTP(ctx, env, "api", c.APIAddr, srv.Handler())
}

func simCmd() *command {
	return &command{
		name:    "sim-upstream",
		kind:    kindRole,
		summary: "the simulated OpenAI-compatible upstream (demo and tests)",
		about: "Serves a simulated OpenAI-compatible upstream — POST /v1/chat/completions with made-up answers\n" +
			"and realistic usage, GET /v1/models, GET /healthz — for the demo and the tests.",
		example: []string{"venna sim-upstream --sim-addr 127.0.0.1:18090"},
		groups:  []string{"sim", "log"},
		run:     role(runSim),
	}
}

func runSim(ctx context.Context, env *Env) error {
	s := &simupstream.Server{APIKey: env.Config.SimAPIKey}
	// /healthz here rather than in simupstream: it is for probes of the process, like
	// every role's, not part of the upstream being simulated.
	mux := http.NewServeMux()
	mux.Handle("/", s.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	return serveHTTP(ctx, env, "sim-upstream", env.Config.SimAddr, mux)
}

func allCmd() *command {
	var withSim bool
	return &command{
		name:    "all",
		kind:    kindRole,
		summary: "every role above in one process (single machine)",
		about: "Runs the gateway, ingest, aggregate and api roles in one process, with the settings of each;\n" +
			"the first role to fail stops the others. --with-sim adds the simulated upstream.",
		example: []string{"venna all --with-sim"},
		groups:  allRoleGroups(),
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&withSim, "with-sim", false, "also run the simulated upstream")
		},
		forms: []form{{opts: "[--with-sim]", flags: []string{"with-sim"}}},
		run:   func(ctx context.Context, env *Env, _ string, _ []string) error { return runAll(ctx, env, withSim) },
	}
}

// allRoleGroups are the groups of every role: all of them but migrate's, which no role
// reads (`venna all --kafka-partitions 24` creates no topic, so it is refused).
func allRoleGroups() []string {
	var out []string
	for _, g := range groups {
		if g.name != "migrate" {
			out = append(out, g.name)
		}
	}
	return out
}

// runAll runs every role in one process; the first role to fail stops the others.
func runAll(ctx context.Context, env *Env, withSim bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	roles := map[string]func(context.Context, *Env) error{"gateway": runGateway, "ingest": runIngest,
		"aggregate": func(ctx context.Context, env *Env) error { return runAggregate(ctx, env, false) }, "api": runAPI}
	if withSim {
		roles["sim-upstream"] = runSim
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(roles))
	for name, role := range roles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			renv := *env
			renv.Log = env.Log.With("role", name)
			if err := role(ctx, &renv); err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

func migrateCmd() *command {
	return &command{
		name:    "migrate",
		kind:    kindAdmin,
		summary: "create or upgrade the ClickHouse schema, the Kafka topics and the price book",
		about: "Applies the ClickHouse migrations not yet applied (recorded in schema_migrations), creates the\n" +
			"usage topic and its dead-letter topic if missing, and stores the price book. Safe to run again.",
		example: []string{"venna migrate --kafka-partitions 24 --kafka-replication 3 --kafka-min-insync-replicas 2"},
		groups:  []string{"clickhouse", "kafka", "dlq", "migrate", "prices", "log"},
		run:     role(runMigrate),
	}
}

func runMigrate(ctx context.Context, env *Env) error {
	c := env.Config
	switch {
	case c.KafkaPartitions < 1:
		return usagef("--kafka-partitions %d: want at least 1", c.KafkaPartitions)
	case c.KafkaReplication < 1:
		return usagef("--kafka-replication %d: want at least 1", c.KafkaReplication)
	case c.KafkaMinISR < 0 || c.KafkaRetention < 0:
		return usagef("--kafka-min-insync-replicas and --kafka-retention must not be negative")
	}
	conn, err := openDB(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	// With a cluster: ON CLUSTER, Replicated engines and Distributed tables (schema/cluster.go).
	cluster := schema.Cluster{Name: c.ClickHouseCluster, Replicated: c.ClickHouseCluster != ""}
	applied, err := schema.MigrateCluster(ctx, conn, c.ClickHouse.Database, cluster)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Out, "clickhouse %s: applied migrations %v\n", c.ClickHouse.Database, applied)
	if err := kafkaadmin.EnsureTopicConfig(ctx, c.brokers(), c.KafkaTopic, c.KafkaPartitions, c.KafkaReplication, c.topicConfigs()); err != nil {
		return err
	}
	fmt.Fprintf(env.Out, "kafka topic %s: ready\n", c.KafkaTopic)
	if err := kafkaadmin.EnsureTopicConfig(ctx, c.brokers(), c.dlqTopic(), c.KafkaPartitions, c.KafkaReplication, c.topicConfigs()); err != nil {
		return err
	}
	fmt.Fprintf(env.Out, "kafka dead-letter topic %s: ready\n", c.dlqTopic())
	prices, err := invoice.LoadPriceBook(c.PricesFile)
	if err != nil {
		return err
	}
	if err := prices.Sync(ctx, conn, c.ClickHouse.Database); err != nil {
		return err
	}
	fmt.Fprintf(env.Out, "price book %s: stored\n", c.PricesFile)
	return nil
}
