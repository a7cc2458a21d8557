package spend

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/schema"
)

const testPrices = `currency: USD
prices:
  - {model: m, effective_from: "2026-01-01T00:00:00Z", input: "2.5", cached_input: "1.25", output: "10"}
  - {model: m, effective_from: "2026-03-01T00:00:00Z", input: "3.000008", cached_input: "0.000008", output: "12.5"}
  - {model: cheap, effective_from: "2026-01-01T00:00:00Z", input: "0.15", cached_input: "0.075", output: "0.6"}
overrides:
  ws_disc:
    discounts:
      - {effective_from: "2026-01-01T00:00:00Z", percent: "12.5"}
    prices:
      - {model: m, effective_from: "2026-01-01T00:00:00Z", input: "2", cached_input: "1", output: "8"}
`

func book(t testing.TB) *invoice.PriceBook {
	t.Helper()
	pb, err := invoice.ParsePriceBook([]byte(testPrices))
	if err != nil {
		t.Fatal(err)
	}
	return pb
}

// The limiter's integer cost is the invoice's exact decimal cost rounded up to a nano-USD,
// for any usage, workspace, price version and discount.
func TestCostIsTheInvoicePriceRoundedUp(t *testing.T) {
	pb := book(t)
	r := rand.New(rand.NewPCG(1, 2))
	for _, at := range []time.Time{time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 5, 0, 0, 0, 0, time.UTC)} {
		v := &view{}
		v.book, v.own, v.discount = unitPrices(pb, at)
		for i := range 5000 {
			ws := []string{"ws_plain", "ws_disc"}[i%2]
			model := []string{"m", "cheap"}[i%3%2]
			prompt := r.Int64N(200_000)
			cached := r.Int64N(prompt + 1)
			ev := schema.UsageEvent{WorkspaceID: ws, Model: model, PromptTokens: prompt, CachedTokens: cached, CompletionTokens: r.Int64N(100_000)}
			exact, ok := pb.Cost(ws, model, at, uint64(prompt-cached), uint64(cached), uint64(ev.CompletionTokens))
			if !ok {
				t.Fatalf("no price for %s %s", ws, model)
			}
			got := v.cost(ws, model, ev)
			lo := exact.Shift(9)
			if decimal.NewFromInt(got).LessThan(lo) || decimal.NewFromInt(got).Sub(lo).GreaterThan(decimal.NewFromInt(2)) {
				t.Fatalf("%s %s %+v at %s: nano cost %d, exact %s USD", ws, model, ev, at.Format("2006-01"), got, exact)
			}
		}
	}
	if got := (&view{}).cost("ws", "unpriced", schema.UsageEvent{PromptTokens: 10}); got != 0 {
		t.Errorf("unpriced model cost %d", got)
	}
}

func TestNanoUp(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1": 1e9, "0.0000000001": 1, "0.000000001": 1, "2.5000000001": 2500000001, "0.000000002000000000001": 3} {
		if got := nanoUp(decimal.RequireFromString(in)); got != want {
			t.Errorf("nanoUp(%s) = %d, want %d", in, got, want)
		}
	}
}

func TestBucket(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := newBucket(60, 2, now) // 60 a minute over two replicas: 30 here, one every 2 s
	for i := range 30 {
		if w := b.wait(1); w != 0 {
			t.Fatalf("request %d waits %s with %f left", i, w, b.level)
		}
		b.level--
	}
	if w := b.wait(1); w != 2*time.Second {
		t.Fatalf("31st request waits %s, want 2s", w)
	}
	b.refill(now.Add(time.Second))
	if w := b.wait(1); w != time.Second {
		t.Fatalf("after 1s: waits %s, want 1s", w)
	}
	b.refill(now.Add(2 * time.Minute))
	if b.level != 30 {
		t.Fatalf("refilled to %f, want the share of 30", b.level)
	}
	s := b.state(2)
	if s.Limit != 60 || s.Remaining != 60 || s.Reset != 0 {
		t.Fatalf("state %+v", s)
	}
	b.scale(1) // the other replica left: the whole limit here, as full as before
	if b.capacity != 60 || b.level != 60 {
		t.Fatalf("scaled to capacity %f level %f", b.capacity, b.level)
	}
	// A prompt larger than the whole share waits only for a full bucket.
	b.level = 0
	if w := b.wait(1000); w != time.Minute {
		t.Fatalf("oversized request waits %s, want a minute", w)
	}
}

// fakeShared is a Shared in memory, that can be made to fail, or to hold an exchange
// (entered is signalled, then it waits for release).
type fakeShared struct {
	totals   map[string]int64
	replicas int
	down     bool
	entered  chan struct{}
	release  chan struct{}
}

func (f *fakeShared) Sync(_ context.Context, _ time.Time, deltas, floors map[string]int64, owners []string) (map[string]int64, int, error) {
	if f.entered != nil {
		f.entered <- struct{}{}
		<-f.release
	}
	if f.down {
		return nil, 0, errors.New("connection refused")
	}
	for o, d := range deltas {
		f.totals[o] += d
	}
	out := map[string]int64{}
	for _, o := range owners {
		f.totals[o] = max(f.totals[o], floors[o])
		out[o] = f.totals[o]
	}
	return out, f.replicas, nil
}

