package spend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/bits"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/gateway"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/schema"
)

// LimiterConfig configures a gateway's Limiter.
type LimiterConfig struct {
	// Refresh is how often budgets, rate limits and the month-to-date spend are read from
	// ClickHouse. Default 2s.
	Refresh time.Duration
	// Shared is the store gateway replicas share what they serve through (Redis); nil:
	// this replica alone (see README.md, "Spend control", for what that bounds).
	Shared Shared
	// SyncInterval is how often this replica exchanges its spend and its liveness with
	// Shared. Default 100ms.
	SyncInterval time.Duration
	// FailClosed refuses (503) the requests of workspaces with a hard budget or a rate
	// limit while the limits cannot be checked: Shared unreachable, or the ClickHouse
	// snapshot older than StaleAfter. Default (false): serve them within the last known
	// state, counting what this replica serves.
	FailClosed bool
	// StaleAfter is the age at which the ClickHouse snapshot no longer counts as current.
	// Default 15 × Refresh.
	StaleAfter time.Duration
}

// Validate names the first bad field.
func (c LimiterConfig) Validate() error {
	switch {
	case c.Refresh < 0:
		return errors.New("spend: Refresh (VENNA_SPEND_REFRESH) is negative")
	case c.SyncInterval < 0:
		return errors.New("spend: SyncInterval (VENNA_SPEND_SYNC_INTERVAL) is negative")
	case c.StaleAfter < 0:
		return errors.New("spend: StaleAfter is negative")
	}
	return nil
}

// Limiter is the gateway's gateway.Limiter: it admits requests from an in-memory view of
// the budgets, rate limits and month-to-date spend (a ClickHouse snapshot, refreshed by
// Run), plus what this replica served since, plus what the other replicas served, as
// Shared last reported it.
//
// Spend is counted in nano-USD, each completion's cost rounded up: a budget is never
// reached later than the exact spend reaches it. Invoices stay exact (package invoice).
type Limiter struct {
	cfg    LimiterConfig
	store  *Store
	prices *invoice.PriceBook
	log    *slog.Logger
	now    func() time.Time

	view   atomic.Pointer[view]
	shared atomic.Pointer[sharedView]

	mu      sync.Mutex
	month   time.Time            // of the ledger
	ledger  map[string]*served   // by owner: spend this replica served this month
	buckets map[string]*buckets  // by owner: rate limit buckets
	base    map[string]int64     // by owner: without Shared, the ClickHouse spend when this replica's ledger began
	warned  map[string]time.Time // by owner: last refusal logged

	m limiterMetrics
}

// served is one owner's spend served by this replica in the ledger's month, in nano-USD.
type served struct {
	total    int64 // since the ledger began
	unsynced int64 // not yet added to Shared
}

// view is the snapshot of ClickHouse the limiter admits by.
type view struct {
	at         time.Time
	month      time.Time
	budgets    map[string]Budget
	limits     map[string]RateLimit
	budgetNano map[string]int64 // by owner: the budget in nano-USD
	spent      map[string]int64 // by owner: month-to-date spend in ClickHouse, nano-USD
	book       map[string]unitPrice
	own        map[string]map[string]unitPrice // by workspace, model: the workspace's own prices
	discount   map[string]int64                // by workspace: percent off in millionths
}

// unitPrice is a model's price per token of each class, in pico-USD (USD per 1M tokens
// has at most 6 decimals, so this is exact).
type unitPrice struct{ input, cached, output int64 }

// sharedView is what Shared last reported: every replica's spend, and how many replicas
// share the rate limits.
type sharedView struct {
	at       time.Time
	ok       bool
	spent    map[string]int64 // by owner, nano-USD
	replicas int
}

