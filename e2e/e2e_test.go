// Package e2e runs the whole pipeline on the real Kafka broker and ClickHouse server:
// OpenAI SDK → gateway → Kafka → ingest → ClickHouse → rollup → invoice → API.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/shopspring/decimal"
	"gopkg.in/yaml.v3"

	"github.com/venna/metering/aggregate"
	"github.com/venna/metering/api"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/gateway"
	"github.com/venna/metering/ingest"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/simupstream"
)

// tally is what the clients were told, per workspace and model: the test's ground truth.
type tally struct {
	requests, input, cached, output, reasoning int64
}

func TestEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	chCfg, conn := testenv.ClickHouse(t)
	brokers, topic := testenv.Topic(t, 4)
	db := chCfg.Database

	// Upstream, keys, gateway with the real Kafka producer.
	sim := httptest.NewServer((&simupstream.Server{APIKey: "sim-secret"}).Handler())
	defer sim.Close()
	routes, err := gateway.ParseRoutes([]byte(fmt.Sprintf(`
upstreams:
  - {name: sim, base_url: %s/v1, api_key_env: SIM_KEY}
models:
  - {model: venna-1, upstream: sim, upstream_model: sim-large}
  - {model: venna-1-mini, upstream: sim, upstream_model: sim-small}
  - {model: venna-1-reasoning, upstream: sim, upstream_model: sim-reasoner}
`, sim.URL)), func(string) string { return "sim-secret" })
	if err != nil {
		t.Fatal(err)
	}
	store := apikey.NewStore(conn, db)
	tokens := map[string]string{}
	for _, ws := range []string{"ws_acme", "ws_globex"} {
		if _, err := store.CreateWorkspace(ctx, ws, ws); err != nil {
			t.Fatal(err)
		}
		_, tok, err := store.IssueKey(ctx, ws, "e2e")
		if err != nil {
			t.Fatal(err)
		}
		tokens[ws] = tok
	}
	auth, err := apikey.NewAuthenticator(ctx, store, log)
	if err != nil {
		t.Fatal(err)
	}
	prod, err := gateway.NewProducer(gateway.ProducerConfig{Brokers: brokers, Topic: topic,
		Spool: gateway.SpoolConfig{Dir: t.TempDir()}}, log)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Routes: routes}, auth, prod, log)
	if err != nil {
		t.Fatal(err)
	}
	gwSrv := httptest.NewServer(gw.Handler())
	defer gwSrv.Close()

	// Ingest consumer running in the background.
	cons, err := ingest.New(ingest.Config{Brokers: brokers, Topic: topic, GroupID: topic + "-ingest", Database: db,
		BatchSize: 50, FlushInterval: 200 * time.Millisecond}, conn, log)
	if err != nil {
		t.Fatal(err)
	}
	consCtx, stopCons := context.WithCancel(ctx)
	consDone := make(chan error, 1)
	go func() { consDone <- cons.Run(consCtx) }()

	// Traffic through the official OpenAI Go SDK.
	models := []string{"venna-1", "venna-1-mini", "venna-1-reasoning"}
	perWorkspace := map[string]int{"ws_acme": 60, "ws_globex": 45}
	truth := map[string]map[string]*tally{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for ws, n := range perWorkspace {
		truth[ws] = map[string]*tally{}
		for _, m := range models {
			truth[ws][m] = &tally{}
		}
		client := openai.NewClient(option.WithBaseURL(gwSrv.URL+"/v1"), option.WithAPIKey(tokens[ws]), option.WithMaxRetries(0))
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				model := models[i%len(models)]
				msgs := []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("You are terse.")}
				for j := 0; j <= i%3; j++ {
					msgs = append(msgs, openai.UserMessage(fmt.Sprintf("%s question %d/%d about metering", ws, i, j)))
				}
				resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: model, Messages: msgs})
				if err != nil {
					t.Errorf("%s completion %d: %v", ws, i, err)
					return
				}
				if resp.Object != "chat.completion" || len(resp.Choices) != 1 || resp.Choices[0].Message.Content == "" {
					t.Errorf("%s completion %d: unexpected response %+v", ws, i, resp)
				}
				u := resp.Usage
				mu.Lock()
				defer mu.Unlock()
				tl := truth[ws][model]
				tl.requests++
				tl.input += u.PromptTokens - u.PromptTokensDetails.CachedTokens
				tl.cached += u.PromptTokensDetails.CachedTokens
				tl.output += u.CompletionTokens
				tl.reasoning += u.CompletionTokensDetails.ReasoningTokens
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Every completion lands in ClickHouse exactly once.
	total := 0
	for _, n := range perWorkspace {
		total += n
	}
	waitFor(t, 60*time.Second, func() (bool, string) {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".usage_events").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return int(n) == total, fmt.Sprintf("%d of %d events in ClickHouse", n, total)
	})
	stopCons()
	if err := <-consDone; err != nil {
		t.Fatalf("consumer: %v", err)
	}
	for ws, models := range truth {
		for model, want := range models {
			var got tally
			var req, in, cached, out, reas uint64
			err := conn.QueryRow(ctx, `SELECT count(), toUInt64(sum(prompt_tokens - cached_tokens)), sum(cached_tokens), sum(completion_tokens), sum(reasoning_tokens)
				FROM `+db+`.usage_events WHERE workspace_id = ? AND model = ?`, ws, model).Scan(&req, &in, &cached, &out, &reas)
			if err != nil {
				t.Fatal(err)
			}
			got = tally{int64(req), int64(in), int64(cached), int64(out), int64(reas)}
			if got != *want {
				t.Errorf("%s %s in ClickHouse: %+v, clients were told %+v", ws, model, got, *want)
			}
		}
	}

	// Roll up and invoice the current month.
	agg, err := aggregate.New(aggregate.Config{Database: db}, conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agg.Run(ctx); err != nil {
		t.Fatal(err)
	}
	prices, err := invoice.LoadPriceBook("../deploy/prices.yaml")
	if err != nil {
		t.Fatal(err)
	}
	inv, err := invoice.New(invoice.Config{Database: db}, conn, prices)
	if err != nil {
		t.Fatal(err)
	}
	start, end := invoice.Month(time.Now())
	res, err := inv.Run(ctx, start, end)
	if err != nil || len(res.Failed) > 0 {
		t.Fatalf("invoice run: %v %v", err, res.Failed)
	}
	if len(res.Written) != 2 {
		t.Fatalf("invoice run wrote %d invoices, want 2", len(res.Written))
	}

	// The API, read with each workspace's own key.
	apiSrv, err := api.New(api.Config{Database: db}, conn, auth, inv, log)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(apiSrv.Handler())
	defer hs.Close()
	book := readPriceBook(t, "../deploy/prices.yaml")
	invoiceIDs := map[string]string{}
	for ws, models := range truth {
		want := expectedInvoice(book, models)
		var list struct {
			Data []invoice.Invoice `json:"data"`
		}
		getJSON(t, hs.URL+"/v1/invoices", tokens[ws], http.StatusOK, &list)
		if len(list.Data) != 1 {
			t.Fatalf("%s: %d invoices listed, want 1", ws, len(list.Data))
		}
		var got invoice.Invoice
		getJSON(t, hs.URL+"/v1/invoices/"+list.Data[0].ID, tokens[ws], http.StatusOK, &got)
		invoiceIDs[ws] = got.ID
		if got.WorkspaceID != ws || got.Status != invoice.StatusDraft || got.Currency != "USD" {
			t.Errorf("%s invoice header: %+v", ws, got)
		}
		if !got.Subtotal.Equal(want.subtotal) || !got.Total.Equal(want.total) {
			t.Errorf("%s invoice: subtotal %s total %s, computed from the price book %s and %s", ws, got.Subtotal, got.Total, want.subtotal, want.total)
		}
		if len(got.Lines) != len(want.lines) {
			t.Errorf("%s invoice has %d lines, want %d: %+v", ws, len(got.Lines), len(want.lines), got.Lines)
		}
		for _, l := range got.Lines {
			w, ok := want.lines[l.Model+"/"+l.TokenClass]
			if !ok || w.qty != l.Quantity || !w.amount.Equal(l.Amount) {
				t.Errorf("%s line %s/%s: %d tokens = %s, want %d tokens = %s", ws, l.Model, l.TokenClass, l.Quantity, l.Amount, w.qty, w.amount)
			}
		}
		diffs, err := inv.Reconcile(ctx, ws, got.ID)
		if err != nil || len(diffs) > 0 {
			t.Errorf("%s: reconcile against raw events: %v %v", ws, err, diffs)
		}

		// Usage API totals equal what the clients were told.
		var page api.UsagePage
		getJSON(t, fmt.Sprintf("%s/v1/usage?bucket_width=1d&start_time=%d&group_by=model", hs.URL, time.Now().Add(-time.Hour).Unix()), tokens[ws], http.StatusOK, &page)
		gotUsage := map[string]tally{}
		for _, b := range page.Data {
			for _, r := range b.Results {
				g := gotUsage[*r.Model]
				g.requests += int64(r.NumModelRequests)
				g.input += int64(r.InputTokens - r.InputCachedTokens)
				g.cached += int64(r.InputCachedTokens)
				g.output += int64(r.OutputTokens)
				g.reasoning += int64(r.ReasoningTokens)
				gotUsage[*r.Model] = g
			}
		}
		for model, w := range models {
			if gotUsage[model] != *w {
				t.Errorf("%s %s via /v1/usage: %+v, want %+v", ws, model, gotUsage[model], *w)
			}
		}
	}
	// A key never sees another workspace's invoice: 404, as if it did not exist.
	getJSON(t, hs.URL+"/v1/invoices/"+invoiceIDs["ws_globex"], tokens["ws_acme"], http.StatusNotFound, nil)
	getJSON(t, hs.URL+"/v1/invoices", "vk_bogus_key", http.StatusUnauthorized, nil)

	// A rerun neither duplicates invoices nor changes a number.
	if _, err := inv.Run(ctx, start, end); err != nil {
		t.Fatal(err)
	}
	for ws, id := range invoiceIDs {
		list, err := inv.List(ctx, ws)
		if err != nil || len(list) != 1 || list[0].ID != id {
			t.Errorf("%s after rerun: %v %+v", ws, err, list)
		}
	}
	drain, cancelDrain := context.WithTimeout(ctx, 10*time.Second)
	defer cancelDrain()
	if err := prod.Close(drain); err != nil {
		t.Error(err)
	}
}

