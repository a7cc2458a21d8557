// Package spend controls what workspaces spend: monthly budgets with alert thresholds and
// an optional hard limit, and rate limits in requests and tokens per minute, per workspace
// and per key. The gateway enforces them from memory (Limiter): no ClickHouse query and no
// network round trip on the request path. Gateway replicas share what they serve through
// Redis when one is configured. Alerts are raised from ClickHouse by a job of the
// aggregate role (Alerter), once per budget, month and threshold.
//
// See README.md, "Spend control", for the bounds the design promises and how they were
// measured.
package spend

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/instant"
	"github.com/venna/metering/internal/sqlset"
	"github.com/venna/metering/invoice"
)

//go:embed queries.sql
var queriesFile string

// Queries is every statement this package sends to ClickHouse (queries.sql).
var Queries = sqlset.MustParse("spend", queriesFile)

var (
	budgetsSQL         = Queries.Get("budgets")
	rateLimitsSQL      = Queries.Get("rate_limits")
	insertBudgetSQL    = Queries.Get("insert_budget")
	insertRateLimitSQL = Queries.Get("insert_rate_limit")
	watermarkSQL       = Queries.Get("watermark")
	spendDailySQL      = Queries.Get("spend_daily")
	spendHourlySQL     = Queries.Get("spend_hourly")
	spendRawSQL        = Queries.Get("spend_raw")
	insertAlertSQL     = Queries.Get("insert_alert")
	alertsSQL          = Queries.Get("alerts")
	alertedSQL         = Queries.Get("alerted")
)

// DefaultThresholds are the alert thresholds of a budget that names none, in percent.
var DefaultThresholds = []int{50, 80, 100}

// Budget is a monthly spending budget of a workspace (APIKeyID empty) or of one key.
type Budget struct {
	WorkspaceID   string          `json:"workspace_id"`
	APIKeyID      string          `json:"api_key_id,omitempty"`
	MonthlyUSD    decimal.Decimal `json:"monthly_usd"`
	Thresholds    []int           `json:"thresholds"` // percent of MonthlyUSD that raise an alert, ascending
	HardLimit     bool            `json:"hard_limit"` // refuse completions once the month's spend reaches MonthlyUSD
	EffectiveFrom time.Time       `json:"effective_from"`
}

// Normalize sorts the thresholds and drops repeats: the order they are given in says nothing.
func (b *Budget) Normalize() {
	b.Thresholds = slices.Compact(slices.Sorted(slices.Values(b.Thresholds)))
}

// Validate names the first bad field.
func (b Budget) Validate() error {
	switch {
	case b.WorkspaceID == "":
		return errors.New("budget: workspace_id is empty")
	case b.MonthlyUSD.IsNegative():
		return errors.New("budget: monthly_usd is negative")
	case !b.MonthlyUSD.Equal(b.MonthlyUSD.Truncate(6)):
		return errors.New("budget: monthly_usd has more than 6 decimals")
	case b.MonthlyUSD.GreaterThan(decimal.New(1, 12)):
		return errors.New("budget: monthly_usd is over 10^12")
	case len(b.Thresholds) > 10:
		return errors.New("budget: at most 10 thresholds")
	}
	for i, t := range b.Thresholds {
		if t < 1 || t > 250 || (i > 0 && t <= b.Thresholds[i-1]) {
			return fmt.Errorf("budget: thresholds %v: want percentages from 1 to 250, ascending (Normalize sorts them)", b.Thresholds)
		}
	}
	return nil
}

// RateLimit caps a workspace's (APIKeyID empty) or a key's requests and tokens (prompt and
// completion) per minute; 0 is no limit of that kind.
type RateLimit struct {
	WorkspaceID   string    `json:"workspace_id"`
	APIKeyID      string    `json:"api_key_id,omitempty"`
	RPM           uint32    `json:"rpm"`
	TPM           uint64    `json:"tpm"`
	EffectiveFrom time.Time `json:"effective_from"`
}

// Validate names the first bad field.
func (r RateLimit) Validate() error {
	if r.WorkspaceID == "" {
		return errors.New("rate limit: workspace_id is empty")
	}
	if r.TPM > 1<<40 {
		return errors.New("rate limit: tpm is over 2^40")
	}
	return nil
}

