package ingest

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/schema"
)

// load produces events in chunks, as a gateway fleet would, retrying a chunk until the
// broker takes it (a retried chunk may be stored twice: storage dedup's job).
type load struct {
	failures atomic.Int64 // failed produce attempts
	produced atomic.Int64 // events acknowledged
	done     chan error
}

func startLoad(t *testing.T, brokers []string, topic string, evs []schema.UsageEvent, chunk int, pause time.Duration) *load {
	t.Helper()
	l := &load{done: make(chan error, 1)}
	msgs := messages(evs)
	w := newTestWriter(brokers, topic)
	w.MaxAttempts = 1
	w.WriteTimeout = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(func() { cancel(); w.Close() })
	go func() {
		for len(msgs) > 0 {
			n := min(chunk, len(msgs))
			if err := w.WriteMessages(ctx, msgs[:n]...); err != nil {
				if ctx.Err() != nil {
					l.done <- err
					return
				}
				l.failures.Add(1)
				time.Sleep(200 * time.Millisecond)
				continue
			}
			l.produced.Add(int64(n))
			msgs = msgs[n:]
			time.Sleep(pause)
		}
		l.done <- nil
	}()
	return l
}

func (l *load) wait(t *testing.T) {
	t.Helper()
	if err := <-l.done; err != nil {
		t.Fatalf("producer gave up: %v", err)
	}
}

// Faults on servers of the test's own: the Kafka broker killed and restarted, ClickHouse
// stopped and restarted, each under load. One private stack serves every step.
func TestFaults(t *testing.T) {
	s := testenv.PrivateServices(t)

	t.Run("kafka broker restarted under load", func(t *testing.T) {
		chCfg, conn := testenv.ClickHouseAt(t, s.CHAddr)
		topic := testenv.TopicAt(t, s.Brokers, 4)
		c := newConsumer(t, s.Brokers, topic, "g-kafka-restart", chCfg.Database, conn, 500)
		stop := start(c)
		defer stop()

		evs := testEvents(20000, "ws_kafka")
		produce(t, s.Brokers, topic, evs[:6000])
		waitUntil(t, "some events stored", func() bool { return c.Stats().Inserted >= 1000 })
		s.KillKafka()
		t.Cleanup(s.StartKafka) // no-op unless this step failed with the broker down
		l := startLoad(t, s.Brokers, topic, evs[6000:], 500, 10*time.Millisecond)
		waitUntil(t, "the producers to hit the dead broker", func() bool { return l.failures.Load() > 0 })
		s.StartKafka()
		l.wait(t)
		waitFor(t, 2*time.Minute, "every event after the restart", func() bool { return count(t, conn, chCfg.Database).distinct == 20000 })
		if err := stop(); err != nil {
			t.Errorf("consumer: %v, want it to ride out the restart", err)
		}
		got := billedOnce(t, conn, chCfg.Database, evs)
		t.Logf("producer failures during the outage: %d; consumer fetch errors: %v, commit failures: %v; %d raw rows",
			l.failures.Load(), metric(t, c, "venna_ingest_fetch_errors_total"), metric(t, c, "venna_ingest_commit_failures_total"), got.rows)
	})

	t.Run("clickhouse stopped under load", func(t *testing.T) {
		chCfg, conn := testenv.ClickHouseAt(t, s.CHAddr)
		topic := testenv.TopicAt(t, s.Brokers, 4)
		const batch = 500
		c := newConsumer(t, s.Brokers, topic, "g-ch-down", chCfg.Database, conn, batch)
		var logs testenv.SyncBuffer
		c.log = slog.New(slog.NewTextHandler(&logs, nil))
		srv := httptest.NewServer(c.Handler())
		defer srv.Close()
		ready := func() int {
			resp, err := http.Get(srv.URL + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		stop := start(c)
		defer stop()

		evs := testEvents(20000, "ws_chdown")
		produce(t, s.Brokers, topic, evs[:4000])
		waitUntil(t, "the first events", func() bool { return c.Stats().Inserted == 4000 })
		s.StopClickHouse()
		t.Cleanup(s.StartClickHouse) // no-op unless this step failed with the server down
		l := startLoad(t, s.Brokers, topic, evs[4000:], 1000, 10*time.Millisecond)
		l.wait(t)
		waitUntil(t, "the consumer to retry a few times", func() bool { return metric(t, c, "venna_ingest_insert_failures_total") >= 4 })

		// Paused, not buffering: with 16,000 events waiting in Kafka, the consumer holds at
		// most the batch it retries and the one it filled meanwhile.
		st := c.Stats()
		if held := st.Fetched - st.Inserted; held > 2*batch {
			t.Errorf("%d messages fetched but not stored while ClickHouse is down, want at most %d (fetching must pause)", held, 2*batch)
		}
		if lag := metric(t, c, "venna_ingest_consumer_lag"); lag < 16000-2*batch {
			t.Errorf("consumer lag %v while ClickHouse is down, want the unstored events (nothing committed)", lag)
		}
		if code := ready(); code != http.StatusServiceUnavailable {
			t.Errorf("/readyz = %d while inserts fail, want 503", code)
		}

		s.StartClickHouse()
		waitFor(t, 2*time.Minute, "every event after the restart", func() bool { return c.Stats().Inserted >= 20000 })
		waitUntil(t, "the lag to drain", func() bool { return lagSeries(t, c) == 4 && metric(t, c, "venna_ingest_consumer_lag") == 0 })
		if code := ready(); code != http.StatusOK {
			t.Errorf("/readyz = %d after recovery, want 200", code)
		}
		if err := stop(); err != nil {
			t.Errorf("consumer: %v, want it to ride out the outage", err)
		}
		billedOnce(t, conn, chCfg.Database, evs)
		for _, want := range []string{"clickhouse insert failed: consumption paused, offsets not committed", "clickhouse insert recovered"} {
			if !strings.Contains(logs.String(), want) {
				t.Errorf("logs lack %q", want)
			}
		}
	})
}
