package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/redis/go-redis/v9"
	"github.com/shopspring/decimal"

	"github.com/venna/metering/aggregate"
	"github.com/venna/metering/api"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/gateway"
	"github.com/venna/metering/ingest"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/simupstream"
	"github.com/venna/metering/spend"
	"github.com/venna/metering/webhook"
)

// spendPrices make a completion cost cents, so budgets of dollars are reached in seconds.
const spendPrices = `currency: USD
prices:
  - {model: venna-1, effective_from: "2026-01-01T00:00:00Z", input: "300", cached_input: "150", output: "1200"}
`

// spendStack is one workspace-facing stack: the simulated upstream (counting the calls
// that reach it), gateways with limiters sharing Redis, ingest, and the API.
type spendStack struct {
	t        *testing.T
	ctx      context.Context
	conn     driver.Conn
	db       string
	book     *invoice.PriceBook
	invoices *invoice.Invoicer
	store    *apikey.Store
	spend    *spend.Store
	upstream atomic.Int64
	gateways []string // base URLs
	limiters []*spend.Limiter
	apiURL   string
	admin    string
}

func newSpendStack(t *testing.T, ctx context.Context, gateways int, refresh time.Duration) *spendStack {
	t.Helper()
	return newStack(t, ctx, gateways, refresh, spendPrices)
}

