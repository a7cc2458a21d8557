package spend_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/shopspring/decimal"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/gateway"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/schema"
	"github.com/venna/metering/simupstream"
	"github.com/venna/metering/spend"
)

type oneKey struct{}

var benchPrincipal = apikey.Principal{WorkspaceID: "ws_bench", KeyID: "key_bench"}

func (oneKey) Authenticate(token string) (apikey.Principal, error) {
	if token != "vk_bench" {
		return apikey.Principal{}, errors.New("no")
	}
	return benchPrincipal, nil
}

const benchPrices = `currency: USD
prices:
  - {model: venna-1, effective_from: "2026-01-01T00:00:00Z", input: "2.5", cached_input: "1.25", output: "10"}
`

// benchLimiter is a Limiter on the real ClickHouse and Redis with a budget and rate limits
// for the benchmark's key and workspace, none of which it reaches.
func benchLimiter(b *testing.B) *spend.Limiter {
	b.Helper()
	ctx := context.Background()
	cfg, conn := testenv.ClickHouse(b)
	store := spend.NewStore(conn, cfg.Database)
	for _, bu := range []spend.Budget{
		{WorkspaceID: "ws_bench", MonthlyUSD: decimal.NewFromInt(1_000_000), HardLimit: true},
		{WorkspaceID: "ws_bench", APIKeyID: "key_bench", MonthlyUSD: decimal.NewFromInt(1_000_000), HardLimit: true},
	} {
		if _, err := store.SetBudget(ctx, bu); err != nil {
			b.Fatal(err)
		}
	}
	for _, rl := range []spend.RateLimit{
		{WorkspaceID: "ws_bench", RPM: 1 << 31, TPM: 1 << 40},
		{WorkspaceID: "ws_bench", APIKeyID: "key_bench", RPM: 1 << 31, TPM: 1 << 40},
	} {
		if _, err := store.SetRateLimit(ctx, rl); err != nil {
			b.Fatal(err)
		}
	}
	pb, err := invoice.ParsePriceBook([]byte(benchPrices))
	if err != nil {
		b.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(b)})
	b.Cleanup(func() { rdb.Close() })
	l, err := spend.NewLimiter(ctx, spend.LimiterConfig{Shared: spend.NewRedisShared(rdb, cfg.Database, "bench", time.Second)},
		store, pb, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	b.Cleanup(cancel)
	go l.Run(runCtx)
	return l
}

// BenchmarkAdmitSettle is the limiter's whole share of a request: Admit before the
// upstream call and Settle after it, for a key under a workspace and a key budget and
// both rate limits (the most a request checks).
func BenchmarkAdmitSettle(b *testing.B) {
	l := benchLimiter(b)
	ev := schema.UsageEvent{WorkspaceID: "ws_bench", APIKeyID: "key_bench", Model: "venna-1", Status: schema.StatusOK,
		PromptTokens: 1200, CachedTokens: 400, CompletionTokens: 300, TotalTokens: 1500, OccurredAt: time.Now()}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		a := l.Admit(benchPrincipal, "venna-1", 1000)
		if a.Refusal != nil {
			b.Fatalf("refused: %+v", a.Refusal)
		}
		l.Settle(benchPrincipal, a, ev)
	}
}

