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
	// Credits gives the prepaid workspaces and the credit each has for the month
	// (invoice.Invoicer); nil: no prepaid mode.
	Credits Credits
}

// Credits is what prepaid mode is enforced from (invoice.Invoicer).
type Credits interface {
	// PrepaidLimits returns, for every workspace in prepaid mode at t, how much of the
	// month's spend its credits can pay for.
	PrepaidLimits(ctx context.Context, t time.Time) (map[string]decimal.Decimal, error)
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
//
// The request path touches one map entry per request (its principal's) and the state of
// the two owners it belongs to (its workspace and its key), under one mutex.
type Limiter struct {
	cfg    LimiterConfig
	store  *Store
	prices *invoice.PriceBook
	log    *slog.Logger
	now    func() time.Time

	view atomic.Pointer[view]

	mu         sync.Mutex
	month      time.Time // of the ledger
	monthEnd   time.Time
	owners     map[string]*ownerState          // by owner name: workspace ID, or "workspace/key"
	principals map[apikey.Principal]*principal // the owners of each key seen
	shared     sharedState

	m limiterMetrics
}

// ownerState is what the limiter knows of one owner: its budget and rate limit (from the
// snapshot), its spend (ClickHouse's, Shared's, this replica's) and its rate buckets.
type ownerState struct {
	name string

	hasBudget bool
	hard      bool
	prepaid   bool  // in prepaid mode: refused once its spend reaches credit
	credit    int64 // nano-USD
	budget    int64 // nano-USD
	budgetUSD decimal.Decimal
	hasLimit  bool
	limit     RateLimit

	ch      int64 // month-to-date spend in the ClickHouse snapshot, nano-USD
	base    int64 // alone: the ClickHouse spend when this replica's ledger began
	baseSet bool
	shared  int64 // every replica's total, as Shared last reported it

	total    int64 // served by this replica since its ledger began (this month)
	unsynced int64 // of which not yet added to Shared
	syncing  int64 // of which on its way to Shared: counted until Shared's answer holds it

	buckets    buckets // inline: one cache line less to fetch on the request path
	hasBuckets bool
	warned     time.Time // last refusal logged
}

// principal is a key's two owners.
type principal struct{ ws, key *ownerState }

// sharedState is how the exchange with Shared went.
type sharedState struct {
	ok       bool
	at       time.Time
	replicas int
	maxGap   time.Duration // the longest time between two exchanges since MaxSyncGap last read it
}

// view is the snapshot of ClickHouse the limiter admits by.
type view struct {
	at       time.Time
	month    time.Time
	limited  map[string]bool // workspaces with a budget or a rate limit, of their own or of a key
	book     map[string]unitPrice
	own      map[string]map[string]unitPrice // by workspace, model: the workspace's own prices
	discount map[string]int64                // by workspace: percent off in millionths
}

// unitPrice is a model's price per token of each class, in pico-USD (USD per 1M tokens
// has at most 6 decimals, so this is exact).
type unitPrice struct{ input, cached, output int64 }

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
	l := newLimiter(cfg, store, prices, log)
	if err := l.Refresh(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

func newLimiter(cfg LimiterConfig, store *Store, prices *invoice.PriceBook, log *slog.Logger) *Limiter {
	return &Limiter{cfg: cfg, store: store, prices: prices, log: log, now: time.Now,
		owners: map[string]*ownerState{}, principals: map[apikey.Principal]*principal{}, shared: sharedState{replicas: 1}}
}

// snapshot is what a refresh read, by owner.
type snapshot struct {
	at      time.Time
	budgets map[string]Budget
	limits  map[string]RateLimit
	prepaid map[string]decimal.Decimal // by workspace: the credit its spend may reach
	spent   map[string]int64           // nano-USD
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
	snap := snapshot{at: now, budgets: budgets, limits: limits, spent: map[string]int64{}}
	if l.cfg.Credits != nil {
		if snap.prepaid, err = l.cfg.Credits.PrepaidLimits(ctx, now); err != nil {
			return err
		}
	}
	if len(budgets) > 0 || len(snap.prepaid) > 0 {
		ms, err := l.store.MonthToDate(ctx, l.prices, now, "")
		if err != nil {
			return err
		}
		for o, d := range ms.ByOwner {
			snap.spent[o] = nanoUp(d)
		}
	}
	l.apply(snap)
	return nil
}

// apply makes snap what the limiter admits by.
func (l *Limiter) apply(snap snapshot) {
	v := &view{at: snap.at, limited: map[string]bool{}}
	v.month, _ = invoice.Month(snap.at)
	v.book, v.own, v.discount = unitPrices(l.prices, snap.at)
	for _, b := range snap.budgets {
		v.limited[b.WorkspaceID] = true
	}
	for _, r := range snap.limits {
		v.limited[r.WorkspaceID] = true
	}
	for ws := range snap.prepaid {
		v.limited[ws] = true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	newMonth := !l.month.Equal(v.month)
	l.month, l.monthEnd = v.month, v.month.AddDate(0, 1, 0)
	for _, o := range l.owners {
		o.hasBudget, o.hasLimit, o.prepaid, o.ch = false, false, false, 0
		if newMonth {
			// A new month: nothing served yet counts toward it.
			o.base, o.baseSet, o.shared, o.total, o.unsynced, o.syncing = 0, false, 0, 0, 0, 0
		}
	}
	for name, b := range snap.budgets {
		o := l.ownerLocked(name)
		o.hasBudget, o.hard, o.budget, o.budgetUSD = true, b.HardLimit, nanoUp(b.MonthlyUSD), b.MonthlyUSD
	}
	for name, r := range snap.limits {
		o := l.ownerLocked(name)
		o.hasLimit, o.limit = true, r
	}
	for ws, credit := range snap.prepaid {
		o := l.ownerLocked(ws)
		o.prepaid, o.credit = true, nanoDown(credit)
	}
	for name, n := range snap.spent {
		if o := l.owners[name]; o != nil || snap.budgets[name].WorkspaceID != "" || snap.prepaid[name].IsPositive() {
			o = l.ownerLocked(name)
			o.ch = n
			if !o.baseSet && o.total == 0 {
				o.base, o.baseSet = n, true
			}
		}
	}
	l.view.Store(v)
}

func (l *Limiter) ownerLocked(name string) *ownerState {
	o := l.owners[name]
	if o == nil {
		o = &ownerState{name: name}
		l.owners[name] = o
	}
	return o
}

// principalLocked is the owners of p's key.
func (l *Limiter) principalLocked(p apikey.Principal) *principal {
	pr := l.principals[p]
	if pr == nil {
		pr = &principal{ws: l.ownerLocked(p.WorkspaceID), key: l.ownerLocked(owner(p.WorkspaceID, p.KeyID))}
		l.principals[p] = pr
	}
	return pr
}

// Run keeps the snapshot fresh and, with Shared, exchanges spend and liveness with the
// other replicas, until ctx ends; then it hands Shared what is left to sync. The two run
// apart: an exchange never waits behind a ClickHouse read (hundreds of milliseconds on a
// busy server), which would let the other replicas' spend go unseen that much longer.
func (l *Limiter) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if l.cfg.Shared != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(l.cfg.SyncInterval)
			defer t.Stop()
			l.sync(ctx)
			for {
				select {
				case <-ctx.Done():
					final, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					l.sync(final)
					cancel()
					return
				case <-t.C:
					l.sync(ctx)
				}
			}
		}()
	}
	refresh := time.NewTicker(l.cfg.Refresh)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-refresh.C:
			if err := l.Refresh(ctx); err != nil && ctx.Err() == nil {
				l.log.Warn("spend snapshot not refreshed; admitting by the last one", "age", l.now().Sub(l.view.Load().at).Round(time.Second), "err", err)
			}
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
	l.mu.Lock()
	month := l.month
	deltas, floors := map[string]int64{}, map[string]int64{}
	var owners []string
	for name, o := range l.owners {
		if o.unsynced != 0 {
			deltas[name] = o.unsynced
			o.syncing, o.unsynced = o.unsynced, 0
		}
		if o.hasBudget || o.prepaid {
			owners = append(owners, name)
			floors[name] = o.ch
		}
	}
	l.mu.Unlock()
	totals, replicas, err := l.cfg.Shared.Sync(ctx, month, deltas, floors, owners)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		// Nothing is lost: the deltas wait for the next exchange, and count meanwhile.
		if l.month.Equal(month) {
			for name, d := range deltas {
				o := l.ownerLocked(name)
				o.unsynced += d
				o.syncing = 0
			}
		}
		if l.shared.ok && ctx.Err() == nil {
			l.log.Warn("spend store unreachable: admitting by what this replica saw last", "fail_closed", l.cfg.FailClosed, "err", err)
		}
		l.shared.ok = false
		l.m.storeUp.Store(false)
		return
	}
	if l.month.Equal(month) {
		// One step: the totals now hold what was on its way.
		for name := range deltas {
			l.ownerLocked(name).syncing = 0
		}
		for _, name := range owners {
			l.ownerLocked(name).shared = totals[name]
		}
	}
	now, gap := l.now(), l.shared.maxGap
	if !l.shared.at.IsZero() {
		gap = max(gap, now.Sub(l.shared.at))
	}
	l.shared = sharedState{ok: true, at: now, replicas: max(replicas, 1), maxGap: gap}
	l.m.storeUp.Store(true)
}

