package invoice

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/internal/sqlset"
)

// usageSource is where priceUsage reads usage: the rollups (what invoices bill) or
// deduplicated raw events (what reconciliation checks invoices against).
type usageSource int

const (
	fromRollups usageSource = iota
	fromRawEvents
)

// chargeKey identifies what a line bills within one service period: a model's token
// class (possibly qualified by a tier, see tierClass) at one unit price; a discount at one
// percentage; or a plan's fee, commitment true-up or included usage (model holds the plan).
type chargeKey struct {
	kind                string // "" (usage), KindDiscount, KindFee, KindCommitment, KindIncluded, KindReversal
	model, class, price string
	pct                 string
}

// charge is a quantity and amount under one key; seq keeps the order of first appearance
// (price segments in time order), so lines come out the same on every run.
type charge struct {
	seq             int
	model, class    string
	qty             uint64
	perMillion, pct decimal.Decimal
	amount          decimal.Decimal
}

// charges is what one workspace's service period bills, or has billed, by key.
type charges map[chargeKey]*charge

func (c charges) add(k chargeKey, ch charge) {
	if have := c[k]; have != nil {
		have.qty += ch.qty
		have.amount = have.amount.Add(ch.amount)
		return
	}
	ch.seq = len(c)
	c[k] = &ch
}

func (c charges) addUsage(model, class string, qty uint64, perMillion decimal.Decimal, amount decimal.Decimal) {
	c.add(chargeKey{model: model, class: class, price: perMillion.String()},
		charge{model: model, class: class, qty: qty, perMillion: perMillion, amount: amount})
}

func (c charges) addDiscount(pct, amount decimal.Decimal) {
	c.add(chargeKey{kind: KindDiscount, pct: pct.String()}, charge{pct: pct, amount: amount})
}

// addPlan adds a plan amount: its fee (qty: hours, perMillion: the monthly fee), its
// commitment true-up or its included usage (perMillion: the prorated commitment or
// allowance).
func (c charges) addPlan(kind, plan string, qty uint64, basis, amount decimal.Decimal) {
	c.add(chargeKey{kind: kind, model: plan, price: basis.String()}, charge{model: plan, qty: qty, perMillion: basis, amount: amount})
}

// takeBack removes from a usage key what a reversal line took back.
func (c charges) takeBack(model, class string, qty uint64, perMillion, amount decimal.Decimal) {
	k := chargeKey{model: model, class: class, price: perMillion.String()}
	if have := c[k]; have != nil {
		have.qty -= min(qty, have.qty)
		have.amount = have.amount.Add(amount)
		return
	}
	c.addUsage(model, class, 0, perMillion, amount)
}

// amountKind reports kinds billed as an amount that may move either way between runs of a
// period (a commitment true-up falls as late usage arrives).
func amountKind(kind string) bool {
	return kind == KindFee || kind == KindCommitment || kind == KindIncluded
}

