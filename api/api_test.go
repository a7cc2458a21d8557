package api_test

import (
	"context"
	"encoding/csv"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/api"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
)

// thisMonth returns a time early in the current month, but in the past.
func thisMonth(t *testing.T) time.Time {
	t.Helper()
	start, _ := invoice.Month(time.Now())
	at := start.Add(30 * time.Minute)
	if at.After(time.Now()) {
		t.Skip("the month began less than 30 minutes ago; no past instant of it to place usage at")
	}
	return at
}

// runInvoices stores this month's invoices, as the invoice job does.
func (f *fixture) runInvoices() map[string]*invoice.Invoice {
	f.t.Helper()
	start, end := invoice.Month(time.Now())
	res, err := f.inv.Run(context.Background(), start, end)
	if err != nil || len(res.Failed) > 0 {
		f.t.Fatalf("invoice run: %v %v", err, res.Failed)
	}
	out := map[string]*invoice.Invoice{}
	for _, inv := range res.Written {
		out[inv.WorkspaceID] = inv
	}
	return out
}

// A workspace key reads only its own workspace: another workspace's invoice answers 404
// exactly like a missing one, and usage never includes another workspace's events.
func TestWorkspaceKeySeesOnlyItsWorkspace(t *testing.T) {
	f := newFixture(t)
	at := thisMonth(t)
	f.insert(event{ws: "ws_a", at: at, prompt: 11}, event{ws: "ws_b", at: at, prompt: 22})
	f.rollup()
	invs := f.runInvoices()
	idB := invs["ws_b"].ID

	var own invoice.Invoice
	f.get("/v1/invoices/"+idB, f.tokens["ws_b"], http.StatusOK, &own)
	var other, missing apierr.Body
	f.get("/v1/invoices/"+idB, f.tokens["ws_a"], http.StatusNotFound, &other)
	f.get("/v1/invoices/inv_doesnotexist", f.tokens["ws_a"], http.StatusNotFound, &missing)
	if other.Error.Code != missing.Error.Code || other.Error.Message != missing.Error.Message {
		t.Errorf("another workspace's invoice %+v differs from a missing one %+v", other.Error, missing.Error)
	}
	f.get("/v1/invoices/"+idB+".csv", f.tokens["ws_a"], http.StatusNotFound, nil)

	var list struct{ Data []invoice.Invoice }
	f.get("/v1/invoices", f.tokens["ws_a"], http.StatusOK, &list)
	if len(list.Data) != 1 || list.Data[0].WorkspaceID != "ws_a" {
		t.Errorf("ws_a lists %+v, want only its own invoice", list.Data)
	}
	got := sumPage(f.usage("ws_a", q("bucket_width=1d&start_time=%d", at.Unix())))[""]
	if got.input != 11 {
		t.Errorf("ws_a usage has %d input tokens, want its own 11", got.input)
	}
	f.get("/v1/usage?start_time=1", "", http.StatusUnauthorized, nil)
	f.get("/v1/usage?start_time=1", "vk_bogus_secret", http.StatusUnauthorized, nil)
	// The admin token is not a workspace key.
	f.get("/v1/invoices", adminToken, http.StatusUnauthorized, nil)
}