type wantLine struct {
	qty    uint64
	amount decimal.Decimal
}

type wantInvoice struct {
	lines           map[string]wantLine
	subtotal, total decimal.Decimal
}

type bookEntry struct {
	Model       string `yaml:"model"`
	Input       string `yaml:"input"`
	CachedInput string `yaml:"cached_input"`
	Output      string `yaml:"output"`
}

// readPriceBook reads the price file on its own, so the expected totals do not share
// code with the invoicer they check.
func readPriceBook(t *testing.T, path string) map[string]bookEntry {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Prices []bookEntry `yaml:"prices"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	out := map[string]bookEntry{}
	for _, p := range f.Prices {
		out[p.Model] = p
	}
	return out
}

func expectedInvoice(book map[string]bookEntry, usage map[string]*tally) wantInvoice {
	w := wantInvoice{lines: map[string]wantLine{}}
	million := decimal.NewFromInt(1_000_000)
	for model, u := range usage {
		p := book[model]
		for _, c := range []struct {
			class string
			qty   int64
			price string
		}{{"input", u.input, p.Input}, {"cached_input", u.cached, p.CachedInput}, {"output", u.output, p.Output}} {
			if c.qty == 0 {
				continue
			}
			amt := decimal.NewFromInt(c.qty).Mul(decimal.RequireFromString(c.price)).Div(million)
			w.lines[model+"/"+c.class] = wantLine{uint64(c.qty), amt}
			w.subtotal = w.subtotal.Add(amt)
		}
	}
	w.total = w.subtotal.Round(2)
	return w
}

func getJSON(t *testing.T, url, token string, wantStatus int, v any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("GET %s: %d %s, want %d", url, resp.StatusCode, b, wantStatus)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v in %s", url, err, b)
		}
	}
}

func waitFor(t *testing.T, limit time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %s: %s", limit, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
