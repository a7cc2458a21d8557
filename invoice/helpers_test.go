package invoice

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
	"github.com/venna/metering/aggregate"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/schema"
)

// testBook: a price change for m-big on 2026-01-15 12:00, and overrides for two workspaces.
const testBook = `currency: USD
prices:
  - {model: m-big, effective_from: "2026-01-01T00:00:00Z", input: "2.50", cached_input: "1.25", output: "10.00"}
  - {model: m-big, effective_from: "2026-01-15T12:00:00Z", input: "3.00", cached_input: "1.50", output: "12.00"}
  - {model: m-small, effective_from: "2026-01-01T00:00:00Z", input: "0.15", cached_input: "0.075", output: "0.60"}
overrides:
  ws_disc:
    discounts:
      - {effective_from: "2026-01-01T00:00:00Z", percent: "10"}
      - {effective_from: "2026-01-20T00:00:00Z", percent: "0"}
  ws_custom:
    prices:
      - {model: m-small, effective_from: "2026-01-01T00:00:00Z", input: "0.10", cached_input: "0.05", output: "0.40"}
`

var (
	jan = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	feb = jan.AddDate(0, 1, 0)
	mar = jan.AddDate(0, 2, 0)
)

// env is one test's database with an invoicer whose clock the test sets.
type env struct {
	t    *testing.T
	db   string
	conn driver.Conn
	iv   *Invoicer
	agg  *aggregate.Aggregator
	now  time.Time
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cfg, conn := testenv.ClickHouse(t)
	pb, err := ParsePriceBook([]byte(testBook))
	if err != nil {
		t.Fatal(err)
	}
	iv, err := New(Config{Database: cfg.Database}, conn, pb)
	if err != nil {
		t.Fatal(err)
	}
	agg, err := aggregate.New(aggregate.Config{Database: cfg.Database}, conn)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: cfg.Database, conn: conn, iv: iv, agg: agg}
	iv.now = func() time.Time { return e.now }
	return e
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// event is the part of a usage event billing reads.
type event struct {
	ws, model                           string
	at                                  time.Time
	prompt, cached, completion, reasons uint64
}

var eventSeq atomic.Int64

// send inserts events into usage_events as ingest does (ingested now), then rolls up.
func (e *env) send(evs ...event) {
	e.t.Helper()
	out := make([]schema.UsageEvent, len(evs))
	for i, ev := range evs {
		id := fmt.Sprintf("ev-%d", eventSeq.Add(1))
		out[i] = schema.UsageEvent{SchemaVersion: 1, EventID: id, OccurredAt: ev.at, WorkspaceID: ev.ws, APIKeyID: "key_" + ev.ws,
			Model: ev.model, Upstream: "up", UpstreamModel: "up-" + ev.model, RequestID: "req-" + id, Status: "ok",
			HTTPStatus: 200, LatencyMS: 5, PromptTokens: int64(ev.prompt), CachedTokens: int64(ev.cached),
			CompletionTokens: int64(ev.completion), ReasoningTokens: int64(ev.reasons), TotalTokens: int64(ev.prompt + ev.completion)}
	}
	testenv.InsertEvents(e.t, e.conn, e.db, out)
	if _, err := e.agg.Run(ctx(e.t)); err != nil {
		e.t.Fatal(err)
	}
}

// run runs the invoice job for the month starting at start, at time now.
func (e *env) run(start, now time.Time) RunResult {
	e.t.Helper()
	e.now = now
	res, err := e.iv.Run(ctx(e.t), start, start.AddDate(0, 1, 0))
	if err != nil {
		e.t.Fatalf("run %s at %s: %v", start.Format("2006-01"), now.Format(time.RFC3339), err)
	}
	return res
}

func (e *env) get(ws string, start time.Time) *Invoice {
	e.t.Helper()
	inv, err := e.iv.Get(ctx(e.t), ws, ID(ws, start, start.AddDate(0, 1, 0)))
	if err != nil {
		e.t.Fatalf("get %s %s: %v", ws, start.Format("2006-01"), err)
	}
	return inv
}

func (e *env) reconcileClean(inv *Invoice) {
	e.t.Helper()
	diffs, err := e.iv.Reconcile(ctx(e.t), inv.WorkspaceID, inv.ID)
	if err != nil || len(diffs) > 0 {
		e.t.Errorf("reconcile %s (%s %s): %v %v", inv.ID, inv.WorkspaceID, inv.PeriodStart.Format("2006-01"), err, diffs)
	}
}

// line is the part of a Line a test expects; a zero Period means the invoice's own.
type line struct {
	kind, model, class string
	period             time.Time
	qty                uint64
	price, pct, amount string
}

func d(s string) decimal.Decimal { return decimal.RequireFromString(s) }

// checkLines compares an invoice's lines, in order, and its subtotal and total.
func checkLines(t *testing.T, inv *Invoice, want []line, subtotal, total string) {
	t.Helper()
	if inv == nil {
		t.Fatalf("no invoice, want %d lines", len(want))
	}
	if len(inv.Lines) != len(want) {
		t.Errorf("%s has %d lines, want %d:\n%s", inv.ID, len(inv.Lines), len(want), dump(inv))
	}
	for i := 0; i < min(len(want), len(inv.Lines)); i++ {
		g, w := inv.Lines[i], want[i]
		period := w.period
		if period.IsZero() {
			period = inv.PeriodStart
		}
		ok := g.No == i+1 && g.Kind == w.kind && g.Model == w.model && g.TokenClass == w.class && g.Quantity == w.qty &&
			g.ServicePeriodStart.Equal(period) && g.ServicePeriodEnd.Equal(period.AddDate(0, 1, 0)) && g.Amount.Equal(d(w.amount))
		if w.price != "" {
			ok = ok && g.PerMillion.Equal(d(w.price))
		}
		if w.pct != "" {
			ok = ok && g.DiscountPercent.Equal(d(w.pct))
		}
		if !ok {
			t.Errorf("line %d: got %+v\nwant %+v", i+1, g, w)
		}
	}
	if !inv.Subtotal.Equal(d(subtotal)) || !inv.Total.Equal(d(total)) {
		t.Errorf("%s: subtotal %s total %s, want %s and %s", inv.ID, inv.Subtotal, inv.Total, subtotal, total)
	}
}

func dump(inv *Invoice) string {
	s := ""
	for _, l := range inv.Lines {
		s += fmt.Sprintf("  %d %s %s %s %s qty=%d price=%s pct=%s amount=%s\n", l.No, l.Kind, l.ServicePeriodStart.Format("2006-01"),
			l.Model, l.TokenClass, l.Quantity, l.PerMillion, l.DiscountPercent, l.Amount)
	}
	return s
}

// content is an invoice without what differs between two runs that computed the same
// numbers (times and version).
func content(inv *Invoice) string {
	return fmt.Sprintf("%s %s %s %s %s %s\n%s", inv.ID, inv.WorkspaceID, inv.Status, inv.Currency, inv.Subtotal, inv.Total, dump(inv))
}

func itoa(v uint64) string { return fmt.Sprint(v) }