// NewLimiter returns a Limiter with a first snapshot read from store; Run keeps it fresh.
func NewLimiter(ctx context.Context, cfg LimiterConfig, store *Store, prices *invoice.PriceBook, log *slog.Logger) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = 2 * time.Second
	}
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = 100 * time.Millisecond
	}
	if cfg.StaleAfter == 0 {
		cfg.StaleAfter = 15 * cfg.Refresh
	}
	l := &Limiter{cfg: cfg, store: store, prices: prices, log: log, now: time.Now,
		ledger: map[string]*served{}, buckets: map[string]*buckets{}, base: map[string]int64{}, warned: map[string]time.Time{}}
	l.shared.Store(&sharedView{replicas: 1})
	if err := l.Refresh(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// Refresh reads budgets, rate limits and the month-to-date spend from ClickHouse.
func (l *Limiter) Refresh(ctx context.Context) error {
	now := l.now().UTC()
	budgets, err := l.store.Budgets(ctx, now)
	if err != nil {
		return err
	}
	limits, err := l.store.RateLimits(ctx, now)
	if err != nil {
		return err
	}
	v := &view{at: now, budgets: budgets, limits: limits, budgetNano: map[string]int64{}, spent: map[string]int64{}}
	v.month, _ = invoice.Month(now)
	if len(budgets) > 0 {
		ms, err := l.store.MonthToDate(ctx, l.prices, now, "")
		if err != nil {
			return err
		}
		for o, d := range ms.ByOwner {
			v.spent[o] = nanoUp(d)
		}
		for o, b := range budgets {
			v.budgetNano[o] = nanoUp(b.MonthlyUSD)
		}
	}
	v.book, v.own, v.discount = unitPrices(l.prices, now)
	l.view.Store(v)
	l.mu.Lock()
	if !l.month.Equal(v.month) {
		// A new month: nothing served yet counts toward it.
		l.month, l.ledger, l.base = v.month, map[string]*served{}, map[string]int64{}
	}
	for o, n := range v.spent {
		if _, ok := l.base[o]; !ok && l.ledger[o] == nil {
			l.base[o] = n
		}
	}
	l.mu.Unlock()
	return nil
}

// Run keeps the snapshot fresh and, with Shared, exchanges spend and liveness with the
// other replicas, until ctx ends; then it hands Shared what is left to sync.
func (l *Limiter) Run(ctx context.Context) {
	refresh := time.NewTicker(l.cfg.Refresh)
	defer refresh.Stop()
	var sync <-chan time.Time
	if l.cfg.Shared != nil {
		t := time.NewTicker(l.cfg.SyncInterval)
		defer t.Stop()
		sync = t.C
		l.sync(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			if l.cfg.Shared != nil {
				final, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				l.sync(final)
				cancel()
			}
			return
		case <-refresh.C:
			if err := l.Refresh(ctx); err != nil && ctx.Err() == nil {
				l.log.Warn("spend snapshot not refreshed; admitting by the last one", "age", l.now().Sub(l.view.Load().at).Round(time.Second), "err", err)
			}
		case <-sync:
			l.sync(ctx)
		}
	}
}

// Shared is what gateway replicas share: their spend and their liveness (Redis in
// production, see RedisShared).
type Shared interface {
	// Sync adds this replica's deltas (nano-USD by owner) to the month's totals, raises
	// any total below its floor to the floor, marks this replica alive, and returns the
	// totals of the owners asked for and the number of live replicas.
	Sync(ctx context.Context, month time.Time, deltas, floors map[string]int64, owners []string) (map[string]int64, int, error)
}

// sync exchanges what this replica served with Shared.
func (l *Limiter) sync(ctx context.Context) {
	v := l.view.Load()
	l.mu.Lock()
	month := l.month
	deltas := map[string]int64{}
	for o, s := range l.ledger {
		if s.unsynced != 0 {
			deltas[o] = s.unsynced
			s.unsynced = 0
		}
	}
	l.mu.Unlock()
	owners := make([]string, 0, len(v.budgets))
	for o := range v.budgets {
		owners = append(owners, o)
	}
	totals, replicas, err := l.cfg.Shared.Sync(ctx, month, deltas, v.spent, owners)
	if err != nil {
		// Nothing is lost: the deltas go back to be synced with the next exchange.
		l.mu.Lock()
		if l.month.Equal(month) {
			for o, d := range deltas {
				l.served(o).unsynced += d
			}
		}
		l.mu.Unlock()
		prev := l.shared.Load()
		if prev.ok && ctx.Err() == nil {
			l.log.Warn("spend store unreachable: admitting by what this replica saw last", "fail_closed", l.cfg.FailClosed, "err", err)
		}
		l.shared.Store(&sharedView{at: prev.at, spent: prev.spent, replicas: prev.replicas})
		l.m.storeUp.Store(false)
		return
	}
	l.shared.Store(&sharedView{at: l.now(), ok: true, spent: totals, replicas: max(replicas, 1)})
	l.m.storeUp.Store(true)
}

func (l *Limiter) served(owner string) *served {
	s := l.ledger[owner]
	if s == nil {
		s = &served{}
		l.ledger[owner] = s
	}
	return s
}

// spentLocked is owner's month-to-date spend as this replica knows it, in nano-USD: with
// Shared, every replica's totals as last synced plus what this one has not synced yet;
// alone, the ClickHouse spend when its ledger began plus what it served since. Never less
// than the current ClickHouse snapshot, which holds every replica's ingested usage.
func (l *Limiter) spentLocked(v *view, sh *sharedView, owner string) int64 {
	s := l.ledger[owner]
	var total, unsynced int64
	if s != nil {
		total, unsynced = s.total, s.unsynced
	}
	var n int64
	if l.cfg.Shared != nil {
		// While the store is unreachable, sh.spent is what it said last and unsynced
		// grows with all this replica serves meanwhile.
		n = sh.spent[owner] + unsynced
	} else {
		n = l.base[owner] + total
	}
	return max(n, v.spent[owner])
}

// healthy reports whether the limits can be checked: a current snapshot and, with Shared,
// a reachable store.
func (l *Limiter) healthy(v *view, sh *sharedView, now time.Time) bool {
	if now.Sub(v.at) > l.cfg.StaleAfter {
		return false
	}
	return l.cfg.Shared == nil || sh.ok
}

// Admit implements gateway.Limiter.
func (l *Limiter) Admit(p apikey.Principal, model string, promptTokens int64) gateway.Admission {
	v, sh := l.view.Load(), l.shared.Load()
	ws, key := p.WorkspaceID, owner(p.WorkspaceID, p.KeyID)
	wsBudget, wsHasBudget := v.budgets[ws]
	keyBudget, keyHasBudget := v.budgets[key]
	wsLimit, wsHasLimit := v.limits[ws]
	keyLimit, keyHasLimit := v.limits[key]
	if !wsHasBudget && !keyHasBudget && !wsHasLimit && !keyHasLimit {
		return gateway.Admission{}
	}
	now := l.now()
	var a gateway.Admission
	if l.cfg.FailClosed && !l.healthy(v, sh, now) &&
		((wsHasBudget && wsBudget.HardLimit) || (keyHasBudget && keyBudget.HardLimit) || wsHasLimit || keyHasLimit) {
		l.m.refused("unavailable")
		a.Refusal = &gateway.Refusal{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "limits_unavailable",
			Message: "Your workspace's budget or rate limits cannot be checked right now; retry shortly.", RetryAfter: time.Second}
		return a
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range []struct {
		owner string
		ok    bool
		b     Budget
	}{{key, keyHasBudget, keyBudget}, {ws, wsHasBudget, wsBudget}} {
		if !b.ok || !b.b.HardLimit {
			continue
		}
		if spent := l.spentLocked(v, sh, b.owner); spent >= v.budgetNano[b.owner] {
			l.m.refused("budget")
			l.logRefusal(b.owner, now, "budget", "monthly_usd", b.b.MonthlyUSD.String(), "spent_usd", nanoString(spent))
			what := "workspace " + ws
			if b.owner == key {
				what = "API key " + p.KeyID
			}
			a.Refusal = &gateway.Refusal{Status: http.StatusTooManyRequests, Type: "insufficient_quota", Code: "insufficient_quota",
				Message: fmt.Sprintf("You exceeded the monthly budget of %s USD of %s (%s USD spent this month). Raise the budget or wait for next month.",
					b.b.MonthlyUSD.String(), what, nanoString(spent))}
			return a
		}
	}
	replicas := sh.replicas
	type limitedBy struct {
		owner string
		b     *buckets
	}
	var limited []limitedBy
	var states []*buckets
	for _, r := range []struct {
		owner string
		ok    bool
		r     RateLimit
	}{{key, keyHasLimit, keyLimit}, {ws, wsHasLimit, wsLimit}} {
		if !r.ok {
			continue
		}
		b := l.bucketsLocked(r.owner, r.r, replicas, now)
		states = append(states, b)
		limited = append(limited, limitedBy{r.owner, b})
	}
	// Every limit must have room before any is taken from.
	for _, lb := range limited {
		if wait, kind := lb.b.wait(promptTokens); wait > 0 {
			l.m.refused("rate_" + kind)
			a.Refusal = &gateway.Refusal{Status: http.StatusTooManyRequests, Type: kind, Code: "rate_limit_exceeded", RetryAfter: wait,
				Message: fmt.Sprintf("Rate limit reached for %s: %s per minute. Retry in %s.", describe(lb.owner, p), lb.b.describeLimit(kind), wait.Round(time.Millisecond))}
			a.Headers = headersOf(states, replicas)
			return a
		}
	}
	for _, lb := range limited {
		lb.b.take(promptTokens)
	}
	a.Reserved = promptTokens
	a.Headers = headersOf(states, replicas)
	return a
}

func describe(o string, p apikey.Principal) string {
	if o == p.WorkspaceID {
		return "workspace " + p.WorkspaceID
	}
	return "API key " + p.KeyID
}

// Settle implements gateway.Limiter: it counts the completion's cost toward the budgets
// and corrects the token limits by its real usage.
func (l *Limiter) Settle(p apikey.Principal, a gateway.Admission, ev schema.UsageEvent) {
	v := l.view.Load()
	var cost int64
	if ev.Status == schema.StatusOK {
		cost = v.cost(ev.WorkspaceID, ev.Model, ev)
	}
	ws, key := p.WorkspaceID, owner(p.WorkspaceID, p.KeyID)
	_, wsLimited := v.limits[ws]
	_, keyLimited := v.limits[key]
	if cost == 0 && !wsLimited && !keyLimited {
		return
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if cost > 0 {
		if m, _ := invoice.Month(ev.OccurredAt); m.Equal(l.month) {
			for _, o := range []string{ws, key} {
				s := l.served(o)
				s.total += cost
				s.unsynced += cost
			}
		}
	}
	correction := int64(ev.TotalTokens) - a.Reserved
	for _, o := range []string{key, ws} {
		if b := l.buckets[o]; b != nil {
			b.correct(correction, now)
		}
	}
}

func (l *Limiter) logRefusal(owner string, now time.Time, why string, args ...any) {
	if now.Sub(l.warned[owner]) < time.Minute {
		return
	}
	l.warned[owner] = now
	l.log.Warn("completions refused", append([]any{"owner", owner, "why", why}, args...)...)
}

// cost is a completion's price in nano-USD, rounded up, as its invoice prices it: the
// workspace's own price for the model if it has one, else the book's, less its discount.
func (v *view) cost(ws, model string, ev schema.UsageEvent) int64 {
	p, ok := v.own[ws][model]
	if !ok {
		p, ok = v.book[model]
	}
	if !ok {
		return 0 // no price: the invoice run fails loudly on it
	}
	input := uint64(max(ev.PromptTokens-ev.CachedTokens, 0))
	pico := mulAdd(input, p.input) + mulAdd(uint64(ev.CachedTokens), p.cached) + mulAdd(uint64(ev.CompletionTokens), p.output)
	nano := (pico + 999) / 1000
	if d := v.discount[ws]; d > 0 {
		hi, lo := bits.Mul64(uint64(nano), uint64(100_000_000-d))
		q, r := bits.Div64(hi, lo, 100_000_000)
		if r > 0 {
			q++
		}
		nano = int64(q)
	}
	return nano
}

func mulAdd(n uint64, price int64) int64 {
	hi, lo := bits.Mul64(n, uint64(price))
	if hi != 0 || lo > math.MaxInt64/4 {
		return math.MaxInt64 / 4
	}
	return int64(lo)
}

// unitPrices are the prices in force at t as integers: the book's by model, workspaces'
// own by workspace and model, and discounts in millionths of a percent.
func unitPrices(pb *invoice.PriceBook, t time.Time) (map[string]unitPrice, map[string]map[string]unitPrice, map[string]int64) {
	book := map[string]unitPrice{}
	own := map[string]map[string]unitPrice{}
	discount := map[string]int64{}
	conv := func(p invoice.Price) unitPrice {
		return unitPrice{picoPerToken(p.PerMillion[invoice.ClassInput]), picoPerToken(p.PerMillion[invoice.ClassCachedInput]),
			picoPerToken(p.PerMillion[invoice.ClassOutput])}
	}
	for _, m := range pb.Models() {
		if p, err := pb.At(m, t); err == nil {
			book[m] = conv(p)
		}
	}
	for _, ws := range pb.OverriddenWorkspaces() {
		for _, m := range pb.Models() {
			if p, err := pb.For(ws, m, t); err == nil {
				if own[ws] == nil {
					own[ws] = map[string]unitPrice{}
				}
				own[ws][m] = conv(p)
			}
		}
		if d := pb.DiscountAt(ws, t); d.IsPositive() {
			discount[ws] = d.Shift(6).IntPart()
		}
	}
	return book, own, discount
}

// picoPerToken is USD per 1M tokens as pico-USD per token: the same digits.
func picoPerToken(perMillion decimal.Decimal) int64 { return perMillion.Shift(6).IntPart() }

// nanoUp is d USD in nano-USD, rounded up.
func nanoUp(d decimal.Decimal) int64 {
	n := d.Shift(9)
	if !n.Equal(n.Truncate(0)) {
		n = n.Truncate(0).Add(decimal.NewFromInt(1))
	}
	if n.GreaterThan(decimal.NewFromInt(math.MaxInt64 / 4)) {
		return math.MaxInt64 / 4
	}
	return n.IntPart()
}

func nanoString(n int64) string { return decimal.New(n, -9).String() }
