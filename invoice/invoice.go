// Package invoice prices rolled-up usage and keeps per-workspace invoices: deterministic
// IDs per (workspace, month), exact decimal amounts, per-workspace overrides, a
// draft → finalized → void lifecycle, prior-period adjustments for usage that arrives after
// its period's invoice was finalized, a reconciliation that recomputes any invoice from raw
// events, and CSV and HTML exports. See README.md for the rounding rule and the adjustment
// semantics.
package invoice

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/sqlset"
)

//go:embed queries.sql
var queriesFile string

// Queries is every statement this package sends to ClickHouse (queries.sql).
var Queries = sqlset.MustParse("invoice", queriesFile)

var (
	usageFromRollupsSQL      = Queries.Get("usage_from_rollups")
	usageFromRollupsSplitSQL = Queries.Get("usage_from_rollups_split")
	usageFromRawEventsSQL    = Queries.Get("usage_from_raw_events")
	billedSQL                = Queries.Get("billed")
	pendingSQL               = Queries.Get("pending")
	earlierInvoicesSQL       = Queries.Get("earlier_invoices")
	upgradeSQL               = Queries.Get("upgrade_invoice_lines")
	headersSQL               = Queries.Get("invoice_headers")
	linesSQL                 = Queries.Get("invoice_lines")
	insertItemsSQL           = Queries.Get("insert_invoice_items")
	insertHeadersSQL         = Queries.Get("insert_invoices")
	insertPricesSQL          = Queries.Get("insert_prices")
	insertCustomPricesSQL    = Queries.Get("insert_workspace_prices")
	insertDiscountsSQL       = Queries.Get("insert_workspace_discounts")
	grantsSQL                = Queries.Get("grants")
	insertGrantSQL           = Queries.Get("insert_grant")
	creditsAppliedSQL        = Queries.Get("credits_applied")
	billingModesSQL          = Queries.Get("billing_modes")
	insertBillingModeSQL     = Queries.Get("insert_billing_mode")
	subscriptionsSQL         = Queries.Get("subscriptions")
	insertSubscriptionSQL    = Queries.Get("insert_subscription")
	insertPlansSQL           = Queries.Get("insert_plans")
	insertPlanRatesSQL       = Queries.Get("insert_plan_rates")
)

// Invoice statuses. A status only moves forward: draft → finalized → void.
const (
	StatusDraft     = "draft"     // the period is open or in its grace window: recomputed on each run
	StatusFinalized = "finalized" // immutable
	StatusVoid      = "void"      // cancelled after finalization; its usage is billed again on a later invoice
)

// Line kinds.
const (
	KindUsage      = "usage"      // usage of the invoice's own period
	KindAdjustment = "adjustment" // usage of an earlier period, billed after that period's invoice was finalized or voided
	KindDiscount   = "discount"   // the workspace's discount on the usage or adjustment lines of ServicePeriod
	KindCredit     = "credit"     // prepaid credit from the grant GrantID, applied to this invoice (negative)
	// Plan lines (Model holds the plan ID).
	KindFee        = "fee"        // the plan's monthly fee for Quantity hours of the period (PerMillion: the monthly fee)
	KindCommitment = "commitment" // true-up to the plan's minimum commitment (PerMillion: the commitment for the hours subscribed)
	KindIncluded   = "included"   // usage the plan's fee includes (negative; PerMillion: the allowance for the hours subscribed)
	// KindReversal takes back Quantity tokens billed at PerMillion on an earlier invoice of
	// ServicePeriod (negative): late usage moved them to another tier of a plan's rate.
	KindReversal = "reversal"
)

// Line is one priced quantity: a model's tokens of one class at one unit price, billed
// for the usage of [ServicePeriodStart, ServicePeriodEnd); or a discount on such lines.
type Line struct {
	No                 int             `json:"line_no"`
	Kind               string          `json:"kind"`
	Description        string          `json:"description"`
	ServicePeriodStart time.Time       `json:"service_period_start"`
	ServicePeriodEnd   time.Time       `json:"service_period_end"`
	Model              string          `json:"model"`
	TokenClass         string          `json:"token_class"`
	Quantity           uint64          `json:"quantity"`
	PerMillion         decimal.Decimal `json:"unit_price_per_million"`
	DiscountPercent    decimal.Decimal `json:"discount_percent,omitzero"` // discount lines only
	GrantID            string          `json:"grant_id,omitempty"`        // credit lines only
	Amount             decimal.Decimal `json:"amount"`                    // exact; negative on discount and credit lines
}

