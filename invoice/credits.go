package invoice

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/sqlset"
)

// Grant is prepaid credit a workspace may use from EffectiveFrom until ExpiresAt (zero:
// never). Invoices apply it as credit lines (KindCredit), hour by hour of usage, in the
// order CreditOrder gives.
type Grant struct {
	ID            string          `json:"id"`
	WorkspaceID   string          `json:"workspace_id"`
	AmountUSD     decimal.Decimal `json:"amount_usd"`
	EffectiveFrom time.Time       `json:"effective_from"`
	ExpiresAt     time.Time       `json:"expires_at,omitzero"`
	Priority      int             `json:"priority"` // lower is used first, among grants expiring together
	Reason        string          `json:"reason"`
	CreatedAt     time.Time       `json:"created_at"`
	Voided        bool            `json:"voided"`
}

// Validate names the first bad field.
func (g Grant) Validate() error {
	switch {
	case g.WorkspaceID == "":
		return errors.New("grant: workspace_id is empty")
	case !g.AmountUSD.IsPositive():
		return errors.New("grant: amount_usd must be positive")
	case !g.AmountUSD.Equal(g.AmountUSD.Truncate(6)):
		return errors.New("grant: amount_usd has more than 6 decimals")
	case g.AmountUSD.GreaterThan(decimal.New(1, 12)):
		return errors.New("grant: amount_usd is over 10^12")
	case !g.EffectiveFrom.Equal(g.EffectiveFrom.Truncate(time.Hour)):
		return errors.New("grant: effective_from must be on a whole UTC hour (credits are applied hour by hour of usage)")
	case !g.ExpiresAt.IsZero() && !g.ExpiresAt.Equal(g.ExpiresAt.Truncate(time.Hour)):
		return errors.New("grant: expires_at must be on a whole UTC hour")
	case !g.ExpiresAt.IsZero() && !g.ExpiresAt.After(g.EffectiveFrom):
		return errors.New("grant: expires_at must be after effective_from")
	case g.Priority < 0 || g.Priority > 65535:
		return errors.New("grant: priority is 0 to 65535")
	case utf8.RuneCountInString(g.Reason) > 500:
		return errors.New("grant: reason is at most 500 characters")
	}
	return nil
}

// inForce reports whether g can pay for usage that happened at t.
func (g Grant) inForce(t time.Time) bool {
	return !g.Voided && !g.EffectiveFrom.After(t) && (g.ExpiresAt.IsZero() || t.Before(g.ExpiresAt))
}

// CreditOrder sorts grants in the order usage burns them: the one expiring first (never
// expiring last), then the lowest priority number, then the oldest, then by ID.
func CreditOrder(gs []Grant) {
	sort.SliceStable(gs, func(i, j int) bool {
		a, b := gs[i], gs[j]
		switch {
		case a.ExpiresAt.IsZero() != b.ExpiresAt.IsZero():
			return !a.ExpiresAt.IsZero()
		case !a.ExpiresAt.Equal(b.ExpiresAt):
			return a.ExpiresAt.Before(b.ExpiresAt)
		case a.Priority != b.Priority:
			return a.Priority < b.Priority
		case !a.EffectiveFrom.Equal(b.EffectiveFrom):
			return a.EffectiveFrom.Before(b.EffectiveFrom)
		}
		return a.ID < b.ID
	})
}

// usageAt is an amount of usage (net of discounts) that happened from At on, within one
// stretch of time no price or grant changes inside of.
type usageAt struct {
	At     time.Time
	Amount decimal.Decimal
}

// allocate pays the usage, oldest first, from the grants in force when it happened, in
// CreditOrder, each up to what it has left (avail, by grant ID; debited). It returns what
// each grant paid.
func allocate(grants []Grant, avail map[string]decimal.Decimal, usage []usageAt) map[string]decimal.Decimal {
	ordered := append([]Grant(nil), grants...)
	CreditOrder(ordered)
	us := append([]usageAt(nil), usage...)
	sort.SliceStable(us, func(i, j int) bool { return us[i].At.Before(us[j].At) })
	paid := map[string]decimal.Decimal{}
	for _, u := range us {
		left := u.Amount
		for _, g := range ordered {
			if !left.IsPositive() {
				break
			}
			if !g.inForce(u.At) || !avail[g.ID].IsPositive() {
				continue
			}
			take := decimal.Min(left, avail[g.ID])
			avail[g.ID] = avail[g.ID].Sub(take)
			paid[g.ID] = paid[g.ID].Add(take)
			left = left.Sub(take)
		}
	}
	return paid
}

