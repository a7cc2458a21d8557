package invoice

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/sqlset"
)

func TestPricing(t *testing.T) {
	e := newEnv(t)
	day := func(n, h int) time.Time { return jan.AddDate(0, 0, n-1).Add(time.Duration(h) * time.Hour) }
	e.send(
		// Price change for m-big at Jan 15 12:00: one event on each side of it.
		event{ws: "ws_change", model: "m-big", at: day(10, 3), prompt: 1000, completion: 100},
		event{ws: "ws_change", model: "m-big", at: day(15, 11), prompt: 10, completion: 1}, // the last hour at the old price
		event{ws: "ws_change", model: "m-big", at: day(15, 12), prompt: 2000, completion: 300},
		// Cached and reasoning tokens: input = prompt - cached; output = completion, reasoning included.
		event{ws: "ws_classes", model: "m-small", at: day(3, 0), prompt: 1_000_000, cached: 400_000, completion: 300_000, reasons: 200_000},
		// 10% off until Jan 20, none after; across the m-big price change.
		event{ws: "ws_disc", model: "m-big", at: day(2, 0), prompt: 1000},
		event{ws: "ws_disc", model: "m-big", at: day(16, 0), prompt: 1000, completion: 10},
		event{ws: "ws_disc", model: "m-big", at: day(25, 0), prompt: 1000},
		// Its own price for m-small; the book's for m-big.
		event{ws: "ws_custom", model: "m-small", at: day(5, 0), prompt: 1_000_000, cached: 500_000, completion: 100_000},
		event{ws: "ws_custom", model: "m-big", at: day(5, 0), prompt: 100},
	)
	e.run(jan, jan.AddDate(0, 0, 28))

	for _, c := range []struct {
		ws              string
		lines           []line
		subtotal, total string
	}{
		{"ws_change", []line{
			{kind: KindUsage, model: "m-big", class: ClassInput, qty: 1010, price: "2.5", amount: "0.002525"},
			{kind: KindUsage, model: "m-big", class: ClassInput, qty: 2000, price: "3", amount: "0.006"},
			{kind: KindUsage, model: "m-big", class: ClassOutput, qty: 101, price: "10", amount: "0.00101"},
			{kind: KindUsage, model: "m-big", class: ClassOutput, qty: 300, price: "12", amount: "0.0036"},
		}, "0.013135", "0.01"},
		{"ws_classes", []line{
			{kind: KindUsage, model: "m-small", class: ClassInput, qty: 600_000, price: "0.15", amount: "0.09"},
			{kind: KindUsage, model: "m-small", class: ClassCachedInput, qty: 400_000, price: "0.075", amount: "0.03"},
			{kind: KindUsage, model: "m-small", class: ClassOutput, qty: 300_000, price: "0.6", amount: "0.18"},
		}, "0.3", "0.3"},
		{"ws_disc", []line{
			{kind: KindUsage, model: "m-big", class: ClassInput, qty: 1000, price: "2.5", amount: "0.0025"},
			{kind: KindUsage, model: "m-big", class: ClassInput, qty: 2000, price: "3", amount: "0.006"},
			{kind: KindUsage, model: "m-big", class: ClassOutput, qty: 10, price: "12", amount: "0.00012"},
			// 10% of 0.0025 + 0.003 + 0.00012 (the Jan 25 event is after the discount ended)
			{kind: KindDiscount, pct: "10", amount: "-0.000562"},
		}, "0.008058", "0.01"},
		{"ws_custom", []line{
			{kind: KindUsage, model: "m-big", class: ClassInput, qty: 100, price: "2.5", amount: "0.00025"},
			{kind: KindUsage, model: "m-small", class: ClassInput, qty: 500_000, price: "0.1", amount: "0.05"},
			{kind: KindUsage, model: "m-small", class: ClassCachedInput, qty: 500_000, price: "0.05", amount: "0.025"},
			{kind: KindUsage, model: "m-small", class: ClassOutput, qty: 100_000, price: "0.4", amount: "0.04"},
		}, "0.11525", "0.12"},
	} {
		t.Run(c.ws, func(t *testing.T) {
			inv := e.get(c.ws, jan)
			checkLines(t, inv, c.lines, c.subtotal, c.total)
			e.reconcileClean(inv)
		})
	}
}