// Invoice is a workspace's bill for one UTC calendar month [PeriodStart, PeriodEnd).
type Invoice struct {
	ID          string          `json:"id"`
	WorkspaceID string          `json:"workspace_id"`
	PeriodStart time.Time       `json:"period_start"`
	PeriodEnd   time.Time       `json:"period_end"`
	Status      string          `json:"status"`
	Currency    string          `json:"currency"`
	Subtotal    decimal.Decimal `json:"subtotal"` // exact sum of the line amounts
	Total       decimal.Decimal `json:"total"`    // RoundTotal(Subtotal)
	ComputedAt  time.Time       `json:"computed_at"`
	FinalizedAt time.Time       `json:"finalized_at,omitzero"`
	VoidedAt    time.Time       `json:"voided_at,omitzero"`
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

func checkMonth(start, end time.Time) error {
	if s, e := Month(start); !s.Equal(start) || !e.Equal(end) {
		return fmt.Errorf("invoice period %s..%s is not a UTC calendar month", start.Format(time.RFC3339), end.Format(time.RFC3339))
	}
	return nil
}

// Config configures the invoicer.
type Config struct {
	Database string
	// Grace is how long after a period ends its invoice stays a draft, so that late events
	// still land on it. Default 72h.
	Grace time.Duration
	// Progress, if set, is called as Run stores a month's invoices, after each insert of
	// up to storeChunk of them: stored of total so far. It is for showing a long run's
	// progress (venna invoice run on a terminal) and must not block.
	Progress func(stored, total int)
	// Now is the invoicer's clock (default time.Now): what "the current month", grace
	// windows and finalization are measured against. Tests and replays of a past month set it.
	Now func() time.Time
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
	cfg      Config
	conn     driver.Conn
	prices   *PriceBook
	now      func() time.Time
	upgraded atomic.Bool // invoice lines of before migration 0003 copied (see upgrade)
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
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Invoicer{cfg: cfg, conn: conn, prices: prices, now: now}, nil
}

// ErrNotFound is returned for an invoice that does not exist in the caller's workspace.
var ErrNotFound = errors.New("invoice not found")

// ErrInvalidTransition is returned for a status change the lifecycle does not allow:
// finalizing an invoice that is not a draft or whose period has not ended, voiding one
// that is not finalized.
var ErrInvalidTransition = errors.New("invalid invoice status transition")

// Header versions carry the status rank above the write time (UnixNano < 2^62 until
// 2116): ReplacingMergeTree keeps the highest version, so a finalized header beats every
// draft and a void one beats both, whatever order racing writers land in. Nothing can
// bring a frozen invoice back to draft.
const rankShift = 62

func headerVersion(status string, at time.Time) uint64 {
	rank := map[string]uint64{StatusDraft: 0, StatusFinalized: 1, StatusVoid: 2}[status]
	return rank<<rankShift | uint64(at.UnixNano())
}

func versionTime(v uint64) time.Time { return time.Unix(0, int64(v&(1<<rankShift-1))).UTC() }

func frozen(status string) bool { return status == StatusFinalized || status == StatusVoid }

// Compute prices the month's rolled-up usage of every workspace, with the prior-period
// adjustments its invoice would carry, exactly as Run would store it (without Status).
// Workspaces whose usage includes a model without a price in force are returned in failed,
// never billed zero.
func (iv *Invoicer) Compute(ctx context.Context, start, end time.Time) (map[string]*Invoice, map[string]error, error) {
	if err := checkMonth(start, end); err != nil {
		return nil, nil, err
	}
	return iv.build(ctx, start, end, nil)
}

// ComputeWorkspace is Compute for one workspace: nil when it has nothing to bill.
func (iv *Invoicer) ComputeWorkspace(ctx context.Context, workspaceID string, start, end time.Time) (*Invoice, error) {
	if err := checkMonth(start, end); err != nil {
		return nil, err
	}
	computed, failed, err := iv.build(ctx, start, end, []string{workspaceID})
	if err != nil {
		return nil, err
	}
	if err := failed[workspaceID]; err != nil {
		return nil, err
	}
	return computed[workspaceID], nil
}

// RunResult says what one invoice run did.
type RunResult struct {
	Written []*Invoice       // drafts recomputed and invoices finalized by this run
	Frozen  []string         // IDs of invoices left alone because they were finalized or void
	Failed  map[string]error // by workspace: usage that could not be priced
}

// Run computes the month's invoices and stores them: drafts are replaced, an invoice
// whose period ended more than Grace ago is finalized, and a finalized or void invoice is
// never touched again. Any number of runs may race: they write the same lines, and a
// frozen invoice's header outranks every draft.
func (iv *Invoicer) Run(ctx context.Context, start, end time.Time) (RunResult, error) {
	if err := checkMonth(start, end); err != nil {
		return RunResult{}, err
	}
	// The write time is taken before anything is read: a Finalize or Void that lands after
	// this run read the headers carries a later time and a higher rank, so it wins.
	at := iv.now().UTC()
	existing, err := iv.headers(ctx, "period_start = "+sqlset.DateTime(start)+" AND period_end = "+sqlset.DateTime(end))
	if err != nil {
		return RunResult{}, err
	}
	computed, failed, err := iv.build(ctx, start, end, nil)
	if err != nil {
		return RunResult{}, err
	}
	res := RunResult{Failed: failed}
	byWS := map[string]*Invoice{}
	for _, h := range existing {
		byWS[h.WorkspaceID] = h
		if frozen(h.Status) {
			res.Frozen = append(res.Frozen, h.ID)
		}
	}
	status := StatusDraft
	if !at.Before(end.Add(iv.cfg.Grace)) {
		status = StatusFinalized
	}
	var ids []string
	for ws := range computed {
		ids = append(ids, ws)
	}
	for ws, h := range byWS {
		// A stored draft with nothing left to bill (its adjustments moved to an earlier
		// open invoice) is rewritten empty rather than left billing them twice.
		if computed[ws] == nil && failed[ws] == nil && !frozen(h.Status) {
			computed[ws] = iv.empty(ws, start, end)
			ids = append(ids, ws)
		}
	}
	sort.Strings(ids)
	var write []*Invoice
	for _, ws := range ids {
		if h := byWS[ws]; h != nil && frozen(h.Status) {
			continue
		}
		inv := computed[ws]
		inv.stamp(status, at)
		write = append(write, inv)
	}
	for i := 0; i < len(write); i += storeChunk {
		n := min(i+storeChunk, len(write))
		if err := iv.store(ctx, write[i:n]); err != nil {
			return RunResult{}, err
		}
		if iv.cfg.Progress != nil {
			iv.cfg.Progress(n, len(write))
		}
	}
	res.Written = write
	return res, nil
}

func (iv *Invoicer) empty(ws string, start, end time.Time) *Invoice {
	inv := &Invoice{ID: ID(ws, start, end), WorkspaceID: ws, PeriodStart: start, PeriodEnd: end, Currency: iv.prices.Currency, Lines: []Line{}}
	inv.finish()
	return inv
}

// stamp sets the status fields of an invoice about to be written at time at.
func (inv *Invoice) stamp(status string, at time.Time) {
	inv.Status, inv.ComputedAt, inv.Version = status, at.Truncate(time.Second), headerVersion(status, at)
	if status == StatusFinalized {
		inv.FinalizedAt = inv.ComputedAt
	}
}

// Finalize finalizes a draft now, even inside its grace window, once its period has ended:
// it is recomputed from the rollups one last time and is immutable from then on.
func (iv *Invoicer) Finalize(ctx context.Context, workspaceID, id string) (*Invoice, error) {
	at := iv.now().UTC()
	h, err := iv.header(ctx, workspaceID, id)
	if err != nil {
		return nil, err
	}
	switch {
	case h.Status != StatusDraft:
		return nil, fmt.Errorf("%w: invoice %s is %s, only a draft can be finalized", ErrInvalidTransition, id, h.Status)
	case at.Before(h.PeriodEnd):
		return nil, fmt.Errorf("%w: invoice %s: its period is open until %s", ErrInvalidTransition, id, h.PeriodEnd.Format(time.RFC3339))
	}
	inv, err := iv.ComputeWorkspace(ctx, workspaceID, h.PeriodStart, h.PeriodEnd)
	if err != nil {
		return nil, fmt.Errorf("finalize %s: %w", id, err)
	}
	if inv == nil {
		inv = iv.empty(workspaceID, h.PeriodStart, h.PeriodEnd)
	}
	inv.stamp(StatusFinalized, at)
	if err := iv.store(ctx, []*Invoice{inv}); err != nil {
		return nil, err
	}
	return iv.Get(ctx, workspaceID, id)
}

// Void cancels a finalized invoice. It stays readable, marked void; the usage it billed
// counts as unbilled again and is billed on the workspace's next open invoice as
// prior-period adjustment lines (at the prices and overrides in force when it occurred).
func (iv *Invoicer) Void(ctx context.Context, workspaceID, id string) (*Invoice, error) {
	at := iv.now().UTC()
	inv, err := iv.Get(ctx, workspaceID, id)
	if err != nil {
		return nil, err
	}
	if inv.Status != StatusFinalized {
		return nil, fmt.Errorf("%w: invoice %s is %s, only a finalized invoice can be voided", ErrInvalidTransition, id, inv.Status)
	}
	inv.Status, inv.Version = StatusVoid, headerVersion(StatusVoid, at)
	if err := iv.store(ctx, []*Invoice{inv}); err != nil {
		return nil, err
	}
	return iv.Get(ctx, workspaceID, id)
}

// storeChunk bounds the invoices one insert carries, and so the memory of a run's writes.
const storeChunk = 1000

// store writes invoices at their Version, storeChunk at a time: 1. lines, 2. headers.
// Readers take the lines of the header's version, so until the header lands they keep
// seeing the previous version complete, never a mix; a crash between the two leaves
// unreferenced lines, nothing else.
func (iv *Invoicer) store(ctx context.Context, invs []*Invoice) error {
	for len(invs) > 0 {
		n := min(storeChunk, len(invs))
		if err := iv.storeSome(ctx, invs[:n]); err != nil {
			return err
		}
		invs = invs[n:]
	}
	return nil
}

func (iv *Invoicer) storeSome(ctx context.Context, invs []*Invoice) error {
	var lines, headers [][]any
	for _, inv := range invs {
		for _, l := range inv.Lines {
			model := l.Model
			if l.Kind == KindCredit {
				model = l.GrantID // a credit line's model column holds its grant
			}
			lines = append(lines, []any{inv.ID, inv.Version, uint32(l.No), inv.WorkspaceID, inv.PeriodStart, l.Kind,
				l.ServicePeriodStart, l.ServicePeriodEnd, model, l.TokenClass, l.Quantity, l.PerMillion, l.DiscountPercent, l.Amount})
		}
		headers = append(headers, []any{inv.ID, inv.WorkspaceID, inv.PeriodStart, inv.PeriodEnd, inv.Status, inv.Currency,
			inv.Subtotal, inv.Total, inv.ComputedAt, zeroTime(inv.FinalizedAt), inv.Version})
	}
	db := iv.cfg.Database
	if err := chdb.Insert(ctx, iv.conn, sqlset.Fill(insertItemsSQL, "db", db), lines); err != nil {
		return err
	}
	return chdb.Insert(ctx, iv.conn, sqlset.Fill(insertHeadersSQL, "db", db), headers)
}

func zeroTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return t
}