// NewGrantID returns a fresh random grant ID.
func NewGrantID() string {
	b := make([]byte, 10)
	rand.Read(b)
	return "gr_" + hex.EncodeToString(b)
}

// AddGrant stores a new grant (a random ID when g has none).
func (iv *Invoicer) AddGrant(ctx context.Context, g Grant) (Grant, error) {
	if g.ID == "" {
		g.ID = NewGrantID()
	}
	if g.CreatedAt.IsZero() {
		g.CreatedAt = iv.now().UTC().Truncate(time.Second)
	}
	g.EffectiveFrom, g.ExpiresAt = g.EffectiveFrom.UTC(), g.ExpiresAt.UTC()
	if err := g.Validate(); err != nil {
		return Grant{}, err
	}
	return g, iv.writeGrant(ctx, g)
}

// writeGrant stores a version of g; the latest write wins (wall-clock versions: a grant's
// history is its writes, whatever period the invoicer works on).
func (iv *Invoicer) writeGrant(ctx context.Context, g Grant) error {
	var voided uint8
	if g.Voided {
		voided = 1
	}
	err := chdb.Insert(ctx, iv.conn, sqlset.Fill(insertGrantSQL, "db", iv.cfg.Database), [][]any{{g.ID, g.WorkspaceID, g.AmountUSD,
		g.EffectiveFrom, zeroTime(g.ExpiresAt), uint16(g.Priority), g.Reason, g.CreatedAt, voided, uint64(time.Now().UnixNano())}})
	if err != nil {
		return fmt.Errorf("store grant %s: %w", g.ID, err)
	}
	return nil
}

// VoidGrant stops a workspace's grant from being applied from now on; what invoices
// already applied stays on them.
func (iv *Invoicer) VoidGrant(ctx context.Context, workspaceID, id string) (Grant, error) {
	gs, err := iv.Grants(ctx, []string{workspaceID})
	if err != nil {
		return Grant{}, err
	}
	for _, g := range gs[workspaceID] {
		if g.ID == id {
			g.Voided = true
			return g, iv.writeGrant(ctx, g)
		}
	}
	return Grant{}, fmt.Errorf("grant %s of %s: %w", id, workspaceID, ErrNotFound)
}

// Grants returns the grants of the workspaces given (nil: all), by workspace.
func (iv *Invoicer) Grants(ctx context.Context, workspaces []string) (map[string][]Grant, error) {
	rows, err := iv.conn.Query(ctx, sqlset.Fill(grantsSQL, "db", iv.cfg.Database, "workspaces", wsFilter(workspaces)))
	if err != nil {
		return nil, fmt.Errorf("read credit grants: %w", err)
	}
	defer rows.Close()
	out := map[string][]Grant{}
	for rows.Next() {
		var g Grant
		var prio uint16
		var voided uint8
		if err := rows.Scan(&g.ID, &g.WorkspaceID, &g.AmountUSD, &g.EffectiveFrom, &g.ExpiresAt, &prio, &g.Reason, &g.CreatedAt, &voided); err != nil {
			return nil, fmt.Errorf("scan credit grant: %w", err)
		}
		g.Priority, g.Voided = int(prio), voided == 1
		g.EffectiveFrom, g.CreatedAt = g.EffectiveFrom.UTC(), g.CreatedAt.UTC()
		if g.ExpiresAt.Unix() == 0 {
			g.ExpiresAt = time.Time{}
		} else {
			g.ExpiresAt = g.ExpiresAt.UTC()
		}
		out[g.WorkspaceID] = append(out[g.WorkspaceID], g)
	}
	return out, rows.Err()
}