// newTestLimiter is a Limiter over a fixed snapshot, without ClickHouse.
func newTestLimiter(t *testing.T, cfg LimiterConfig, budgets map[string]Budget, limits map[string]RateLimit, spent map[string]int64) *Limiter {
	t.Helper()
	now := time.Date(2026, 2, 10, 12, 0, 0, 0, time.UTC)
	if cfg.StaleAfter == 0 {
		cfg.StaleAfter = time.Minute
	}
	l := newLimiter(cfg, nil, book(t), slog.New(slog.NewTextHandler(io.Discard, nil)))
	l.now = func() time.Time { return now }
	l.apply(snapshot{at: now, budgets: budgets, limits: limits, spent: spent})
	l.shared.ok = cfg.Shared != nil
	return l
}

func completion(ws string, prompt, completion int64) schema.UsageEvent {
	return schema.UsageEvent{WorkspaceID: ws, Model: "m", Status: schema.StatusOK, PromptTokens: prompt, CompletionTokens: completion,
		TotalTokens: prompt + completion, OccurredAt: time.Date(2026, 2, 10, 12, 0, 0, 0, time.UTC)}
}

// A hard budget refuses once what ClickHouse holds plus what this replica served reaches
// it; a soft one never refuses; a key's budget binds only that key.
func TestBudgetRefusesAtTheLimit(t *testing.T) {
	p := apikey.Principal{WorkspaceID: "ws", KeyID: "key_a"}
	other := apikey.Principal{WorkspaceID: "ws", KeyID: "key_b"}
	l := newTestLimiter(t, LimiterConfig{}, map[string]Budget{
		"ws":       {WorkspaceID: "ws", MonthlyUSD: decimal.RequireFromString("1"), HardLimit: true},
		"ws/key_a": {WorkspaceID: "ws", APIKeyID: "key_a", MonthlyUSD: decimal.RequireFromString("0.1"), HardLimit: true},
		"soft":     {WorkspaceID: "soft", MonthlyUSD: decimal.RequireFromString("0.000001")},
	}, nil, map[string]int64{"ws": 500_000_000, "soft": 1_000_000_000}) // ws has spent 0.50 USD
	// 0.01 USD a completion: 1,000 prompt tokens at 2.5 + 750 output tokens at 10 per 1M.
	ev := completion("ws", 1000, 750)
	admitted := 0
	for range 20 {
		a := l.Admit(p, "m", 1000)
		if a.Refusal != nil {
			if a.Refusal.Status != http.StatusTooManyRequests || a.Refusal.Code != "insufficient_quota" {
				t.Fatalf("refusal %+v", a.Refusal)
			}
			break
		}
		admitted++
		l.Settle(p, a, ev)
	}
	if admitted != 10 {
		t.Fatalf("key_a admitted %d completions of 0.01 USD under its 0.10 budget, want 10", admitted)
	}
	// key_b has no budget of its own: the workspace's 1 USD, 0.60 spent, binds it.
	admitted = 0
	for range 100 {
		a := l.Admit(other, "m", 1000)
		if a.Refusal != nil {
			break
		}
		admitted++
		l.Settle(other, a, ev)
	}
	if admitted != 40 {
		t.Fatalf("key_b admitted %d, want the 40 completions left of the workspace's budget", admitted)
	}
	if a := l.Admit(apikey.Principal{WorkspaceID: "soft", KeyID: "k"}, "m", 10); a.Refusal != nil {
		t.Fatalf("a soft budget refused: %+v", a.Refusal)
	}
}

// Rate limits: requests and tokens per minute with OpenAI's headers; the token reservation
// is corrected by the real usage.
func TestRateLimits(t *testing.T) {
	p := apikey.Principal{WorkspaceID: "ws", KeyID: "k"}
	l := newTestLimiter(t, LimiterConfig{}, nil, map[string]RateLimit{
		"ws/k": {WorkspaceID: "ws", APIKeyID: "k", RPM: 3},
		"ws":   {WorkspaceID: "ws", TPM: 10_000},
	}, nil)
	for i := range 3 {
		a := l.Admit(p, "m", 100)
		if a.Refusal != nil {
			t.Fatalf("request %d refused: %+v", i, a.Refusal)
		}
		if a.Headers.Requests.Limit != 3 || a.Headers.Requests.Remaining != int64(2-i) {
			t.Fatalf("request %d headers %+v", i, a.Headers.Requests)
		}
		if a.Headers.Tokens.Limit != 10_000 || a.Headers.Tokens.Remaining != int64(10_000-100*(i+1)) {
			t.Fatalf("request %d token headers %+v", i, a.Headers.Tokens)
		}
		l.Settle(p, a, completion("ws", 100, 0))
	}
	a := l.Admit(p, "m", 100)
	if a.Refusal == nil || a.Refusal.Code != "rate_limit_exceeded" || a.Refusal.Type != "requests" || a.Refusal.RetryAfter != 20*time.Second {
		t.Fatalf("4th request: %+v, want rate_limit_exceeded (requests) retrying in 20s", a.Refusal)
	}
	// Another key of the workspace is held by the workspace's token limit only: a
	// completion that used 9,000 more tokens than reserved leaves too little.
	q := apikey.Principal{WorkspaceID: "ws", KeyID: "other"}
	a = l.Admit(q, "m", 500)
	if a.Refusal != nil {
		t.Fatalf("other key refused: %+v", a.Refusal)
	}
	l.Settle(q, a, completion("ws", 500, 9_000))
	a = l.Admit(q, "m", 500)
	if a.Refusal == nil || a.Refusal.Type != "tokens" || a.Refusal.RetryAfter <= 0 {
		t.Fatalf("after the correction: %+v, want a tokens refusal", a.Refusal)
	}
}