func (iv *Invoicer) headers(ctx context.Context, where string, args ...any) ([]*Invoice, error) {
	rows, err := iv.conn.Query(ctx, sqlset.Fill(headersSQL, "db", iv.cfg.Database, "where", where), args...)
	if err != nil {
		return nil, fmt.Errorf("read invoices: %w", err)
	}
	defer rows.Close()
	var out []*Invoice
	for rows.Next() {
		inv := &Invoice{Lines: []Line{}} // a header alone: Get reads the lines
		if err := rows.Scan(&inv.ID, &inv.WorkspaceID, &inv.PeriodStart, &inv.PeriodEnd, &inv.Status, &inv.Currency,
			&inv.Subtotal, &inv.Total, &inv.ComputedAt, &inv.FinalizedAt, &inv.Version); err != nil {
			return nil, fmt.Errorf("scan invoice: %w", err)
		}
		if inv.FinalizedAt.Unix() == 0 {
			inv.FinalizedAt = time.Time{}
		}
		inv.PeriodStart, inv.PeriodEnd, inv.ComputedAt, inv.FinalizedAt = inv.PeriodStart.UTC(), inv.PeriodEnd.UTC(), inv.ComputedAt.UTC(), inv.FinalizedAt.UTC()
		if inv.Status == StatusVoid {
			inv.VoidedAt = versionTime(inv.Version).Truncate(time.Second)
		}
		out = append(out, inv)
	}
	return out, rows.Err()
}

