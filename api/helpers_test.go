package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/venna/metering/aggregate"
	"github.com/venna/metering/api"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/spend"
	"github.com/venna/metering/webhook"
)

const adminToken = "test-admin-token-0123456789"

// fixture is an API server on a fresh database with two workspaces, a key each, and a
// price book in which venna-1 doubles its price at priceChange (yesterday 12:00 UTC), the
// model "unpriced" has no price at all, and ws_b pays its own venna-1 price with 10% off.
type fixture struct {
	t           *testing.T
	conn        driver.Conn
	db          string
	hs          *httptest.Server
	srv         *api.Server
	store       *apikey.Store
	auth        *apikey.Authenticator
	inv         *invoice.Invoicer
	agg         *aggregate.Aggregator
	prices      *invoice.PriceBook
	tokens      map[string]string // workspace → key secret
	keyIDs      map[string]string // workspace → key ID
	priceChange time.Time
}

var eventSeq atomic.Int64

func priceBookYAML(change time.Time) string {
	return fmt.Sprintf(`currency: USD
prices:
  - {model: venna-1, effective_from: "2026-01-01T00:00:00Z", input: "2.50", cached_input: "1.25", output: "10.00"}
  - {model: venna-1, effective_from: %q, input: "5.00", cached_input: "2.50", output: "20.00"}
  - {model: venna-1-mini, effective_from: "2026-01-01T00:00:00Z", input: "0.15", cached_input: "0.075", output: "0.60"}
overrides:
  ws_b:
    prices:
      - {model: venna-1, effective_from: "2026-01-01T00:00:00Z", input: "1.00", cached_input: "0.50", output: "4.00"}
    discounts:
      - {effective_from: "2026-01-01T00:00:00Z", percent: "10"}
plans:
  - id: team
    name: Team
    versions:
      - effective_from: "2026-01-01T00:00:00Z"
        fee: "30.00"
        rates:
          - {model: venna-1-mini, token_class: output, pricing: per_unit, usd_per_million: "0.50"}
`, change.Format(time.RFC3339))
}

type fixtureOption func(*fixture, *api.Config, *[]api.Option)