// creditsApplied returns, by workspace, grant and invoice period (Unix seconds), the
// credits every non-void invoice applies.
func (iv *Invoicer) creditsApplied(ctx context.Context, workspaces []string) (map[string]map[string]map[int64]decimal.Decimal, error) {
	rows, err := iv.conn.Query(ctx, sqlset.Fill(creditsAppliedSQL, "db", iv.cfg.Database, "workspaces", wsFilter(workspaces)))
	if err != nil {
		return nil, fmt.Errorf("read applied credits: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]map[int64]decimal.Decimal{}
	for rows.Next() {
		var ws, grant string
		var period time.Time
		var amount decimal.Decimal
		if err := rows.Scan(&ws, &grant, &period, &amount); err != nil {
			return nil, fmt.Errorf("scan applied credit: %w", err)
		}
		if out[ws] == nil {
			out[ws] = map[string]map[int64]decimal.Decimal{}
		}
		if out[ws][grant] == nil {
			out[ws][grant] = map[int64]decimal.Decimal{}
		}
		// Credit lines are negative: what they applied is the opposite.
		out[ws][grant][period.Unix()] = out[ws][grant][period.Unix()].Sub(amount)
	}
	return out, rows.Err()
}

// available is what each grant of a workspace has left for the invoice of period p: its
// amount less what every other non-void invoice applies.
func available(grants []Grant, applied map[string]map[int64]decimal.Decimal, p time.Time) map[string]decimal.Decimal {
	out := map[string]decimal.Decimal{}
	for _, g := range grants {
		a := g.AmountUSD
		for period, amount := range applied[g.ID] {
			if period != p.Unix() {
				a = a.Sub(amount)
			}
		}
		out[g.ID] = a
	}
	return out
}

// grantBreakpoints are the instants strictly inside (start, end) at which a grant starts
// or expires: usage is priced, and credited, in stretches between them.
func grantBreakpoints(grants map[string][]Grant, start, end time.Time) []time.Time {
	var out []time.Time
	for _, gs := range grants {
		for _, g := range gs {
			for _, t := range []time.Time{g.EffectiveFrom, g.ExpiresAt} {
				if t.After(start) && t.Before(end) {
					out = append(out, t)
				}
			}
		}
	}
	return out
}

// creditLines are the credit lines of an invoice of [start, end): one per grant that pays.
func creditLines(paid map[string]decimal.Decimal, start, end time.Time) []Line {
	ids := make([]string, 0, len(paid))
	for id, amount := range paid {
		if amount.IsPositive() {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	out := make([]Line, len(ids))
	for i, id := range ids {
		out[i] = Line{Kind: KindCredit, ServicePeriodStart: start, ServicePeriodEnd: end, GrantID: id, Amount: paid[id].Neg()}
	}
	return out
}

// Prepaid returns the workspaces in prepaid mode at t.
func (iv *Invoicer) Prepaid(ctx context.Context, t time.Time) (map[string]bool, error) {
	rows, err := iv.conn.Query(ctx, sqlset.Fill(billingModesSQL, "db", iv.cfg.Database))
	if err != nil {
		return nil, fmt.Errorf("read billing modes: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var ws string
		var from time.Time
		var prepaid uint8
		if err := rows.Scan(&ws, &from, &prepaid); err != nil {
			return nil, fmt.Errorf("scan billing mode: %w", err)
		}
		if from.After(t) {
			continue // rows come in effective_from order: the last one at or before t stays
		}
		if prepaid == 1 {
			out[ws] = true
		} else {
			delete(out, ws)
		}
	}
	return out, rows.Err()
}

// SetPrepaid puts a workspace in prepaid mode (or takes it out) from now on.
func (iv *Invoicer) SetPrepaid(ctx context.Context, workspaceID string, prepaid bool) error {
	var p uint8
	if prepaid {
		p = 1
	}
	now := iv.now().UTC()
	err := chdb.Insert(ctx, iv.conn, sqlset.Fill(insertBillingModeSQL, "db", iv.cfg.Database),
		[][]any{{workspaceID, now.Truncate(time.Second), p, uint64(now.UnixNano())}})
	if err != nil {
		return fmt.Errorf("set billing mode of %s: %w", workspaceID, err)
	}
	return nil
}

// PrepaidLimits returns, for every workspace in prepaid mode at t, how much of the month's
// spend its credits can pay for: what the grants in force at t have left after the other
// months' invoices, plus what grants no longer in force (expired or voided this month)
// applied to this month's invoice so far.
func (iv *Invoicer) PrepaidLimits(ctx context.Context, t time.Time) (map[string]decimal.Decimal, error) {
	prepaid, err := iv.Prepaid(ctx, t)
	if err != nil || len(prepaid) == 0 {
		return map[string]decimal.Decimal{}, err
	}
	wss := make([]string, 0, len(prepaid))
	for ws := range prepaid {
		wss = append(wss, ws)
	}
	sort.Strings(wss)
	grants, err := iv.Grants(ctx, wss)
	if err != nil {
		return nil, err
	}
	applied, err := iv.creditsApplied(ctx, wss)
	if err != nil {
		return nil, err
	}
	month, _ := Month(t)
	out := make(map[string]decimal.Decimal, len(wss))
	for _, ws := range wss {
		limit := decimal.Zero
		avail := available(grants[ws], applied[ws], month)
		for _, g := range grants[ws] {
			if g.inForce(t) {
				limit = limit.Add(decimal.Max(avail[g.ID], decimal.Zero))
			} else {
				limit = limit.Add(applied[ws][g.ID][month.Unix()])
			}
		}
		out[ws] = limit
	}
	return out, nil
}

// GrantBalance is a grant with what invoices, and the current month so far, took from it.
type GrantBalance struct {
	Grant
	UsedUSD      decimal.Decimal `json:"used_usd"`      // applied by non-void invoices, and by this month's usage so far
	RemainingUSD decimal.Decimal `json:"remaining_usd"` // zero once expired or voided
}

// Balance is a workspace's prepaid credit now.
type Balance struct {
	Object      string          `json:"object"` // "credit_balance"
	WorkspaceID string          `json:"workspace_id"`
	Prepaid     bool            `json:"prepaid"`
	BalanceUSD  decimal.Decimal `json:"balance_usd"` // what grants in force still hold
	Grants      []GrantBalance  `json:"grants"`      // in burn order
}

// Balance is workspaceID's credit at t: each grant less what every non-void invoice of
// another month applies and what this month's usage so far takes (as its invoice would,
// computed now from the rollups).
func (iv *Invoicer) Balance(ctx context.Context, workspaceID string, t time.Time) (Balance, error) {
	ws := []string{workspaceID}
	grants, err := iv.Grants(ctx, ws)
	if err != nil {
		return Balance{}, err
	}
	prepaid, err := iv.Prepaid(ctx, t)
	if err != nil {
		return Balance{}, err
	}
	b := Balance{Object: "credit_balance", WorkspaceID: workspaceID, Prepaid: prepaid[workspaceID], Grants: []GrantBalance{}}
	gs := grants[workspaceID]
	if len(gs) == 0 {
		return b, nil
	}
	applied, err := iv.creditsApplied(ctx, ws)
	if err != nil {
		return Balance{}, err
	}
	start, end := Month(t)
	live, err := iv.ComputeWorkspace(ctx, workspaceID, start, end)
	if err != nil {
		return Balance{}, err
	}
	now := map[string]decimal.Decimal{}
	if live != nil {
		for _, l := range live.Lines {
			if l.Kind == KindCredit {
				now[l.GrantID] = now[l.GrantID].Sub(l.Amount)
			}
		}
	}
	avail := available(gs, applied[workspaceID], start)
	CreditOrder(gs)
	for _, g := range gs {
		gb := GrantBalance{Grant: g, UsedUSD: g.AmountUSD.Sub(avail[g.ID]).Add(now[g.ID])}
		if g.inForce(t) {
			gb.RemainingUSD = decimal.Max(decimal.Zero, g.AmountUSD.Sub(gb.UsedUSD))
			b.BalanceUSD = b.BalanceUSD.Add(gb.RemainingUSD)
		}
		b.Grants = append(b.Grants, gb)
	}
	return b, nil
}
