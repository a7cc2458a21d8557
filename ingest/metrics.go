package ingest

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/segmentio/kafka-go"
)

// metrics are one consumer's Prometheus metrics, on a registry of its own so that
// several consumers (tests, `venna all`) never collide on the global one.
type metrics struct {
	reg            *prometheus.Registry
	committed      prometheus.Counter
	inserted       prometheus.Counter
	duplicates     prometheus.Counter
	deadLettered   *prometheus.CounterVec
	batches        prometheus.Counter
	batchSize      prometheus.Histogram
	insertSeconds  prometheus.Histogram
	insertFailures prometheus.Counter
	commitFailures prometheus.Counter
	fetchErrors    prometheus.Counter
}

func newMetrics(lag prometheus.Collector) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		committed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "venna_ingest_messages_committed_total", Help: "Kafka messages whose offsets were committed: stored, dead-lettered or dropped as in-batch duplicates."}),
		inserted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "venna_ingest_rows_inserted_total", Help: "Usage events inserted into ClickHouse (batches acknowledged by the server)."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "venna_ingest_duplicates_dropped_total", Help: "Events dropped because their event_id was already in the same batch; copies in different batches are absorbed by storage dedup."}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "venna_ingest_dlq_messages_total", Help: "Invalid messages written to the dead-letter topic, by reason class."}, []string{"reason"}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "venna_ingest_batches_total", Help: "Batches inserted and committed."}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "venna_ingest_batch_size", Help: "Kafka messages per flushed batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10)}),
		insertSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "venna_ingest_insert_duration_seconds", Help: "Duration of successful ClickHouse batch inserts.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		insertFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "venna_ingest_insert_failures_total", Help: "Failed ClickHouse insert attempts (each is retried)."}),
		commitFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "venna_ingest_commit_failures_total", Help: "Failed Kafka offset commits (each is retried)."}),
		fetchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "venna_ingest_fetch_errors_total", Help: "Errors fetching from Kafka (the reader reconnects)."}),
	}
	for _, reason := range []string{reasonNotJSON, reasonSchemaVersion, reasonContract} {
		m.deadLettered.WithLabelValues(reason) // export zeros, so that a rate() has a series to start from
	}
	m.reg.MustRegister(m.committed, m.inserted, m.duplicates, m.deadLettered, m.batches, m.batchSize,
		m.insertSeconds, m.insertFailures, m.commitFailures, m.fetchErrors, lag,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// lagCollector reports the consumer group's lag per partition when scraped: the
// partition's end offset minus the group's committed offset, both asked of the broker.
// It is the group's lag, not this member's: every member reports every partition, and
// it keeps growing while inserts fail, since nothing is committed then.
type lagCollector struct {
	client       *kafka.Client
	topic, group string
	desc         *prometheus.Desc
	errors       prometheus.Counter
}

func newLagCollector(brokers []string, topic, group string) *lagCollector {
	return &lagCollector{
		client: &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second, Transport: &kafka.Transport{}},
		topic:  topic, group: group,
		desc: prometheus.NewDesc("venna_ingest_consumer_lag",
			"Messages in the partition after the consumer group's committed offset.", []string{"topic", "partition"}, nil),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "venna_ingest_consumer_lag_errors_total", Help: "Scrapes whose lag could not be read from the broker."}),
	}
}

func (l *lagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- l.desc
	l.errors.Describe(ch)
}

func (l *lagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lags, err := groupLag(ctx, l.client, l.topic, l.group)
	if err != nil {
		l.errors.Inc()
	}
	for p, lag := range lags {
		ch <- prometheus.MustNewConstMetric(l.desc, prometheus.GaugeValue, float64(lag), l.topic, strconv.Itoa(p))
	}
	l.errors.Collect(ch)
}

// groupLag returns, per partition of topic, the messages after group's committed offset
// (after the partition's first offset when the group has committed none).
func groupLag(ctx context.Context, client *kafka.Client, topic, group string) (map[int]int64, error) {
	parts, offs, err := offsets(ctx, client, topic)
	if err != nil {
		return nil, err
	}
	committed, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return nil, fmt.Errorf("fetch offsets of group %s: %w", group, err)
	}
	if committed.Error != nil {
		return nil, fmt.Errorf("fetch offsets of group %s: %w", group, committed.Error)
	}
	done := map[int]int64{}
	for _, p := range committed.Topics[topic] {
		if p.Error == nil {
			done[p.Partition] = p.CommittedOffset
		}
	}
	lags := map[int]int64{}
	for _, o := range offs {
		if o.Error != nil {
			continue
		}
		from, ok := done[o.Partition]
		if !ok || from < o.FirstOffset {
			from = o.FirstOffset
		}
		lags[o.Partition] = max(o.LastOffset-from, 0)
	}
	return lags, nil
}

// offsets returns topic's partitions and the first and end offsets of each.
func offsets(ctx context.Context, client *kafka.Client, topic string) ([]int, []kafka.PartitionOffsets, error) {
	parts, err := partitions(ctx, client, topic)
	if err != nil {
		return nil, nil, err
	}
	req := make([]kafka.OffsetRequest, 0, 2*len(parts))
	for _, p := range parts {
		req = append(req, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	offs, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: req}})
	if err != nil {
		return nil, nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	return parts, offs.Topics[topic], nil
}

func partitions(ctx context.Context, client *kafka.Client, topic string) ([]int, error) {
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			return nil, fmt.Errorf("metadata of %s: %w", topic, t.Error)
		}
		ps := make([]int, len(t.Partitions))
		for i, p := range t.Partitions {
			ps[i] = p.ID
		}
		return ps, nil
	}
	return nil, fmt.Errorf("metadata of %s: topic not found", topic)
}

// Handler serves the consumer's /metrics (Prometheus), /healthz and /readyz.
//
// /healthz is 200 while Run has not ended in an error. /readyz is 200 once Run is
// consuming and neither the last ClickHouse insert nor the last Kafka fetch failed; 503
// (with the reason) while ClickHouse or Kafka is unreachable.
func (c *Consumer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.metrics.reg, promhttp.HandlerOpts{Registry: c.metrics.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if c.failed.Load() {
			http.Error(w, "consumer stopped on an error", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case !c.running.Load():
			http.Error(w, "not consuming", http.StatusServiceUnavailable)
		case c.insertFailing.Load():
			http.Error(w, "clickhouse inserts failing: consumption paused, offsets not committed", http.StatusServiceUnavailable)
		case c.fetchFailing.Load():
			http.Error(w, "kafka fetch failing", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ready")
		}
	})
	return mux
}
