package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/testenv"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue returns the value of the sample whose name and labels are series, if any.
func metricValue(body, series string) (float64, bool) {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

// TestAggregateOps runs the aggregate role on a schedule against the real ClickHouse and
// checks what its operations server tells a prober and Prometheus: healthy, ready, and
// rollup and invoice runs counted with their last success.
func TestAggregateOps(t *testing.T) {
	cfg, _ := testenv.ClickHouse(t)
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	var exit error
	stop := sync.OnceFunc(func() {
		cancel()
		exit = <-done
	})
	t.Cleanup(stop)
	go func() {
		done <- run(ctx, []string{"aggregate", "--clickhouse-addr", cfg.Addr, "--clickhouse-database", cfg.Database,
			"--prices-file", "../../deploy/prices.yaml", "--aggregate-metrics-addr", addr,
			"--aggregate-schedule", "@every 1s", "--invoice-schedule", "@every 1s", "--log-level", "error"}, io.Discard)
	}()

	// Wait (not a timing assertion: the deadline only bounds a hang) until both jobs ran.
	var body string
	for deadline := time.Now().Add(60 * time.Second); ; {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("aggregate exited: %v", err)
		default:
		}
		var code int
		code, body = get(t, "http://"+addr+"/metrics")
		r, _ := metricValue(body, `venna_aggregate_runs_total{job="rollup"}`)
		i, _ := metricValue(body, `venna_aggregate_runs_total{job="invoice"}`)
		if code == http.StatusOK && r >= 1 && i >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no rollup and invoice run counted after 60s; /metrics (%d):\n%s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}

	t.Run("metrics", func(t *testing.T) {
		for _, job := range []string{jobRollup, jobInvoice} {
			if v, ok := metricValue(body, `venna_aggregate_run_failures_total{job="`+job+`"}`); !ok || v != 0 {
				t.Errorf("%s failures = %v (exported %t), want 0", job, v, ok)
			}
			if v, _ := metricValue(body, `venna_aggregate_last_success_timestamp_seconds{job="`+job+`"}`); v < float64(time.Now().Add(-time.Hour).Unix()) {
				t.Errorf("%s last success = %v, want a time within the last hour", job, v)
			}
			if v, _ := metricValue(body, `venna_aggregate_run_duration_seconds_count{job="`+job+`"}`); v < 1 {
				t.Errorf("%s duration observations = %v, want at least one", job, v)
			}
		}
		if v, _ := metricValue(body, "venna_aggregate_watermark_timestamp_seconds"); v < float64(time.Now().Add(-time.Hour).Unix()) {
			t.Errorf("watermark = %v, want the rollup's watermark (a couple of minutes ago)", v)
		}
	})
	for _, path := range []string{"/healthz", "/readyz"} {
		t.Run(path, func(t *testing.T) {
			if code, b := get(t, "http://"+addr+path); code != http.StatusOK {
				t.Errorf("GET %s = %d %q, want 200", path, code, b)
			}
		})
	}
	t.Run("stops on cancel", func(t *testing.T) {
		stop()
		if exit != nil {
			t.Errorf("aggregate returned %v after its context ended, want nil", exit)
		}
	})
}

// A role whose probes cannot be served must fail at start, not run unprobed.
func TestAggregateOpsAddressTaken(t *testing.T) {
	cfg, _ := testenv.ClickHouse(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	err = run(ctx, []string{"aggregate", "--clickhouse-addr", cfg.Addr, "--clickhouse-database", cfg.Database,
		"--prices-file", "../../deploy/prices.yaml", "--aggregate-metrics-addr", l.Addr().String(), "--log-level", "error"}, io.Discard)
	if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Errorf("aggregate with its metrics address taken returned %v, want a listen error naming %s", err, l.Addr())
	}
}

func TestJobMetricsReadyz(t *testing.T) {
	cfg, _ := testenv.ClickHouse(t)
	conn, err := chdb.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := opsHandler(newJobMetrics().reg, conn)
	srv := &http.Server{Handler: h}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	if code, b := get(t, "http://"+l.Addr().String()+"/readyz"); code != http.StatusOK {
		t.Fatalf("readyz with ClickHouse up = %d %q", code, b)
	}
	conn.Close() // as good as ClickHouse gone, for this connection
	if code, _ := get(t, "http://"+l.Addr().String()+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("readyz with the connection closed = %d, want 503", code)
	}
}
