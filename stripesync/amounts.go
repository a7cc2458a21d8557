package stripesync

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/invoice"
)

// Item is one Stripe invoice item Venna sends for an invoice: a line of the Venna invoice,
// or the rounding adjustment.
type Item struct {
	Key         string // what its Idempotency-Key ends with: item:<line_no> or item:rounding
	Line        int    // the Venna line number; 0 for the rounding adjustment
	Amount      int64  // minor units of the invoice's currency; negative for discounts and credits
	Description string
	Metadata    map[string]string
}

// Plan is what an invoice becomes in Stripe: its items, whose amounts add up to Total.
type Plan struct {
	Currency string // lower case, as Stripe writes it
	Items    []Item
	Total    int64 // the Venna invoice's total in minor units
}

// ErrNotRepresentable is returned for an invoice whose total has more decimals than its
// currency's minor unit: a Stripe invoice could not equal it.
var ErrNotRepresentable = errors.New("invoice total is not a whole number of the currency's minor units")

// zeroDecimal and threeDecimal are the currencies whose minor unit is not a hundredth,
// as Stripe lists them; every other currency has cents.
var (
	zeroDecimal  = map[string]bool{"bif": true, "clp": true, "djf": true, "gnf": true, "jpy": true, "kmf": true, "krw": true, "mga": true, "pyg": true, "rwf": true, "ugx": true, "vnd": true, "vuv": true, "xaf": true, "xof": true, "xpf": true}
	threeDecimal = map[string]bool{"bhd": true, "jod": true, "kwd": true, "omr": true, "tnd": true}
)

// exponent is the number of decimals of currency's minor unit.
func exponent(currency string) int32 {
	switch {
	case zeroDecimal[currency]:
		return 0
	case threeDecimal[currency]:
		return 3
	}
	return 2
}

// MinorUnits is the one rounding rule of the Stripe push: an exact amount in minor units
// of currency, rounded half away from zero — the rule of invoice.RoundTotal, at the
// currency's own precision. ok is false when the result does not fit an int64.
func MinorUnits(amount decimal.Decimal, currency string) (units int64, ok bool) {
	exp := exponent(strings.ToLower(currency))
	d := amount.Round(exp).Shift(exp)
	if !d.IsInteger() || d.Abs().GreaterThan(decimal.NewFromInt(1<<62)) {
		return 0, false
	}
	return d.IntPart(), true
}

// PlanFor turns a Venna invoice into Stripe items whose sum is the invoice's total
// exactly. Each line becomes one item of its amount in minor units (MinorUnits); lines
// rounded one by one can add up to a few minor units more or less than the total, which
// is the exact subtotal rounded once, so the difference becomes one more item, "Rounding
// adjustment", of at most half a minor unit per line. Discount and credit lines are
// negative items.
func PlanFor(inv *invoice.Invoice) (Plan, error) {
	cur := strings.ToLower(inv.Currency)
	p := Plan{Currency: cur}
	total, ok := MinorUnits(inv.Total, cur)
	if !ok || !inv.Total.Equal(decimal.New(total, -exponent(cur))) {
		return Plan{}, fmt.Errorf("invoice %s: total %s %s: %w", inv.ID, inv.Total, inv.Currency, ErrNotRepresentable)
	}
	p.Total = total
	var sum int64
	for _, l := range inv.Lines {
		amount, ok := MinorUnits(l.Amount, cur)
		if !ok {
			return Plan{}, fmt.Errorf("invoice %s line %d: amount %s does not fit Stripe's integer amounts", inv.ID, l.No, l.Amount)
		}
		sum += amount
		p.Items = append(p.Items, Item{
			Key: "item:" + strconv.Itoa(l.No), Line: l.No, Amount: amount, Description: describe(l, inv.Currency),
			Metadata: metadata(
				"venna_invoice_id", inv.ID, "venna_line", strconv.Itoa(l.No), "venna_kind", l.Kind,
				"venna_model", l.Model, "venna_token_class", l.TokenClass, "venna_quantity", strconv.FormatUint(l.Quantity, 10),
				"venna_unit_price_per_million", l.PerMillion.String(), "venna_amount_exact", l.Amount.String(),
				"venna_grant_id", l.GrantID),
		})
	}
	if diff := total - sum; diff != 0 {
		p.Items = append(p.Items, Item{
			Key: "item:rounding", Amount: diff,
			Description: "Rounding adjustment: the invoice total is the exact sum of its lines rounded once, each item above is its line rounded alone",
			Metadata:    metadata("venna_invoice_id", inv.ID, "venna_line", "rounding", "venna_kind", "rounding"),
		})
	}
	return p, nil
}

// describe is an item's description: the Venna line's own, with what it bills.
func describe(l invoice.Line, currency string) string {
	switch l.Kind {
	case invoice.KindUsage, invoice.KindAdjustment, invoice.KindReversal:
		per := "1M tokens"
		if _, qual, _ := strings.Cut(l.TokenClass, "/"); strings.HasPrefix(qual, "package:") {
			per = invoice.GroupDigits(strings.TrimPrefix(qual, "package:")) + " tokens" // a package's price
		}
		return fmt.Sprintf("%s: %s tokens at %s %s per %s = %s %s", l.Description, invoice.GroupDigits(strconv.FormatUint(l.Quantity, 10)),
			l.PerMillion, currency, per, l.Amount, currency)
	}
	return fmt.Sprintf("%s: %s %s", l.Description, l.Amount, currency)
}

// metadata is Stripe metadata from key, value pairs, leaving out empty values (which Stripe
// reads as "remove the key").
func metadata(pairs ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] != "" {
			m[pairs[i]] = pairs[i+1]
		}
	}
	return m
}
