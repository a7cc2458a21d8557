package invoice

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/shopspring/decimal"
)

// Reconcile recomputes a stored invoice straight from deduplicated raw events and the
// price book, bypassing the rollups, and returns every difference it finds (none: the
// invoice is reproducible from raw events). It checks each line's arithmetic, the
// subtotal and the rounded total, and, for the invoice's own month and every month it
// adjusts, that its lines bill exactly that month's raw usage minus what the workspace's
// other non-void invoices bill for it. A finalized invoice whose month got late events not
// yet billed on a later invoice shows them as a difference until the next run bills them.
// A void invoice bills nothing any more: only its arithmetic is checked.
func (iv *Invoicer) Reconcile(ctx context.Context, workspaceID, id string) ([]string, error) {
	stored, err := iv.Get(ctx, workspaceID, id)
	if err != nil {
		return nil, err
	}
	var diffs []string
	sum := decimal.Zero
	for _, l := range stored.Lines {
		want, checked := decimal.Zero, true
		switch {
		case packaged(l.TokenClass):
			checked = false // priced on the period's total: recomputed below
		case l.Kind == KindUsage || l.Kind == KindAdjustment:
			want = Amount(l.Quantity, l.PerMillion)
		case l.Kind == KindReversal:
			want = Amount(l.Quantity, l.PerMillion).Neg()
		default:
			checked = false // discounts, credits and plan amounts are recomputed below
		}
		if checked && !l.Amount.Equal(want) {
			diffs = append(diffs, fmt.Sprintf("line %d (%s %s): amount %s is not %d × %s/1M = %s",
				l.No, l.Model, l.TokenClass, l.Amount, l.Quantity, l.PerMillion, want))
		}
		sum = sum.Add(l.Amount)
	}
	if !stored.Subtotal.Equal(sum) {
		diffs = append(diffs, fmt.Sprintf("subtotal: stored %s, its lines add up to %s", stored.Subtotal, sum))
	}
	if !stored.Total.Equal(RoundTotal(stored.Subtotal)) {
		diffs = append(diffs, fmt.Sprintf("total: stored %s, its subtotal rounds to %s", stored.Total, RoundTotal(stored.Subtotal)))
	}
	if stored.Status == StatusVoid {
		return diffs, nil
	}

	// The months this invoice bills: its own and every month it adjusts.
	byPeriod := map[int64][]Line{stored.PeriodStart.Unix(): nil}
	for _, l := range stored.Lines {
		if l.Kind != KindCredit {
			byPeriod[l.ServicePeriodStart.Unix()] = append(byPeriod[l.ServicePeriodStart.Unix()], l)
		}
	}
	periods := make([]time.Time, 0, len(byPeriod))
	for p := range byPeriod {
		periods = append(periods, time.Unix(p, 0).UTC())
	}
	sort.Slice(periods, func(i, j int) bool { return periods[i].Before(periods[j]) })
	ws := []string{workspaceID}
	elsewhere, err := iv.billed(ctx, periods, stored.PeriodStart, ws)
	if err != nil {
		return nil, err
	}
	for _, p := range periods {
		pStart, pEnd := Month(p)
		month := pStart.Format("2006-01")
		p0, err := iv.priceUsage(ctx, pStart, pEnd, fromRawEvents, ws, nil)
		if err != nil {
			return nil, err
		}
		raw, failed := p0.charges, p0.failed
		if err := failed[workspaceID]; err != nil {
			return nil, fmt.Errorf("reconcile %s: %w", id, err)
		}
		now := raw[workspaceID]
		if now == nil {
			now = charges{}
		}
		want, err := now.minus(elsewhere[workspaceID][p.Unix()])
		if err != nil {
			diffs = append(diffs, fmt.Sprintf("%s: other invoices bill more than the raw events give: %v", month, err))
			continue
		}
		wantKind := KindUsage
		if !pStart.Equal(stored.PeriodStart) {
			wantKind = KindAdjustment
		}
		have := charges{}
		for _, l := range byPeriod[p.Unix()] {
			if (l.Kind == KindUsage || l.Kind == KindAdjustment) && l.Kind != wantKind {
				diffs = append(diffs, fmt.Sprintf("line %d (%s %s for %s): kind %q, want %q", l.No, l.Model, l.TokenClass, month, l.Kind, wantKind))
			}
			have.addAsLine(l)
		}
		for _, k := range have.keys() {
			h, w := have[k], want[k]
			switch {
			case w == nil:
				diffs = append(diffs, fmt.Sprintf("%s: %s: not in raw events", month, k.describe(h)))
			case w.qty != h.qty || !w.amount.Equal(h.amount):
				diffs = append(diffs, fmt.Sprintf("%s: %s: raw events give %s", month, k.describe(h), k.describe(w)))
			}
		}
		for _, k := range want.keys() {
			if have[k] == nil {
				diffs = append(diffs, fmt.Sprintf("%s: missing line %s", month, k.describe(want[k])))
			}
		}
	}
	credits, err := iv.reconcileCredits(ctx, stored)
	if err != nil {
		return nil, err
	}
	return append(diffs, credits...), nil
}

// reconcileCredits recomputes the credits an invoice applies, as the invoice run applies
// them, from the usage raw events give for its own month (hour by hour) and its
// adjustment lines, and the grants' amounts less what other non-void invoices apply.
func (iv *Invoicer) reconcileCredits(ctx context.Context, stored *Invoice) ([]string, error) {
	ws := []string{stored.WorkspaceID}
	grants, err := iv.Grants(ctx, ws)
	if err != nil {
		return nil, err
	}
	have := map[string]decimal.Decimal{}
	var billing []Line
	for _, l := range stored.Lines {
		if l.Kind == KindCredit {
			have[l.GrantID] = have[l.GrantID].Sub(l.Amount)
		} else {
			billing = append(billing, l)
		}
	}
	gs := grants[stored.WorkspaceID]
	if len(gs) == 0 && len(have) == 0 {
		return nil, nil
	}
	applied, err := iv.creditsApplied(ctx, ws)
	if err != nil {
		return nil, err
	}
	raw, err := iv.priceUsage(ctx, stored.PeriodStart, stored.PeriodEnd, fromRawEvents, ws, grantBreakpoints(grants, stored.PeriodStart, stored.PeriodEnd))
	if err != nil {
		return nil, err
	}
	want := allocate(gs, available(gs, applied[stored.WorkspaceID], stored.PeriodStart),
		billedUsage(billing, stored.PeriodStart, raw.usage[stored.WorkspaceID]))
	var diffs []string
	for _, id := range sortedGrantIDs(have, want) {
		if !have[id].Equal(want[id]) {
			diffs = append(diffs, fmt.Sprintf("credit from grant %s: stored %s, raw events and the grants give %s", id, have[id], want[id]))
		}
	}
	return diffs, nil
}

func sortedGrantIDs(maps ...map[string]decimal.Decimal) []string {
	set := map[string]bool{}
	for _, m := range maps {
		for id := range m {
			set[id] = true
		}
	}
	out := make([]string, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}