func TestInvoiceJSONAndCSV(t *testing.T) {
	f := newFixture(t)
	at := thisMonth(t)
	f.insert(
		event{ws: "ws_a", at: at, prompt: 3000, cached: 1000, completion: 500},
		event{ws: "ws_a", at: at, model: "venna-1-mini", prompt: 100, completion: 100},
	)
	f.rollup()
	stored := f.runInvoices()["ws_a"]

	var got invoice.Invoice
	f.get("/v1/invoices/"+stored.ID, f.tokens["ws_a"], http.StatusOK, &got)
	if got.ID != stored.ID || got.Status != invoice.StatusDraft || !got.Total.Equal(stored.Total) || len(got.Lines) != len(stored.Lines) {
		t.Fatalf("invoice JSON %+v, want the stored %+v", got, stored)
	}

	for name, req := range map[string]struct{ path, accept string }{
		"Accept header": {"/v1/invoices/" + stored.ID, "application/json;q=0.5, text/csv"},
		".csv suffix":   {"/v1/invoices/" + stored.ID + ".csv", ""},
		"admin .csv":    {"/v1/admin/workspaces/ws_a/invoices/" + stored.ID + ".csv", ""},
	} {
		t.Run(name, func(t *testing.T) {
			token := f.tokens["ws_a"]
			if strings.HasPrefix(req.path, "/v1/admin") {
				token = adminToken
			}
			rows := getCSV(t, f.hs.URL+req.path, token, req.accept)
			checkInvoiceCSV(t, rows, stored)
		})
	}
	// JSON stays the default, and wins when preferred.
	rq, _ := http.NewRequest(http.MethodGet, f.hs.URL+"/v1/invoices/"+stored.ID, nil)
	rq.Header.Set("Authorization", "Bearer "+f.tokens["ws_a"])
	rq.Header.Set("Accept", "application/json, text/csv;q=0.1")
	resp, err := http.DefaultClient.Do(rq)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Accept preferring JSON got %q", ct)
	}
}

func getCSV(t *testing.T, url, token, accept string) [][]string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s: %s", url, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	rows, err := csv.NewReader(resp.Body).ReadAll()
	if err != nil {
		t.Fatalf("CSV does not parse: %v", err)
	}
	return rows
}

