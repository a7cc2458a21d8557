package spend

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// limiterMetrics count what the limiter refused and whether its store is reachable.
type limiterMetrics struct {
	mu      sync.Mutex
	refusal map[string]int64 // by reason: budget, rate_requests, rate_tokens, unavailable
	storeUp atomic.Bool
}

func (m *limiterMetrics) refused(reason string) {
	m.mu.Lock()
	if m.refusal == nil {
		m.refusal = map[string]int64{}
	}
	m.refusal[reason]++
	m.mu.Unlock()
}

// Refused returns how many requests were refused, by reason.
func (l *Limiter) Refused() map[string]int64 {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	out := make(map[string]int64, len(l.m.refusal))
	for k, v := range l.m.refusal {
		out[k] = v
	}
	return out
}

type refusedCollector struct {
	l    *Limiter
	desc *prometheus.Desc
}

func (c refusedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c refusedCollector) Collect(ch chan<- prometheus.Metric) {
	for _, reason := range []string{"budget", "credits", "rate_requests", "rate_tokens", "unavailable"} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(c.l.Refused()[reason]), reason)
	}
}

// Instrument registers the limiter's metrics on reg.
func (l *Limiter) Instrument(reg prometheus.Registerer) error {
	cs := []prometheus.Collector{
		refusedCollector{l, prometheus.NewDesc("venna_gateway_limit_refusals_total",
			"Completions refused by a budget or used-up prepaid credits (insufficient_quota), a rate limit, or limits that could not be checked (fail closed).", []string{"reason"}, nil)},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "venna_gateway_spend_store_up",
			Help: "1 while the shared spend store (Redis) answers; without one, always 1."}, func() float64 {
			if l.cfg.Shared == nil || l.m.storeUp.Load() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "venna_gateway_spend_snapshot_age_seconds",
			Help: "Age of the budgets, rate limits and spend snapshot read from ClickHouse."}, func() float64 {
			return time.Since(l.view.Load().at).Seconds()
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "venna_gateway_spend_replicas",
			Help: "Gateway replicas sharing the rate limits, as the shared store last counted them."}, func() float64 {
			l.mu.Lock()
			defer l.mu.Unlock()
			return float64(l.shared.replicas)
		}),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