// newStack is newSpendStack on the price book book (which prices venna-1).
func newStack(t *testing.T, ctx context.Context, gateways int, refresh time.Duration, book string) *spendStack {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	chCfg, conn := testenv.ClickHouse(t)
	brokers, topic := testenv.Topic(t, 2)
	s := &spendStack{t: t, ctx: ctx, conn: conn, db: chCfg.Database, store: apikey.NewStore(conn, chCfg.Database), spend: spend.NewStore(conn, chCfg.Database),
		admin: "admin-token-for-spend-tests"}
	var err error
	if s.book, err = invoice.ParsePriceBook([]byte(book)); err != nil {
		t.Fatal(err)
	}
	sim := (&simupstream.Server{}).Handler()
	simSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.upstream.Add(1)
		sim.ServeHTTP(w, r)
	}))
	t.Cleanup(simSrv.Close)
	routes, err := gateway.ParseRoutes([]byte(fmt.Sprintf("upstreams:\n  - {name: sim, base_url: %s/v1}\nmodels:\n  - {model: venna-1, upstream: sim, upstream_model: sim-large}\n", simSrv.URL)), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if s.invoices, err = invoice.New(invoice.Config{Database: s.db}, conn, s.book); err != nil {
		t.Fatal(err)
	}
	auth, err := apikey.NewAuthenticator(ctx, s.store, log)
	if err != nil {
		t.Fatal(err)
	}
	go auth.Run(ctx, 200*time.Millisecond)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { rdb.Close() })
	for i := range gateways {
		prod, err := gateway.NewProducer(gateway.ProducerConfig{Brokers: brokers, Topic: topic, Spool: gateway.SpoolConfig{Dir: t.TempDir()}}, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { prod.Close(context.Background()) })
		gw, err := gateway.New(gateway.Config{Routes: routes}, auth, prod, log)
		if err != nil {
			t.Fatal(err)
		}
		shared := spend.NewRedisShared(rdb, s.db, fmt.Sprintf("gw-%d", i), time.Second)
		l, err := spend.NewLimiter(ctx, spend.LimiterConfig{Refresh: refresh, Shared: shared, SyncInterval: 50 * time.Millisecond, Credits: s.invoices},
			s.spend, s.book, log)
		if err != nil {
			t.Fatal(err)
		}
		go l.Run(ctx)
		gw.SetLimiter(l)
		srv := httptest.NewServer(gw.Handler())
		t.Cleanup(srv.Close)
		s.gateways = append(s.gateways, srv.URL)
		s.limiters = append(s.limiters, l)
	}
	cons, err := ingest.New(ingest.Config{Brokers: brokers, Topic: topic, GroupID: topic + "-ingest", Database: s.db,
		BatchSize: 500, FlushInterval: 100 * time.Millisecond}, conn, log)
	if err != nil {
		t.Fatal(err)
	}
	consCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { cons.Run(consCtx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	srv, err := api.New(api.Config{Database: s.db, AdminToken: s.admin}, conn, auth, s.invoices, log,
		api.WithPrices(s.book), api.WithAdmin(s.store, s.invoices), api.WithSpend(s.spend), api.WithCredits(s.invoices), api.WithPlans(s.invoices),
		api.WithWebhooks(webhook.NewStore(conn, s.db)))
	if err != nil {
		t.Fatal(err)
	}
	apiSrv := httptest.NewServer(srv.Handler())
	t.Cleanup(apiSrv.Close)
	s.apiURL = apiSrv.URL
	return s
}

func (s *spendStack) workspace(id string) string {
	s.t.Helper()
	if _, err := s.store.CreateWorkspace(s.ctx, id, id); err != nil {
		s.t.Fatal(err)
	}
	_, token, err := s.store.IssueKey(s.ctx, id, "load")
	if err != nil {
		s.t.Fatal(err)
	}
	return token
}

// adminPut sends body to an admin route of workspace ws and fails the test on anything but 200.
func (s *spendStack) adminPut(ws, route string, body any) {
	s.t.Helper()
	s.admin2xx(http.MethodPut, ws, route, body)
}

// admin2xx sends body to an admin route of workspace ws and fails the test on anything but 2xx.
func (s *spendStack) admin2xx(method, ws, route string, body any) {
	s.t.Helper()
	if code, msg := s.adminDo(method, "/v1/admin/workspaces/"+ws+route, body); code/100 != 2 {
		s.t.Fatalf("%s %s%s: %d %s", method, ws, route, code, msg)
	}
}

// adminJSON sends body to an admin path, fails the test unless the answer has status
// want, and decodes it into v.
func (s *spendStack) adminJSON(method, path string, body any, want int, v any) {
	s.t.Helper()
	code, msg := s.adminDo(method, path, body)
	if code != want {
		s.t.Fatalf("%s %s: %d %s, want %d", method, path, code, msg, want)
	}
	if err := json.Unmarshal(msg, v); err != nil {
		s.t.Fatalf("%s %s: %v: %s", method, path, err, msg)
	}
}

// adminDo sends body as JSON to an admin path with the admin token.
func (s *spendStack) adminDo(method, path string, body any) (int, []byte) {
	s.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, s.apiURL+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+s.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp.StatusCode, msg
}

// cost is a completion's exact price, from the usage the client was given.
func (s *spendStack) cost(ws string, u openai.CompletionUsage) decimal.Decimal {
	cached := u.PromptTokensDetails.CachedTokens
	c, ok := s.book.Cost(ws, "venna-1", time.Now(), uint64(u.PromptTokens-cached), uint64(cached), uint64(u.CompletionTokens))
	if !ok {
		s.t.Fatal("no price for venna-1")
	}
	return c
}

// outcome is what the clients of a load saw.
type outcome struct {
	mu        sync.Mutex
	served    int
	spent     decimal.Decimal
	maxCost   decimal.Decimal
	refusals  map[string]int // by error code
	tokens    int64
	maxTokens int64
	headers   http.Header // of the last completion served
	refusal   *openai.Error
	start     time.Time
	firstStop time.Time // the first refusal
}

// load sends completions from workers clients per gateway, each one at a time, until every
// worker has been refused `until` times in a row or the duration is over.
func (s *spendStack) load(token, ws string, workers int, until int, duration time.Duration) *outcome {
	o := &outcome{refusals: map[string]int{}, start: time.Now()}
	ctx, cancel := context.WithTimeout(s.ctx, duration)
	defer cancel()
	var wg sync.WaitGroup
	for _, base := range s.gateways {
		client := openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey(token), option.WithMaxRetries(0))
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				refusedInARow := 0
				for i := 0; ctx.Err() == nil && refusedInARow < until; i++ {
					var raw *http.Response
					resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "venna-1",
						Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(fmt.Sprintf("worker %d asks question %d about budgets", w, i))}},
						option.WithResponseInto(&raw))
					var apiErr *openai.Error
					switch {
					case errors.As(err, &apiErr):
						refusedInARow++
						o.mu.Lock()
						o.refusals[apiErr.Code]++
						if o.refusal == nil {
							o.refusal, o.firstStop = apiErr, time.Now()
						}
						o.mu.Unlock()
						if apiErr.StatusCode == http.StatusTooManyRequests && apiErr.Code == "rate_limit_exceeded" {
							time.Sleep(20 * time.Millisecond)
						}
					case err != nil:
						if ctx.Err() == nil {
							s.t.Errorf("completion: %v", err)
						}
						return
					default:
						refusedInARow = 0
						c := s.cost(ws, resp.Usage)
						o.mu.Lock()
						o.served++
						o.spent = o.spent.Add(c)
						o.maxCost = decimal.Max(o.maxCost, c)
						o.tokens += resp.Usage.TotalTokens
						o.maxTokens = max(o.maxTokens, resp.Usage.TotalTokens)
						o.headers = raw.Header
						o.mu.Unlock()
					}
				}
			}()
		}
	}
	wg.Wait()
	return o
}

