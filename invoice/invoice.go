// Package invoice prices rolled-up usage and keeps per-workspace invoices: deterministic
// IDs per (workspace, period), exact decimal amounts, a draft → finalized lifecycle, and a
// reconciliation that recomputes any invoice from raw events.
package invoice

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
	"github.com/venna/metering/internal/chdb"
)

// Invoice statuses.
const (
	StatusDraft     = "draft"     // the period is open or in its grace window: recomputed on each run
	StatusFinalized = "finalized" // immutable
	StatusVoid      = "void"
)

// Line is one priced quantity: a model's tokens of one class at one unit price.
type Line struct {
	No         int             `json:"line_no"`
	Model      string          `json:"model"`
	TokenClass string          `json:"token_class"`
	Quantity   uint64          `json:"quantity"`
	PerMillion decimal.Decimal `json:"unit_price_per_million"`
	Amount     decimal.Decimal `json:"amount"`
}

// Invoice is a workspace's bill for one period [PeriodStart, PeriodEnd).
type Invoice struct {
	ID          string          `json:"id"`
	WorkspaceID string          `json:"workspace_id"`
	PeriodStart time.Time       `json:"period_start"`
	PeriodEnd   time.Time       `json:"period_end"`
	Status      string          `json:"status"`
	Currency    string          `json:"currency"`
	Subtotal    decimal.Decimal `json:"subtotal"`
	Total       decimal.Decimal `json:"total"`
	ComputedAt  time.Time       `json:"computed_at"`
	FinalizedAt time.Time       `json:"finalized_at,omitzero"`
	Version     uint64          `json:"version"`
	Lines       []Line          `json:"lines"`
}

// Amount is the exact price of quantity tokens at perMillion USD per 1M tokens. With
// prices of at most 6 decimals it is exact at 12 decimals, the scale of the amount columns.
func Amount(quantity uint64, perMillion decimal.Decimal) decimal.Decimal {
	return decimal.NewFromUint64(quantity).Mul(perMillion).Shift(-6)
}

// RoundTotal is the one rounding rule: line amounts and the subtotal stay exact; the
// total is the subtotal rounded to cents, half away from zero.
func RoundTotal(subtotal decimal.Decimal) decimal.Decimal { return subtotal.Round(2) }

// ID is the deterministic invoice ID of a workspace's period: a rerun finds, and
// replaces, the same invoice instead of adding another.
func ID(workspaceID string, start, end time.Time) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s|%d|%d", workspaceID, start.Unix(), end.Unix())))
	return "inv_" + hex.EncodeToString(h[:12])
}

// Month returns the UTC calendar month containing t.
func Month(t time.Time) (start, end time.Time) {
	t = t.UTC()
	start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	return start, start.AddDate(0, 1, 0)
}

// Config configures the invoicer.
type Config struct {
	Database string
	// Grace is how long after a period ends its invoice stays a draft, so that late events
	// still land on it. Default 72h.
	Grace time.Duration
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Database == "":
		return errors.New("invoice: Database (VENNA_CLICKHOUSE_DATABASE) is empty")
	case c.Grace < 0:
		return errors.New("invoice: Grace (VENNA_INVOICE_GRACE) is negative")
	}
	return nil
}

// Invoicer computes and stores invoices.
type Invoicer struct {
	cfg    Config
	conn   driver.Conn
	prices *PriceBook
	now    func() time.Time
}

// New returns an Invoicer; it refuses an invalid Config.
func New(cfg Config, conn driver.Conn, prices *PriceBook) (*Invoicer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if prices == nil {
		return nil, errors.New("invoice: no price book (VENNA_PRICES_FILE)")
	}
	if cfg.Grace == 0 {
		cfg.Grace = 72 * time.Hour
	}
	return &Invoicer{cfg: cfg, conn: conn, prices: prices, now: time.Now}, nil
}

// usageRow is one workspace x model x price segment of a period.
type usageRow struct {
	workspace, model           string
	segment                    uint64
	input, cached, completions uint64
}

