package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/schema"
	"github.com/venna/metering/stripesync"
)

// Stripe from the command line: off without a key (the aggregate role invoices and sends
// Stripe nothing, `stripe sync` is a usage error); with one, `aggregate --once` pushes the
// invoice it finalized, `stripe status` shows it, and a void is mirrored by `stripe sync`.
func TestStripeCommands(t *testing.T) {
	cfg, conn := testenv.ClickHouse(t)
	rec := testenv.NewStripeRecorder(t)
	t.Setenv("VENNA_STRIPE_API_KEY", "")
	base := []string{"--clickhouse-addr", cfg.Addr, "--clickhouse-database", cfg.Database,
		"--prices-file", "../../deploy/prices.yaml", "--log-level", "error"}
	venna := func(args ...string) (int, string, string) {
		var out, errs strings.Builder
		code := runMain(t.Context(), append(args, base...), &out, &errs)
		return code, out.String(), errs.String()
	}
	lastMonth, _ := invoice.Month(time.Now().UTC().AddDate(0, -1, 0))
	var evs []schema.UsageEvent
	for i := range 3 {
		evs = append(evs, schema.UsageEvent{SchemaVersion: 1, EventID: fmt.Sprintf("stripe-cli-%d", i), OccurredAt: lastMonth.Add(time.Duration(i+1) * 24 * time.Hour),
			WorkspaceID: "ws_stripe_cli", APIKeyID: "key_cli", Model: "venna-1", Status: schema.StatusOK, HTTPStatus: 200,
			PromptTokens: 12345, CachedTokens: 678, CompletionTokens: 901, TotalTokens: 13246})
	}
	testenv.InsertEvents(t, conn, cfg.Database, evs)
	id := invoice.ID("ws_stripe_cli", lastMonth, lastMonth.AddDate(0, 1, 0))
	status := func() []stripesync.Status {
		t.Helper()
		code, out, errs := venna("stripe", "status", "--workspace", "ws_stripe_cli")
		var list []stripesync.Status
		if code != exitOK || json.Unmarshal([]byte(out), &list) != nil {
			t.Fatalf("stripe status: exit %d\n%s%s", code, out, errs)
		}
		return list
	}

	// Off: the invoice is finalized, nothing reaches Stripe.
	if code, _, errs := venna("aggregate", "--once", "--aggregate-metrics-addr", "127.0.0.1:0", "--invoice-grace", "1s", "--stripe-api-base", rec.URL); code != exitOK {
		t.Fatalf("aggregate --once without a Stripe key: exit %d: %s", code, errs)
	}
	if code, out, _ := venna("invoice", "show", "--workspace", "ws_stripe_cli", id); code != exitOK || !strings.Contains(out, `"finalized"`) {
		t.Fatalf("invoice not finalized: %s", out)
	}
	if code, _, errs := venna("stripe", "sync", "--stripe-api-base", rec.URL); code != exitUsage || !strings.Contains(errs, "VENNA_STRIPE_API_KEY") {
		t.Errorf("stripe sync without a key: exit %d %q, want a usage error naming VENNA_STRIPE_API_KEY", code, errs)
	}
	if n := len(rec.Requests()); n > 0 || len(status()) > 0 {
		t.Fatalf("Stripe off, yet %d requests reached it and status lists %v", n, status())
	}

	// On: aggregate --once pushes the finalized invoice.
	key := []string{"--stripe-api-key", "sk_test_vennacli", "--stripe-api-base", rec.URL}
	if code, _, errs := venna(append([]string{"aggregate", "--once", "--aggregate-metrics-addr", "127.0.0.1:0", "--invoice-grace", "1s"}, key...)...); code != exitOK {
		t.Fatalf("aggregate --once with a Stripe key: exit %d: %s", code, errs)
	}
	paths := map[string]int{}
	for _, r := range rec.Requests() {
		paths[r.Method+" "+r.Path]++
		if r.Method == http.MethodPost && !strings.HasPrefix(r.IdempotencyKey, "venna:") {
			t.Errorf("%s without a Venna Idempotency-Key", r.Path)
		}
	}
	if paths["POST /v1/customers"] != 1 || paths["POST /v1/invoices"] != 1 || paths["POST /v1/invoiceitems"] < 3 {
		t.Errorf("requests %v, want a customer, an invoice and its items", paths)
	}
	list := status()
	if len(list) != 1 || list[0].InvoiceID != id || list[0].State != stripesync.StateFinalized || !list[0].Done {
		t.Fatalf("status after the push: %+v", list)
	}

	// A void here is mirrored by the next sync; a sync after that has nothing to do.
	if code, _, errs := venna("invoice", "void", "--workspace", "ws_stripe_cli", id); code != exitOK {
		t.Fatalf("void: %s", errs)
	}
	rec.Reset()
	code, out, errs := venna(append([]string{"stripe", "sync"}, key...)...)
	if code != exitOK || !strings.Contains(out, id+"  voided in stripe") {
		t.Fatalf("stripe sync after the void: exit %d\n%s%s", code, out, errs)
	}
	if reqs := rec.Requests(); len(reqs) != 1 || !strings.HasSuffix(reqs[0].Path, "/void") || reqs[0].IdempotencyKey == "" {
		t.Errorf("requests of the void: %+v", reqs)
	}
	if list := status(); len(list) != 1 || list[0].State != stripesync.StateVoided {
		t.Errorf("status after the void: %+v", list)
	}
	rec.Reset()
	if code, out, _ := venna(append([]string{"stripe", "sync"}, key...)...); code != exitOK || out != "" || len(rec.Requests()) > 0 {
		t.Errorf("another sync: exit %d %q, %d requests", code, out, len(rec.Requests()))
	}
}
