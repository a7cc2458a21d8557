package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/schema"
	"github.com/venna/metering/webhook"
)

// Webhooks from the CLI, delivered by the aggregate role: an endpoint registered with
// `webhook add` receives, from `aggregate --once`, the finalized invoice of a closed month
// and a credit grant, signed with the secret add printed; `webhook deliveries` shows the
// attempts, `webhook replay` sends an event again, `webhook rotate` changes the secret the
// next delivery is signed with, and a disabled endpoint gets nothing.
func TestWebhookCommands(t *testing.T) {
	cfg, conn := testenv.ClickHouse(t)
	base := []string{"--clickhouse-addr", cfg.Addr, "--clickhouse-database", cfg.Database, "--log-level", "error"}
	role := []string{"--prices-file", "../../deploy/prices.yaml", "--invoice-grace", "1s", "--aggregate-metrics-addr", "127.0.0.1:0",
		"--webhook-timeout", "5s"}
	venna := func(args ...string) (string, error) {
		t.Helper()
		var out strings.Builder
		err := run(t.Context(), append(args, base...), &out)
		return out.String(), err
	}
	var mu sync.Mutex
	type request struct {
		body []byte
		sig  string
		ev   webhook.Event
	}
	var got []request
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var ev webhook.Event
		json.Unmarshal(b, &ev)
		mu.Lock()
		got = append(got, request{b, r.Header.Get(webhook.SignatureHeader), ev})
		mu.Unlock()
	}))
	t.Cleanup(receiver.Close)
	requests := func() []request {
		mu.Lock()
		defer mu.Unlock()
		return append([]request(nil), got...)
	}

	out, err := venna("webhook", "add", "--workspace", "ws_cli", "--url", receiver.URL+"/venna", "--events", "invoice.finalized,credit_grant.created",
		"--description", "ledger")
	secret := regexp.MustCompile(`secret \(shown once, store it now\): (whsec_[0-9a-f]{64})`).FindStringSubmatch(out)
	if err != nil || secret == nil {
		t.Fatalf("webhook add: %v\n%s", err, out)
	}
	var ep webhook.Endpoint
	if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "secret (")]), &ep); err != nil || ep.WorkspaceID != "ws_cli" || !ep.Enabled {
		t.Fatalf("webhook add printed %q: %v", out, err)
	}
	out, err = venna("webhook", "list", "--workspace", "ws_cli")
	if err != nil || !strings.Contains(out, ep.ID) || strings.Contains(out, "whsec_") {
		t.Fatalf("webhook list: %v\n%s", err, out)
	}

	lastMonth, _ := invoice.Month(time.Now().UTC().AddDate(0, -1, 0))
	testenv.InsertEvents(t, conn, cfg.Database, []schema.UsageEvent{{SchemaVersion: 1, EventID: "wh-cli-1", OccurredAt: lastMonth.Add(30 * time.Hour),
		WorkspaceID: "ws_cli", APIKeyID: "key_cli", Model: "venna-1", Status: schema.StatusOK, HTTPStatus: 200,
		PromptTokens: 1000, CompletionTokens: 500, TotalTokens: 1500}})
	if out, err := venna("credit", "grant", "--workspace", "ws_cli", "--amount-usd", "5", "--prices-file", "../../deploy/prices.yaml"); err != nil {
		t.Fatalf("credit grant: %v\n%s", err, out)
	}
	if _, err := venna(append([]string{"aggregate", "--once"}, role...)...); err != nil {
		t.Fatalf("aggregate --once: %v", err)
	}
	rs := requests()
	types := map[string]webhook.Event{}
	bodies := map[string][]byte{}
	for _, r := range rs {
		if err := webhook.Verify(r.body, r.sig, secret[1], webhook.DefaultTolerance, time.Now()); err != nil {
			t.Errorf("%s: %v", r.ev.Type, err)
		}
		types[r.ev.Type], bodies[r.ev.Type] = r.ev, r.body
	}
	inv := invoice.ID("ws_cli", lastMonth, lastMonth.AddDate(0, 1, 0))
	if len(rs) != 2 || types[webhook.InvoiceFinalized].ID != webhook.EventID(webhook.InvoiceFinalized, inv) || types[webhook.GrantCreated].ID == "" {
		t.Fatalf("received %d requests: %v; want the finalized invoice %s and the grant", len(rs), types, inv)
	}

	out, err = venna("webhook", "deliveries", "--endpoint", ep.ID)
	var ds []webhook.Delivery
	if err != nil || json.Unmarshal([]byte(out), &ds) != nil || len(ds) != 2 {
		t.Fatalf("webhook deliveries: %v\n%s", err, out)
	}
	for _, d := range ds {
		if d.Status != webhook.StatusSucceeded || len(d.Attempts) != 1 || d.Attempts[0].StatusCode != 200 {
			t.Errorf("delivery %+v", d)
		}
	}
	out, err = venna("webhook", "events", "--workspace", "ws_cli", "--type", webhook.InvoiceFinalized)
	if err != nil || !strings.Contains(out, types[webhook.InvoiceFinalized].ID) || strings.Contains(out, webhook.GrantCreated) {
		t.Fatalf("webhook events: %v\n%s", err, out)
	}

	out, err = venna("webhook", "rotate", "--overlap", "0s", ep.ID)
	rotated := regexp.MustCompile(`new secret \(shown once, store it now\): (whsec_[0-9a-f]{64})`).FindStringSubmatch(out)
	if err != nil || rotated == nil || rotated[1] == secret[1] {
		t.Fatalf("webhook rotate: %v\n%s", err, out)
	}
	evID := types[webhook.InvoiceFinalized].ID
	if out, err := venna("webhook", "replay", "--endpoint", ep.ID, evID); err != nil || !strings.Contains(out, "pending") {
		t.Fatalf("webhook replay: %v\n%s", err, out)
	}
	if _, err := venna(append([]string{"aggregate", "--once"}, role...)...); err != nil {
		t.Fatalf("aggregate --once: %v", err)
	}
	rs = requests()
	if len(rs) != 3 || rs[2].ev.ID != evID {
		t.Fatalf("after the replay: %d requests, last %s", len(rs), rs[len(rs)-1].ev.ID)
	}
	if err := webhook.Verify(rs[2].body, rs[2].sig, rotated[1], webhook.DefaultTolerance, time.Now()); err != nil {
		t.Errorf("the replay is not signed with the rotated secret: %v", err)
	}
	if webhook.Verify(rs[2].body, rs[2].sig, secret[1], webhook.DefaultTolerance, time.Now()) == nil {
		t.Error("the replay is still signed with the retired secret")
	}
	if string(rs[2].body) != string(bodies[webhook.InvoiceFinalized]) {
		t.Errorf("the replay's body differs from the first delivery's:\n%s\n%s", rs[2].body, bodies[webhook.InvoiceFinalized])
	}

	if out, err := venna("webhook", "disable", ep.ID); err != nil || !strings.Contains(out, `"enabled": false`) {
		t.Fatalf("webhook disable: %v\n%s", err, out)
	}
	if out, err := venna("webhook", "replay", "--endpoint", ep.ID, evID); err == nil {
		t.Errorf("replay to a disabled endpoint: %s", out)
	}
	if _, err := venna("webhook", "replay", "--endpoint", "we_nope", evID); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("replay to an unknown endpoint: %v", err)
	}
	if _, err := venna("webhook", "enable", "we_nope"); err == nil {
		t.Error("enabled an unknown endpoint")
	}
}
