package invoice

import (
	"reflect"
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

// The burn-down order, worked by hand: usage is paid oldest first, each stretch by the
// grants in force then, the one expiring first, then the lowest priority number, then the
// oldest; a grant pays nothing before it starts or from when it expires.
func TestAllocateOrder(t *testing.T) {
	h := func(n int) time.Time { return jan.Add(time.Duration(n) * time.Hour) }
	grants := []Grant{
		{ID: "never", AmountUSD: d("10"), EffectiveFrom: h(0)},
		{ID: "soon", AmountUSD: d("1"), EffectiveFrom: h(0), ExpiresAt: h(10)},
		{ID: "soon-low", AmountUSD: d("1"), EffectiveFrom: h(0), ExpiresAt: h(10), Priority: 5},
		{ID: "later", AmountUSD: d("2"), EffectiveFrom: h(5)},
		{ID: "void", AmountUSD: d("100"), EffectiveFrom: h(0), Voided: true},
	}
	avail := map[string]decimal.Decimal{}
	for _, g := range grants {
		avail[g.ID] = g.AmountUSD
	}
	avail["never"] = d("9") // 1 applied by another invoice
	paid := allocate(grants, avail, []usageAt{
		{At: h(12), Amount: d("3.5")}, // after soon and soon-low expired: never-expiring ones, oldest first
		{At: h(1), Amount: d("1.5")},  // soon (1), then soon-low (0.5): same expiry, lower priority number first
		{At: h(6), Amount: d("0.75")}, // soon-low's remaining 0.5, then never (never is older than later)
	})
	want := map[string]decimal.Decimal{"soon": d("1"), "soon-low": d("1"), "never": d("3.75")}
	if len(paid) != len(want) {
		t.Fatalf("paid %v, want %v", paid, want)
	}
	for id, w := range want {
		if !paid[id].Equal(w) {
			t.Errorf("grant %s paid %s, want %s (all paid: %v)", id, paid[id], w, paid)
		}
	}
	if !avail["never"].Equal(d("5.25")) || !avail["later"].Equal(d("2")) {
		t.Errorf("left: %v", avail)
	}
	// Usage beyond every grant stays unpaid.
	if paid := allocate(grants[:1], map[string]decimal.Decimal{"never": d("1")}, []usageAt{{At: h(1), Amount: d("4")}}); !paid["never"].Equal(d("1")) {
		t.Errorf("paid %v, want the 1 USD left", paid)
	}
	order := append([]Grant(nil), grants...)
	CreditOrder(order)
	var ids []string
	for _, g := range order {
		ids = append(ids, g.ID)
	}
	if !reflect.DeepEqual(ids, []string{"soon", "soon-low", "never", "void", "later"}) {
		t.Errorf("order %v", ids)
	}
}

func TestGrantValidate(t *testing.T) {
	ok := Grant{WorkspaceID: "ws", AmountUSD: d("5"), EffectiveFrom: jan}
	for name, g := range map[string]Grant{
		"no workspace":       {AmountUSD: d("5"), EffectiveFrom: jan},
		"zero":               {WorkspaceID: "ws", EffectiveFrom: jan},
		"7 decimals":         {WorkspaceID: "ws", AmountUSD: d("0.0000001"), EffectiveFrom: jan},
		"mid-hour start":     {WorkspaceID: "ws", AmountUSD: d("5"), EffectiveFrom: jan.Add(time.Minute)},
		"expiry before":      {WorkspaceID: "ws", AmountUSD: d("5"), EffectiveFrom: feb, ExpiresAt: jan},
		"mid-hour expiry":    {WorkspaceID: "ws", AmountUSD: d("5"), EffectiveFrom: jan, ExpiresAt: feb.Add(time.Second)},
		"priority too large": {WorkspaceID: "ws", AmountUSD: d("5"), EffectiveFrom: jan, Priority: 70000},
	} {
		if g.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := ok.Validate(); err != nil {
		t.Errorf("refused %v: %v", ok, err)
	}
}

// Credits on invoices, worked by hand (m-small: 0.15 input, 0.60 output per 1M):
// January bills 0.90 USD for ws_pre, 0.30 of it before the grant that expires first
// starts; February's usage takes what is left, and what February's grant does not cover
// is billed. Reruns write the same lines, reconcile finds nothing, and a void gives its
// credits back.
func TestCreditsOnInvoices(t *testing.T) {
	e := newEnv(t)
	day := func(n, h int) time.Time { return jan.AddDate(0, 0, n-1).Add(time.Duration(h) * time.Hour) }
	million := uint64(1_000_000)
	// 0.30 USD each: 1M input tokens (0.15) + 250k output tokens (0.15).
	e.send(
		event{ws: "ws_pre", model: "m-small", at: day(2, 0), prompt: million, completion: million / 4},
		event{ws: "ws_pre", model: "m-small", at: day(10, 6), prompt: million, completion: million / 4},
		event{ws: "ws_pre", model: "m-small", at: day(20, 0), prompt: million, completion: million / 4},
		event{ws: "ws_pre", model: "m-small", at: feb.Add(48 * time.Hour), prompt: million, completion: million / 4},
		event{ws: "ws_pre", model: "m-small", at: feb.Add(72 * time.Hour), prompt: million, completion: million / 4},
		event{ws: "ws_post", model: "m-small", at: day(3, 0), prompt: million},
	)
	grant := func(g Grant) Grant {
		t.Helper()
		g.WorkspaceID = "ws_pre"
		got, err := e.iv.AddGrant(ctx(t), g)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	// From Jan 5 to Feb 1, expiring first: pays the Jan 10 usage and 0.20 of the Jan 20 one.
	short := grant(Grant{ID: "gr_short", AmountUSD: d("0.5"), EffectiveFrom: jan.AddDate(0, 0, 4), ExpiresAt: feb})
	// Never expiring, from Jan 1: pays the Jan 2 usage (0.30), then the 0.10 short left
	// over, then 0.20 in February.
	long := grant(Grant{ID: "gr_long", AmountUSD: d("0.6"), EffectiveFrom: jan, Priority: 1})
	_ = short
	_ = long

	e.run(jan, feb.Add(80*time.Hour)) // after the grace window: finalized
	jInv := e.get("ws_pre", jan)
	if jInv.Status != StatusFinalized {
		t.Fatalf("January is %s", jInv.Status)
	}
	credits := map[string]string{}
	for _, l := range jInv.Lines {
		if l.Kind == KindCredit {
			credits[l.GrantID] = l.Amount.String()
			if l.Description != "Prepaid credit from grant "+l.GrantID || l.Model != "" {
				t.Errorf("credit line %+v", l)
			}
		}
	}
	if !reflect.DeepEqual(credits, map[string]string{"gr_short": "-0.5", "gr_long": "-0.4"}) {
		t.Fatalf("January credits %v, want gr_short -0.5 (the Jan 10 and Jan 20 usage, as far as it goes) and gr_long -0.4", credits)
	}
	if last := jInv.Lines[len(jInv.Lines)-1]; last.Kind != KindCredit || !jInv.Subtotal.Equal(d("0")) || !jInv.Total.Equal(d("0")) {
		t.Fatalf("January subtotal %s total %s, last line %+v: want 0, credits last", jInv.Subtotal, jInv.Total, last)
	}

	e.run(feb, feb.AddDate(0, 0, 10))
	fInv := e.get("ws_pre", feb)
	var fCredit decimal.Decimal
	for _, l := range fInv.Lines {
		if l.Kind == KindCredit {
			if l.GrantID != "gr_long" {
				t.Errorf("February credit from %s: only gr_long has credit left", l.GrantID)
			}
			fCredit = fCredit.Add(l.Amount)
		}
	}
	if !fCredit.Equal(d("-0.2")) || !fInv.Subtotal.Equal(d("0.4")) || !fInv.Total.Equal(d("0.4")) {
		t.Fatalf("February credit %s subtotal %s: want -0.2 (gr_long's rest) and 0.40 billed", fCredit, fInv.Subtotal)
	}
	// Reruns give the same lines; reconcile finds nothing to say.
	e.run(feb, feb.AddDate(0, 0, 11))
	if again := e.get("ws_pre", feb); !sameLines(again.Lines, fInv.Lines) {
		t.Fatalf("rerun changed February: %+v, was %+v", again.Lines, fInv.Lines)
	}
	for _, inv := range []*Invoice{jInv, fInv} {
		diffs, err := e.iv.Reconcile(ctx(t), "ws_pre", inv.ID)
		if err != nil || len(diffs) != 0 {
			t.Fatalf("reconcile %s: %v %v", inv.PeriodStart.Format("2006-01"), diffs, err)
		}
	}
	// A workspace without grants gets no credit line.
	for _, l := range e.get("ws_post", jan).Lines {
		if l.Kind == KindCredit {
			t.Fatalf("ws_post has a credit line: %+v", l)
		}
	}

	// Voiding January gives its credits back: February's draft now re-bills January's
	// usage as adjustments, credited as usage of January's last hour (gr_short, still in
	// force then, pays its 0.50, gr_long 0.40), and February's own usage after that
	// (gr_long's last 0.20).
	e.now = feb.AddDate(0, 0, 12)
	if _, err := e.iv.Void(ctx(t), "ws_pre", jInv.ID); err != nil {
		t.Fatal(err)
	}
	e.run(feb, feb.AddDate(0, 0, 12))
	fInv = e.get("ws_pre", feb)
	fCredit = decimal.Zero
	for _, l := range fInv.Lines {
		if l.Kind == KindCredit {
			fCredit = fCredit.Add(l.Amount)
		}
	}
	// Billed: January 0.90 as adjustments + February 0.60 = 1.50, less 1.10 of credit.
	if !fCredit.Equal(d("-1.1")) || !fInv.Subtotal.Equal(d("0.4")) {
		t.Fatalf("after the void: credit %s subtotal %s, want -1.10 and 0.40 (lines %+v)", fCredit, fInv.Subtotal, fInv.Lines)
	}
	if diffs, err := e.iv.Reconcile(ctx(t), "ws_pre", fInv.ID); err != nil || len(diffs) != 0 {
		t.Fatalf("reconcile after the void: %v %v", diffs, err)
	}

	// A credit a grant no longer gives (voided since) is a difference reconcile reports.
	if _, err := e.iv.VoidGrant(ctx(t), "ws_pre", "gr_long"); err != nil {
		t.Fatal(err)
	}
	diffs, err := e.iv.Reconcile(ctx(t), "ws_pre", fInv.ID)
	if err != nil || len(diffs) != 1 {
		t.Fatalf("reconcile after voiding the grant behind a stored credit: %v %v, want one difference", diffs, err)
	}
}

func sameLines(a, b []Line) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Kind != y.Kind || x.Model != y.Model || x.TokenClass != y.TokenClass || x.GrantID != y.GrantID ||
			x.Quantity != y.Quantity || !x.Amount.Equal(y.Amount) || !x.ServicePeriodStart.Equal(y.ServicePeriodStart) {
			return false
		}
	}
	return true
}

// Prepaid mode is versioned like prices: the mode in force at t.
func TestPrepaidMode(t *testing.T) {
	e := newEnv(t)
	e.now = jan.Add(time.Hour)
	if err := e.iv.SetPrepaid(ctx(t), "ws_a", true); err != nil {
		t.Fatal(err)
	}
	e.now = jan.Add(3 * time.Hour)
	if err := e.iv.SetPrepaid(ctx(t), "ws_a", false); err != nil {
		t.Fatal(err)
	}
	for at, want := range map[time.Time]bool{jan: false, jan.Add(2 * time.Hour): true, jan.Add(4 * time.Hour): false} {
		got, err := e.iv.Prepaid(ctx(t), at)
		if err != nil {
			t.Fatal(err)
		}
		if got["ws_a"] != want {
			t.Errorf("prepaid at %s: %v, want %v", at.Format(time.RFC3339), got["ws_a"], want)
		}
	}
}