// waitIngested waits until ClickHouse holds n billable events of ws, and checks it holds
// no other event of it.
func (s *spendStack) waitIngested(ws string, n int) {
	s.t.Helper()
	waitFor(s.t, time.Minute, func() (bool, string) {
		st, err := s.spend.MonthToDate(s.ctx, s.book, time.Now(), ws)
		if err != nil {
			return false, err.Error()
		}
		var got uint64
		q := "SELECT count() FROM (SELECT event_id FROM " + s.db + ".usage_events WHERE workspace_id = ? LIMIT 1 BY event_id)"
		if err := s.conn.QueryRow(s.ctx, q, ws).Scan(&got); err != nil {
			return false, err.Error()
		}
		return got == uint64(n), fmt.Sprintf("%d of %d events ingested (spend %s)", got, n, st.ByOwner[ws])
	})
}

// servedAgain sends a completion every 50 ms until one is served, failing the test after
// 10 s, and returns how long after since it was.
func (s *spendStack) servedAgain(token string, since time.Time) time.Duration {
	s.t.Helper()
	client := openai.NewClient(option.WithBaseURL(s.gateways[0]+"/v1"), option.WithAPIKey(token), option.WithMaxRetries(0))
	for {
		_, err := client.Chat.Completions.New(s.ctx, openai.ChatCompletionNewParams{Model: "venna-1",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("again")}})
		if err == nil {
			return time.Since(since).Round(time.Millisecond)
		}
		if time.Since(since) > 10*time.Second {
			s.t.Fatalf("still refused %s after the change: %v", time.Since(since), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBudgetEndToEnd is the user's story: a $1 hard budget, completions through the OpenAI
// SDK until refused with 429 insufficient_quota, the usage and the alerts on the API, the
// budget raised, and completions served again within seconds. The refused requests reach
// no upstream and leave no billable event; the spend stops within the bound the design
// promises (one gateway: the completions in flight when the budget was reached).
func TestBudgetEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := newSpendStack(t, ctx, 1, 300*time.Millisecond)
	token := s.workspace("ws_budget")
	s.adminPut("ws_budget", "/budget", map[string]any{"monthly_usd": "1.00", "hard_limit": true, "thresholds": []int{50, 80, 100}})
	time.Sleep(600 * time.Millisecond) // two snapshot refreshes

	const workers = 4
	o := s.load(token, "ws_budget", workers, 3, time.Minute)
	if o.refusal == nil || o.refusal.StatusCode != http.StatusTooManyRequests || o.refusal.Code != "insufficient_quota" || o.refusal.Type != "insufficient_quota" {
		t.Fatalf("refusal %+v, want 429 insufficient_quota", o.refusal)
	}
	if o.refusals["insufficient_quota"] != workers*3 || len(o.refusals) != 1 {
		t.Fatalf("refusals %v", o.refusals)
	}
	budget := decimal.RequireFromString("1")
	overshoot := o.spent.Sub(budget)
	bound := o.maxCost.Mul(decimal.NewFromInt(workers))
	t.Logf("served %d completions for %s USD (largest %s) before the 1.00 USD budget stopped them: overshoot %s USD, bound %s (%d in flight × the largest)",
		o.served, o.spent, o.maxCost, overshoot, bound, workers)
	if o.spent.LessThan(budget) {
		t.Fatalf("refused at %s USD, below the budget", o.spent)
	}
	if overshoot.GreaterThan(bound) {
		t.Fatalf("overshoot %s USD beyond the bound %s", overshoot, bound)
	}
	if got := s.upstream.Load(); got != int64(o.served) {
		t.Fatalf("the upstream got %d calls for %d completions served: refused requests reached it", got, o.served)
	}

	// Usage and alerts, exact: the month's spend on the API equals what the clients were billed.
	s.waitIngested("ws_budget", o.served)
	alerter := spend.NewAlerter(s.spend, s.book, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	raised, err := alerter.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	types := map[int]string{}
	for _, a := range raised {
		types[a.ThresholdPercent] = a.Type
	}
	if len(raised) != 3 || types[50] != spend.AlertThreshold || types[80] != spend.AlertThreshold || types[100] != spend.AlertExceeded {
		t.Fatalf("alerts %+v, want 50 and 80 %% reached and 100 %% exceeded", raised)
	}
	if again, err := alerter.Run(ctx); err != nil || len(again) != 0 {
		t.Fatalf("a second run raised %d alerts (%v): each alert is raised once", len(again), err)
	}
	var st spend.Status
	getJSON(t, s.apiURL+"/v1/spend", token, http.StatusOK, &st)
	if !st.SpendUSD.Equal(o.spent) || len(st.Budgets) != 1 || !st.Budgets[0].Exceeded || !st.Budgets[0].RemainingUSD.IsZero() || len(st.Alerts) != 3 {
		t.Fatalf("GET /v1/spend: %+v, want spend %s, the budget exceeded, 3 alerts", st, o.spent)
	}

	// Raise the budget: completions are served again within seconds.
	raisedAt := time.Now()
	s.adminPut("ws_budget", "/budget", map[string]any{"monthly_usd": "2.00", "hard_limit": true})
	t.Logf("served again %s after the budget was raised (snapshot refresh every 300ms)", s.servedAgain(token, raisedAt))
}

// TestTwoGatewaysHoldBudgetsAndRateLimits runs two gateway replicas sharing Redis at full
// speed against a hard budget and against per-key rate limits, and checks how far past
// each limit usage went against the bound the design promises (README.md, "Spend
// control"): for the budget, the completions in flight plus what the other replica served
// in two sync intervals; for requests per minute, never more than the limit per minute
// (the two replicas hold half each); for tokens, the tokens the admitted completions used
// beyond their admission estimate.
func TestTwoGatewaysHoldBudgetsAndRateLimits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := newSpendStack(t, ctx, 2, 200*time.Millisecond)
	const workers = 6 // per gateway
	const sync = 50 * time.Millisecond

	t.Run("budget", func(t *testing.T) {
		token := s.workspace("ws_two")
		s.adminPut("ws_two", "/budget", map[string]any{"monthly_usd": "30.00", "hard_limit": true})
		time.Sleep(500 * time.Millisecond)
		for _, l := range s.limiters {
			l.MaxSyncGap() // count the gaps of this load only
		}
		o := s.load(token, "ws_two", workers, 3, time.Minute)
		elapsed := o.firstStop.Sub(o.start).Seconds()
		rate := float64(o.served) / elapsed // completions per second, both gateways
		budget := decimal.RequireFromString("30")
		overshoot := o.spent.Sub(budget)
		// In flight on both replicas, plus the other replica's completions in two syncs:
		// two sync intervals, or the longest gap between a replica's exchanges if the
		// machine stretched them (CPU starved, the ticker fires late).
		gap := sync
		for _, l := range s.limiters {
			gap = max(gap, l.MaxSyncGap())
		}
		inFlight := decimal.NewFromInt(2 * workers)
		unseen := decimal.NewFromFloat(rate / 2 * 2 * gap.Seconds()).Ceil()
		bound := o.maxCost.Mul(inFlight.Add(unseen))
		t.Logf("two gateways, %d clients each: %d completions (%.0f/s) for %s USD against a 30.00 USD budget: overshoot %s USD (%d completions' worth), bound %s USD (%s in flight + %s the other replica served unseen in two gaps of %s)",
			workers, o.served, rate, o.spent, overshoot, overshoot.Div(o.maxCost).Ceil().IntPart(), bound, inFlight, unseen, gap.Round(time.Millisecond))
		if o.spent.LessThan(budget) || overshoot.GreaterThan(bound) {
			t.Fatalf("spent %s USD against the 30.00 budget: overshoot %s beyond the bound %s", o.spent, overshoot, bound)
		}
		if o.refusals["insufficient_quota"] != 2*workers*3 {
			t.Fatalf("refusals %v", o.refusals)
		}
	})

	t.Run("requests per minute", func(t *testing.T) {
		token := s.workspace("ws_rpm")
		keys, err := s.store.Keys(ctx, "ws_rpm")
		if err != nil || len(keys) != 1 {
			t.Fatal(keys, err)
		}
		const rpm = 120
		s.adminPut("ws_rpm", "/rate_limit", map[string]any{"api_key_id": keys[0].ID, "rpm": rpm})
		time.Sleep(500 * time.Millisecond)
		const run = 6 * time.Second
		o := s.load(token, "ws_rpm", workers, 1<<30, run)
		// A full minute's limit at once (both halves), then the limit's rate.
		bound := rpm + int(rpm*run.Seconds()/60) + 2
		t.Logf("two gateways, %d clients each, %s at a %d/min limit: %d served, %d refused; bound %d", workers, run, rpm, o.served, o.refusals["rate_limit_exceeded"], bound)
		if o.served > bound {
			t.Fatalf("%d completions served in %s under %d requests per minute: over the bound %d", o.served, run, rpm, bound)
		}
		if o.served < rpm*3/4 {
			t.Fatalf("only %d of the %d a minute's limit allows were served", o.served, rpm)
		}
		if o.refusal == nil || o.refusal.Code != "rate_limit_exceeded" || o.refusal.Type != "requests" {
			t.Fatalf("refusal %+v, want rate_limit_exceeded (requests)", o.refusal)
		}
		if h := o.headers; h.Get("x-ratelimit-limit-requests") != fmt.Sprint(rpm) || h.Get("x-ratelimit-remaining-requests") == "" || h.Get("x-ratelimit-reset-requests") == "" {
			t.Fatalf("headers of a served completion: %v", h)
		}
	})

	t.Run("tokens per minute", func(t *testing.T) {
		token := s.workspace("ws_tpm")
		keys, err := s.store.Keys(ctx, "ws_tpm")
		if err != nil || len(keys) != 1 {
			t.Fatal(keys, err)
		}
		const tpm = 20_000
		s.adminPut("ws_tpm", "/rate_limit", map[string]any{"api_key_id": keys[0].ID, "tpm": tpm})
		time.Sleep(500 * time.Millisecond)
		const run = 6 * time.Second
		o := s.load(token, "ws_tpm", workers, 1<<30, run)
		// The limit's rate over the run plus a full minute's at once, and what the
		// completions in flight used beyond their estimate.
		bound := int64(tpm) + int64(tpm*run.Seconds()/60) + int64(2*workers)*o.maxTokens
		t.Logf("two gateways, %d clients each, %s at a %d tokens/min limit: %d completions used %d tokens; bound %d", workers, run, tpm, o.served, o.tokens, bound)
		if o.tokens > bound {
			t.Fatalf("%d tokens used in %s under %d per minute: over the bound %d", o.tokens, run, tpm, bound)
		}
		if o.refusals["rate_limit_exceeded"] == 0 || o.refusal.Type != "tokens" {
			t.Fatalf("refusals %v (%+v), want tokens refusals", o.refusals, o.refusal)
		}
		if h := o.headers; h.Get("x-ratelimit-limit-tokens") != fmt.Sprint(tpm) {
			t.Fatalf("headers of a served completion: %v", h)
		}
	})
}

// TestPrepaidCreditsEndToEnd: a prepaid workspace with 1.00 USD of credit is served until
// its credit is used up, then refused with 429 insufficient_quota; its balance, invoice
// (a credit line paying the month up to the grant) and reconciliation agree with what the
// clients were billed; new credit serves it again within seconds.
func TestPrepaidCreditsEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := newSpendStack(t, ctx, 1, 300*time.Millisecond)
	token := s.workspace("ws_prepaid")
	s.admin2xx(http.MethodPost, "ws_prepaid", "/credits", map[string]any{"amount_usd": "1.00", "reason": "welcome"})
	s.adminPut("ws_prepaid", "/billing_mode", map[string]any{"prepaid": true})
	time.Sleep(700 * time.Millisecond)

	const workers = 4
	o := s.load(token, "ws_prepaid", workers, 3, time.Minute)
	if o.refusal == nil || o.refusal.Code != "insufficient_quota" || !strings.Contains(o.refusal.Message, "prepaid") {
		t.Fatalf("refusal %+v, want 429 insufficient_quota naming the prepaid credits", o.refusal)
	}
	credit := decimal.RequireFromString("1")
	overshoot := o.spent.Sub(credit)
	bound := o.maxCost.Mul(decimal.NewFromInt(workers))
	t.Logf("prepaid with 1.00 USD of credit: %d completions for %s USD before refusals (overshoot %s, bound %s)", o.served, o.spent, overshoot, bound)
	if o.spent.LessThan(credit) || overshoot.GreaterThan(bound) {
		t.Fatalf("spent %s USD against 1.00 of credit, bound %s", o.spent, bound)
	}

	// Balance, invoice and reconciliation, from the rollups and raw events.
	s.waitIngested("ws_prepaid", o.served)
	agg, err := aggregate.New(aggregate.Config{Database: s.db, SafetyLag: time.Nanosecond}, s.conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agg.Run(ctx); err != nil {
		t.Fatal(err)
	}
	var bal invoice.Balance
	getJSON(t, s.apiURL+"/v1/credits", token, http.StatusOK, &bal)
	if !bal.Prepaid || !bal.BalanceUSD.IsZero() || len(bal.Grants) != 1 || !bal.Grants[0].UsedUSD.Equal(credit) || bal.Grants[0].Reason != "welcome" {
		t.Fatalf("GET /v1/credits: %+v, want the grant used up", bal)
	}
	start, end := invoice.Month(time.Now())
	if _, err := s.invoices.Run(ctx, start, end); err != nil {
		t.Fatal(err)
	}
	inv, err := s.invoices.Get(ctx, "ws_prepaid", invoice.ID("ws_prepaid", start, end))
	if err != nil {
		t.Fatal(err)
	}
	last := inv.Lines[len(inv.Lines)-1]
	if last.Kind != invoice.KindCredit || !last.Amount.Equal(credit.Neg()) || !inv.Subtotal.Equal(overshoot) {
		t.Fatalf("invoice subtotal %s, last line %+v: want a -1.00 credit line and the overshoot %s billed", inv.Subtotal, last, overshoot)
	}
	if diffs, err := s.invoices.Reconcile(ctx, "ws_prepaid", inv.ID); err != nil || len(diffs) != 0 {
		t.Fatalf("reconcile: %v %v", diffs, err)
	}

	// More credit: served again within seconds.
	added := time.Now()
	s.admin2xx(http.MethodPost, "ws_prepaid", "/credits", map[string]any{"amount_usd": "0.50"})
	t.Logf("served again %s after credit was added", s.servedAgain(token, added))
}