// minus returns what c bills beyond billed: the charges still to bill. Usage only grows,
// so a key billed beyond what it gives now can only come from an edited price book or
// overrides for an invoiced period (or deleted raw events): that is an error, never a
// silent credit — except on tiered plan rates, where late usage legitimately moves tokens
// already billed to another tier (a volume rate's whole period to the next tier's price):
// those are taken back by reversal lines. A plan's fee, true-up and included usage are
// billed as the difference of their amounts, either way.
func (c charges) minus(billed charges) (charges, error) {
	out := charges{}
	for _, k := range c.keys() {
		now, was := c[k], billed[k]
		if was == nil {
			was = &charge{}
		}
		switch {
		case k.kind == KindDiscount:
			d := now.amount.Sub(was.amount)
			if d.IsPositive() {
				return nil, fmt.Errorf("discount %s%% already billed %s, usage now gives %s", k.pct, was.amount, now.amount)
			}
			if !d.IsZero() {
				out.addDiscount(now.pct, d)
			}
			continue
		case amountKind(k.kind):
			if d := now.amount.Sub(was.amount); !d.IsZero() || now.qty > was.qty {
				out.addPlan(k.kind, now.model, now.qty-min(was.qty, now.qty), now.perMillion, d)
			}
			continue
		}
		if was.qty > now.qty {
			if tiered(k.class) {
				out.reverse(now.model, now.class, was.qty-now.qty, now.perMillion)
				continue
			}
			return nil, fmt.Errorf("%s %s at %s/1M: %d tokens already billed, usage now gives %d", k.model, k.class, k.price, was.qty, now.qty)
		}
		if d := now.qty - was.qty; d > 0 {
			out.addUsage(now.model, now.class, d, now.perMillion, now.amount.Sub(was.amount))
		}
	}
	for _, k := range billed.keys() {
		was := billed[k]
		if c[k] != nil || (was.qty == 0 && was.amount.IsZero()) {
			continue
		}
		switch {
		case k.kind == KindDiscount:
			return nil, fmt.Errorf("discount %s%% already billed %s, usage now gives none", k.pct, was.amount)
		case amountKind(k.kind):
			out.addPlan(k.kind, was.model, 0, was.perMillion, was.amount.Neg())
		case tiered(k.class):
			out.reverse(was.model, was.class, was.qty, was.perMillion)
		default:
			return nil, fmt.Errorf("%s %s at %s/1M: %d tokens already billed, usage now gives none", k.model, k.class, k.price, was.qty)
		}
	}
	return out, nil
}

// reverse adds a reversal: qty tokens billed at perMillion taken back.
func (c charges) reverse(model, class string, qty uint64, perMillion decimal.Decimal) {
	c.add(chargeKey{kind: KindReversal, model: model, class: class, price: perMillion.String()},
		charge{model: model, class: class, qty: qty, perMillion: perMillion, amount: Amount(qty, perMillion).Neg()})
}

// keys returns the keys in order of first appearance.
func (c charges) keys() []chargeKey {
	ks := make([]chargeKey, 0, len(c))
	for k := range c {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return c[ks[i]].seq < c[ks[j]].seq })
	return ks
}

// lines turns charges of service period [start, end) into invoice lines; usage lines get
// kind usageKind (usage for the invoice's own period, adjustment for an earlier one).
func (c charges) lines(usageKind string, start, end time.Time) []Line {
	var out []Line
	for _, k := range c.keys() {
		ch := c[k]
		l := Line{Kind: usageKind, ServicePeriodStart: start, ServicePeriodEnd: end, Model: ch.model, TokenClass: ch.class,
			Quantity: ch.qty, PerMillion: ch.perMillion, Amount: ch.amount}
		switch k.kind {
		case KindDiscount:
			l.Kind, l.DiscountPercent = KindDiscount, ch.pct
		case "":
		default:
			l.Kind = k.kind
		}
		out = append(out, l)
	}
	return out
}

// addAsLine keeps a stored line under its own key, as minus would produce it.
func (c charges) addAsLine(l Line) {
	if l.Kind == KindReversal {
		c.add(chargeKey{kind: KindReversal, model: l.Model, class: l.TokenClass, price: l.PerMillion.String()},
			charge{model: l.Model, class: l.TokenClass, qty: l.Quantity, perMillion: l.PerMillion, amount: l.Amount})
		return
	}
	c.addLine(l)
}

// describe names a charge for people, in reconciliation differences.
func (k chargeKey) describe(ch *charge) string {
	switch k.kind {
	case KindDiscount:
		return fmt.Sprintf("discount %s%% = %s", k.pct, ch.amount)
	case KindFee, KindCommitment, KindIncluded:
		return fmt.Sprintf("plan %s %s on %s (%d hours) = %s", k.model, k.kind, k.price, ch.qty, ch.amount)
	case KindReversal:
		return fmt.Sprintf("reversal of %d %s %s at %s/1M = %s", ch.qty, k.model, k.class, k.price, ch.amount)
	}
	return fmt.Sprintf("%s %s at %s/1M, %d tokens = %s", k.model, k.class, k.price, ch.qty, ch.amount)
}

