package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/sqlset"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/spend"
)

// Invoices reads an invoice as the API serves it (invoice.Invoicer).
type Invoices interface {
	Get(ctx context.Context, workspaceID, id string) (*invoice.Invoice, error)
}

// Credits gives the prepaid workspaces and what their credit pays this month
// (invoice.Invoicer).
type Credits interface {
	PrepaidLimits(ctx context.Context, t time.Time) (map[string]decimal.Decimal, error)
}

// Spend prices the month's spend (spend.Store).
type Spend interface {
	MonthToDate(ctx context.Context, prices *invoice.PriceBook, now time.Time, workspace string) (spend.MonthSpend, error)
}

// Sources are what events are made of besides the tables Detect scans.
type Sources struct {
	Invoices Invoices // required: the object of invoice events
	// Credits, Spend and Prices, all three or none, raise credit_balance.depleted.
	Credits Credits
	Spend   Spend
	Prices  *invoice.PriceBook
}

// Depletion is the object of a credit_balance.depleted event: a prepaid workspace's spend
// this month reached what its credit pays for, so its completions are refused.
type Depletion struct {
	Object      string          `json:"object"` // "credit_depletion"
	WorkspaceID string          `json:"workspace_id"`
	PeriodStart time.Time       `json:"period_start"`
	CreditUSD   decimal.Decimal `json:"credit_usd"` // what the credit pays for this month
	SpendUSD    decimal.Decimal `json:"spend_usd"`  // the month's spend when it was seen
}

// depletionEvery spaces the depletion checks, which price the month's spend.
const depletionEvery = time.Minute

// fact is something that happened, about to become an event.
type fact struct {
	typ, key, workspace, objectID string
	created                       time.Time
	rank                          int // order among the facts of one object
	// The event's data.object: loaded, or the invoice to read (once per scan).
	loaded  any
	invoice *invoiceRef
}

type invoiceRef struct{ workspace, id string }

// DetectResult says what one scan did.
type DetectResult struct {
	Since      time.Time // where it looked from
	Events     []string  // IDs of the events it recorded, in order
	Deliveries int       // deliveries it created
}

// Detect records the facts written since the previous scan (less Overlap) that are not
// events yet, in order, with a delivery for every enabled endpoint that wants each. The
// first scan looks back Overlap only: older facts never become events. Any number of
// detectors may race: they record the same events and deliveries, which ClickHouse folds.
func (d *Dispatcher) Detect(ctx context.Context) (DetectResult, error) {
	now := d.now().UTC()
	var wm time.Time
	if err := d.conn.QueryRow(ctx, sqlset.Fill(readWatermarkSQL, "db", d.cfg.Database)).Scan(&wm); err != nil {
		return DetectResult{}, fmt.Errorf("read webhook watermark: %w", err)
	}
	since := now.Add(-d.cfg.Overlap)
	if wm.Unix() > 0 {
		since = wm.Add(-d.cfg.Overlap)
	}
	res := DetectResult{Since: since}
	facts, err := d.facts(ctx, since, now)
	if err != nil {
		return res, err
	}
	fresh, err := d.unrecorded(ctx, facts)
	if err != nil {
		return res, err
	}
	var events [][]any
	var deliveries []Delivery
	if len(fresh) > 0 {
		eps, err := d.store.endpoints(ctx, "enabled = 1")
		if err != nil {
			return res, err
		}
		invoices := map[string]*invoice.Invoice{}
		for _, f := range fresh {
			obj, err := d.object(ctx, f, invoices)
			if errors.Is(err, invoice.ErrNotFound) {
				continue
			}
			if err != nil {
				return res, err
			}
			raw, err := json.Marshal(obj)
			if err != nil {
				return res, fmt.Errorf("encode %s %s: %w", f.typ, f.key, err)
			}
			ev := Event{ID: EventID(f.typ, f.key), Object: "event", Type: f.typ, Created: f.created.Unix(), WorkspaceID: f.workspace,
				Data: EventData{Object: raw}}
			payload, err := json.Marshal(ev)
			if err != nil {
				return res, fmt.Errorf("encode event %s: %w", ev.ID, err)
			}
			// The earliest detection of an event is the one kept.
			events = append(events, []any{ev.ID, ev.Type, ev.WorkspaceID, f.objectID, f.created.Truncate(time.Second), now.Truncate(time.Second),
				string(payload), uint64(1)<<63 - uint64(now.UnixNano())})
			res.Events = append(res.Events, ev.ID)
			for _, e := range eps {
				if e.Wants(ev.Type, ev.WorkspaceID) {
					deliveries = append(deliveries, newDelivery(ev.ID, ev.Type, ev.WorkspaceID, e.ID, now, false))
				}
			}
		}
	}
	// 1. deliveries 2. events 3. watermark. A crash between 1 and 2 finds the facts again
	// next time and writes the same deliveries at step 0, below anything a dispatcher
	// wrote since; dispatchers skip a delivery until its event is there.
	if len(deliveries) > 0 {
		if err := insertDeliveries(ctx, d.conn, d.cfg.Database, deliveries); err != nil {
			return res, err
		}
	}
	if len(events) > 0 {
		if err := chdb.Insert(ctx, d.conn, sqlset.Fill(insertEventsSQL, "db", d.cfg.Database), events); err != nil {
			return res, fmt.Errorf("store %d webhook events: %w", len(events), err)
		}
	}
	if err := d.conn.Exec(ctx, sqlset.Fill(advanceWatermarkSQL, "db", d.cfg.Database), now.Unix(), uint64(time.Now().UnixNano())); err != nil {
		return res, fmt.Errorf("advance webhook watermark: %w", err)
	}
	res.Deliveries = len(deliveries)
	for _, row := range events {
		d.metrics.events.WithLabelValues(row[1].(string)).Inc()
	}
	return res, nil
}