func (iv *Invoicer) header(ctx context.Context, workspaceID, id string) (*Invoice, error) {
	hs, err := iv.headers(ctx, "workspace_id = ? AND invoice_id = ?", workspaceID, id)
	if err != nil {
		return nil, err
	}
	if len(hs) == 0 {
		return nil, ErrNotFound
	}
	return hs[0], nil
}

// List returns a workspace's invoices, newest period first, without lines.
func (iv *Invoicer) List(ctx context.Context, workspaceID string) ([]*Invoice, error) {
	return iv.headers(ctx, "workspace_id = ?", workspaceID)
}

// Get returns one invoice of workspaceID with its lines; an invoice of another workspace
// is ErrNotFound, exactly like one that does not exist.
func (iv *Invoicer) Get(ctx context.Context, workspaceID, id string) (*Invoice, error) {
	if err := iv.upgrade(ctx); err != nil {
		return nil, err
	}
	inv, err := iv.header(ctx, workspaceID, id)
	if err != nil {
		return nil, err
	}
	rows, err := iv.conn.Query(ctx, sqlset.Fill(linesSQL, "db", iv.cfg.Database), inv.ID, inv.Version)
	if err != nil {
		return nil, fmt.Errorf("read invoice lines: %w", err)
	}
	defer rows.Close()
	inv.Lines = []Line{}
	for rows.Next() {
		var l Line
		var no uint32
		if err := rows.Scan(&no, &l.Kind, &l.ServicePeriodStart, &l.ServicePeriodEnd, &l.Model, &l.TokenClass, &l.Quantity,
			&l.PerMillion, &l.DiscountPercent, &l.Amount); err != nil {
			return nil, fmt.Errorf("scan invoice line: %w", err)
		}
		l.No = int(no)
		l.ServicePeriodStart, l.ServicePeriodEnd = l.ServicePeriodStart.UTC(), l.ServicePeriodEnd.UTC()
		if l.Kind == KindCredit {
			l.GrantID, l.Model = l.Model, ""
		}
		l.Description = l.describe(inv.PeriodStart)
		inv.Lines = append(inv.Lines, l)
	}
	return inv, rows.Err()
}

