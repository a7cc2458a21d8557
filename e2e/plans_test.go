package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/shopspring/decimal"

	"github.com/venna/metering/aggregate"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/stripesync"
	"github.com/venna/metering/webhook"
)

// planPrices: venna-1 at list prices and a plan with a $20 fee, a $100 commitment and
// graduated output prices in tiers small enough for a test's traffic to cross them.
const planPrices = `currency: USD
prices:
  - {model: venna-1, effective_from: "2026-01-01T00:00:00Z", input: "2.50", cached_input: "1.25", output: "10.00"}
plans:
  - id: e2e
    name: End to end
    versions:
      - effective_from: "2026-01-01T00:00:00Z"
        fee: "20.00"
        commitment: "100.00"
        rates:
          - model: venna-1
            token_class: output
            pricing: graduated
            tiers:
              - {up_to: 300, usd_per_million: "10.00"}
              - {up_to: 800, usd_per_million: "8.00"}
              - {usd_per_million: "6.00"}
`

// A workspace subscribes to a plan in the middle of the month through the admin API, sends
// traffic through the gateway with the OpenAI SDK, and gets an invoice whose every line is
// recomputed here from README's rules and the usage the clients were returned.
func TestPlanEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := newStack(t, ctx, 1, time.Second, planPrices)
	token := s.workspace("ws_plan")
	s.adminPut("ws_plan", "/subscription", map[string]any{"plan_id": "e2e"})
	subscribed := time.Now().UTC().Truncate(time.Hour)
	// The workspace's finance system listens for its finalized invoices.
	hooks := newHookReceiver(t)
	var endpoint struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	s.adminJSON(http.MethodPost, "/v1/admin/webhook_endpoints", map[string]any{"url": hooks.URL, "workspace_id": "ws_plan",
		"enabled_events": []string{webhook.InvoiceFinalized}}, http.StatusCreated, &endpoint)

	client := openai.NewClient(option.WithBaseURL(s.gateways[0]+"/v1"), option.WithAPIKey(token), option.WithMaxRetries(0))
	var input, cached, output int64
	const n = 60
	for i := range n {
		var resp *openai.ChatCompletion
		var err error
		for try := 0; ; try++ {
			resp, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "venna-1",
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(fmt.Sprintf("question %d about plans and tiers", i))}})
			var apiErr *openai.Error
			if i == 0 && try < 100 && errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusUnauthorized {
				time.Sleep(100 * time.Millisecond) // the gateway loads the new key within its refresh
				continue
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		c := resp.Usage.PromptTokensDetails.CachedTokens
		input += resp.Usage.PromptTokens - c
		cached += c
		output += resp.Usage.CompletionTokens
	}
	if output <= 800 {
		t.Fatalf("the clients got %d output tokens; the test needs more than 800 to reach the third tier", output)
	}
	s.waitIngested("ws_plan", n)
	agg, err := aggregate.New(aggregate.Config{Database: s.db}, s.conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agg.Run(ctx); err != nil {
		t.Fatal(err)
	}
	start, end := invoice.Month(time.Now())
	if _, err := s.invoices.Run(ctx, start, end); err != nil {
		t.Fatal(err)
	}

	// README, "Plans and rate cards", computed apart from the invoicer.
	million := decimal.NewFromInt(1_000_000)
	amount := func(tokens int64, price string) decimal.Decimal {
		return decimal.NewFromInt(tokens).Mul(decimal.RequireFromString(price)).Div(million)
	}
	hours := decimal.NewFromInt(int64(end.Sub(subscribed) / time.Hour))
	monthHours := decimal.NewFromInt(int64(end.Sub(start) / time.Hour))
	prorate := func(monthly string) decimal.Decimal {
		return decimal.RequireFromString(monthly).Mul(hours).DivRound(monthHours, 6)
	}
	type want struct {
		kind, class string
		qty         int64
		amount      decimal.Decimal
	}
	wants := []want{{kind: invoice.KindFee, qty: hours.IntPart(), amount: prorate("20")}}
	if input > 0 {
		wants = append(wants, want{invoice.KindUsage, "input", input, amount(input, "2.50")})
	}
	if cached > 0 {
		wants = append(wants, want{invoice.KindUsage, "cached_input", cached, amount(cached, "1.25")})
	}
	tier3 := output - 800
	wants = append(wants, want{invoice.KindUsage, "output/tier:1", 300, amount(300, "10.00")},
		want{invoice.KindUsage, "output/tier:2", 500, amount(500, "8.00")},
		want{invoice.KindUsage, "output/tier:3", tier3, amount(tier3, "6.00")})
	usage := decimal.Zero
	for _, w := range wants[1:] {
		usage = usage.Add(w.amount)
	}
	if short := prorate("100").Sub(usage); short.IsPositive() {
		wants = append(wants, want{kind: invoice.KindCommitment, amount: short})
	}
	subtotal := decimal.Zero
	for _, w := range wants {
		subtotal = subtotal.Add(w.amount)
	}

	var got invoice.Invoice
	getJSON(t, s.apiURL+"/v1/invoices/"+invoice.ID("ws_plan", start, end), token, http.StatusOK, &got)
	if len(got.Lines) != len(wants) {
		t.Fatalf("%d lines, want %d: %+v", len(got.Lines), len(wants), got.Lines)
	}
	for i, w := range wants {
		l := got.Lines[i]
		if l.Kind != w.kind || l.TokenClass != w.class || int64(l.Quantity) != w.qty || !l.Amount.Equal(w.amount) {
			t.Errorf("line %d: %s %s %d = %s, want %s %s %d = %s", i+1, l.Kind, l.TokenClass, l.Quantity, l.Amount, w.kind, w.class, w.qty, w.amount)
		}
	}
	if !got.Subtotal.Equal(subtotal) || !got.Total.Equal(subtotal.Round(2)) {
		t.Errorf("subtotal %s total %s, want %s and %s", got.Subtotal, got.Total, subtotal, subtotal.Round(2))
	}
	if diffs, err := s.invoices.Reconcile(ctx, "ws_plan", got.ID); err != nil || len(diffs) > 0 {
		t.Errorf("reconcile: %v %v", err, diffs)
	}
	var sub struct {
		PlanID string `json:"plan_id"`
	}
	getJSON(t, s.apiURL+"/v1/subscription", token, http.StatusOK, &sub)
	if sub.PlanID != "e2e" {
		t.Errorf("GET /v1/subscription: plan %q", sub.PlanID)
	}

	// Finalized, the same invoice goes to Stripe (stripe-mock behind a recorder): its lines
	// as items in cents adding up to its total, the plan's fee and true-up among them.
	// The month's end is weeks away: an invoicer whose clock is past it finalizes.
	closed, err := invoice.New(invoice.Config{Database: s.db, Now: func() time.Time { return end.Add(time.Hour) }}, s.conn, s.book)
	if err != nil {
		t.Fatal(err)
	}
	final, err := closed.Finalize(ctx, "ws_plan", got.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !final.Total.Equal(got.Total) {
		t.Fatalf("finalized total %s, draft %s", final.Total, got.Total)
	}
	rec := testenv.NewStripeRecorder(t)
	push, err := stripesync.New(stripesync.Config{Database: s.db, APIKey: "sk_test_venna", APIBase: rec.URL, MaxNetworkRetries: -1},
		s.conn, closed, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := push.Run(ctx); err != nil {
		t.Fatal(err)
	}
	var cents int64
	kinds := map[string]int{}
	finalized := 0
	for _, r := range rec.Requests() {
		switch {
		case r.Path == "/v1/invoiceitems" && r.Form.Get("metadata[venna_invoice_id]") == got.ID:
			a, err := strconv.ParseInt(r.Form.Get("amount"), 10, 64)
			if err != nil {
				t.Fatalf("item amount %q", r.Form.Get("amount"))
			}
			cents += a
			kinds[r.Form.Get("metadata[venna_kind]")]++
		case strings.HasSuffix(r.Path, "/finalize"):
			finalized++
		}
	}
	if want := got.Total.Shift(2).IntPart(); cents != want || finalized != 1 || kinds[invoice.KindFee] != 1 ||
		kinds[invoice.KindUsage] != len(got.Lines)-1-kinds[invoice.KindCommitment] {
		t.Errorf("Stripe got items of %d cents (want %d), kinds %v, %d finalize calls", cents, want, kinds, finalized)
	}

	// The aggregate role's webhook job, once: the finalized invoice reaches the endpoint as a
	// signed invoice.finalized event that README's Go snippet verifies, as a receiver would.
	dispatcher, err := webhook.New(webhook.Config{Database: s.db}, s.conn, webhook.Sources{Invoices: closed}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dispatcher.Detect(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := dispatcher.Dispatch(ctx); err != nil {
		t.Fatal(err)
	}
	dispatcher.Wait()
	delivered := hooks.requests()
	if len(delivered) != 1 {
		t.Fatalf("the endpoint got %d requests, want the one invoice.finalized", len(delivered))
	}
	var event struct {
		ID   string `json:"id"`
		Type string `json:"type"`
		Data struct {
			Object invoice.Invoice `json:"object"`
		} `json:"data"`
	}
	if err := json.Unmarshal(delivered[0].body, &event); err != nil {
		t.Fatalf("webhook body: %v: %s", err, delivered[0].body)
	}
	if o := event.Data.Object; event.Type != webhook.InvoiceFinalized || o.ID != got.ID || o.Status != invoice.StatusFinalized ||
		!o.Total.Equal(got.Total) || len(o.Lines) != len(got.Lines) {
		t.Errorf("webhook event %s %s: invoice %s %s total %s with %d lines, want %s finalized total %s with %d lines",
			event.ID, event.Type, o.ID, o.Status, o.Total, len(o.Lines), got.ID, got.Total, len(got.Lines))
	}
	verify := testenv.ReadmeWebhookVerifier(t, "../README.md", "go")
	dir := t.TempDir()
	sig := delivered[0].header.Get(webhook.SignatureHeader)
	at := delivered[0].at.Unix()
	if out := verify(t, testenv.WriteFile(t, dir, "body.json", string(delivered[0].body)), sig, endpoint.Secret, at); out != "ok" {
		t.Errorf("README's snippet on the delivery (%s): %s", sig, out)
	}
	forged := strings.Replace(string(delivered[0].body), `"total":"`+got.Total.String()+`"`, `"total":"0.01"`, 1)
	if forged == string(delivered[0].body) {
		t.Fatalf("the total %s is not in the body as expected: %s", got.Total, delivered[0].body)
	}
	if out := verify(t, testenv.WriteFile(t, dir, "forged.json", forged), sig, endpoint.Secret, at); out == "ok" {
		t.Error("README's snippet accepts a body whose total was changed")
	}
	t.Logf("%d completions, %d output tokens over three tiers; invoice %s: %d lines, total %s, pushed to Stripe as items of kinds %v; webhook %s verified",
		n, output, got.ID, len(got.Lines), got.Total, kinds, event.ID)
}

// hookReceiver is a webhook endpoint that answers 200 and keeps what it got.
type hookReceiver struct {
	*httptest.Server
	mu  sync.Mutex
	got []hookRequest
}

type hookRequest struct {
	header http.Header
	body   []byte
	at     time.Time
}

func newHookReceiver(t *testing.T) *hookReceiver {
	r := &hookReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, hookRequest{req.Header.Clone(), body, time.Now()})
		r.mu.Unlock()
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *hookReceiver) requests() []hookRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hookRequest(nil), r.got...)
}