// facts are the facts written from since on, in the order they happened.
func (d *Dispatcher) facts(ctx context.Context, since, now time.Time) ([]fact, error) {
	var out []fact
	for _, read := range []func(context.Context, time.Time) ([]fact, error){d.invoiceFacts, d.alertFacts, d.grantFacts} {
		fs, err := read(ctx, since)
		if err != nil {
			return nil, err
		}
		out = append(out, fs...)
	}
	if d.src.Credits != nil && d.src.Spend != nil && d.src.Prices != nil && d.depletionDue(now) {
		fs, err := d.depletionFacts(ctx, now)
		if err != nil {
			return nil, err
		}
		d.mu.Lock()
		d.depletion = now
		d.mu.Unlock()
		out = append(out, fs...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		switch {
		case !a.created.Equal(b.created):
			return a.created.Before(b.created)
		case a.objectID != b.objectID:
			return a.objectID < b.objectID
		}
		return a.rank < b.rank
	})
	return out, nil
}

// invoiceFacts: every invoice written since gives invoice.created, and .finalized and
// .voided as its status says (a void invoice was finalized first).
func (d *Dispatcher) invoiceFacts(ctx context.Context, since time.Time) ([]fact, error) {
	rows, err := d.conn.Query(ctx, sqlset.Fill(changedInvoicesSQL, "db", d.cfg.Database, "since", strconv.FormatInt(since.Unix(), 10)))
	if err != nil {
		return nil, fmt.Errorf("read changed invoices: %w", err)
	}
	defer rows.Close()
	var out []fact
	for rows.Next() {
		var id, ws, status string
		var computed, finalized time.Time
		var version uint64
		if err := rows.Scan(&id, &ws, &status, &computed, &finalized, &version); err != nil {
			return nil, fmt.Errorf("scan changed invoice: %w", err)
		}
		inv := &invoiceRef{ws, id}
		out = append(out, fact{typ: InvoiceCreated, key: id, workspace: ws, objectID: id, created: computed.UTC(), rank: 0, invoice: inv})
		if status == invoice.StatusFinalized || status == invoice.StatusVoid {
			out = append(out, fact{typ: InvoiceFinalized, key: id, workspace: ws, objectID: id, created: finalized.UTC(), rank: 1, invoice: inv})
		}
		if status == invoice.StatusVoid {
			voided := time.Unix(0, int64(version&(1<<62-1))).UTC()
			out = append(out, fact{typ: InvoiceVoided, key: id, workspace: ws, objectID: id, created: voided, rank: 2, invoice: inv})
		}
	}
	return out, rows.Err()
}

// alertFacts: every budget alert raised since.
func (d *Dispatcher) alertFacts(ctx context.Context, since time.Time) ([]fact, error) {
	rows, err := d.conn.Query(ctx, sqlset.Fill(changedAlertsSQL, "db", d.cfg.Database, "since", strconv.FormatInt(since.Unix(), 10)))
	if err != nil {
		return nil, fmt.Errorf("read changed alerts: %w", err)
	}
	defer rows.Close()
	var out []fact
	for rows.Next() {
		var al spend.Alert
		var th uint16
		var hard uint8
		if err := rows.Scan(&al.ID, &al.Type, &al.WorkspaceID, &al.APIKeyID, &al.PeriodStart, &th, &al.BudgetUSD, &al.SpendUSD,
			&hard, &al.CreatedAt); err != nil {
			return nil, fmt.Errorf("scan changed alert: %w", err)
		}
		al.ThresholdPercent, al.HardLimit = int(th), hard == 1
		al.PeriodStart, al.CreatedAt = al.PeriodStart.UTC(), al.CreatedAt.UTC()
		out = append(out, fact{typ: al.Type, key: al.ID, workspace: al.WorkspaceID, objectID: al.ID, created: al.CreatedAt, loaded: al})
	}
	return out, rows.Err()
}

