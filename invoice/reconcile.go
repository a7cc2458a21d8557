package invoice

import (
	"context"
	"fmt"
)

// Reconcile recomputes a stored invoice straight from deduplicated raw events and the
// price book, bypassing the rollups, and returns every difference it finds (none: the
// invoice is reproducible from raw events).
func (iv *Invoicer) Reconcile(ctx context.Context, workspaceID, id string) ([]string, error) {
	stored, err := iv.Get(ctx, workspaceID, id)
	if err != nil {
		return nil, err
	}
	fresh, failed, err := iv.compute(ctx, stored.PeriodStart, stored.PeriodEnd, rawUsageSQL)
	if err != nil {
		return nil, err
	}
	if err := failed[workspaceID]; err != nil {
		return nil, fmt.Errorf("reconcile %s: %w", id, err)
	}
	want := fresh[workspaceID]
	if want == nil {
		want = &Invoice{}
	}
	var diffs []string
	type key struct{ model, class, price string }
	idx := map[key]Line{}
	for _, l := range want.Lines {
		idx[key{l.Model, l.TokenClass, l.PerMillion.String()}] = l
	}
	for _, l := range stored.Lines {
		k := key{l.Model, l.TokenClass, l.PerMillion.String()}
		w, ok := idx[k]
		delete(idx, k)
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("line %d (%s %s at %s/1M): not in raw events", l.No, l.Model, l.TokenClass, l.PerMillion))
		case w.Quantity != l.Quantity || !w.Amount.Equal(l.Amount):
			diffs = append(diffs, fmt.Sprintf("line %d (%s %s): stored %d tokens = %s, raw events give %d tokens = %s",
				l.No, l.Model, l.TokenClass, l.Quantity, l.Amount, w.Quantity, w.Amount))
		}
	}
	for k, w := range idx {
		diffs = append(diffs, fmt.Sprintf("missing line: %s %s at %s/1M, %d tokens = %s", k.model, k.class, k.price, w.Quantity, w.Amount))
	}
	if !stored.Subtotal.Equal(want.Subtotal) {
		diffs = append(diffs, fmt.Sprintf("subtotal: stored %s, raw events give %s", stored.Subtotal, want.Subtotal))
	}
	if !stored.Total.Equal(RoundTotal(stored.Subtotal)) {
		diffs = append(diffs, fmt.Sprintf("total: stored %s, its subtotal rounds to %s", stored.Total, RoundTotal(stored.Subtotal)))
	}
	return diffs, nil
}