func newFixture(t *testing.T, opts ...fixtureOption) *fixture {
	t.Helper()
	ctx := context.Background()
	cfg, conn := testenv.ClickHouse(t)
	f := &fixture{t: t, conn: conn, db: cfg.Database, tokens: map[string]string{}, keyIDs: map[string]string{}}
	f.priceChange = time.Now().UTC().Truncate(24 * time.Hour).Add(-12 * time.Hour)
	var err error
	if f.prices, err = invoice.ParsePriceBook([]byte(priceBookYAML(f.priceChange))); err != nil {
		t.Fatal(err)
	}
	f.store = apikey.NewStore(conn, f.db)
	for _, ws := range []string{"ws_a", "ws_b"} {
		if _, err := f.store.CreateWorkspace(ctx, ws, ws); err != nil {
			t.Fatal(err)
		}
		k, secret, err := f.store.IssueKey(ctx, ws, "test")
		if err != nil {
			t.Fatal(err)
		}
		f.tokens[ws], f.keyIDs[ws] = secret, k.ID
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if f.auth, err = apikey.NewAuthenticator(ctx, f.store, log); err != nil {
		t.Fatal(err)
	}
	// A long grace keeps last month's invoice a draft, for the admin's lifecycle tests.
	if f.inv, err = invoice.New(invoice.Config{Database: f.db, Grace: 24 * 365 * time.Hour}, conn, f.prices); err != nil {
		t.Fatal(err)
	}
	if f.agg, err = aggregate.New(aggregate.Config{Database: f.db}, conn); err != nil {
		t.Fatal(err)
	}
	acfg := api.Config{Database: f.db, AdminToken: adminToken}
	aopts := []api.Option{api.WithPrices(f.prices), api.WithAdmin(f.store, f.inv), api.WithSpend(spend.NewStore(conn, f.db)), api.WithCredits(f.inv), api.WithPlans(f.inv),
		api.WithWebhooks(webhook.NewStore(conn, f.db))}
	for _, o := range opts {
		o(f, &acfg, &aopts)
	}
	if f.srv, err = api.New(acfg, conn, f.auth, f.inv, log, aopts...); err != nil {
		t.Fatal(err)
	}
	f.hs = httptest.NewServer(f.srv.Handler())
	t.Cleanup(f.hs.Close)
	return f
}

// event is a usage event as the tests write it into usage_events; zero fields get defaults.
type event struct {
	id         string
	at         time.Time
	ws, key    string
	model      string
	upstream   string
	status     string
	latencyMS  uint32
	prompt     uint64
	cached     uint64
	completion uint64
	reasoning  uint64
	accepted   uint64
	rejected   uint64
}

var eventColumns = []string{"event_id", "schema_version", "occurred_at", "ingested_at", "workspace_id", "api_key_id", "model",
	"upstream", "upstream_model", "request_id", "status", "http_status", "stream", "estimated", "latency_ms",
	"prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens", "accepted_prediction_tokens",
	"rejected_prediction_tokens", "total_tokens", "kafka_partition", "kafka_offset"}

// insert writes events straight into usage_events, as ingest would, and returns their IDs.
func (f *fixture) insert(events ...event) []string {
	f.t.Helper()
	rows := make([][]any, len(events))
	ids := make([]string, len(events))
	for i, e := range events {
		if e.id == "" {
			e.id = fmt.Sprintf("evt-%d-%d", time.Now().UnixNano(), eventSeq.Add(1))
		}
		if e.status == "" {
			e.status = "ok"
		}
		if e.model == "" {
			e.model = "venna-1"
		}
		if e.upstream == "" {
			e.upstream = "sim"
		}
		if e.key == "" {
			e.key = f.keyIDs[e.ws]
		}
		httpStatus := uint16(200)
		if e.status != "ok" {
			httpStatus = 502
		}
		ids[i] = e.id
		rows[i] = []any{e.id, uint8(1), e.at.UTC().Truncate(time.Second), time.Now().UTC(), e.ws, e.key, e.model,
			e.upstream, "up-" + e.model, "req-" + e.id, e.status, httpStatus, uint8(0), uint8(0), e.latencyMS,
			e.prompt, e.cached, e.completion, e.reasoning, e.accepted, e.rejected, e.prompt + e.completion, int32(0), int64(0)}
	}
	if err := chdb.Insert(context.Background(), f.conn, chdb.InsertInto(f.db+".usage_events", eventColumns), rows); err != nil {
		f.t.Fatal(err)
	}
	return ids
}

// rollup runs the aggregator once, as its cron would.
func (f *fixture) rollup() {
	f.t.Helper()
	if _, err := f.agg.Run(context.Background()); err != nil {
		f.t.Fatal(err)
	}
}

// do sends a request and checks its status; a non-nil out receives the decoded JSON body.
// Every error answer must be the JSON envelope.
func (f *fixture) do(method, path, token string, body any, wantStatus int, out any) *http.Response {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			f.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, f.hs.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		f.t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, wantStatus, b)
	}
	if resp.StatusCode >= 400 {
		var env apierr.Body
		if err := json.Unmarshal(b, &env); err != nil || env.Error.Code == "" || env.Error.Message == "" {
			f.t.Fatalf("%s %s: error answer is not the error envelope: %s", method, path, b)
		}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			f.t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return resp
}

func (f *fixture) get(path, token string, wantStatus int, out any) *http.Response {
	f.t.Helper()
	return f.do(http.MethodGet, path, token, nil, wantStatus, out)
}

// usage reads one /v1/usage page of ws.
func (f *fixture) usage(ws, query string) api.UsagePage {
	f.t.Helper()
	var page api.UsagePage
	f.get("/v1/usage?"+query, f.tokens[ws], http.StatusOK, &page)
	return page
}

// totals sums a page's results per group label (model/api_key_id, "" when not grouped).
type totals struct {
	requests, input, cached, output, reasoning, accepted, rejected uint64
}

func sumPage(page api.UsagePage) map[string]totals {
	out := map[string]totals{}
	for _, b := range page.Data {
		for _, r := range b.Results {
			k := label(r)
			t := out[k]
			t.requests += r.NumModelRequests
			t.input += r.InputTokens
			t.cached += r.InputCachedTokens
			t.output += r.OutputTokens
			t.reasoning += r.ReasoningTokens
			t.accepted += r.AcceptedPredictionTokens
			t.rejected += r.RejectedPredictionTokens
			out[k] = t
		}
	}
	return out
}

func label(r api.UsageResult) string {
	var parts []string
	if r.Model != nil {
		parts = append(parts, *r.Model)
	}
	if r.APIKeyID != nil {
		parts = append(parts, *r.APIKeyID)
	}
	return strings.Join(parts, "/")
}