// describe labels a line for people: what it bills and, unless it is the invoice's own
// period, for which period.
func (l Line) describe(invoicePeriod time.Time) string {
	month := l.ServicePeriodStart.Format("2006-01")
	own := l.ServicePeriodStart.Equal(invoicePeriod)
	prior := func(what string) string {
		if own {
			return what
		}
		return fmt.Sprintf("Prior-period adjustment for %s: %s", month, what)
	}
	switch l.Kind {
	case KindCredit:
		return "Prepaid credit from grant " + l.GrantID
	case KindDiscount:
		if own {
			return fmt.Sprintf("Discount %s%% on %s usage", l.DiscountPercent, month)
		}
		return fmt.Sprintf("Discount %s%% on prior-period adjustment for %s", l.DiscountPercent, month)
	case KindAdjustment:
		return fmt.Sprintf("Prior-period adjustment for %s: %s", month, tokensOf(l))
	case KindFee:
		if hours := MonthHours(l.ServicePeriodStart); int64(l.Quantity) != hours {
			return prior(fmt.Sprintf("Plan %s fee of %s a month, %d of %d hours", l.Model, l.PerMillion, l.Quantity, hours))
		}
		return prior(fmt.Sprintf("Plan %s fee of %s a month", l.Model, l.PerMillion))
	case KindCommitment:
		return prior(fmt.Sprintf("Plan %s: usage below the minimum commitment of %s, true-up", l.Model, l.PerMillion))
	case KindIncluded:
		return prior(fmt.Sprintf("Plan %s: usage included in the fee (up to %s)", l.Model, l.PerMillion))
	case KindReversal:
		return fmt.Sprintf("Re-priced %s: %s billed before, taken back", month, tokensOf(l))
	}
	return tokensOf(l)
}

