package stripesync

import (
	"errors"
	"testing"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/invoice"
)

func d(s string) decimal.Decimal { return decimal.RequireFromString(s) }

// invoiceOf is an invoice of the given line amounts, totalled as the invoicer totals it.
func invoiceOf(currency string, amounts ...string) *invoice.Invoice {
	inv := &invoice.Invoice{ID: "inv_t", Currency: currency, Subtotal: decimal.Zero}
	for i, a := range amounts {
		kind := invoice.KindUsage
		if d(a).IsNegative() {
			kind = invoice.KindCredit
		}
		inv.Lines = append(inv.Lines, invoice.Line{No: i + 1, Kind: kind, Amount: d(a)})
		inv.Subtotal = inv.Subtotal.Add(d(a))
	}
	inv.Total = invoice.RoundTotal(inv.Subtotal)
	return inv
}

// The items of an invoice add up to its total exactly, whatever the lines' decimals: each
// line rounded half away from zero, the difference in one rounding item. Worked by hand.
func TestStripePlanAddsUpToTheTotal(t *testing.T) {
	cases := []struct {
		name     string
		currency string
		amounts  []string
		items    []int64 // the lines' items, then the rounding item if any
		total    int64
	}{
		{"whole cents", "USD", []string{"12.34", "0.66"}, []int64{1234, 66}, 1300},
		// 0.005 rounds away from zero to 1 cent, -0.005 to -1; the subtotal 0.000 is 0.
		{"halves away from zero", "USD", []string{"0.005", "-0.005"}, []int64{1, -1}, 0},
		// Nine lines of 0.004: each rounds to 0, the subtotal 0.036 to 0.04.
		{"many sub-cent lines", "USD", []string{"0.004", "0.004", "0.004", "0.004", "0.004", "0.004", "0.004", "0.004", "0.004"},
			[]int64{0, 0, 0, 0, 0, 0, 0, 0, 0, 4}, 4},
		// 10.005 → 1001, -1.0005 → -100, -5 → -500: 401; the subtotal 4.0045 rounds to 4.00.
		{"usage, discount and credit", "USD", []string{"10.005", "-1.0005", "-5"}, []int64{1001, -100, -500, -1}, 400},
		{"twelve decimals", "usd", []string{"0.123456789012", "0.876543210988"}, []int64{12, 88}, 100},
		{"yen", "JPY", []string{"1200.4", "33.6"}, []int64{1200, 34}, 1234},
		// 1.2345 → 1.235, 0.0055 → 0.006 (mils); the total 1.24 is 1240 mils.
		{"three-decimal currency", "KWD", []string{"1.2345", "0.0055"}, []int64{1235, 6, -1}, 1240},
		{"no lines", "USD", nil, nil, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			inv := invoiceOf(c.currency, c.amounts...)
			p, err := PlanFor(inv)
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			var sum int64
			for _, it := range p.Items {
				got = append(got, it.Amount)
				sum += it.Amount
			}
			if len(got) != len(c.items) {
				t.Fatalf("items %v, want %v", got, c.items)
			}
			for i := range got {
				if got[i] != c.items[i] {
					t.Fatalf("items %v, want %v", got, c.items)
				}
			}
			if p.Total != c.total || sum != c.total {
				t.Errorf("total %d, items sum to %d, want %d (Venna total %s)", p.Total, sum, c.total, inv.Total)
			}
			if n := len(inv.Lines); len(p.Items) > n && (p.Items[n].Key != "item:rounding" || p.Items[n].Line != 0) {
				t.Errorf("last item %+v, want the rounding adjustment", p.Items[n])
			}
		})
	}
}

// An invoice whose total the currency cannot hold (cents of a zero-decimal currency) is
// refused, never pushed with a different total.
func TestStripePlanRefusesWhatStripeCannotHold(t *testing.T) {
	_, err := PlanFor(invoiceOf("JPY", "1200.25"))
	if !errors.Is(err, ErrNotRepresentable) {
		t.Fatalf("err %v, want ErrNotRepresentable", err)
	}
}

// An item's description says what the line bills in the line's own units: a package
// rate's price is per package, not per million tokens.
func TestStripeItemDescriptions(t *testing.T) {
	for _, c := range []struct {
		line invoice.Line
		want string
	}{
		{invoice.Line{Kind: invoice.KindUsage, Description: "venna-1 input tokens", TokenClass: invoice.ClassInput, Quantity: 3200,
			PerMillion: d("2.5"), Amount: d("0.008")}, "venna-1 input tokens: 3,200 tokens at 2.5 USD per 1M tokens = 0.008 USD"},
		{invoice.Line{Kind: invoice.KindUsage, Description: "venna-1-mini output tokens in packages of 500000 at 0.5",
			TokenClass: "output/package:500000", Quantity: 2_500_000, PerMillion: d("0.5"), Amount: d("2.5")},
			"venna-1-mini output tokens in packages of 500000 at 0.5: 2,500,000 tokens at 0.5 USD per 500,000 tokens = 2.5 USD"},
		{invoice.Line{Kind: invoice.KindReversal, Description: "Re-priced 2026-11: venna-1 output tokens, tier 1 billed before, taken back",
			TokenClass: "output/tier:1", Quantity: 1000, PerMillion: d("10"), Amount: d("-0.01")},
			"Re-priced 2026-11: venna-1 output tokens, tier 1 billed before, taken back: 1,000 tokens at 10 USD per 1M tokens = -0.01 USD"},
		{invoice.Line{Kind: invoice.KindFee, Description: "Plan team fee of 20 a month, 516 of 744 hours", Quantity: 516,
			PerMillion: d("20"), Amount: d("13.870968")}, "Plan team fee of 20 a month, 516 of 744 hours: 13.870968 USD"},
	} {
		if got := describe(c.line, "USD"); got != c.want {
			t.Errorf("%s %s:\n got %q\nwant %q", c.line.Kind, c.line.TokenClass, got, c.want)
		}
	}
}