// With a shared store, spend served by other replicas counts; when the store is
// unreachable, fail open keeps admitting within what was last known plus what this
// replica serves, and fail closed refuses limited workspaces; nothing served meanwhile
// is lost once the store is back.
// While an exchange with Shared is on its way, what it carries still counts: the spend this
// replica served does not vanish from the budget check for the length of a round trip
// (it did: a $1 budget let completions through again after refusing them).
func TestSpendInFlightToSharedStillCounts(t *testing.T) {
	p := apikey.Principal{WorkspaceID: "ws", KeyID: "k"}
	budgets := map[string]Budget{"ws": {WorkspaceID: "ws", MonthlyUSD: decimal.RequireFromString("0.10"), HardLimit: true}}
	sh := &fakeShared{totals: map[string]int64{}, replicas: 1}
	l := newTestLimiter(t, LimiterConfig{Shared: sh}, budgets, nil, nil)
	l.sync(context.Background())
	ev := completion("ws", 1000, 750) // 0.01 USD
	for range 10 {
		a := l.Admit(p, "m", 1000)
		if a.Refusal != nil {
			t.Fatalf("refused under the budget: %+v", a.Refusal)
		}
		l.Settle(p, a, ev)
	}
	if a := l.Admit(p, "m", 1000); a.Refusal == nil {
		t.Fatal("admitted at the budget")
	}
	sh.entered, sh.release = make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	go func() { l.sync(context.Background()); close(done) }()
	<-sh.entered // the 0.10 USD served here is on its way to Shared
	if a := l.Admit(p, "m", 1000); a.Refusal == nil {
		t.Error("admitted while the spend was on its way to the shared store")
	}
	close(sh.release)
	<-done
	if a := l.Admit(p, "m", 1000); a.Refusal == nil {
		t.Error("admitted once the shared store holds the spend")
	}
	if sh.totals["ws"] != 100_000_000 {
		t.Errorf("shared store holds %d nano-USD, want 0.10 USD", sh.totals["ws"])
	}
}

func TestSharedStoreAndFailurePolicy(t *testing.T) {
	p := apikey.Principal{WorkspaceID: "ws", KeyID: "k"}
	budgets := map[string]Budget{"ws": {WorkspaceID: "ws", MonthlyUSD: decimal.RequireFromString("1"), HardLimit: true}}
	for _, closed := range []bool{false, true} {
		sh := &fakeShared{totals: map[string]int64{"ws": 900_000_000}, replicas: 2} // other replicas served 0.90
		l := newTestLimiter(t, LimiterConfig{Shared: sh, FailClosed: closed}, budgets, nil, nil)
		l.sync(context.Background())
		ev := completion("ws", 1000, 750) // 0.01 USD
		n := 0
		for ; n < 50; n++ {
			a := l.Admit(p, "m", 1000)
			if a.Refusal != nil {
				break
			}
			l.Settle(p, a, ev)
		}
		if n != 10 {
			t.Fatalf("admitted %d with 0.90 spent elsewhere, want 10", n)
		}
		// The budget is raised; the store goes down with 0.05 unsynced here.
		l.mu.Lock()
		l.owners["ws"].budget = 2_000_000_000
		l.mu.Unlock()
		l.sync(context.Background())
		for range 5 {
			a := l.Admit(p, "m", 1000)
			l.Settle(p, a, ev)
		}
		sh.down = true
		l.sync(context.Background())
		a := l.Admit(p, "m", 1000)
		switch {
		case closed && (a.Refusal == nil || a.Refusal.Status != http.StatusServiceUnavailable):
			t.Fatalf("fail closed with the store down: %+v, want 503", a.Refusal)
		case !closed && a.Refusal != nil:
			t.Fatalf("fail open with the store down: refused %+v", a.Refusal)
		}
		if !closed {
			l.Settle(p, a, ev)
			l.mu.Lock()
			spent := l.spentLocked(l.owners["ws"])
			l.mu.Unlock()
			if spent != 1_060_000_000 {
				t.Fatalf("fail open counts %d nano-USD, want 1.06 USD: the last total plus all served since", spent)
			}
		}
		sh.down = false
		l.sync(context.Background())
		want := int64(1_050_000_000)
		if !closed {
			want = 1_060_000_000
		}
		if sh.totals["ws"] != want {
			t.Fatalf("store holds %d once back, want %d: nothing served while it was down is lost", sh.totals["ws"], want)
		}
	}
}
