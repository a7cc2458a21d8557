package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/venna/metering/api"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/internal/sqlset"
	"github.com/venna/metering/invoice"
)

//go:embed queries.sql
var queriesFile string

// Queries is every statement the venna command itself sends to ClickHouse (queries.sql).
var Queries = sqlset.MustParse("cmd/venna", queriesFile)

var countEventsSQL = Queries.Get("count_events")

func demoCmd() *command {
	var o demoOpts
	var requests uint64
	return &command{
		name:    "demo",
		kind:    kindAdmin,
		summary: "send traffic for two new workspaces, print their usage and invoices",
		about: "Drives a running stack like customers would: creates two workspaces with a key each, sends\n" +
			"completions through the gateway, waits for ingest, rolls up and invoices now, then prints each\n" +
			"workspace's usage and invoice as the REST API returns them, checked against what was sent.",
		example: []string{"venna demo --requests 50 --gateway-url http://gateway:8080 --api-url http://api:8081"},
		groups:  []string{"clickhouse", "prices", "invoices", "log"},
		flags: func(fs *flag.FlagSet) {
			requests = 150
			fs.Var(countValue{&requests, 100000}, "requests", "completions the first workspace sends (the second a third more)")
			// The defaults reach the roles where this environment says they listen.
			fs.StringVar(&o.gatewayURL, "gateway-url", "http://"+dialAddr(envDefault("VENNA_GATEWAY_ADDR")), "gateway base `URL` (default from VENNA_GATEWAY_ADDR)")
			fs.StringVar(&o.apiURL, "api-url", "http://"+dialAddr(envDefault("VENNA_API_ADDR")), "REST API base `URL` (default from VENNA_API_ADDR)")
		},
		forms: []form{{opts: "[--requests N] [--gateway-url URL] [--api-url URL]", flags: []string{"requests", "gateway-url", "api-url"}}},
		run: func(ctx context.Context, env *Env, _ string, _ []string) error {
			o.requests = int(requests)
			if err := env.Config.invoiceConfig().Validate(); err != nil {
				return invalid(err)
			}
			return runDemo(ctx, env, o)
		},
	}
}

type demoOpts struct {
	requests           int
	gatewayURL, apiURL string
}

type demoWorkspace struct {
	ws    apikey.Workspace
	token string
	sent  struct{ ok, prompt, cached, completion, reasoning int64 }
}

// runDemo drives a running stack like a customer would: two workspaces send completions
// through the gateway, then each reads its usage and invoice from the API.
func runDemo(ctx context.Context, env *Env, o demoOpts) error {
	gw, apiURL := strings.TrimSuffix(o.gatewayURL, "/"), strings.TrimSuffix(o.apiURL, "/")
	conn, err := openDB(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	store := apikey.NewStore(conn, env.Config.ClickHouse.Database)
	var wss []*demoWorkspace
	for _, name := range []string{"Acme Robotics", "Globex Research"} {
		w, err := store.CreateWorkspace(ctx, "", name)
		if err != nil {
			return err
		}
		_, token, err := store.IssueKey(ctx, w.ID, "demo")
		if err != nil {
			return err
		}
		wss = append(wss, &demoWorkspace{ws: w, token: token})
		fmt.Fprintf(env.Out, "workspace %s (%s): key %s…\n", w.ID, name, token[:14])
	}
	client := &http.Client{Timeout: 30 * time.Second}
	for _, d := range wss {
		if err := waitForKey(ctx, client, gw, d.token); err != nil {
			return err
		}
	}

	start := time.Now()
	models := []string{"venna-1", "venna-1-mini", "venna-1-reasoning"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []error
	for wi, d := range wss {
		n := o.requests + wi*o.requests/3 // the workspaces differ in volume
		jobs := make(chan int)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range jobs {
					u, err := complete(ctx, client, gw, d.token, models[(i+wi)%len(models)], i)
					mu.Lock()
					if err != nil {
						failures = append(failures, err)
					} else {
						d.sent.ok++
						d.sent.prompt += u.PromptTokens
						d.sent.cached += u.PromptTokensDetails.CachedTokens
						d.sent.completion += u.CompletionTokens
						d.sent.reasoning += u.CompletionTokensDetails.ReasoningTokens
					}
					mu.Unlock()
				}
			}()
		}
		for i := range n {
			jobs <- i
		}
		close(jobs)
	}
	wg.Wait()
	if len(failures) > 0 {
		return fmt.Errorf("%d completions failed, first: %w", len(failures), failures[0])
	}
	total := int64(0)
	for _, d := range wss {
		total += d.sent.ok
	}
	fmt.Fprintf(env.Out, "\nsent %d completions through the gateway in %s\n", total, time.Since(start).Round(time.Millisecond))

	// Wait until ingest has every event in ClickHouse, then roll up and invoice now
	// instead of waiting for the cron schedule.
	ids := make([]string, len(wss))
	for i, d := range wss {
		ids[i] = d.ws.ID
	}
	if err := waitForEvents(ctx, env, ids, total); err != nil {
		return err
	}
	j, err := newJobs(ctx, env, conn)
	if err != nil {
		return err
	}
	if err := errors.Join(j.rollup(ctx), j.invoices(ctx)); err != nil {
		return err
	}
	for _, d := range wss {
		if err := printWorkspace(ctx, env, client, apiURL, d, start); err != nil {
			return err
		}
	}
	return nil
}

