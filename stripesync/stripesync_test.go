package stripesync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
	"github.com/venna/metering/aggregate"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/schema"
)

// book prices three models; ws_disc has a 10 % discount.
const book = `currency: USD
prices:
  - {model: m-big, effective_from: "2026-01-01T00:00:00Z", input: "2.50", cached_input: "1.25", output: "10.00"}
  - {model: m-small, effective_from: "2026-01-01T00:00:00Z", input: "0.15", cached_input: "0.075", output: "0.60"}
  - {model: m-odd, effective_from: "2026-01-01T00:00:00Z", input: "0.33333", cached_input: "0.11111", output: "1.77777"}
overrides:
  ws_disc:
    discounts:
      - {effective_from: "2026-01-01T00:00:00Z", percent: "10"}
`

var (
	jan = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	feb = jan.AddDate(0, 1, 0)
)

// fixture is one test's database with finalized invoices: ws_disc (usage, a discount and
// a prepaid credit) for January and February, ws_plain for January.
type fixture struct {
	t    *testing.T
	db   string
	conn driver.Conn
	iv   *invoice.Invoicer
	ids  []string // the invoices, in the order they are pushed (period, workspace)
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	cfg, conn := testenv.ClickHouse(t)
	pb, err := invoice.ParsePriceBook([]byte(book))
	if err != nil {
		t.Fatal(err)
	}
	iv, err := invoice.New(invoice.Config{Database: cfg.Database, Grace: time.Second}, conn, pb)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, db: cfg.Database, conn: conn, iv: iv}
	var evs []schema.UsageEvent
	n := 0
	add := func(ws, model string, at time.Time, prompt, cached, completion int64) {
		n++
		evs = append(evs, schema.UsageEvent{SchemaVersion: 1, EventID: fmt.Sprintf("ev-%d", n), OccurredAt: at,
			WorkspaceID: ws, APIKeyID: "key_" + ws, Model: model, Status: schema.StatusOK, HTTPStatus: 200,
			PromptTokens: prompt, CachedTokens: cached, CompletionTokens: completion, TotalTokens: prompt + completion})
	}
	// Amounts with many decimals, several lines rounding to less than a cent each.
	for _, m := range []time.Time{jan, feb} {
		add("ws_disc", "m-big", m.Add(30*time.Hour), 123457, 2345, 9876)
		add("ws_disc", "m-odd", m.Add(50*time.Hour), 3001, 1001, 2777)
		add("ws_disc", "m-small", m.Add(70*time.Hour), 4999, 333, 1234)
	}
	add("ws_plain", "m-odd", jan.Add(40*time.Hour), 7777, 5, 333)
	add("ws_plain", "m-small", jan.Add(41*time.Hour), 29, 3, 17)
	testenv.InsertEvents(t, conn, cfg.Database, evs)
	agg, err := aggregate.New(aggregate.Config{Database: cfg.Database}, conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agg.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := iv.AddGrant(t.Context(), invoice.Grant{WorkspaceID: "ws_disc", AmountUSD: d("0.123457"), EffectiveFrom: jan}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []time.Time{jan, feb} {
		res, err := iv.Run(t.Context(), m, m.AddDate(0, 1, 0))
		if err != nil || len(res.Failed) > 0 {
			t.Fatalf("invoice run %s: %v %v", m.Format("2006-01"), err, res.Failed)
		}
		for _, inv := range res.Written {
			if inv.Status != invoice.StatusFinalized {
				t.Fatalf("%s is %s", inv.ID, inv.Status)
			}
		}
	}
	f.ids = []string{f.id("ws_disc", jan), f.id("ws_plain", jan), f.id("ws_disc", feb)}
	return f
}

func (f *fixture) id(ws string, m time.Time) string { return invoice.ID(ws, m, m.AddDate(0, 1, 0)) }

func (f *fixture) invoice(id string) *invoice.Invoice {
	f.t.Helper()
	ws := "ws_disc"
	if id == f.id("ws_plain", jan) {
		ws = "ws_plain"
	}
	inv, err := f.iv.Get(f.t.Context(), ws, id)
	if err != nil {
		f.t.Fatal(err)
	}
	return inv
}

// syncer pushes through the given transport to the recorder in front of stripe-mock,
// without stripe-go's own retries, so that every request the test sees is one it caused.
func (f *fixture) syncer(base string, rt http.RoundTripper) *Syncer {
	f.t.Helper()
	s, err := New(Config{Database: f.db, APIKey: "sk_test_venna", APIBase: base, HTTPClient: &http.Client{Transport: rt},
		MaxNetworkRetries: -1}, f.conn, f.iv, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func (f *fixture) status(id string) Status {
	f.t.Helper()
	list, err := NewStore(f.conn, f.db).Statuses(f.t.Context(), "")
	if err != nil {
		f.t.Fatal(err)
	}
	for _, st := range list {
		if st.InvoiceID == id {
			return st
		}
	}
	return Status{State: StateNotPushed}
}

// writes are the recorded requests that change something in Stripe.
func writes(reqs []testenv.StripeRequest) []testenv.StripeRequest {
	var out []testenv.StripeRequest
	for _, r := range reqs {
		if r.Method != http.MethodGet {
			out = append(out, r)
		}
	}
	return out
}

// expectedKeys are the Idempotency-Keys a complete push of the fixture's invoices sends.
func (f *fixture) expectedKeys() []string {
	keys := []string{customerKey("ws_disc"), customerKey("ws_plain")}
	for _, id := range f.ids {
		inv := f.invoice(id)
		st := &Status{InvoiceID: id, InvoiceVersion: inv.Version}
		p, err := PlanFor(inv)
		if err != nil {
			f.t.Fatal(err)
		}
		keys = append(keys, key(st, "invoice"), key(st, "finalize"))
		for _, it := range p.Items {
			keys = append(keys, key(st, it.Key))
		}
	}
	sort.Strings(keys)
	return keys
}

// checkComplete holds what Stripe was sent for the fixture's invoices: one customer per
// workspace, per invoice one Stripe invoice with its metadata, items adding up to the
// Venna total exactly, one finalize; every write with a Venna Idempotency-Key, the same
// key always with the same body.
func (f *fixture) checkComplete(reqs []testenv.StripeRequest) {
	t := f.t
	t.Helper()
	byKey := map[string]testenv.StripeRequest{}
	customers := map[string]int{}
	invoices := map[string]int{}
	finalized := map[string]int{}
	items := map[string]int64{}
	for _, r := range writes(reqs) {
		if r.Status != http.StatusOK {
			t.Errorf("%s %s (%s): stripe-mock answered %d", r.Method, r.Path, r.IdempotencyKey, r.Status)
		}
		if !strings.HasPrefix(r.IdempotencyKey, "venna:") {
			t.Errorf("%s %s: Idempotency-Key %q, want a venna: key", r.Method, r.Path, r.IdempotencyKey)
		}
		if prev, ok := byKey[r.IdempotencyKey]; ok && (prev.Path != r.Path || prev.Form.Encode() != r.Form.Encode()) {
			t.Errorf("key %s sent with two different requests:\n%s %s\n%s %s", r.IdempotencyKey, prev.Path, prev.Form.Encode(), r.Path, r.Form.Encode())
		}
		byKey[r.IdempotencyKey] = r
	}
	for k, r := range byKey { // each step counted once, however often it was sent
		switch {
		case r.Path == "/v1/customers":
			customers[r.Form.Get("metadata[venna_workspace_id]")]++
			if k != customerKey(r.Form.Get("metadata[venna_workspace_id]")) {
				t.Errorf("customer key %s", k)
			}
		case r.Path == "/v1/invoices":
			invoices[r.Form.Get("metadata[venna_invoice_id]")]++
			for field, want := range map[string]string{"collection_method": SendInvoice, "days_until_due": "30",
				"pending_invoice_items_behavior": "exclude", "currency": "usd", "auto_advance": "false"} {
				if got := r.Form.Get(field); got != want {
					t.Errorf("invoice %s: %s=%q, want %q", k, field, got, want)
				}
			}
		case r.Path == "/v1/invoiceitems":
			id := r.Form.Get("metadata[venna_invoice_id]")
			amount, err := strconv.ParseInt(r.Form.Get("amount"), 10, 64)
			if err != nil || r.Form.Get("invoice") == "" || r.Form.Get("customer") == "" || r.Form.Get("currency") != "usd" {
				t.Errorf("item %s: %v", k, r.Form)
			}
			items[id] += amount
		case strings.HasSuffix(r.Path, "/finalize"):
			finalized[strings.Split(k, ":")[1]]++
		default:
			t.Errorf("unexpected %s %s", r.Method, r.Path)
		}
	}
	if customers["ws_disc"] != 1 || customers["ws_plain"] != 1 || len(customers) != 2 {
		t.Errorf("customers created %v, want one per workspace", customers)
	}
	for _, id := range f.ids {
		inv := f.invoice(id)
		cents := inv.Total.Shift(2).IntPart()
		if invoices[id] != 1 || finalized[id] != 1 {
			t.Errorf("%s: %d Stripe invoices, %d finalized, want 1 and 1", id, invoices[id], finalized[id])
		}
		if items[id] != cents || !decimal.New(items[id], -2).Equal(inv.Total) {
			t.Errorf("%s: items add up to %d cents, Venna total %s", id, items[id], inv.Total)
		}
		st := f.status(id)
		if st.State != StateFinalized || !st.Done || st.Amount != cents || st.ItemsDone != st.ItemsTotal || st.InvoiceVersion != inv.Version || st.Attempts != 0 {
			t.Errorf("%s: status %+v", id, st)
		}
	}
	var got []string
	for k := range byKey {
		got = append(got, k)
	}
	sort.Strings(got)
	if want := f.expectedKeys(); !slices.Equal(got, want) {
		t.Errorf("keys sent:\n%v\nwant:\n%v", got, want)
	}
}

// Finalized invoices reach Stripe once: a customer per workspace, the items adding up to
// each invoice's total to the cent, discounts and credits as negative items, a finalize
// per invoice; a second run sends nothing.
func TestStripePush(t *testing.T) {
	f := newFixture(t)
	rec := testenv.NewStripeRecorder(t)
	s := f.syncer(rec.URL, http.DefaultTransport)
	res, err := s.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Pushed, f.ids) {
		t.Errorf("pushed %v, want %v", res.Pushed, f.ids)
	}
	f.checkComplete(rec.Requests())

	// What the items say, for ws_disc's January: every line, negative ones included.
	inv := f.invoice(f.ids[0])
	var kinds []string
	rounding := 0
	for _, r := range rec.Requests() {
		if r.Path == "/v1/invoiceitems" && r.Form.Get("metadata[venna_invoice_id]") == inv.ID {
			kinds = append(kinds, r.Form.Get("metadata[venna_kind]"))
			amount, _ := strconv.ParseInt(r.Form.Get("amount"), 10, 64)
			switch r.Form.Get("metadata[venna_kind]") {
			case invoice.KindDiscount, invoice.KindCredit:
				if amount >= 0 {
					t.Errorf("%s item of %d cents, want negative", r.Form.Get("metadata[venna_kind]"), amount)
				}
			case invoice.KindUsage:
				if !strings.Contains(r.Form.Get("description"), r.Form.Get("metadata[venna_model]")) || r.Form.Get("metadata[venna_quantity]") == "" {
					t.Errorf("usage item without model or quantity: %v", r.Form)
				}
			case "rounding":
				rounding++
			}
		}
	}
	if len(kinds) < len(inv.Lines) || !slices.Contains(kinds, invoice.KindDiscount) || !slices.Contains(kinds, invoice.KindCredit) {
		t.Errorf("items of %s: %v; lines: %d", inv.ID, kinds, len(inv.Lines))
	}
	var sum int64
	for _, l := range inv.Lines {
		units, _ := MinorUnits(l.Amount, "usd")
		sum += units
	}
	if want := sum != inv.Total.Shift(2).IntPart(); want != (rounding == 1) {
		t.Errorf("rounding items %d; lines rounded one by one sum to %d cents, total %s", rounding, sum, inv.Total)
	}

	rec.Reset()
	if res, err := s.Run(t.Context()); err != nil || len(res.Pushed)+len(res.Failed)+len(res.Skipped) > 0 || len(rec.Requests()) > 0 {
		t.Errorf("second run: %+v %v, %d requests", res, err, len(rec.Requests()))
	}
}

// crashAfter is a transport that lets n requests through to Stripe, then cancels the run
// as the n-th returns, as if the process died right after Stripe did the step and before
// Venna recorded it.
type crashAfter struct {
	n      int
	cancel context.CancelFunc
	mu     sync.Mutex
	seen   int
}

func (c *crashAfter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen++; c.seen == c.n {
		if err == nil {
			resp.Body.Close()
		}
		c.cancel()
		return nil, context.Canceled
	}
	return resp, err
}

// A push that crashes after every other Stripe request resumes each time where it
// stopped: the step under way at the crash is sent again with the same key and body, no
// step already recorded is sent again, and the end result is exactly that of a push
// without crashes.
func TestStripeResumeAfterCrash(t *testing.T) {
	f := newFixture(t)
	rec := testenv.NewStripeRecorder(t)
	var sent []string // keys sent before the current run
	crashes := 0
	for run := 1; ; run++ {
		if run > 60 {
			t.Fatal("the push never completed")
		}
		ctx, cancel := context.WithCancel(t.Context())
		before := len(rec.Requests())
		_, err := f.syncer(rec.URL, &crashAfter{n: 2, cancel: cancel}).Run(ctx)
		cancel()
		var keys []string
		for _, r := range writes(rec.Requests()[before:]) {
			keys = append(keys, r.IdempotencyKey)
		}
		if err == nil {
			if len(keys) > 1 {
				t.Errorf("run %d completed with %d requests, want at most one (the last crashed step)", run, len(keys))
			}
			break
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("run %d: %v", run, err)
		}
		crashes++
		// Only the step the last run crashed in may come again, and only first.
		for i, k := range keys {
			if slices.Contains(sent, k) && (i > 0 || k != sent[len(sent)-1]) {
				t.Errorf("run %d resent %s, a step recorded as done (keys this run: %v)", run, k, keys)
			}
		}
		sent = append(sent, keys...)
	}
	if crashes < 10 {
		t.Errorf("only %d crashes: the test does not crash in every step", crashes)
	}
	f.checkComplete(rec.Requests())
	// Every crashed step was sent twice with one key; nothing else was.
	count := map[string]int{}
	for _, r := range writes(rec.Requests()) {
		count[r.IdempotencyKey]++
	}
	twice := 0
	for k, n := range count {
		switch {
		case n == 2:
			twice++
		case n != 1:
			t.Errorf("%s sent %d times", k, n)
		}
	}
	if twice != crashes {
		t.Errorf("%d steps sent twice, want one per crash (%d)", twice, crashes)
	}
}

// failing answers every request itself: Stripe unreachable (err) or refusing (status).
type failing struct {
	status int
	only   string // fail only requests whose body contains this; others go through
	inner  http.RoundTripper
}

func (f failing) RoundTrip(r *http.Request) (*http.Response, error) {
	if f.only != "" {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		if !strings.Contains(string(body), f.only) {
			return f.inner.RoundTrip(r)
		}
	}
	if f.status == 0 {
		return nil, errors.New("dial tcp: connection refused")
	}
	body := `{"error":{"type":"invalid_request_error","message":"refused by the test"}}`
	return &http.Response{StatusCode: f.status, Body: io.NopCloser(strings.NewReader(body)), Header: http.Header{"Content-Type": {"application/json"}}, Request: r}, nil
}

// A Stripe outage fails the run at the first invoice and leaves the others for later;
// the failed invoice waits out its backoff, then the push completes. A refused invoice
// does not hold up the others.
func TestStripeOutageBackoff(t *testing.T) {
	f := newFixture(t)
	rec := testenv.NewStripeRecorder(t)
	now := time.Now().UTC()
	down := f.syncer(rec.URL, failing{})
	down.now = func() time.Time { return now }
	res, err := down.Run(t.Context())
	if err == nil || len(res.Failed) != 1 || res.Failed[f.ids[0]] == nil {
		t.Fatalf("run in an outage: %+v %v, want the first invoice failed and the run stopped", res, err)
	}
	st := f.status(f.ids[0])
	if st.Attempts != 1 || !strings.Contains(st.LastError, "connection refused") || !st.NextAttemptAt.Equal(now.Add(time.Minute).Truncate(time.Second)) || st.Done {
		t.Errorf("status after the failure: %+v", st)
	}
	if st := f.status(f.ids[1]); st.State != StateNotPushed {
		t.Errorf("%s was tried in the outage: %+v", f.ids[1], st)
	}

	// Within the backoff the failed invoice is not tried; a refusal of ws_plain's
	// customer fails that invoice alone.
	up := f.syncer(rec.URL, failing{status: http.StatusBadRequest, only: "ws_plain", inner: http.DefaultTransport})
	up.now = func() time.Time { return now.Add(30 * time.Second) }
	res, err = up.Run(t.Context())
	if err == nil || !slices.Equal(res.Deferred, f.ids[:1]) || res.Failed[f.ids[1]] == nil || !slices.Equal(res.Pushed, f.ids[2:]) {
		t.Fatalf("run within the backoff: %+v %v", res, err)
	}
	if st := f.status(f.ids[1]); st.Attempts != 1 || !strings.Contains(st.LastError, "refused by the test") {
		t.Errorf("refused invoice: %+v", st)
	}

	// After the backoff, with Stripe back, everything is pushed exactly once.
	ok := f.syncer(rec.URL, http.DefaultTransport)
	ok.now = func() time.Time { return now.Add(3 * time.Minute) }
	if res, err := ok.Run(t.Context()); err != nil || len(res.Pushed) != 2 {
		t.Fatalf("run after the backoff: %+v %v", res, err)
	}
	f.checkComplete(rec.Requests())
}

// A Venna invoice voided after it was pushed is voided in Stripe, once; one voided while
// its Stripe invoice was still a draft has the draft deleted; one voided before anything
// was pushed sends nothing.
func TestStripeVoidMirrored(t *testing.T) {
	f := newFixture(t)
	rec := testenv.NewStripeRecorder(t)
	ctx := t.Context()
	// Push ws_disc's January completely, and ws_plain's January up to its draft.
	sctx, stop := context.WithCancel(ctx)
	f.syncer(rec.URL, &stopAt{path: "/v1/invoiceitems", naming: f.ids[1], cancel: stop}).Run(sctx)
	stop()
	if st := f.status(f.ids[0]); st.State != StateFinalized {
		t.Fatalf("ws_disc's invoice: %+v, want finalized", st)
	}
	if st := f.status(f.ids[1]); st.State != StateInvoiceCreated {
		t.Fatalf("ws_plain's invoice: %+v, want a Stripe draft", st)
	}
	pushed := f.status(f.ids[0])
	for _, c := range []struct{ ws, id string }{{"ws_disc", f.ids[0]}, {"ws_plain", f.ids[1]}, {"ws_disc", f.ids[2]}} {
		if _, err := f.iv.Void(ctx, c.ws, c.id); err != nil {
			t.Fatal(err)
		}
	}
	rec.Reset()
	res, err := f.syncer(rec.URL, http.DefaultTransport).Run(ctx)
	if err != nil || len(res.Voided) != 2 || !slices.Equal(res.Skipped, f.ids[2:]) {
		t.Fatalf("run after the voids: %+v %v", res, err)
	}
	reqs := writes(rec.Requests())
	if len(reqs) != 2 {
		t.Fatalf("%d writes, want a void and a delete: %+v", len(reqs), reqs)
	}
	for _, r := range reqs {
		switch {
		case r.Method == http.MethodPost && r.Path == "/v1/invoices/"+pushed.StripeInvoice+"/void":
			if r.IdempotencyKey != key(&pushed, "void") {
				t.Errorf("void key %s, want %s", r.IdempotencyKey, key(&pushed, "void"))
			}
		case r.Method == http.MethodDelete && strings.HasPrefix(r.Path, "/v1/invoices/"):
			if !strings.HasPrefix(r.IdempotencyKey, "venna:"+f.ids[1]+":") {
				t.Errorf("delete key %s", r.IdempotencyKey)
			}
		default:
			t.Errorf("unexpected %s %s", r.Method, r.Path)
		}
	}
	for id, want := range map[string]string{f.ids[0]: StateVoided, f.ids[1]: StateDeleted, f.ids[2]: StateSkipped} {
		if st := f.status(id); st.State != want || !st.Done {
			t.Errorf("%s: %+v, want %s", id, st, want)
		}
	}
	rec.Reset()
	if res, err := f.syncer(rec.URL, http.DefaultTransport).Run(ctx); err != nil || len(res.Voided) > 0 || len(rec.Requests()) > 0 {
		t.Errorf("another run: %+v %v, %d requests", res, err, len(rec.Requests()))
	}
}

// stopAt cancels the run instead of sending a request to path whose body names naming.
type stopAt struct {
	path, naming string
	cancel       context.CancelFunc
}

func (s *stopAt) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == s.path && r.Body != nil {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		if strings.Contains(string(body), s.naming) {
			s.cancel()
			return nil, context.Canceled
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}