func TestUnknownModelFailsOnlyItsWorkspace(t *testing.T) {
	e := newEnv(t)
	e.send(
		event{ws: "ws_bad", model: "m-big", at: jan.Add(time.Hour), prompt: 10},
		event{ws: "ws_bad", model: "m-mystery", at: jan.Add(2 * time.Hour), prompt: 10},
		event{ws: "ws_good", model: "m-small", at: jan.Add(time.Hour), prompt: 10},
	)
	res := e.run(jan, jan.AddDate(0, 0, 10))
	err := res.Failed["ws_bad"]
	if err == nil || !errors.Is(err, ErrNoPrice) || !strings.Contains(err.Error(), `"m-mystery"`) || !strings.Contains(err.Error(), "ws_bad") {
		t.Errorf("ws_bad: error %v, want ErrNoPrice naming m-mystery and the workspace", err)
	}
	if len(res.Written) != 1 || res.Written[0].WorkspaceID != "ws_good" {
		t.Errorf("written %+v, want only ws_good's invoice", res.Written)
	}
	if _, err := e.iv.Get(ctx(t), "ws_bad", ID("ws_bad", jan, feb)); !errors.Is(err, ErrNotFound) {
		t.Errorf("ws_bad has an invoice (err %v): an unpriced model must never be billed 0", err)
	}
	checkLines(t, e.get("ws_good", jan), []line{{kind: KindUsage, model: "m-small", class: ClassInput, qty: 10, amount: "0.0000015"}}, "0.0000015", "0")
}