func waitForKey(ctx context.Context, client *http.Client, gw, token string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, gw+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gateway %s did not accept the new key within 30s (last: %v)", gw, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

type demoUsage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	PromptTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

func complete(ctx context.Context, client *http.Client, gw, token, model string, i int) (demoUsage, error) {
	msgs := []map[string]string{{"role": "system", "content": "You are a concise assistant for a metering demo. Answer briefly."}}
	for t := 0; t <= i%4; t++ {
		msgs = append(msgs, map[string]string{"role": "user", "content": fmt.Sprintf("Question %d.%d: what is %d times %d?", i, t, i, t+7)})
	}
	body, _ := json.Marshal(map[string]any{"model": model, "messages": msgs})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, gw+"/v1/chat/completions", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return demoUsage{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return demoUsage{}, fmt.Errorf("completion: %s: %s", resp.Status, b)
	}
	var out struct {
		Usage demoUsage `json:"usage"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return demoUsage{}, fmt.Errorf("completion: %w", err)
	}
	return out.Usage, nil
}

func waitForEvents(ctx context.Context, env *Env, workspaces []string, want int64) error {
	conn, err := openDB(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	q := sqlset.Fill(countEventsSQL, "db", env.Config.ClickHouse.Database, "workspaces", "'"+strings.Join(workspaces, "','")+"'")
	deadline := time.Now().Add(120 * time.Second)
	for {
		var n uint64
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			return fmt.Errorf("count ingested events: %w", err)
		}
		if int64(n) == want {
			fmt.Fprintf(env.Out, "ingest: all %d usage events are in ClickHouse\n", n)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ingest: %d of %d events in ClickHouse after 120s", n, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func getJSON(ctx context.Context, client *http.Client, url, token string, v any) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return json.Unmarshal(b, v)
}

func printWorkspace(ctx context.Context, env *Env, client *http.Client, apiURL string, d *demoWorkspace, since time.Time) error {
	var page api.UsagePage
	url := fmt.Sprintf("%s/v1/usage?bucket_width=1h&group_by=model&start_time=%d&limit=2", apiURL, since.Add(-time.Hour).Unix())
	if err := getJSON(ctx, client, url, d.token, &page); err != nil {
		return err
	}
	fmt.Fprintf(env.Out, "\n=== %s (%s) ===\nusage (GET /v1/usage, hourly, by model):\n", d.ws.Name, d.ws.ID)
	tw := tabwriter.NewWriter(env.Out, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "hour (UTC)\tmodel\trequests\tinput (incl. cached)\tcached\toutput (incl. reasoning)\treasoning\t")
	var got struct{ ok, prompt, cached, completion, reasoning int64 }
	for _, b := range page.Data {
		for _, r := range b.Results {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t\n", time.Unix(b.StartTime, 0).UTC().Format("2006-01-02 15:04"), *r.Model,
				r.NumModelRequests, r.InputTokens, r.InputCachedTokens, r.OutputTokens, r.ReasoningTokens)
			got.ok += int64(r.NumModelRequests)
			got.prompt += int64(r.InputTokens)
			got.cached += int64(r.InputCachedTokens)
			got.completion += int64(r.OutputTokens)
			got.reasoning += int64(r.ReasoningTokens)
		}
	}
	tw.Flush()
	check := "matches"
	if got != d.sent {
		check = fmt.Sprintf("DIFFERS from what the gateway returned: %+v", d.sent)
	}
	fmt.Fprintf(env.Out, "totals: %d requests, %d input (%d cached), %d output (%d reasoning) — %s the usage the gateway returned to the client\n",
		got.ok, got.prompt, got.cached, got.completion, got.reasoning, check)

	var list struct {
		Data []invoice.Invoice `json:"data"`
	}
	if err := getJSON(ctx, client, apiURL+"/v1/invoices", d.token, &list); err != nil {
		return err
	}
	for _, h := range list.Data {
		var inv invoice.Invoice
		if err := getJSON(ctx, client, apiURL+"/v1/invoices/"+h.ID, d.token, &inv); err != nil {
			return err
		}
		fmt.Fprintf(env.Out, "\ninvoice %s (GET /v1/invoices/%s) — %s, %s to %s\n", inv.ID, inv.ID, inv.Status,
			inv.PeriodStart.Format("2006-01-02"), inv.PeriodEnd.Format("2006-01-02"))
		tw := tabwriter.NewWriter(env.Out, 2, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "#\tkind\tmodel\tclass\tquantity\tunit price USD\tamount USD\t")
		for _, l := range inv.Lines {
			quantity, price := l.Shown()
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", l.No, l.Kind, l.Model, l.TokenClass, quantity, price, l.Amount.String())
		}
		fmt.Fprintf(tw, "\t\t\t\t\tsubtotal\t%s\t\n", inv.Subtotal.String())
		fmt.Fprintf(tw, "\t\t\t\t\ttotal\t%s %s\t\n", inv.Total.StringFixed(2), inv.Currency)
		tw.Flush()
	}
	return nil
}