// checkInvoiceCSV finds every line of inv in the CSV, by model and token class, with its
// quantity and exact amount.
func checkInvoiceCSV(t *testing.T, rows [][]string, inv *invoice.Invoice) {
	t.Helper()
	if len(rows) < 2 {
		t.Fatalf("CSV has %d rows", len(rows))
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	for _, name := range []string{"model", "token_class", "quantity", "amount"} {
		if _, ok := col[name]; !ok {
			t.Fatalf("CSV header %v lacks %q", rows[0], name)
		}
	}
	found := 0
	for _, l := range inv.Lines {
		for _, r := range rows[1:] {
			if len(r) != len(rows[0]) || r[col["model"]] != l.Model || r[col["token_class"]] != l.TokenClass {
				continue
			}
			amount, err := decimal.NewFromString(r[col["amount"]])
			if r[col["quantity"]] != decimalString(l.Quantity) || err != nil || !amount.Equal(l.Amount) {
				t.Errorf("CSV line %v, want %d tokens = %s", r, l.Quantity, l.Amount)
			}
			found++
		}
	}
	if found != len(inv.Lines) {
		t.Errorf("CSV has %d of the invoice's %d lines: %v", found, len(inv.Lines), rows)
	}
}

func decimalString(n uint64) string { return decimal.NewFromUint64(n).String() }

// The upcoming invoice is the month's running draft: computed live before the invoice job
// has stored one, then the stored draft; a workspace without usage gets an empty draft.
func TestUpcomingInvoice(t *testing.T) {
	f := newFixture(t)
	at := thisMonth(t)
	f.insert(event{ws: "ws_a", at: at, prompt: 2000, completion: 1000})
	f.rollup()
	start, end := invoice.Month(time.Now())
	want := invoice.Amount(2000, decimal.RequireFromString("2.50")).Add(invoice.Amount(1000, decimal.RequireFromString("10.00")))
	if at.After(f.priceChange) {
		want = invoice.Amount(2000, decimal.RequireFromString("5.00")).Add(invoice.Amount(1000, decimal.RequireFromString("20.00")))
	}

	var live invoice.Invoice
	f.get("/v1/invoices/upcoming", f.tokens["ws_a"], http.StatusOK, &live)
	if live.ID != invoice.ID("ws_a", start, end) || live.Status != invoice.StatusDraft || !live.Subtotal.Equal(want) || len(live.Lines) != 2 {
		t.Errorf("live upcoming invoice %+v, want a draft of this month with subtotal %s", live, want)
	}
	var empty invoice.Invoice
	f.get("/v1/invoices/upcoming", f.tokens["ws_b"], http.StatusOK, &empty)
	if empty.WorkspaceID != "ws_b" || !empty.Total.IsZero() || len(empty.Lines) != 0 || empty.Status != invoice.StatusDraft {
		t.Errorf("upcoming invoice without usage: %+v, want an empty draft", empty)
	}

	stored := f.runInvoices()["ws_a"]
	var got invoice.Invoice
	f.get("/v1/invoices/upcoming", f.tokens["ws_a"], http.StatusOK, &got)
	if got.Version != stored.Version || !got.Total.Equal(stored.Total) {
		t.Errorf("upcoming after the invoice run: version %d total %s, want the stored draft's %d %s", got.Version, got.Total, stored.Version, stored.Total)
	}
	var admin invoice.Invoice
	f.get("/v1/admin/workspaces/ws_a/invoices/upcoming", adminToken, http.StatusOK, &admin)
	if admin.Version != stored.Version {
		t.Errorf("admin's upcoming invoice of ws_a: version %d, want %d", admin.Version, stored.Version)
	}
}

func TestHealthReadinessAndMetrics(t *testing.T) {
	f := newFixture(t)
	f.get("/healthz", "", http.StatusOK, nil)
	f.get("/readyz", "", http.StatusOK, nil)
	f.get("/v1/usage?start_time=nope", f.tokens["ws_a"], http.StatusBadRequest, nil)
	f.get("/v1/invoices", f.tokens["ws_a"], http.StatusOK, nil)
	f.get("/v1/invoices/inv_x", f.tokens["ws_a"], http.StatusNotFound, nil)
	f.get("/no/such/path", "", http.StatusNotFound, nil)

	resp, err := http.Get(f.hs.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`venna_api_requests_total{code="400",method="GET",route="/v1/usage"} 1`,
		`venna_api_requests_total{code="200",method="GET",route="/v1/invoices"} 1`,
		`venna_api_requests_total{code="404",method="GET",route="/v1/invoices/{id}"} 1`,
		`venna_api_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`venna_api_request_duration_seconds_count{code="200",method="GET",route="/v1/invoices"} 1`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// readyz fails while ClickHouse cannot be reached.
	cfg, _ := testenv.ClickHouse(t)
	conn, err := chdb.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	srv, err := api.New(api.Config{Database: cfg.Database}, conn, f.auth, f.inv, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("readyz with ClickHouse unreachable: %d, want 503", rec.Code)
	}
}

func TestRequestLimits(t *testing.T) {
	f := newFixture(t, func(_ *fixture, c *api.Config, _ *[]api.Option) { c.MaxBodyBytes = 1024 })
	var body apierr.Body
	f.do(http.MethodPost, "/v1/admin/workspaces", adminToken, map[string]string{"name": strings.Repeat("x", 2000)}, http.StatusRequestEntityTooLarge, &body)
	f.get("/v1/usage?start_time=1&models="+strings.Repeat("m", 9000), f.tokens["ws_a"], http.StatusRequestURITooLong, nil)
}

func TestConfigValidation(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cases := []struct {
		name string
		cfg  api.Config
		opts []api.Option
		want string
	}{
		{"no database", api.Config{}, nil, "Database"},
		{"short admin token", api.Config{Database: "d", AdminToken: "short"}, nil, "AdminToken"},
		{"admin token without stores", api.Config{Database: "d", AdminToken: adminToken}, nil, "WithAdmin"},
		{"negative timeout", api.Config{Database: "d", RequestTimeout: -time.Second}, nil, "RequestTimeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := api.New(c.cfg, nil, nil, nil, log, c.opts...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("New: %v, want an error naming %s", err, c.want)
			}
		})
	}
}