// TestLateEvents follows one workspace's January through late events: before
// finalization they land on the draft; after, on the next open invoice as prior-period
// adjustments, never twice however often that invoice is recomputed.
func TestLateEvents(t *testing.T) {
	e := newEnv(t)
	jan5 := jan.AddDate(0, 0, 4)
	e.send(event{ws: "ws", model: "m-small", at: jan5, prompt: 1_000_000, completion: 100_000})
	e.run(jan, jan.AddDate(0, 0, 20))
	checkLines(t, e.get("ws", jan), []line{
		{kind: KindUsage, model: "m-small", class: ClassInput, qty: 1_000_000, amount: "0.15"},
		{kind: KindUsage, model: "m-small", class: ClassOutput, qty: 100_000, amount: "0.06"},
	}, "0.21", "0.21")

	t.Run("before finalization it lands on the draft", func(t *testing.T) {
		e.send(event{ws: "ws", model: "m-small", at: jan.AddDate(0, 0, 30), prompt: 1_000_000})
		e.run(jan, feb.Add(24*time.Hour)) // inside the 72h grace
		inv := e.get("ws", jan)
		if inv.Status != StatusDraft {
			t.Errorf("status %s inside the grace window, want draft", inv.Status)
		}
		checkLines(t, inv, []line{
			{kind: KindUsage, model: "m-small", class: ClassInput, qty: 2_000_000, amount: "0.3"},
			{kind: KindUsage, model: "m-small", class: ClassOutput, qty: 100_000, amount: "0.06"},
		}, "0.36", "0.36")
	})

	e.run(jan, feb.Add(73*time.Hour))
	finalJan := e.get("ws", jan)
	if finalJan.Status != StatusFinalized || finalJan.FinalizedAt.IsZero() {
		t.Fatalf("January after its grace: %s finalized at %v, want finalized", finalJan.Status, finalJan.FinalizedAt)
	}

	t.Run("after finalization it is adjusted on the next invoice, once", func(t *testing.T) {
		e.send(event{ws: "ws", model: "m-small", at: jan5, prompt: 40_000, cached: 10_000, completion: 2_000})
		if res := e.run(jan, feb.AddDate(0, 0, 5)); len(res.Written) != 0 || len(res.Frozen) != 1 {
			t.Errorf("January rerun wrote %d and left %v: a finalized invoice must not be rewritten", len(res.Written), res.Frozen)
		}
		if got := e.get("ws", jan); content(got) != content(finalJan) || got.Version != finalJan.Version {
			t.Errorf("finalized January changed:\n%s\nwas\n%s", content(got), content(finalJan))
		}
		want := []line{
			{kind: KindAdjustment, period: jan, model: "m-small", class: ClassInput, qty: 30_000, amount: "0.0045"},
			{kind: KindAdjustment, period: jan, model: "m-small", class: ClassCachedInput, qty: 10_000, amount: "0.00075"},
			{kind: KindAdjustment, period: jan, model: "m-small", class: ClassOutput, qty: 2_000, amount: "0.0012"},
		}
		for i := 0; i < 3; i++ {
			e.run(feb, feb.AddDate(0, 0, 5+i))
			feb1 := e.get("ws", feb)
			checkLines(t, feb1, want, "0.00645", "0.01")
			if !strings.Contains(feb1.Lines[0].Description, "Prior-period adjustment for 2026-01") {
				t.Errorf("adjustment line description %q does not say which period it adjusts", feb1.Lines[0].Description)
			}
		}
		e.reconcileClean(finalJan)
		e.reconcileClean(e.get("ws", feb))

		// Another late January event while February is still open: February's adjustment
		// grows by exactly that event.
		e.send(event{ws: "ws", model: "m-small", at: jan5, prompt: 1_000})
		e.run(feb, feb.AddDate(0, 0, 9))
		want[0].qty, want[0].amount = 31_000, "0.00465"
		checkLines(t, e.get("ws", feb), want, "0.0066", "0.01")
	})

	t.Run("a late event goes on the earliest open invoice", func(t *testing.T) {
		e.send(event{ws: "ws", model: "m-small", at: mar.Add(time.Hour), completion: 1_000}) // March usage of its own
		e.send(event{ws: "ws", model: "m-small", at: jan5, completion: 5_000})
		// Early March: February is a draft in its grace window; the job runs February, then March.
		e.run(feb, mar.Add(24*time.Hour))
		e.run(mar, mar.Add(24*time.Hour))
		checkLines(t, e.get("ws", feb), []line{
			{kind: KindAdjustment, period: jan, model: "m-small", class: ClassInput, qty: 31_000, amount: "0.00465"},
			{kind: KindAdjustment, period: jan, model: "m-small", class: ClassCachedInput, qty: 10_000, amount: "0.00075"},
			{kind: KindAdjustment, period: jan, model: "m-small", class: ClassOutput, qty: 7_000, amount: "0.0042"},
		}, "0.0096", "0.01")
		checkLines(t, e.get("ws", mar), []line{{kind: KindUsage, model: "m-small", class: ClassOutput, qty: 1_000, amount: "0.0006"}}, "0.0006", "0")

		// Once February is finalized, the next late January event goes to March.
		e.now = mar.Add(25 * time.Hour)
		if _, err := e.iv.Finalize(ctx(t), "ws", ID("ws", feb, mar)); err != nil {
			t.Fatal(err)
		}
		e.send(event{ws: "ws", model: "m-small", at: jan5, completion: 500})
		e.run(feb, mar.Add(26*time.Hour))
		e.run(mar, mar.Add(26*time.Hour))
		checkLines(t, e.get("ws", mar), []line{
			{kind: KindUsage, model: "m-small", class: ClassOutput, qty: 1_000, amount: "0.0006"},
			{kind: KindAdjustment, period: jan, model: "m-small", class: ClassOutput, qty: 500, amount: "0.0003"},
		}, "0.0009", "0")
		for _, m := range []time.Time{jan, feb, mar} {
			e.reconcileClean(e.get("ws", m))
		}
	})
}