// MaxSyncGap returns the longest time between two successful exchanges with Shared since
// it was last called, and starts counting anew. What other replicas serve is seen here at
// most two such gaps late: it bounds how far a budget can be overshot (a busy machine
// stretches the gaps beyond SyncInterval).
func (l *Limiter) MaxSyncGap() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.shared.maxGap
	l.shared.maxGap = 0
	return g
}

// spentLocked is o's month-to-date spend as this replica knows it, in nano-USD: with
// Shared, every replica's total as last synced plus what this one has not synced yet
// (while the store is unreachable, all it serves meanwhile); alone, the ClickHouse spend
// when its ledger began plus what it served since. Never less than the current ClickHouse
// snapshot, which holds every replica's ingested usage.
func (l *Limiter) spentLocked(o *ownerState) int64 {
	n := o.base + o.total
	if l.cfg.Shared != nil {
		n = o.shared + o.syncing + o.unsynced
	}
	return max(n, o.ch)
}

// healthyLocked reports whether the limits can be checked: a current snapshot and, with
// Shared, a reachable store.
func (l *Limiter) healthyLocked(v *view, now time.Time) bool {
	if now.Sub(v.at) > l.cfg.StaleAfter {
		return false
	}
	return l.cfg.Shared == nil || l.shared.ok
}