// Shown is a line's quantity and unit price as people read them, with their units: "3,200
// tokens" at "2.5 per 1M tokens", a package rate's "0.5 per 1,000,000 tokens", a fee's "516
// hours" at "20 per month", a discount's percentage; "" where the description says it all
// (commitment, included usage, credit). The invoice page (HTML) and the usage page
// (api/ui/format.js, lineColumns: the browser test holds the two equal) show these.
func (l Line) Shown() (quantity, unitPrice string) {
	switch l.Kind {
	case KindDiscount:
		return "", l.DiscountPercent.String() + " %"
	case KindFee:
		return GroupDigits(strconv.FormatUint(l.Quantity, 10)) + " hours", l.PerMillion.String() + " per month"
	case KindUsage, KindAdjustment, KindReversal:
		quantity = GroupDigits(strconv.FormatUint(l.Quantity, 10)) + " tokens"
		_, qual, _ := strings.Cut(l.TokenClass, "/")
		if kind, size, _ := strings.Cut(qual, ":"); kind == "package" {
			return quantity, l.PerMillion.String() + " per " + GroupDigits(size) + " tokens"
		}
		return quantity, l.PerMillion.String() + " per 1M tokens"
	}
	return "", ""
}

// GroupDigits writes a run of digits in groups of three: "1234567" → "1,234,567".
func GroupDigits(digits string) string {
	var b strings.Builder
	for i, c := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// tokensOf names the tokens a usage line bills: "venna-1 output tokens", with the tier or
// package a plan's rate priced them by.
func tokensOf(l Line) string {
	base, qual, _ := strings.Cut(l.TokenClass, "/")
	what := fmt.Sprintf("%s %s tokens", l.Model, base)
	kind, n, _ := strings.Cut(qual, ":")
	switch kind {
	case "tier":
		return what + ", tier " + n
	case "volume":
		return what + ", volume tier " + n
	case "package":
		return fmt.Sprintf("%s in packages of %s at %s", what, n, l.PerMillion)
	}
	return what
}

// lineOrder ranks a line's token class: input, cached input, output, each by tier.
func lineOrder(class string) (int, int) {
	base, qual, _ := strings.Cut(class, "/")
	rank := map[string]int{ClassInput: 0, ClassCachedInput: 1, ClassOutput: 2}[base]
	_, n, _ := strings.Cut(qual, ":")
	tier, _ := strconv.Atoi(n)
	return rank, tier
}

// finish orders and numbers the lines and totals the invoice: own usage, its discount,
// then per earlier period (oldest first) its adjustment lines and their discount.
func (inv *Invoice) finish() {
	kindRank := map[string]int{KindFee: 0, KindUsage: 1, KindAdjustment: 1, KindReversal: 1, KindDiscount: 2, KindIncluded: 3, KindCommitment: 4}
	sort.SliceStable(inv.Lines, func(i, j int) bool {
		a, b := inv.Lines[i], inv.Lines[j]
		switch {
		case (a.Kind == KindCredit) != (b.Kind == KindCredit):
			return b.Kind == KindCredit // credits last, after everything they pay for
		case a.Kind == KindCredit:
			return a.GrantID < b.GrantID
		case !a.ServicePeriodStart.Equal(b.ServicePeriodStart):
			// The invoice's own period first, then earlier ones ascending.
			if a.ServicePeriodStart.Equal(inv.PeriodStart) || b.ServicePeriodStart.Equal(inv.PeriodStart) {
				return a.ServicePeriodStart.Equal(inv.PeriodStart)
			}
			return a.ServicePeriodStart.Before(b.ServicePeriodStart)
		case kindRank[a.Kind] != kindRank[b.Kind]:
			return kindRank[a.Kind] < kindRank[b.Kind]
		case a.Model != b.Model:
			return a.Model < b.Model
		}
		ar, at := lineOrder(a.TokenClass)
		br, bt := lineOrder(b.TokenClass)
		if ar != br {
			return ar < br
		}
		if at != bt {
			return at < bt
		}
		return a.Kind == KindReversal && b.Kind != KindReversal // a re-pricing's reversal before its new line
	})
	inv.Subtotal = decimal.Zero
	for i := range inv.Lines {
		l := &inv.Lines[i]
		l.No = i + 1
		l.Description = l.describe(inv.PeriodStart)
		inv.Subtotal = inv.Subtotal.Add(l.Amount)
	}
	inv.Total = RoundTotal(inv.Subtotal)
}