func TestRerunsWriteIdenticalInvoices(t *testing.T) {
	e := newEnv(t)
	e.send(
		event{ws: "ws_a", model: "m-big", at: jan.Add(5 * time.Hour), prompt: 123_456, cached: 23_456, completion: 7_890},
		event{ws: "ws_a", model: "m-small", at: jan.AddDate(0, 0, 20), prompt: 999, completion: 1},
		event{ws: "ws_disc", model: "m-big", at: jan.Add(7 * time.Hour), prompt: 5_000, completion: 50},
	)
	var first map[string]string
	for i := 0; i < 3; i++ {
		res := e.run(jan, jan.AddDate(0, 0, 25).Add(time.Duration(i)*time.Minute))
		if len(res.Written) != 2 {
			t.Fatalf("run %d wrote %d invoices, want 2", i+1, len(res.Written))
		}
		got := map[string]string{}
		for _, ws := range []string{"ws_a", "ws_disc"} {
			list, err := e.iv.List(ctx(t), ws)
			if err != nil || len(list) != 1 {
				t.Fatalf("run %d: %s has %d invoices (%v), want 1", i+1, ws, len(list), err)
			}
			got[ws] = content(e.get(ws, jan))
		}
		if first == nil {
			first = got
		} else if got["ws_a"] != first["ws_a"] || got["ws_disc"] != first["ws_disc"] {
			t.Errorf("run %d differs from run 1:\n%v\nvs\n%v", i+1, got, first)
		}
	}
}