// addLine folds a stored line back into what a period has billed.
func (c charges) addLine(l Line) {
	switch {
	case l.Kind == KindDiscount:
		c.addDiscount(l.DiscountPercent, l.Amount)
	case amountKind(l.Kind):
		c.addPlan(l.Kind, l.Model, l.Quantity, l.PerMillion, l.Amount)
	case l.Kind == KindReversal:
		c.takeBack(l.Model, l.TokenClass, l.Quantity, l.PerMillion, l.Amount)
	default:
		c.addUsage(l.Model, l.TokenClass, l.Quantity, l.PerMillion, l.Amount)
	}
}

// wsFilter returns the SQL filter restricting a query to workspaces (nil: every
// workspace), as literals: IN over a literal list uses the primary key.
func wsFilter(workspaces []string) string {
	if workspaces == nil {
		return ""
	}
	return "AND workspace_id IN (" + sqlStrings(workspaces) + ")"
}

// sqlStrings quotes values as ClickHouse string literals, comma-separated.
func sqlStrings(values []string) string {
	if len(values) == 0 {
		return "''"
	}
	q := make([]string, len(values))
	esc := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	for i, v := range values {
		q[i] = "'" + esc.Replace(v) + "'"
	}
	return strings.Join(q, ", ")
}

// priceUsage prices the usage of [start, end): per workspace, what the period bills —
// usage charges per model, class and unit price in force (the workspace's own price if it
// has one), and discount charges per percentage. A workspace with usage of a model
// without a price is in failed and not priced at all.
func (iv *Invoicer) priceUsage(ctx context.Context, start, end time.Time, src usageSource, workspaces []string, extra []time.Time) (priced, error) {
	subs, err := iv.Subscriptions(ctx, workspaces)
	if err != nil {
		return priced{}, err
	}
	breaks := mergeTimes(iv.prices.Breakpoints(start, end), append(subscriptionBreakpoints(subs, start, end), extra...))
	// segment = how many price changes happened at or before the hour: usage of one
	// segment was all billed at the same prices.
	seg := sqlset.Segment("hour", breaks)
	// A day that a price change splits (one not at midnight) is read by the hour; every
	// other day lies within one segment, and its daily row is priced at its start.
	var split []string
	for _, b := range breaks {
		if day := b.Truncate(24 * time.Hour); !day.Equal(b) {
			split = append(split, sqlset.DateTime(day))
		}
	}
	q := usageFromRawEventsSQL
	if src == fromRollups {
		q = usageFromRollupsSQL
		if len(split) > 0 {
			q = usageFromRollupsSplitSQL
		}
	}
	q = sqlset.Fill(q, "db", iv.cfg.Database, "segment", seg, "workspaces", wsFilter(workspaces), "split", strings.Join(split, ", "),
		"start", strconv.FormatInt(start.Unix(), 10), "end", strconv.FormatInt(end.Unix(), 10))
	rows, err := iv.conn.Query(ctx, q)
	if err != nil {
		return priced{}, fmt.Errorf("read usage %s..%s: %w", start.Format(time.RFC3339), end.Format(time.RFC3339), err)
	}
	defer rows.Close()
	out := map[string]charges{}
	failed := map[string]error{}
	net := map[string]map[int64]decimal.Decimal{} // by workspace, stretch start: usage less discounts
	plans := map[string][]planStretch{}           // by workspace: its hours on a plan
	onPlan := map[string]map[string]decimal.Decimal{}
	var rated []ratedUsage
	fail := func(ws string, err error) {
		failed[ws] = fmt.Errorf("workspace %s: %w", ws, err)
		delete(out, ws)
	}
	for ws, ss := range subs {
		if plans[ws], err = iv.prices.stretches(ss, start, end); err != nil {
			fail(ws, err)
		}
	}
	for rows.Next() {
		var ws, model string
		var segment, input, cached, output uint64
		if err := rows.Scan(&ws, &model, &segment, &input, &cached, &output); err != nil {
			return priced{}, fmt.Errorf("scan usage: %w", err)
		}
		if failed[ws] != nil {
			continue
		}
		segStart := start
		if segment > 0 {
			segStart = breaks[segment-1]
		}
		// A plan's rate prices a class unless the workspace has its own price for the model.
		st, subscribed := at(plans[ws], segStart)
		if subscribed && iv.prices.hasOwnPrice(ws, model, segStart) {
			subscribed = false
		}
		pct := iv.prices.DiscountAt(ws, segStart)
		c := out[ws]
		if c == nil {
			c = charges{}
			out[ws] = c
		}
		if net[ws] == nil {
			net[ws] = map[int64]decimal.Decimal{}
		}
		for _, u := range []struct {
			class string
			qty   uint64
		}{{ClassInput, input}, {ClassCachedInput, cached}, {ClassOutput, output}} {
			if u.qty == 0 {
				continue
			}
			if subscribed {
				if r, ok := st.version.Rate(model, u.class); ok {
					rated = append(rated, ratedUsage{ws: ws, plan: st.plan.ID, at: segStart, model: model, qty: u.qty, rate: r})
					continue
				}
			}
			price, err := iv.prices.For(ws, model, segStart)
			if err != nil {
				fail(ws, err)
				break
			}
			p := price.PerMillion[u.class]
			c.addUsage(model, u.class, u.qty, p, Amount(u.qty, p))
			n := Amount(u.qty, p)
			if pct.IsPositive() {
				// pct% of a price has at most 6 decimals (checked when the book was
				// parsed), so the discount is exact at 12 decimals like every amount.
				d := Amount(u.qty, percentOf(p, pct))
				c.addDiscount(pct, d.Neg())
				n = n.Sub(d)
			}
			net[ws][segStart.Unix()] = net[ws][segStart.Unix()].Add(n)
			if subscribed {
				addTo(onPlan, ws, st.plan.ID, n)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return priced{}, fmt.Errorf("read usage: %w", err)
	}
	priceRated(rated, failed, out, net, onPlan)
	for ws, ss := range plans {
		if failed[ws] != nil || len(ss) == 0 {
			continue
		}
		if out[ws] == nil {
			out[ws] = charges{}
		}
		planAmounts(out[ws], ss, onPlan[ws], start)
	}
	res := priced{charges: out, usage: map[string][]usageAt{}, failed: failed}
	for ws, bySeg := range net {
		if failed[ws] != nil {
			continue
		}
		for at, amount := range bySeg {
			res.usage[ws] = append(res.usage[ws], usageAt{At: time.Unix(at, 0).UTC(), Amount: amount})
		}
		sort.Slice(res.usage[ws], func(i, j int) bool { return res.usage[ws][i].At.Before(res.usage[ws][j].At) })
	}
	return res, nil
}

// priced is a period's usage, priced: what it bills by workspace, the same as amounts (net
// of discounts) per stretch of time for crediting, and the workspaces that failed.
type priced struct {
	charges map[string]charges
	usage   map[string][]usageAt
	failed  map[string]error
}

// mergeTimes is the sorted union of a and b, without repeats.
func mergeTimes(a, b []time.Time) []time.Time {
	set := map[int64]time.Time{}
	for _, t := range append(append([]time.Time(nil), a...), b...) {
		set[t.Unix()] = t
	}
	out := make([]time.Time, 0, len(set))
	for _, t := range set {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

// upTo is the oldest stretches of usage adding up to total (the last one cut): what an
// invoice bills of a period when other invoices billed part of it already.
func upTo(usage []usageAt, total decimal.Decimal) []usageAt {
	var out []usageAt
	for _, u := range usage {
		if !total.IsPositive() {
			break
		}
		u.Amount = decimal.Min(u.Amount, total)
		total = total.Sub(u.Amount)
		out = append(out, u)
	}
	return out
}

// billed returns, by workspace and service period (Unix seconds), what every non-void
// invoice except those of period except bills for the given periods.
func (iv *Invoicer) billed(ctx context.Context, periods []time.Time, except time.Time, workspaces []string) (map[string]map[int64]charges, error) {
	out := map[string]map[int64]charges{}
	if len(periods) == 0 {
		return out, nil
	}
	list := make([]string, len(periods))
	for i, p := range periods {
		list[i] = sqlset.DateTime(p)
	}
	q := sqlset.Fill(billedSQL, "db", iv.cfg.Database, "periods", strings.Join(list, ", "), "workspaces", wsFilter(workspaces),
		"except", strconv.FormatInt(except.Unix(), 10))
	rows, err := iv.conn.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("read billed usage: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var ws, kind, model, class string
		var period time.Time
		var qty uint64
		var price, pct, amount decimal.Decimal
		if err := rows.Scan(&ws, &period, &kind, &model, &class, &price, &pct, &qty, &amount); err != nil {
			return nil, fmt.Errorf("scan billed usage: %w", err)
		}
		if out[ws] == nil {
			out[ws] = map[int64]charges{}
		}
		c := out[ws][period.Unix()]
		if c == nil {
			c = charges{}
			out[ws][period.Unix()] = c
		}
		c.addLine(Line{Kind: kind, Model: model, TokenClass: class, Quantity: qty, PerMillion: price, DiscountPercent: pct, Amount: amount})
	}
	return out, rows.Err()
}

// adjustable returns, by workspace, the months before start whose usage the workspace's
// invoice for [start, end) must adjust: months with usage not billed yet (pending) whose
// own invoice is finalized or void — or that never got an invoice and whose grace ended
// before this month began — and with no draft of the workspace in between, which takes
// them first (a period's late usage goes on the next open invoice).
func (iv *Invoicer) adjustable(ctx context.Context, start time.Time, workspaces []string) (map[string][]time.Time, error) {
	q := sqlset.Fill(pendingSQL, "db", iv.cfg.Database, "workspaces", wsFilter(workspaces), "q", strconv.FormatInt(start.Unix(), 10))
	rows, err := iv.conn.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("find unbilled usage before %s: %w", start.Format("2006-01"), err)
	}
	pending := map[string][]time.Time{}
	for rows.Next() {
		var ws string
		var yyyymm uint32
		if err := rows.Scan(&ws, &yyyymm); err != nil {
			rows.Close()
			return nil, fmt.Errorf("scan unbilled usage: %w", err)
		}
		pending[ws] = append(pending[ws], time.Date(int(yyyymm/100), time.Month(yyyymm%100), 1, 0, 0, 0, 0, time.UTC))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find unbilled usage: %w", err)
	}
	if len(pending) == 0 {
		return pending, nil
	}
	// The statuses of the earlier invoices of those workspaces. (Filtered here rather than
	// in SQL: after a mass void the list could outgrow a query.)
	rows, err = iv.conn.Query(ctx, sqlset.Fill(earlierInvoicesSQL, "db", iv.cfg.Database, "q", strconv.FormatInt(start.Unix(), 10),
		"workspaces", wsFilter(workspaces)))
	if err != nil {
		return nil, fmt.Errorf("read earlier invoices: %w", err)
	}
	status := map[string]map[int64]string{} // by workspace, period start
	for rows.Next() {
		var ws, st string
		var period time.Time
		if err := rows.Scan(&ws, &period, &st); err != nil {
			rows.Close()
			return nil, fmt.Errorf("scan earlier invoice: %w", err)
		}
		if pending[ws] == nil {
			continue
		}
		if status[ws] == nil {
			status[ws] = map[int64]string{}
		}
		status[ws][period.Unix()] = st
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read earlier invoices: %w", err)
	}
	out := map[string][]time.Time{}
	for ws, months := range pending {
		for _, p := range months {
			st, invoiced := status[ws][p.Unix()]
			_, pEnd := Month(p)
			switch {
			case invoiced && !frozen(st):
				continue // its own draft bills it
			case !invoiced && pEnd.Add(iv.cfg.Grace).After(start):
				continue // its own invoice may still be created by a run of that month
			}
			draftBetween := false
			for period, st := range status[ws] {
				if period > p.Unix() && st == StatusDraft {
					draftBetween = true
				}
			}
			if !draftBetween {
				out[ws] = append(out[ws], p)
			}
		}
		sort.Slice(out[ws], func(i, j int) bool { return out[ws][i].Before(out[ws][j]) })
	}
	return out, nil
}

// built collects a month's invoices as build assembles them.
type built struct {
	start, end time.Time
	currency   string
	invoices   map[string]*Invoice
	failed     map[string]error
}

// add appends lines to a workspace's invoice, creating it.
func (b *built) add(ws string, lines []Line) {
	if len(lines) == 0 || b.failed[ws] != nil {
		return
	}
	inv := b.invoices[ws]
	if inv == nil {
		inv = &Invoice{ID: ID(ws, b.start, b.end), WorkspaceID: ws, PeriodStart: b.start, PeriodEnd: b.end, Currency: b.currency, Lines: []Line{}}
		b.invoices[ws] = inv
	}
	inv.Lines = append(inv.Lines, lines...)
}

// fail drops a workspace's invoice: it is not billed at all rather than billed in part.
func (b *built) fail(ws string, err error) {
	b.failed[ws] = err
	delete(b.invoices, ws)
}

// build computes the invoices of month [start, end) — of every workspace, or only those
// given — from the rollups: the month's usage not billed on another invoice yet, and
// adjustment lines for the earlier months adjustable returns, each = that month's usage
// now, at its prices, minus what every other non-void invoice bills for it.
func (iv *Invoicer) build(ctx context.Context, start, end time.Time, workspaces []string) (map[string]*Invoice, map[string]error, error) {
	if err := iv.upgrade(ctx); err != nil {
		return nil, nil, err
	}
	grants, err := iv.Grants(ctx, workspaces)
	if err != nil {
		return nil, nil, err
	}
	ownPriced, err := iv.priceUsage(ctx, start, end, fromRollups, workspaces, grantBreakpoints(grants, start, end))
	if err != nil {
		return nil, nil, err
	}
	own, failed := ownPriced.charges, ownPriced.failed
	ownBilled, err := iv.billed(ctx, []time.Time{start}, start, workspaces)
	if err != nil {
		return nil, nil, err
	}
	adjust, err := iv.adjustable(ctx, start, workspaces)
	if err != nil {
		return nil, nil, err
	}
	b := &built{start: start, end: end, currency: iv.prices.Currency, invoices: map[string]*Invoice{}, failed: failed}
	for ws, c := range own {
		todo, err := c.minus(ownBilled[ws][start.Unix()])
		if err != nil {
			b.fail(ws, fmt.Errorf("workspace %s, %s: %w", ws, start.Format("2006-01"), err))
			continue
		}
		b.add(ws, todo.lines(KindUsage, start, end))
	}
	// Adjustments, one earlier month at a time, for adjustChunk workspaces at a time.
	byMonth := map[int64][]string{}
	for ws, months := range adjust {
		for _, p := range months {
			byMonth[p.Unix()] = append(byMonth[p.Unix()], ws)
		}
	}
	months := make([]int64, 0, len(byMonth))
	for p := range byMonth {
		months = append(months, p)
	}
	sort.Slice(months, func(i, j int) bool { return months[i] < months[j] })
	for _, p := range months {
		all := byMonth[p]
		sort.Strings(all)
		for len(all) > 0 {
			wss := all[:min(adjustChunk, len(all))]
			all = all[len(wss):]
			if err := iv.adjust(ctx, b, time.Unix(p, 0).UTC(), wss); err != nil {
				return nil, nil, err
			}
		}
	}
	if err := iv.credit(ctx, b, grants, ownPriced.usage, workspaces); err != nil {
		return nil, nil, err
	}
	for _, inv := range b.invoices {
		inv.finish()
	}
	return b.invoices, b.failed, nil
}

// credit adds to each invoice of b the credit lines of the grants that pay for it: its
// own month's usage hour by hour (ownUsage), and its adjustments as usage of the last hour
// of their month, from the grants in force then, each up to what other non-void invoices
// have not applied yet.
func (iv *Invoicer) credit(ctx context.Context, b *built, grants map[string][]Grant, ownUsage map[string][]usageAt, workspaces []string) error {
	if len(grants) == 0 {
		return nil
	}
	applied, err := iv.creditsApplied(ctx, workspaces)
	if err != nil {
		return err
	}
	for ws, inv := range b.invoices {
		gs := grants[ws]
		if len(gs) == 0 {
			continue
		}
		paid := allocate(gs, available(gs, applied[ws], b.start), billedUsage(inv.Lines, b.start, ownUsage[ws]))
		inv.Lines = append(inv.Lines, creditLines(paid, b.start, b.end)...)
	}
	return nil
}

// billedUsage is what the lines of an invoice of period start bill, as usage in time: the
// adjustments of each earlier month at that month's last hour, and the own month's bill
// from its oldest usage on, what it bills beyond its usage at its last hour.
func billedUsage(lines []Line, start time.Time, own []usageAt) []usageAt {
	byPeriod := map[int64]decimal.Decimal{}
	for _, l := range lines {
		if l.Kind != KindCredit {
			byPeriod[l.ServicePeriodStart.Unix()] = byPeriod[l.ServicePeriodStart.Unix()].Add(l.Amount)
		}
	}
	var out []usageAt
	for p, amount := range byPeriod {
		if p != start.Unix() && amount.IsPositive() {
			_, end := Month(time.Unix(p, 0))
			out = append(out, usageAt{At: end.Add(-time.Hour), Amount: amount})
		}
	}
	paid := upTo(own, byPeriod[start.Unix()])
	// What the own month bills beyond its usage stretches (a plan's fee and commitment
	// true-up) is usage of its last hour.
	rest := byPeriod[start.Unix()]
	for _, u := range paid {
		rest = rest.Sub(u.Amount)
	}
	if rest.IsPositive() {
		_, end := Month(start)
		paid = append(paid, usageAt{At: end.Add(-time.Hour), Amount: rest})
	}
	return append(out, paid...)
}

// adjustChunk bounds the workspaces named in one adjustment query.
const adjustChunk = 1000

// adjust adds to b the adjustment lines of the earlier month starting at p for workspaces wss.
func (iv *Invoicer) adjust(ctx context.Context, b *built, p time.Time, wss []string) error {
	pStart, pEnd := Month(p)
	p0, err := iv.priceUsage(ctx, pStart, pEnd, fromRollups, wss, nil)
	if err != nil {
		return err
	}
	now, failed := p0.charges, p0.failed
	was, err := iv.billed(ctx, []time.Time{pStart}, b.start, wss)
	if err != nil {
		return err
	}
	for _, ws := range wss {
		if err := failed[ws]; err != nil {
			b.fail(ws, fmt.Errorf("adjustment for %s: %w", pStart.Format("2006-01"), err))
			continue
		}
		c := now[ws]
		if c == nil {
			c = charges{}
		}
		todo, err := c.minus(was[ws][pStart.Unix()])
		if err != nil {
			b.fail(ws, fmt.Errorf("workspace %s, adjustment for %s: %w", ws, pStart.Format("2006-01"), err))
			continue
		}
		b.add(ws, todo.lines(KindAdjustment, pStart, pEnd))
	}
	return nil
}

// upgrade runs upgradeSQL once per Invoicer.
func (iv *Invoicer) upgrade(ctx context.Context) error {
	if iv.upgraded.Load() {
		return nil
	}
	if err := iv.conn.Exec(ctx, sqlset.Fill(upgradeSQL, "db", iv.cfg.Database)); err != nil {
		return fmt.Errorf("copy invoice lines of before migration 0003: %w", err)
	}
	iv.upgraded.Store(true)
	return nil
}