// Compute prices the period's rolled-up usage of every workspace. Workspaces whose usage
// includes a model without a price in force are returned in failed, never billed zero.
func (iv *Invoicer) Compute(ctx context.Context, start, end time.Time) (map[string]*Invoice, map[string]error, error) {
	return iv.compute(ctx, start, end, rollupUsageSQL)
}

// The usage queries' placeholders: {db}, {segment}, {start} and {end} (Unix seconds).
const rollupUsageSQL = `SELECT workspace_id, model, {segment} AS segment,
    toUInt64(sum(prompt_tokens - cached_tokens)), sum(cached_tokens), sum(completion_tokens)
FROM {db}.usage_hourly FINAL
WHERE hour >= toDateTime({start}, 'UTC') AND hour < toDateTime({end}, 'UTC')
GROUP BY workspace_id, model, segment
ORDER BY workspace_id, model, segment`

// rawUsageSQL is the same sums straight from deduplicated raw events.
const rawUsageSQL = `SELECT workspace_id, model, {segment} AS segment,
    toUInt64(sum(prompt_tokens - cached_tokens)), sum(cached_tokens), sum(completion_tokens)
FROM (
    SELECT event_id, workspace_id, model, occurred_at AS hour, prompt_tokens, cached_tokens, completion_tokens
    FROM {db}.usage_events
    WHERE occurred_at >= toDateTime({start}, 'UTC') AND occurred_at < toDateTime({end}, 'UTC') AND status = 'ok'
    LIMIT 1 BY event_id
)
GROUP BY workspace_id, model, segment
ORDER BY workspace_id, model, segment`