func TestConcurrentRunsLeaveOneConsistentInvoice(t *testing.T) {
	e := newEnv(t)
	var evs []event
	for i := 0; i < 50; i++ {
		evs = append(evs, event{ws: []string{"ws_a", "ws_b", "ws_disc"}[i%3], model: []string{"m-big", "m-small"}[i%2],
			at: jan.Add(time.Duration(i*13) * time.Hour), prompt: uint64(1000 + i), cached: uint64(i), completion: uint64(10 * i)})
	}
	e.send(evs...)
	want, failed, err := e.iv.Compute(ctx(t), jan, feb)
	if err != nil || len(failed) > 0 {
		t.Fatal(err, failed)
	}
	e.now = jan.AddDate(0, 0, 25)
	for round := 0; round < 3; round++ {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = e.iv.Run(ctx(t), jan, feb)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	for ws, w := range want {
		list, err := e.iv.List(ctx(t), ws)
		if err != nil || len(list) != 1 {
			t.Fatalf("%s: %d invoices after concurrent runs (%v), want 1", ws, len(list), err)
		}
		got := e.get(ws, jan)
		w.Status = StatusDraft
		if content(got) != content(w) {
			t.Errorf("%s after concurrent runs:\n%s\nwant\n%s", ws, content(got), content(w))
		}
		e.reconcileClean(got)
	}
}

func TestLifecycle(t *testing.T) {
	e := newEnv(t)
	e.send(event{ws: "ws", model: "m-big", at: jan.Add(time.Hour), prompt: 1_000_000, completion: 1_000})
	e.run(jan, jan.AddDate(0, 0, 10))
	id := ID("ws", jan, feb)

	e.now = jan.AddDate(0, 0, 20)
	if _, err := e.iv.Finalize(ctx(t), "ws", id); !errors.Is(err, ErrInvalidTransition) {
		t.Errorf("finalizing an open period: %v, want ErrInvalidTransition", err)
	}
	if _, err := e.iv.Void(ctx(t), "ws", id); !errors.Is(err, ErrInvalidTransition) {
		t.Errorf("voiding a draft: %v, want ErrInvalidTransition", err)
	}
	for _, f := range []func() error{
		func() error { _, err := e.iv.Finalize(ctx(t), "ws_other", id); return err },
		func() error { _, err := e.iv.Void(ctx(t), "ws_other", id); return err },
		func() error { _, err := e.iv.Get(ctx(t), "ws_other", id); return err },
	} {
		if err := f(); !errors.Is(err, ErrNotFound) {
			t.Errorf("another workspace's invoice: %v, want ErrNotFound", err)
		}
	}

	// Inside the grace window, after the period: finalized now, with a usage event that
	// arrived since the last run.
	e.send(event{ws: "ws", model: "m-big", at: jan.Add(2 * time.Hour), prompt: 1_000_000})
	e.now = feb.Add(time.Hour)
	fin, err := e.iv.Finalize(ctx(t), "ws", id)
	if err != nil {
		t.Fatal(err)
	}
	if fin.Status != StatusFinalized || !fin.FinalizedAt.Equal(e.now.Truncate(time.Second)) {
		t.Errorf("finalized invoice: status %s at %v", fin.Status, fin.FinalizedAt)
	}
	checkLines(t, fin, []line{
		{kind: KindUsage, model: "m-big", class: ClassInput, qty: 2_000_000, amount: "5"},
		{kind: KindUsage, model: "m-big", class: ClassOutput, qty: 1_000, amount: "0.01"},
	}, "5.01", "5.01")
	if _, err := e.iv.Finalize(ctx(t), "ws", id); !errors.Is(err, ErrInvalidTransition) {
		t.Errorf("finalizing twice: %v, want ErrInvalidTransition", err)
	}
	if res := e.run(jan, feb.Add(2*time.Hour)); len(res.Written) != 0 {
		t.Errorf("a run inside the grace window rewrote the finalized invoice: %+v", res.Written)
	}
	// A slow run that read the headers before Finalize and writes its draft after it,
	// with a later clock, does not bring the invoice back to draft.
	late := e.get("ws", jan)
	late.stamp(StatusDraft, feb.Add(3*time.Hour))
	late.Lines = nil
	late.finish()
	if err := e.iv.store(ctx(t), []*Invoice{late}); err != nil {
		t.Fatal(err)
	}
	if got := e.get("ws", jan); got.Status != StatusFinalized || content(got) != content(fin) {
		t.Errorf("after a late draft write: %s", content(got))
	}

	e.now = feb.AddDate(0, 0, 10)
	void, err := e.iv.Void(ctx(t), "ws", id)
	if err != nil {
		t.Fatal(err)
	}
	if void.Status != StatusVoid || !void.VoidedAt.Equal(e.now) || len(void.Lines) != 2 {
		t.Errorf("voided invoice: %s voided at %v with %d lines", void.Status, void.VoidedAt, len(void.Lines))
	}
	if _, err := e.iv.Void(ctx(t), "ws", id); !errors.Is(err, ErrInvalidTransition) {
		t.Errorf("voiding twice: %v, want ErrInvalidTransition", err)
	}
	if _, err := e.iv.Finalize(ctx(t), "ws", id); !errors.Is(err, ErrInvalidTransition) {
		t.Errorf("finalizing a void invoice: %v, want ErrInvalidTransition", err)
	}
	e.run(jan, feb.AddDate(0, 0, 11))
	if got := e.get("ws", jan); got.Status != StatusVoid {
		t.Errorf("a run after the void: status %s", got.Status)
	}
	e.reconcileClean(e.get("ws", jan))

	// The voided usage is billed again, once, on the next invoice.
	for i := 0; i < 2; i++ {
		e.run(feb, feb.AddDate(0, 0, 12+i))
		checkLines(t, e.get("ws", feb), []line{
			{kind: KindAdjustment, period: jan, model: "m-big", class: ClassInput, qty: 2_000_000, amount: "5"},
			{kind: KindAdjustment, period: jan, model: "m-big", class: ClassOutput, qty: 1_000, amount: "0.01"},
		}, "5.01", "5.01")
	}
	e.reconcileClean(e.get("ws", feb))
}

func TestDiscountOnAdjustments(t *testing.T) {
	e := newEnv(t)
	e.send(event{ws: "ws_disc", model: "m-small", at: jan.Add(time.Hour), prompt: 1_000_000})
	e.run(jan, feb.Add(80*time.Hour))
	checkLines(t, e.get("ws_disc", jan), []line{
		{kind: KindUsage, model: "m-small", class: ClassInput, qty: 1_000_000, amount: "0.15"},
		{kind: KindDiscount, pct: "10", amount: "-0.015"},
	}, "0.135", "0.14")
	// A late January event, at January's 10% discount, billed in February.
	e.send(event{ws: "ws_disc", model: "m-small", at: jan.Add(2 * time.Hour), prompt: 2_000_000})
	e.run(feb, feb.AddDate(0, 0, 5))
	inv := e.get("ws_disc", feb)
	checkLines(t, inv, []line{
		{kind: KindAdjustment, period: jan, model: "m-small", class: ClassInput, qty: 2_000_000, amount: "0.3"},
		{kind: KindDiscount, period: jan, pct: "10", amount: "-0.03"},
	}, "0.27", "0.27")
	if !strings.Contains(inv.Lines[1].Description, "Discount 10% on prior-period adjustment for 2026-01") {
		t.Errorf("discount description %q", inv.Lines[1].Description)
	}
	e.reconcileClean(inv)
}

func TestReconcileFindsTampering(t *testing.T) {
	for _, c := range []struct {
		name, tamper string
	}{
		{"line quantity", `INSERT INTO {db}.invoice_items SELECT invoice_id, version, line_no, workspace_id, period_start, kind,
			service_period_start, service_period_end, model, token_class, quantity + 1000, usd_per_million, discount_percent,
			amount + toDecimal128(0.0025, 12) FROM {db}.invoice_items WHERE invoice_id = '{id}' AND version = {version} AND line_no = 1`},
		{"line amount", `INSERT INTO {db}.invoice_items SELECT invoice_id, version, line_no, workspace_id, period_start, kind,
			service_period_start, service_period_end, model, token_class, quantity, usd_per_million, discount_percent,
			amount + toDecimal128(1, 12) FROM {db}.invoice_items WHERE invoice_id = '{id}' AND version = {version} AND line_no = 1`},
		{"extra line", `INSERT INTO {db}.invoice_items SELECT invoice_id, version, 99, workspace_id, period_start, kind,
			service_period_start, service_period_end, model, token_class, quantity, usd_per_million, discount_percent,
			amount FROM {db}.invoice_items WHERE invoice_id = '{id}' AND version = {version} AND line_no = 1`},
		{"header total", `INSERT INTO {db}.invoices SELECT invoice_id, workspace_id, period_start, period_end, status, currency,
			subtotal, total - toDecimal128(1, 12), computed_at, finalized_at, version FROM {db}.invoices WHERE invoice_id = '{id}'`},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.send(event{ws: "ws", model: "m-big", at: jan.Add(time.Hour), prompt: 1_000_000, completion: 10_000})
			e.run(jan, jan.AddDate(0, 0, 10))
			inv := e.get("ws", jan)
			e.reconcileClean(inv)
			q := strings.NewReplacer("{db}", e.db, "{id}", inv.ID, "{version}", itoa(inv.Version)).Replace(c.tamper)
			if err := e.conn.Exec(ctx(t), q); err != nil {
				t.Fatal(err)
			}
			diffs, err := e.iv.Reconcile(ctx(t), "ws", inv.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(diffs) == 0 {
				t.Errorf("reconcile found nothing after tampering (%s); invoice now:\n%s", c.name, content(e.get("ws", jan)))
			}
			t.Logf("reconcile: %v", diffs)
		})
	}
}