// Admit implements gateway.Limiter.
func (l *Limiter) Admit(p apikey.Principal, model string, promptTokens int64) gateway.Admission {
	v := l.view.Load()
	if !v.limited[p.WorkspaceID] {
		return gateway.Admission{}
	}
	now := l.now()
	var a gateway.Admission
	l.mu.Lock()
	defer l.mu.Unlock()
	pr := l.principalLocked(p)
	if !pr.ws.hasBudget && !pr.key.hasBudget && !pr.ws.hasLimit && !pr.key.hasLimit && !pr.ws.prepaid {
		return a
	}
	if l.cfg.FailClosed && !l.healthyLocked(v, now) &&
		((pr.ws.hasBudget && pr.ws.hard) || (pr.key.hasBudget && pr.key.hard) || pr.ws.hasLimit || pr.key.hasLimit || pr.ws.prepaid) {
		l.m.refused("unavailable")
		a.Refusal = &gateway.Refusal{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "limits_unavailable",
			Message: "Your workspace's budget or rate limits cannot be checked right now; retry shortly.", RetryAfter: time.Second}
		return a
	}
	if o := pr.ws; o.prepaid {
		if spent := l.spentLocked(o); spent >= o.credit {
			l.m.refused("credits")
			if now.Sub(o.warned) >= time.Minute {
				o.warned = now
				l.log.Warn("completions refused", "owner", o.name, "why", "prepaid credits used up", "credit_usd", nanoString(o.credit), "spent_usd", nanoString(spent))
			}
			a.Refusal = &gateway.Refusal{Status: http.StatusTooManyRequests, Type: "insufficient_quota", Code: "insufficient_quota",
				Message: fmt.Sprintf("Workspace %s is prepaid and its credits are used up: %s USD spent this month against %s USD of credit. Add credit to continue.",
					p.WorkspaceID, nanoString(spent), nanoString(o.credit))}
			return a
		}
	}
	for _, o := range [2]*ownerState{pr.key, pr.ws} {
		if !o.hasBudget || !o.hard {
			continue
		}
		if spent := l.spentLocked(o); spent >= o.budget {
			l.m.refused("budget")
			if now.Sub(o.warned) >= time.Minute {
				o.warned = now
				l.log.Warn("completions refused", "owner", o.name, "why", "budget", "monthly_usd", o.budgetUSD.String(), "spent_usd", nanoString(spent))
			}
			what := "workspace " + p.WorkspaceID
			if o == pr.key {
				what = "API key " + p.KeyID
			}
			a.Refusal = &gateway.Refusal{Status: http.StatusTooManyRequests, Type: "insufficient_quota", Code: "insufficient_quota",
				Message: fmt.Sprintf("You exceeded the monthly budget of %s USD of %s (%s USD spent this month). Raise the budget or wait for next month.",
					o.budgetUSD.String(), what, nanoString(spent))}
			return a
		}
	}
	replicas := l.shared.replicas
	var limited [2]*buckets
	var who [2]*ownerState
	n := 0
	for _, o := range [2]*ownerState{pr.key, pr.ws} {
		if o.hasLimit {
			limited[n], who[n] = l.bucketsLocked(o, replicas, now), o
			n++
		}
	}
	// Every limit must have room before any is taken from.
	for i := range n {
		if wait, kind := limited[i].wait(promptTokens); wait > 0 {
			l.m.refused("rate_" + kind)
			what := "workspace " + p.WorkspaceID
			if who[i] == pr.key {
				what = "API key " + p.KeyID
			}
			a.Refusal = &gateway.Refusal{Status: http.StatusTooManyRequests, Type: kind, Code: "rate_limit_exceeded", RetryAfter: wait,
				Message: fmt.Sprintf("Rate limit reached for %s: %s per minute. Retry in %s.", what, limited[i].describeLimit(kind), wait.Round(time.Millisecond))}
			a.Headers = headersOf(limited[:n], replicas)
			return a
		}
	}
	for i := range n {
		limited[i].take(promptTokens)
	}
	a.Reserved, a.State = promptTokens, pr
	a.Headers = headersOf(limited[:n], replicas)
	return a
}