func (iv *Invoicer) compute(ctx context.Context, start, end time.Time, query string) (map[string]*Invoice, map[string]error, error) {
	breaks := iv.prices.Breakpoints(start, end)
	// segment = how many price changes happened at or before the hour: usage of one
	// segment was all billed at the same prices.
	seg := "toUInt64(0)"
	if len(breaks) > 0 {
		parts := make([]string, len(breaks))
		for i, b := range breaks {
			parts[i] = fmt.Sprintf("toUInt64(hour >= toDateTime(%d, 'UTC'))", b.Unix())
		}
		seg = strings.Join(parts, " + ")
	}
	q := strings.NewReplacer("{db}", iv.cfg.Database, "{segment}", seg,
		"{start}", strconv.FormatInt(start.Unix(), 10), "{end}", strconv.FormatInt(end.Unix(), 10)).Replace(query)
	rows, err := iv.conn.Query(ctx, q)
	if err != nil {
		return nil, nil, fmt.Errorf("read usage %s..%s: %w", start.Format(time.RFC3339), end.Format(time.RFC3339), err)
	}
	defer rows.Close()
	invoices := map[string]*Invoice{}
	failed := map[string]error{}
	for rows.Next() {
		var u usageRow
		if err := rows.Scan(&u.workspace, &u.model, &u.segment, &u.input, &u.cached, &u.completions); err != nil {
			return nil, nil, fmt.Errorf("scan usage: %w", err)
		}
		if failed[u.workspace] != nil {
			continue
		}
		segStart := start
		if u.segment > 0 {
			segStart = breaks[u.segment-1]
		}
		price, err := iv.prices.At(u.model, segStart)
		if err != nil {
			failed[u.workspace] = fmt.Errorf("workspace %s: %w", u.workspace, err)
			delete(invoices, u.workspace)
			continue
		}
		inv := invoices[u.workspace]
		if inv == nil {
			inv = &Invoice{ID: ID(u.workspace, start, end), WorkspaceID: u.workspace, PeriodStart: start, PeriodEnd: end, Currency: iv.prices.Currency}
			invoices[u.workspace] = inv
		}
		for _, c := range []struct {
			class string
			qty   uint64
		}{{ClassInput, u.input}, {ClassCachedInput, u.cached}, {ClassOutput, u.completions}} {
			if c.qty == 0 {
				continue
			}
			inv.Lines = append(inv.Lines, Line{Model: u.model, TokenClass: c.class, Quantity: c.qty,
				PerMillion: price.PerMillion[c.class], Amount: Amount(c.qty, price.PerMillion[c.class])})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read usage: %w", err)
	}
	for _, inv := range invoices {
		inv.finish()
	}
	return invoices, failed, nil
}

// finish merges lines of equal model, class and unit price (segments at an unchanged
// price), numbers them, and totals the invoice.
func (inv *Invoice) finish() {
	type key struct{ model, class, price string }
	merged := map[key]*Line{}
	var order []key
	for _, l := range inv.Lines {
		k := key{l.Model, l.TokenClass, l.PerMillion.String()}
		if m := merged[k]; m != nil {
			m.Quantity += l.Quantity
			m.Amount = m.Amount.Add(l.Amount)
			continue
		}
		l := l
		merged[k] = &l
		order = append(order, k)
	}
	classRank := map[string]int{ClassInput: 0, ClassCachedInput: 1, ClassOutput: 2}
	sort.SliceStable(order, func(i, j int) bool {
		if order[i].model != order[j].model {
			return order[i].model < order[j].model
		}
		return classRank[order[i].class] < classRank[order[j].class]
	})
	inv.Lines = inv.Lines[:0]
	inv.Subtotal = decimal.Zero
	for i, k := range order {
		l := *merged[k]
		l.No = i + 1
		inv.Lines = append(inv.Lines, l)
		inv.Subtotal = inv.Subtotal.Add(l.Amount)
	}
	inv.Total = RoundTotal(inv.Subtotal)
}

// RunResult says what one invoice run did.
type RunResult struct {
	Written []*Invoice       // drafts recomputed and invoices finalized by this run
	Frozen  []string         // IDs of invoices left alone because they were finalized or void
	Failed  map[string]error // by workspace: usage that could not be priced
}

// Run computes the period's invoices and stores them: drafts are replaced, an invoice
// whose period ended more than Grace ago is finalized, and a finalized or void invoice is
// never touched again.
func (iv *Invoicer) Run(ctx context.Context, start, end time.Time) (RunResult, error) {
	computed, failed, err := iv.Compute(ctx, start, end)
	if err != nil {
		return RunResult{}, err
	}
	existing, err := iv.headers(ctx, fmt.Sprintf("period_start = toDateTime(%d, 'UTC') AND period_end = toDateTime(%d, 'UTC')", start.Unix(), end.Unix()))
	if err != nil {
		return RunResult{}, err
	}
	frozen := map[string]bool{}
	res := RunResult{Failed: failed}
	for _, h := range existing {
		if h.Status != StatusDraft {
			frozen[h.ID] = true
			res.Frozen = append(res.Frozen, h.ID)
		}
	}
	now := iv.now().UTC().Truncate(time.Second)
	version := uint64(iv.now().UnixNano())
	status := StatusDraft
	if !now.Before(end.Add(iv.cfg.Grace)) {
		status = StatusFinalized
	}
	var lines, headers [][]any
	ids := make([]string, 0, len(computed))
	for ws := range computed {
		ids = append(ids, ws)
	}
	sort.Strings(ids)
	for _, ws := range ids {
		inv := computed[ws]
		if frozen[inv.ID] {
			continue
		}
		inv.Status, inv.ComputedAt, inv.Version = status, now, version
		if status == StatusFinalized {
			inv.FinalizedAt = now
		}
		for _, l := range inv.Lines {
			lines = append(lines, []any{inv.ID, version, uint32(l.No), ws, l.Model, l.TokenClass, l.Quantity, l.PerMillion, l.Amount})
		}
		headers = append(headers, []any{inv.ID, ws, start, end, inv.Status, inv.Currency, inv.Subtotal, inv.Total, now, zeroTime(inv.FinalizedAt), version})
		res.Written = append(res.Written, inv)
	}
	// 1. lines, 2. headers: readers take the lines of the header's version, so until the
	// header lands they keep seeing the previous version complete, never a mix.
	db := iv.cfg.Database
	if err := chdb.Insert(ctx, iv.conn, db+".invoice_lines", lineColumns, lines); err != nil {
		return RunResult{}, err
	}
	if err := chdb.Insert(ctx, iv.conn, db+".invoices", headerColumns, headers); err != nil {
		return RunResult{}, err
	}
	return res, nil
}

var (
	lineColumns   = []string{"invoice_id", "version", "line_no", "workspace_id", "model", "token_class", "quantity", "usd_per_million", "amount"}
	headerColumns = []string{"invoice_id", "workspace_id", "period_start", "period_end", "status", "currency", "subtotal", "total", "computed_at", "finalized_at", "version"}
)

func zeroTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return t
}

