package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/venna/metering/aggregate"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/schema"
)

// The invoice lifecycle from the CLI: a closed month is invoiced and finalized by
// `aggregate --once`, exported, voided, and a void invoice cannot be finalized again.
func TestInvoiceCommands(t *testing.T) {
	cfg, conn := testenv.ClickHouse(t)
	base := []string{"--clickhouse-addr", cfg.Addr, "--clickhouse-database", cfg.Database,
		"--prices-file", "../../deploy/prices.yaml", "--log-level", "error", "--invoice-grace", "1s"}
	venna := func(args ...string) (string, error) {
		var out strings.Builder
		err := run(t.Context(), append(args, base...), &out)
		return out.String(), err
	}
	lastMonth, _ := invoice.Month(time.Now().UTC().AddDate(0, -1, 0))
	var evs []schema.UsageEvent
	for i := range 4 {
		evs = append(evs, schema.UsageEvent{SchemaVersion: 1, EventID: fmt.Sprintf("cli-%d", i), OccurredAt: lastMonth.Add(time.Duration(i+1) * 24 * time.Hour),
			WorkspaceID: "ws_cli", APIKeyID: "key_cli", Model: "venna-1", Status: schema.StatusOK, HTTPStatus: 200,
			PromptTokens: 1000, CachedTokens: 200, CompletionTokens: 500, TotalTokens: 1500})
	}
	testenv.InsertEvents(t, conn, cfg.Database, evs)
	if _, err := venna("aggregate", "--once", "--aggregate-metrics-addr", "127.0.0.1:0"); err != nil {
		t.Fatalf("aggregate --once: %v", err)
	}
	id := invoice.ID("ws_cli", lastMonth, lastMonth.AddDate(0, 1, 0))
	out, err := venna("invoice", "export", "--workspace", "ws_cli", "--format", "csv", id)
	if err != nil || !strings.Contains(out, "venna-1") || !strings.Contains(out, "3200") {
		// input = 4 × (1000 − 200) = 3200 tokens
		t.Fatalf("export csv: %v\n%s", err, out)
	}
	out, err = venna("invoice", "void", "--workspace", "ws_cli", id)
	if err != nil || !strings.Contains(out, "void") {
		t.Fatalf("void: %v %s", err, out)
	}
	if _, err := venna("invoice", "finalize", "--workspace", "ws_cli", id); err == nil {
		t.Error("a void invoice was finalized again")
	}
	if _, err := venna("invoice", "void", "--workspace", "ws_other", id); err == nil {
		t.Error("another workspace voided the invoice")
	}
	if _, err := venna("invoice", "export", "--workspace", "ws_cli", "--format", "pdf", id); err == nil {
		t.Error("an unknown export format was accepted")
	}
}

// `venna invoice run` shows how far it has got on a terminal ("invoiced 2 of 2
// workspaces"), and writes nothing but its results when stderr is not a terminal.
func TestInvoiceRunProgress(t *testing.T) {
	cfg, conn := testenv.ClickHouse(t)
	lastMonth, _ := invoice.Month(time.Now().UTC().AddDate(0, -1, 0))
	var evs []schema.UsageEvent
	for i, ws := range []string{"ws_progress_a", "ws_progress_b"} {
		evs = append(evs, schema.UsageEvent{SchemaVersion: 1, EventID: fmt.Sprintf("progress-%d", i), OccurredAt: lastMonth.Add(36 * time.Hour),
			WorkspaceID: ws, APIKeyID: "key_progress", Model: "venna-1", Status: schema.StatusOK, HTTPStatus: 200,
			PromptTokens: 1000, CompletionTokens: 500, TotalTokens: 1500})
	}
	testenv.InsertEvents(t, conn, cfg.Database, evs)
	agg, err := aggregate.New(aggregate.Config{Database: cfg.Database}, conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agg.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	// A long grace keeps the invoices drafts, so that every run rewrites both.
	args := []string{"invoice", "run", "--period", lastMonth.Format("2006-01"), "--clickhouse-addr", cfg.Addr, "--clickhouse-database", cfg.Database,
		"--prices-file", "../../deploy/prices.yaml", "--log-level", "error", "--invoice-grace", "2000h"}
	cases := []struct {
		name     string
		terminal bool
		stderr   string // "" : nothing at all
	}{
		{"terminal", true, "\rinvoiced 2 of 2 workspaces"},
		{"not a terminal", false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errs strings.Builder
			if err := runWith(t.Context(), args, streams{Out: &out, Err: &errs, Terminal: c.terminal}); err != nil {
				t.Fatalf("invoice run: %v\n%s", err, errs.String())
			}
			if strings.Count(out.String(), "ws_progress_") != 2 {
				t.Errorf("stdout lacks the two invoices:\n%s", out.String())
			}
			switch {
			case c.stderr == "" && errs.Len() > 0:
				t.Errorf("stderr %q, want nothing off a terminal", errs.String())
			case c.stderr != "" && (!strings.Contains(errs.String(), c.stderr) || !strings.HasSuffix(errs.String(), "\n") ||
				!strings.HasPrefix(errs.String(), "\rinvoicing "+lastMonth.Format("2006-01"))):
				t.Errorf("stderr %q, want the progress up to %q, then a newline", errs.String(), c.stderr)
			}
		})
	}
}

// Plans from the CLI: list the price file's plans, subscribe a workspace, show it, cancel
// from the next hour; an unknown plan is refused.
func TestPlanCommands(t *testing.T) {
	cfg, _ := testenv.ClickHouse(t)
	prices := "../../deploy/prices.yaml" // its example plan, team
	base := []string{"--clickhouse-addr", cfg.Addr, "--clickhouse-database", cfg.Database, "--prices-file", prices, "--log-level", "error"}
	venna := func(args ...string) (string, error) {
		var out strings.Builder
		err := run(t.Context(), append(args, base...), &out)
		return out.String(), err
	}
	out, err := venna("plan", "list")
	if err != nil || !strings.Contains(out, `"id": "team"`) || !strings.Contains(out, `"graduated"`) {
		t.Fatalf("plan list: %v\n%s", err, out)
	}
	hour := time.Now().UTC().Truncate(time.Hour)
	if out, err = venna("plan", "subscribe", "--workspace", "ws_cli", "--plan", "team"); err != nil || !strings.Contains(out, "on team from "+hour.Format(time.RFC3339)) {
		t.Fatalf("plan subscribe: %v\n%s", err, out)
	}
	if out, err = venna("plan", "cancel", "--workspace", "ws_cli"); err != nil || !strings.Contains(out, "on the default plan from "+hour.Add(time.Hour).Format(time.RFC3339)) {
		t.Fatalf("plan cancel: %v\n%s", err, out)
	}
	if out, err = venna("plan", "show", "--workspace", "ws_cli"); err != nil || strings.Count(out, `"plan_id"`) != 2 {
		t.Fatalf("plan show: %v\n%s", err, out)
	}
	if _, err = venna("plan", "subscribe", "--workspace", "ws_cli", "--plan", "gold"); err == nil || !strings.Contains(err.Error(), "no such plan") {
		t.Errorf("subscribing to an unknown plan: %v", err)
	}
}