// Store reads and writes budgets and rate limits in ClickHouse, and prices month-to-date
// spend.
type Store struct {
	conn driver.Conn
	db   string
	now  func() time.Time
}

// NewStore returns a Store on database db.
func NewStore(conn driver.Conn, db string) *Store { return &Store{conn: conn, db: db, now: time.Now} }

// version orders writes: the latest write of a key wins.
func (s *Store) version() uint64 { return uint64(s.now().UnixNano()) }

// SetBudget stores b, in force from b.EffectiveFrom (now when zero).
func (s *Store) SetBudget(ctx context.Context, b Budget) (Budget, error) {
	if b.Thresholds == nil {
		b.Thresholds = DefaultThresholds
	}
	b.Normalize()
	if err := b.Validate(); err != nil {
		return Budget{}, err
	}
	if b.EffectiveFrom.IsZero() {
		b.EffectiveFrom = s.now().UTC().Truncate(time.Second)
	}
	th := make([]uint8, len(b.Thresholds))
	for i, t := range b.Thresholds {
		th[i] = uint8(t)
	}
	err := chdb.Insert(ctx, s.conn, sqlset.Fill(insertBudgetSQL, "db", s.db),
		[][]any{{b.WorkspaceID, b.APIKeyID, b.EffectiveFrom.UTC(), uint8(1), b.MonthlyUSD, th, boolByte(b.HardLimit), s.version()}})
	if err != nil {
		return Budget{}, fmt.Errorf("set budget of %s: %w", owner(b.WorkspaceID, b.APIKeyID), err)
	}
	return b, nil
}

// ClearBudget removes the budget of a workspace (keyID empty) or key from now on.
func (s *Store) ClearBudget(ctx context.Context, workspaceID, keyID string) error {
	err := chdb.Insert(ctx, s.conn, sqlset.Fill(insertBudgetSQL, "db", s.db),
		[][]any{{workspaceID, keyID, s.now().UTC().Truncate(time.Second), uint8(0), decimal.Zero, []uint8{}, uint8(0), s.version()}})
	if err != nil {
		return fmt.Errorf("clear budget of %s: %w", owner(workspaceID, keyID), err)
	}
	return nil
}

// SetRateLimit stores r, in force from r.EffectiveFrom (now when zero). RPM and TPM both 0
// removes the limit.
func (s *Store) SetRateLimit(ctx context.Context, r RateLimit) (RateLimit, error) {
	if err := r.Validate(); err != nil {
		return RateLimit{}, err
	}
	if r.EffectiveFrom.IsZero() {
		r.EffectiveFrom = s.now().UTC().Truncate(time.Second)
	}
	err := chdb.Insert(ctx, s.conn, sqlset.Fill(insertRateLimitSQL, "db", s.db),
		[][]any{{r.WorkspaceID, r.APIKeyID, r.EffectiveFrom.UTC(), r.RPM, r.TPM, s.version()}})
	if err != nil {
		return RateLimit{}, fmt.Errorf("set rate limit of %s: %w", owner(r.WorkspaceID, r.APIKeyID), err)
	}
	return r, nil
}

// Budgets returns the budgets in force at t, by owner (see owner).
func (s *Store) Budgets(ctx context.Context, t time.Time) (map[string]Budget, error) {
	rows, err := s.conn.Query(ctx, sqlset.Fill(budgetsSQL, "db", s.db))
	if err != nil {
		return nil, fmt.Errorf("read budgets: %w", err)
	}
	defer rows.Close()
	out := map[string]Budget{}
	for rows.Next() {
		var b Budget
		var active, hard uint8
		var th []uint8
		var version uint64
		if err := rows.Scan(&b.WorkspaceID, &b.APIKeyID, &b.EffectiveFrom, &active, &b.MonthlyUSD, &th, &hard, &version); err != nil {
			return nil, fmt.Errorf("scan budget: %w", err)
		}
		if b.EffectiveFrom.After(t) {
			continue // rows come in effective_from order: the last one at or before t stays
		}
		k := owner(b.WorkspaceID, b.APIKeyID)
		if active == 0 {
			delete(out, k)
			continue
		}
		b.EffectiveFrom, b.HardLimit = b.EffectiveFrom.UTC(), hard == 1
		b.Thresholds = make([]int, len(th))
		for i, v := range th {
			b.Thresholds[i] = int(v)
		}
		out[k] = b
	}
	return out, rows.Err()
}