// ErrNotFound is returned for an invoice that does not exist in the caller's workspace.
var ErrNotFound = errors.New("invoice not found")

func (iv *Invoicer) headers(ctx context.Context, where string, args ...any) ([]*Invoice, error) {
	q := "SELECT invoice_id, workspace_id, period_start, period_end, status, currency, subtotal, total, computed_at, finalized_at, version FROM " +
		iv.cfg.Database + ".invoices FINAL WHERE " + where + " ORDER BY period_start DESC, invoice_id"
	rows, err := iv.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read invoices: %w", err)
	}
	defer rows.Close()
	var out []*Invoice
	for rows.Next() {
		inv := &Invoice{}
		if err := rows.Scan(&inv.ID, &inv.WorkspaceID, &inv.PeriodStart, &inv.PeriodEnd, &inv.Status, &inv.Currency,
			&inv.Subtotal, &inv.Total, &inv.ComputedAt, &inv.FinalizedAt, &inv.Version); err != nil {
			return nil, fmt.Errorf("scan invoice: %w", err)
		}
		if inv.FinalizedAt.Unix() == 0 {
			inv.FinalizedAt = time.Time{}
		}
		inv.PeriodStart, inv.PeriodEnd, inv.ComputedAt = inv.PeriodStart.UTC(), inv.PeriodEnd.UTC(), inv.ComputedAt.UTC()
		out = append(out, inv)
	}
	return out, rows.Err()
}

// List returns a workspace's invoices, newest period first, without lines.
func (iv *Invoicer) List(ctx context.Context, workspaceID string) ([]*Invoice, error) {
	return iv.headers(ctx, "workspace_id = ?", workspaceID)
}

// Get returns one invoice of workspaceID with its lines; an invoice of another workspace
// is ErrNotFound, exactly like one that does not exist.
func (iv *Invoicer) Get(ctx context.Context, workspaceID, id string) (*Invoice, error) {
	hs, err := iv.headers(ctx, "workspace_id = ? AND invoice_id = ?", workspaceID, id)
	if err != nil {
		return nil, err
	}
	if len(hs) == 0 {
		return nil, ErrNotFound
	}
	inv := hs[0]
	rows, err := iv.conn.Query(ctx, "SELECT line_no, model, token_class, quantity, usd_per_million, amount FROM "+iv.cfg.Database+
		".invoice_lines FINAL WHERE invoice_id = ? AND version = ? ORDER BY line_no", inv.ID, inv.Version)
	if err != nil {
		return nil, fmt.Errorf("read invoice lines: %w", err)
	}
	defer rows.Close()
	inv.Lines = []Line{}
	for rows.Next() {
		var l Line
		var no uint32
		if err := rows.Scan(&no, &l.Model, &l.TokenClass, &l.Quantity, &l.PerMillion, &l.Amount); err != nil {
			return nil, fmt.Errorf("scan invoice line: %w", err)
		}
		l.No = int(no)
		inv.Lines = append(inv.Lines, l)
	}
	return inv, rows.Err()
}