// TestUsageOfAMonthNeverInvoiced: a workspace's only January usage arrives in March,
// when no run bills January any more; March adjusts it, and a later manual January run
// finds nothing left to bill.
func TestUsageOfAMonthNeverInvoiced(t *testing.T) {
	e := newEnv(t)
	e.send(event{ws: "ws", model: "m-small", at: jan.Add(time.Hour), prompt: 1_000_000})
	e.run(mar, mar.Add(time.Hour))
	want := []line{{kind: KindAdjustment, period: jan, model: "m-small", class: ClassInput, qty: 1_000_000, amount: "0.15"}}
	checkLines(t, e.get("ws", mar), want, "0.15", "0.15")
	if res := e.run(jan, mar.Add(2*time.Hour)); len(res.Written) != 0 {
		t.Errorf("a January run after March billed it wrote %s", content(res.Written[0]))
	}
	e.run(mar, mar.Add(3*time.Hour))
	checkLines(t, e.get("ws", mar), want, "0.15", "0.15")
	e.reconcileClean(e.get("ws", mar))
}

// TestEditedPastPricesFailLoudly: a finalized month re-priced by an edited price book is
// never silently credited or re-billed; the workspace's invoice run fails and says why.
func TestEditedPastPricesFailLoudly(t *testing.T) {
	e := newEnv(t)
	e.send(event{ws: "ws", model: "m-small", at: jan.Add(time.Hour), prompt: 1_000_000})
	e.run(jan, feb.Add(80*time.Hour))
	edited, err := ParsePriceBook([]byte(strings.Replace(testBook, `input: "0.15"`, `input: "0.16"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	e.iv.prices = edited
	e.send(event{ws: "ws", model: "m-small", at: jan.Add(time.Hour), prompt: 10})
	res := e.run(feb, feb.AddDate(0, 0, 5))
	if err := res.Failed["ws"]; err == nil || !strings.Contains(err.Error(), "already billed") {
		t.Errorf("February after January's price was edited: %v, want a failure saying what was already billed", err)
	}
}

// TestInvoicesFromBeforeMigration3: an invoice finalized before invoice_items existed
// (lines in invoice_lines) reads as before and counts as billed: a later run adjusts only
// the usage that arrived after it.
func TestInvoicesFromBeforeMigration3(t *testing.T) {
	e := newEnv(t)
	e.send(event{ws: "ws", model: "m-small", at: jan.Add(time.Hour), prompt: 1_000_000, completion: 1_000})
	id, version, at := ID("ws", jan, feb), uint64(feb.Add(80*time.Hour).UnixNano()), feb.Add(80*time.Hour)
	err := chdb.Insert(ctx(t), e.conn, chdb.InsertInto(e.db+".invoice_lines",
		[]string{"invoice_id", "version", "line_no", "workspace_id", "model", "token_class", "quantity", "usd_per_million", "amount"}),
		[][]any{{id, version, uint32(1), "ws", "m-small", ClassInput, uint64(1_000_000), d("0.15"), d("0.15")},
			{id, version, uint32(2), "ws", "m-small", ClassOutput, uint64(1_000), d("0.6"), d("0.0006")}})
	if err != nil {
		t.Fatal(err)
	}
	err = chdb.Insert(ctx(t), e.conn, sqlset.Fill(insertHeadersSQL, "db", e.db),
		[][]any{{id, "ws", jan, feb, StatusFinalized, "USD", d("0.1506"), d("0.15"), at, at, version}})
	if err != nil {
		t.Fatal(err)
	}
	want := []line{
		{kind: KindUsage, model: "m-small", class: ClassInput, qty: 1_000_000, amount: "0.15"},
		{kind: KindUsage, model: "m-small", class: ClassOutput, qty: 1_000, amount: "0.0006"},
	}
	checkLines(t, e.get("ws", jan), want, "0.1506", "0.15")
	if res := e.run(feb, feb.AddDate(0, 0, 5)); len(res.Written) != 0 {
		t.Errorf("February billed January again: %s", content(res.Written[0]))
	}
	e.send(event{ws: "ws", model: "m-small", at: jan.Add(time.Hour), completion: 7})
	e.run(feb, feb.AddDate(0, 0, 6))
	checkLines(t, e.get("ws", feb), []line{{kind: KindAdjustment, period: jan, model: "m-small", class: ClassOutput, qty: 7, amount: "0.0000042"}}, "0.0000042", "0")
	e.reconcileClean(e.get("ws", jan))
}