// RateLimits returns the rate limits in force at t, by owner.
func (s *Store) RateLimits(ctx context.Context, t time.Time) (map[string]RateLimit, error) {
	rows, err := s.conn.Query(ctx, sqlset.Fill(rateLimitsSQL, "db", s.db))
	if err != nil {
		return nil, fmt.Errorf("read rate limits: %w", err)
	}
	defer rows.Close()
	out := map[string]RateLimit{}
	for rows.Next() {
		var r RateLimit
		var version uint64
		if err := rows.Scan(&r.WorkspaceID, &r.APIKeyID, &r.EffectiveFrom, &r.RPM, &r.TPM, &version); err != nil {
			return nil, fmt.Errorf("scan rate limit: %w", err)
		}
		if r.EffectiveFrom.After(t) {
			continue
		}
		k := owner(r.WorkspaceID, r.APIKeyID)
		if r.RPM == 0 && r.TPM == 0 {
			delete(out, k)
			continue
		}
		r.EffectiveFrom = r.EffectiveFrom.UTC()
		out[k] = r
	}
	return out, rows.Err()
}

// owner names whose spend or limit: the workspace ID, or "workspace/key".
func owner(workspaceID, keyID string) string {
	if keyID == "" {
		return workspaceID
	}
	return workspaceID + "/" + keyID
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// MonthSpend is what each workspace and key spent in a month, priced as invoices price it.
type MonthSpend struct {
	Start, End time.Time
	ByOwner    map[string]decimal.Decimal // by owner: workspace ID, and "workspace/key"
	Unpriced   map[string]bool            // workspaces with usage of a model without a price
}

// MonthToDate prices the usage of the month containing now, of every workspace and key
// (or only workspace's, if not empty), up to the last event inserted: whole days and hours
// from the rollups the aggregator has completed, the rest from raw events deduplicated by
// event_id, each price segment at its own prices.
func (s *Store) MonthToDate(ctx context.Context, prices *invoice.PriceBook, now time.Time, workspace string) (MonthSpend, error) {
	start, end := invoice.Month(now)
	ms := MonthSpend{Start: start, End: end, ByOwner: map[string]decimal.Decimal{}, Unpriced: map[string]bool{}}
	var wm time.Time
	if err := s.conn.QueryRow(ctx, sqlset.Fill(watermarkSQL, "db", s.db)).Scan(&wm); err != nil {
		return ms, fmt.Errorf("read rollup watermark: %w", err)
	}
	// The rollups are complete before the watermark's hour, and before the previous hour
	// (an event ingested late around an hour boundary waits for the next rollup).
	cutoff := now.UTC().Truncate(time.Hour).Add(-time.Hour)
	if w := wm.UTC().Truncate(time.Hour); w.Before(cutoff) {
		cutoff = w
	}
	cutoff = instant.Max(start, instant.Min(cutoff, end))
	breaks := prices.Breakpoints(start, end)
	// Days a price changes inside of are read by the hour.
	var split []time.Time
	for _, b := range breaks {
		if d := b.Truncate(24 * time.Hour); !d.Equal(b) && !slices.ContainsFunc(split, d.Equal) {
			split = append(split, d)
		}
	}
	cutoffDay := cutoff.Truncate(24 * time.Hour)
	type source struct {
		sql, col, cond string
	}
	var sources []source
	hourlyFrom := start
	if start.Before(cutoffDay) {
		cond := sqlset.Between("day", start, cutoffDay)
		hourly := ""
		if len(split) > 0 {
			cond += " AND day NOT IN (" + sqlset.DateTimes(split) + ")"
			hourly = sqlset.Between("hour", start, cutoffDay) + " AND toStartOfDay(hour) IN (" + sqlset.DateTimes(split) + ")"
		}
		sources = append(sources, source{spendDailySQL, "day", cond})
		if hourly != "" {
			sources = append(sources, source{spendHourlySQL, "hour", hourly})
		}
		hourlyFrom = cutoffDay
	}
	if hourlyFrom.Before(cutoff) {
		sources = append(sources, source{spendHourlySQL, "hour", sqlset.Between("hour", hourlyFrom, cutoff)})
	}
	sources = append(sources, source{spendRawSQL, "occurred_at", sqlset.Between("occurred_at", cutoff, end)})
	var args []any
	filter := ""
	if workspace != "" {
		filter, args = "workspace_id = ? AND ", []any{workspace}
	}
	for _, src := range sources {
		q := sqlset.Fill(src.sql, "db", s.db, "seg", sqlset.Segment(src.col, breaks), "cond", filter+"("+src.cond+")")
		if err := s.addSpend(ctx, q, args, prices, start, breaks, &ms); err != nil {
			return ms, err
		}
	}
	return ms, nil
}

func (s *Store) addSpend(ctx context.Context, q string, args []any, prices *invoice.PriceBook, start time.Time, breaks []time.Time, ms *MonthSpend) error {
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("read month-to-date usage: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var ws, key, model string
		var seg, input, cached, output uint64
		if err := rows.Scan(&ws, &key, &model, &seg, &input, &cached, &output); err != nil {
			return fmt.Errorf("scan month-to-date usage: %w", err)
		}
		at := start
		if seg > 0 {
			at = breaks[seg-1]
		}
		c, ok := prices.Cost(ws, model, at, input, cached, output)
		if !ok {
			ms.Unpriced[ws] = true
			continue
		}
		ms.ByOwner[ws] = ms.ByOwner[ws].Add(c)
		ms.ByOwner[owner(ws, key)] = ms.ByOwner[owner(ws, key)].Add(c)
	}
	return rows.Err()
}

// Status is a workspace's month so far against its budgets and limits, as the API serves it.
type Status struct {
	Object      string          `json:"object"` // "spend_status"
	WorkspaceID string          `json:"workspace_id"`
	PeriodStart time.Time       `json:"period_start"`
	PeriodEnd   time.Time       `json:"period_end"`
	SpendUSD    decimal.Decimal `json:"spend_usd"` // month to date, priced as the invoice prices it
	Budgets     []BudgetUsage   `json:"budgets"`
	RateLimits  []RateLimit     `json:"rate_limits"`
	Alerts      []Alert         `json:"alerts"` // this month's, newest first
}

// BudgetUsage is one budget with what its owner spent this month.
type BudgetUsage struct {
	Budget
	SpendUSD     decimal.Decimal `json:"spend_usd"`
	RemainingUSD decimal.Decimal `json:"remaining_usd"` // zero once reached
	Exceeded     bool            `json:"exceeded"`
}

// Status reads workspaceID's month so far.
func (s *Store) Status(ctx context.Context, prices *invoice.PriceBook, workspaceID string) (Status, error) {
	now := s.now().UTC()
	ms, err := s.MonthToDate(ctx, prices, now, workspaceID)
	if err != nil {
		return Status{}, err
	}
	budgets, err := s.Budgets(ctx, now)
	if err != nil {
		return Status{}, err
	}
	limits, err := s.RateLimits(ctx, now)
	if err != nil {
		return Status{}, err
	}
	alerts, err := s.Alerts(ctx, workspaceID, ms.Start)
	if err != nil {
		return Status{}, err
	}
	st := Status{Object: "spend_status", WorkspaceID: workspaceID, PeriodStart: ms.Start, PeriodEnd: ms.End,
		SpendUSD: ms.ByOwner[workspaceID], Budgets: []BudgetUsage{}, RateLimits: []RateLimit{}, Alerts: alerts}
	for _, o := range sortedKeys(budgets) {
		b := budgets[o]
		if b.WorkspaceID != workspaceID {
			continue
		}
		spent := ms.ByOwner[o]
		st.Budgets = append(st.Budgets, BudgetUsage{Budget: b, SpendUSD: spent,
			RemainingUSD: decimal.Max(decimal.Zero, b.MonthlyUSD.Sub(spent)), Exceeded: !spent.LessThan(b.MonthlyUSD)})
	}
	for _, o := range sortedKeys(limits) {
		if r := limits[o]; r.WorkspaceID == workspaceID {
			st.RateLimits = append(st.RateLimits, r)
		}
	}
	return st, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