// Settle implements gateway.Limiter: it counts the completion's cost toward the budgets
// and corrects the token limits by its real usage.
func (l *Limiter) Settle(p apikey.Principal, a gateway.Admission, ev schema.UsageEvent) {
	v := l.view.Load()
	if !v.limited[p.WorkspaceID] {
		return
	}
	var cost int64
	if ev.Status == schema.StatusOK {
		cost = v.cost(ev.WorkspaceID, ev.Model, ev)
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	pr, ok := a.State.(*principal)
	if !ok {
		pr = l.principalLocked(p)
	}
	if cost > 0 {
		if !ev.OccurredAt.Before(l.month) && ev.OccurredAt.Before(l.monthEnd) {
			for _, o := range [2]*ownerState{pr.ws, pr.key} {
				o.total += cost
				o.unsynced += cost
			}
		}
	}
	correction := int64(ev.TotalTokens) - a.Reserved
	for _, o := range [2]*ownerState{pr.key, pr.ws} {
		if o.hasBuckets {
			o.buckets.correct(correction, now)
		}
	}
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

// nanoDown is d USD in nano-USD, rounded down: credit is never overstated.
func nanoDown(d decimal.Decimal) int64 {
	n := d.Shift(9).Truncate(0)
	if n.GreaterThan(decimal.NewFromInt(math.MaxInt64 / 4)) {
		return math.MaxInt64 / 4
	}
	return n.IntPart()
}

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
