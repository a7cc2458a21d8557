package main

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// jobMetrics are the aggregate role's Prometheus series, labelled by job (rollup,
// invoice), in a registry of their own. A nil *jobMetrics records nothing.
type jobMetrics struct {
	reg       *prometheus.Registry
	runs      *prometheus.CounterVec
	failures  *prometheus.CounterVec
	lastOK    *prometheus.GaugeVec
	duration  *prometheus.HistogramVec
	watermark prometheus.Gauge
	unbilled  prometheus.Gauge
	alerts    *prometheus.CounterVec
}

// Job labels.
const (
	jobRollup   = "rollup"
	jobInvoice  = "invoice"
	jobAlerts   = "alerts"
	jobStripe   = "stripe"
	jobWebhooks = "webhooks"
)

func newJobMetrics() *jobMetrics {
	m := &jobMetrics{
		reg: prometheus.NewRegistry(),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "venna_aggregate_runs_total",
			Help: "Runs of the aggregator's jobs (rollup: hourly and daily rollups; invoice: current and previous month; alerts: budget alerts; stripe: the push of finalized invoices to Stripe; webhooks: the scan for new webhook events)."}, []string{"job"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "venna_aggregate_run_failures_total",
			Help: "Runs that ended in an error (an invoice run counts as failed when any workspace was not invoiced, a Stripe push when any invoice was not pushed)."}, []string{"job"}),
		lastOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "venna_aggregate_last_success_timestamp_seconds",
			Help: "Unix time the job last finished without an error; 0 before its first success."}, []string{"job"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "venna_aggregate_run_duration_seconds",
			Help: "Duration of a job's run, failed ones included.", Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 12)}, []string{"job"}),
		watermark: prometheus.NewGauge(prometheus.GaugeOpts{Name: "venna_aggregate_watermark_timestamp_seconds",
			Help: "ingested_at (Unix time) up to which raw events are rolled up; now minus this is the rollups' staleness."}),
		unbilled: prometheus.NewGauge(prometheus.GaugeOpts{Name: "venna_aggregate_invoice_failed_workspaces",
			Help: "Workspaces the last invoice run could not invoice (e.g. usage of a model with no price)."}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "venna_spend_alerts_total",
			Help: "Budget alerts raised, by type (budget.threshold_reached, budget.exceeded)."}, []string{"type"}),
	}
	for _, job := range []string{jobRollup, jobInvoice, jobAlerts, jobStripe, jobWebhooks} { // series from the start, so rate() and alerts have them
		m.runs.WithLabelValues(job)
		m.failures.WithLabelValues(job)
		m.lastOK.WithLabelValues(job)
	}
	m.alerts.WithLabelValues("budget.threshold_reached")
	m.alerts.WithLabelValues("budget.exceeded")
	m.reg.MustRegister(m.runs, m.failures, m.lastOK, m.duration, m.watermark, m.unbilled, m.alerts,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observe records one run of job that began at start and ended with *err.
func (m *jobMetrics) observe(job string, start time.Time, err *error) {
	if m == nil {
		return
	}
	m.runs.WithLabelValues(job).Inc()
	m.duration.WithLabelValues(job).Observe(time.Since(start).Seconds())
	if *err != nil {
		m.failures.WithLabelValues(job).Inc()
		return
	}
	m.lastOK.WithLabelValues(job).Set(float64(time.Now().Unix()))
}

func (m *jobMetrics) setWatermark(t time.Time) {
	if m != nil && !t.IsZero() {
		m.watermark.Set(float64(t.Unix()))
	}
}

func (m *jobMetrics) alert(typ string) {
	if m != nil {
		m.alerts.WithLabelValues(typ).Inc()
	}
}

func (m *jobMetrics) setUnbilled(n int) {
	if m != nil {
		m.unbilled.Set(float64(n))
	}
}

// opsHandler serves a role's operations endpoints: /healthz (the process serves), /readyz
// (ClickHouse answers a ping within 2s) and /metrics from reg.
func opsHandler(reg *prometheus.Registry, conn driver.Conn) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := conn.Ping(ctx); err != nil {
			http.Error(w, "clickhouse unreachable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}

// withOps runs run with an operations server for h on addr beside it (none when addr is
// empty). Either ending ends the other: a role whose probes cannot be served fails at start
// rather than being restarted by its orchestrator for failing probes.
func withOps(ctx context.Context, env *Env, name, addr string, h http.Handler, run func(context.Context) error) error {
	if addr == "" {
		return run(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- serveHTTP(ctx, env, name, addr, h)
		cancel()
	}()
	err := run(ctx)
	cancel()
	return errors.Join(err, <-served)
}
