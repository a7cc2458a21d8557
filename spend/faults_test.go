package spend_test

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/shopspring/decimal"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/spend"
)

// When what the limits are checked against cannot be read — Redis refusing connections,
// ClickHouse gone — the gateway keeps serving under the configured policy: open admits
// within the last known state, closed answers 503 for limited workspaces; the metrics say
// which state it is in.
func TestLimitsWhenTheirStoresAreUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, conn := testenv.ClickHouse(t)
	store := spend.NewStore(conn, cfg.Database)
	if _, err := store.SetBudget(ctx, spend.Budget{WorkspaceID: "ws_f", MonthlyUSD: decimal.NewFromInt(10), HardLimit: true}); err != nil {
		t.Fatal(err)
	}
	pb, err := invoice.ParsePriceBook([]byte(benchPrices))
	if err != nil {
		t.Fatal(err)
	}
	p := apikey.Principal{WorkspaceID: "ws_f", KeyID: "key_f"}
	log := slog.New(slog.DiscardHandler)

	for _, closed := range []bool{false, true} {
		name := map[bool]string{false: "open", true: "closed"}[closed]
		t.Run("redis down, fail "+name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
			defer rdb.Close()
			l, err := spend.NewLimiter(ctx, spend.LimiterConfig{Shared: spend.NewRedisShared(rdb, cfg.Database, "f", time.Second),
				SyncInterval: 20 * time.Millisecond, FailClosed: closed}, store, pb, log)
			if err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			defer stop()
			go l.Run(runCtx)
			reg := prometheus.NewRegistry()
			if err := l.Instrument(reg); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
			a := l.Admit(p, "venna-1", 10)
			if closed != (a.Refusal != nil) || (closed && (a.Refusal.Status != http.StatusServiceUnavailable || a.Refusal.Code != "limits_unavailable")) {
				t.Fatalf("fail %s with Redis down: %+v", name, a.Refusal)
			}
			if got := metric(t, reg, "venna_gateway_spend_store_up"); got != 0 {
				t.Errorf("venna_gateway_spend_store_up = %v with Redis down", got)
			}
			// A workspace without limits is never held up.
			if a := l.Admit(apikey.Principal{WorkspaceID: "ws_free", KeyID: "k"}, "venna-1", 10); a.Refusal != nil {
				t.Errorf("an unlimited workspace refused: %+v", a.Refusal)
			}
		})
		t.Run("clickhouse gone, fail "+name, func(t *testing.T) {
			own, err := chdb.Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			l, err := spend.NewLimiter(ctx, spend.LimiterConfig{Refresh: 50 * time.Millisecond, StaleAfter: 200 * time.Millisecond, FailClosed: closed},
				spend.NewStore(own, cfg.Database), pb, log)
			if err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			defer stop()
			go l.Run(runCtx)
			if a := l.Admit(p, "venna-1", 10); a.Refusal != nil {
				t.Fatalf("refused with ClickHouse up: %+v", a.Refusal)
			}
			own.Close() // every refresh fails from now on
			time.Sleep(500 * time.Millisecond)
			reg := prometheus.NewRegistry()
			if err := l.Instrument(reg); err != nil {
				t.Fatal(err)
			}
			if age := metric(t, reg, "venna_gateway_spend_snapshot_age_seconds"); age < 0.3 {
				t.Errorf("snapshot age %v s after ClickHouse went away", age)
			}
			a := l.Admit(p, "venna-1", 10)
			if closed != (a.Refusal != nil) {
				t.Fatalf("fail %s with a stale snapshot: %+v", name, a.Refusal)
			}
		})
	}
}

// metric is the value of the gauge name on reg.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
