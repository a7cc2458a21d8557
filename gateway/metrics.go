package gateway

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/schema"
)

// metrics are the gateway's Prometheus series; a nil *metrics records nothing.
type metrics struct {
	requests *prometheus.CounterVec
	upstream *prometheus.HistogramVec
	overhead prometheus.Histogram
}

// Instrument registers the gateway's metrics (and the producer's, if pub is a *Producer)
// on reg. Call it before serving.
func (g *Gateway) Instrument(reg prometheus.Registerer) error {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "venna_gateway_requests_total",
			Help: "Chat completion requests by public model and HTTP status returned."}, []string{"model", "status"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "venna_gateway_upstream_seconds",
			Help: "Upstream exchange time, request sent to answer read (first byte for streams).", Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14)}, []string{"model"}),
		overhead: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "venna_gateway_added_seconds",
			Help: "Time the gateway adds to a non-streamed request: total minus the upstream exchange.", Buckets: prometheus.ExponentialBuckets(5e-6, 2, 16)}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.upstream, m.overhead} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	if p, ok := g.pub.(*Producer); ok {
		if err := p.Instrument(reg); err != nil {
			return err
		}
	}
	g.m = m
	return nil
}

// Instrument registers the producer's counters on reg.
func (p *Producer) Instrument(reg prometheus.Registerer) error {
	cs := []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "venna_gateway_events_spooled_total", Help: "Usage events written to the spool."},
			func() float64 { return float64(p.spooled.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "venna_gateway_events_shipped_total", Help: "Usage events acknowledged by Kafka."},
			func() float64 { return float64(p.shipped.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "venna_gateway_events_refused_total", Help: "Usage events the spool refused (full or closed); their completions were withheld."},
			func() float64 { return float64(p.refused.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "venna_gateway_produce_failures_total", Help: "Failed Kafka produce attempts (each retried)."},
			func() float64 { return float64(p.failures.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "venna_gateway_spool_bytes", Help: "Bytes in the usage spool not yet freed."},
			func() float64 { return float64(p.spool.Bytes()) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (m *metrics) observe(model string, status int, total, upstream time.Duration, stream bool) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(model, strconv.Itoa(status)).Inc()
	if upstream > 0 {
		m.upstream.WithLabelValues(model).Observe(upstream.Seconds())
		if !stream {
			m.overhead.Observe((total - upstream).Seconds())
		}
	}
}

// statusWriter remembers the status a handler wrote; it keeps streaming working.
type statusWriter struct {
	http.ResponseWriter
	status   int
	upstream time.Duration // the upstream exchange, for the added-latency histogram
	// What the limiter settles once the request is served: whether it was admitted, and
	// the usage event recorded for it (none: nothing was used).
	admitted  bool
	principal apikey.Principal
	admission Admission
	event     schema.UsageEvent
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