// grantFacts: every grant written since gives credit_grant.created, and .voided if it is.
func (d *Dispatcher) grantFacts(ctx context.Context, since time.Time) ([]fact, error) {
	rows, err := d.conn.Query(ctx, sqlset.Fill(changedGrantsSQL, "db", d.cfg.Database, "since_ns", strconv.FormatInt(max(0, since.UnixNano()), 10)))
	if err != nil {
		return nil, fmt.Errorf("read changed credit grants: %w", err)
	}
	defer rows.Close()
	var out []fact
	for rows.Next() {
		var g invoice.Grant
		var prio uint16
		var voided uint8
		var version uint64
		if err := rows.Scan(&g.ID, &g.WorkspaceID, &g.AmountUSD, &g.EffectiveFrom, &g.ExpiresAt, &prio, &g.Reason, &g.CreatedAt, &voided, &version); err != nil {
			return nil, fmt.Errorf("scan changed credit grant: %w", err)
		}
		g.Priority, g.Voided = int(prio), voided == 1
		g.EffectiveFrom, g.CreatedAt, g.ExpiresAt = g.EffectiveFrom.UTC(), g.CreatedAt.UTC(), orZero(g.ExpiresAt)
		out = append(out, fact{typ: GrantCreated, key: g.ID, workspace: g.WorkspaceID, objectID: g.ID, created: g.CreatedAt, loaded: g})
		if g.Voided {
			out = append(out, fact{typ: GrantVoided, key: g.ID, workspace: g.WorkspaceID, objectID: g.ID,
				created: time.Unix(0, int64(version)).UTC(), rank: 1, loaded: g})
		}
	}
	return out, rows.Err()
}

// depletionDue reports whether the depletion check is due at now.
func (d *Dispatcher) depletionDue(now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return now.Sub(d.depletion) >= depletionEvery
}

// depletionFacts: every prepaid workspace whose month's spend has reached its credit
// (the moment gateways refuse its completions), once per month and credit amount: more
// credit makes a later depletion a new event.
func (d *Dispatcher) depletionFacts(ctx context.Context, now time.Time) ([]fact, error) {
	limits, err := d.src.Credits.PrepaidLimits(ctx, now)
	if err != nil || len(limits) == 0 {
		return nil, err
	}
	ms, err := d.src.Spend.MonthToDate(ctx, d.src.Prices, now, "")
	if err != nil {
		return nil, err
	}
	var out []fact
	for ws, credit := range limits {
		spent := ms.ByOwner[ws]
		if !spent.IsPositive() || spent.LessThan(credit) {
			continue
		}
		dep := Depletion{Object: "credit_depletion", WorkspaceID: ws, PeriodStart: ms.Start, CreditUSD: credit, SpendUSD: spent}
		key := fmt.Sprintf("%s|%d|%s", ws, ms.Start.Unix(), credit.String())
		out = append(out, fact{typ: CreditsDepleted, key: key, workspace: ws, objectID: ws, created: now.Truncate(time.Second), loaded: dep})
	}
	return out, nil
}

// unrecorded are the facts whose events are not recorded yet.
func (d *Dispatcher) unrecorded(ctx context.Context, facts []fact) ([]fact, error) {
	recorded := map[string]bool{}
	// In chunks: the IDs travel in the query's text, which ClickHouse bounds (256 KiB).
	const chunk = 2000
	for i := 0; i < len(facts); i += chunk {
		ids := make([]string, 0, chunk)
		for _, f := range facts[i:min(i+chunk, len(facts))] {
			ids = append(ids, EventID(f.typ, f.key))
		}
		rows, err := d.conn.Query(ctx, sqlset.Fill(recordedEventsSQL, "db", d.cfg.Database), ids)
		if err != nil {
			return nil, fmt.Errorf("read recorded webhook events: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("scan recorded webhook event: %w", err)
			}
			recorded[id] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read recorded webhook events: %w", err)
		}
	}
	var out []fact
	for _, f := range facts {
		id := EventID(f.typ, f.key)
		if !recorded[id] {
			recorded[id] = true // a fact listed twice (two versions in one scan) is one event
			out = append(out, f)
		}
	}
	return out, nil
}

// object is a fact's data.object: an invoice read once per scan, as the API serves it.
func (d *Dispatcher) object(ctx context.Context, f fact, invoices map[string]*invoice.Invoice) (any, error) {
	if f.invoice == nil {
		return f.loaded, nil
	}
	if inv, ok := invoices[f.invoice.id]; ok {
		return inv, nil
	}
	inv, err := d.src.Invoices.Get(ctx, f.invoice.workspace, f.invoice.id)
	if err != nil {
		return nil, fmt.Errorf("read invoice %s for its events: %w", f.invoice.id, err)
	}
	invoices[f.invoice.id] = inv
	return inv, nil
}