// BenchmarkLimitsOverhead measures what spend control adds to the gateway: the simulated
// upstream called direct, through a gateway without limits and through one enforcing a
// workspace budget, a key budget and both rate limits on every request (Redis shared, the
// snapshot from ClickHouse). 5,000 rounds of sequential requests, the three targets in
// turn each round (the gateways in alternating order); "added" is a gateway's p50 (p99) minus direct's.
//
//	scripts/test.sh --engine 18.16 -run '^$' -bench LimitsOverhead -benchtime 1x ./spend/
func BenchmarkLimitsOverhead(b *testing.B) {
	log := slog.New(slog.DiscardHandler)
	up := httptest.NewServer((&simupstream.Server{}).Handler())
	defer up.Close()
	routes := gateway.Routes{"venna-1": {Model: "venna-1", Upstream: "sim", BaseURL: up.URL + "/v1", UpstreamModel: "sim-large"}}
	// The gateways' own time per request: their handler's, minus the upstream's answer
	// (measured the same way on direct calls); headers are serialized after the handler.
	var handlerTimes [2][]time.Duration
	recording := false
	newGateway := func(l gateway.Limiter) *httptest.Server {
		prod, err := gateway.NewProducer(gateway.ProducerConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "bench", MaxBackoff: time.Second,
			Spool: gateway.SpoolConfig{Dir: b.TempDir(), MaxBytes: 8 << 30}}, log)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			prod.Close(ctx)
		})
		g, err := gateway.New(gateway.Config{Routes: routes}, oneKey{}, prod, log)
		if err != nil {
			b.Fatal(err)
		}
		if l != nil {
			g.SetLimiter(l)
		}
		h := g.Handler()
		i := 0
		if l != nil {
			i = 1
		}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			h.ServeHTTP(w, r)
			if recording && r.URL.Path == "/v1/chat/completions" {
				handlerTimes[i] = append(handlerTimes[i], time.Since(start))
			}
		}))
		b.Cleanup(srv.Close)
		return srv
	}
	plain, limited := newGateway(nil), newGateway(benchLimiter(b))
	body := []byte(`{"model":"venna-1","messages":[{"role":"user","content":"How much does this cost to meter?"}]}`)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	call := func(url, auth string) time.Duration {
		req, _ := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+auth)
		req.Header.Set("Content-Type", "application/json")
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("%s: %d", url, resp.StatusCode)
		}
		return time.Since(start)
	}
	for range b.N {
		const rounds = 5000
		var direct, gw, gwLimits []time.Duration
		for i := range rounds + 200 {
			// The two gateways alternate places in the round: the later call of a round is
			// a little slower here whatever it calls.
			d := call(up.URL, "x")
			var g, l time.Duration
			if i%2 == 0 {
				g, l = call(plain.URL, "vk_bench"), call(limited.URL, "vk_bench")
			} else {
				l, g = call(limited.URL, "vk_bench"), call(plain.URL, "vk_bench")
			}
			if i >= 200 { // warm-up
				direct, gw, gwLimits = append(direct, d), append(gw, g), append(gwLimits, l)
			}
			recording = i >= 199
		}
		recording = false
		p := func(ds []time.Duration, q float64) time.Duration {
			s := append([]time.Duration(nil), ds...)
			sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
			return s[int(q*float64(len(s)-1))]
		}
		addedPlain, addedLimits := p(gw, 0.5)-p(direct, 0.5), p(gwLimits, 0.5)-p(direct, 0.5)
		b.ReportMetric(float64(p(direct, 0.5).Microseconds()), "direct-p50-µs")
		b.ReportMetric(float64(addedPlain.Microseconds()), "added-p50-µs")
		b.ReportMetric(float64(addedLimits.Microseconds()), "added-with-limits-p50-µs")
		b.ReportMetric(float64((p(gw, 0.99) - p(direct, 0.99)).Microseconds()), "added-p99-µs")
		b.ReportMetric(float64((p(gwLimits, 0.99) - p(direct, 0.99)).Microseconds()), "added-with-limits-p99-µs")
		b.ReportMetric(float64(addedLimits)/float64(addedPlain), "x-added")
		hPlain, hLimits := p(handlerTimes[0], 0.5), p(handlerTimes[1], 0.5)
		b.ReportMetric(float64(hLimits-hPlain)/1e3, "handler-p50-diff-µs")
		b.Logf("handler p50: %s without limits, %s with (%+.2f µs)", hPlain, hLimits, float64(hLimits-hPlain)/1e3)
		handlerTimes = [2][]time.Duration{}
		b.Logf("added p50: %s without limits, %s with (%.1f%% more); p99 %s and %s",
			addedPlain, addedLimits, 100*(float64(addedLimits)/float64(addedPlain)-1),
			p(gw, 0.99)-p(direct, 0.99), p(gwLimits, 0.99)-p(direct, 0.99))
	}
}
