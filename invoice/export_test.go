package invoice

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// sample is an invoice with every kind of line and amounts that need all 12 decimals.
func sample() *Invoice {
	inv := &Invoice{ID: "inv_x", WorkspaceID: "ws_<b>acme</b>", PeriodStart: feb, PeriodEnd: mar, Status: StatusFinalized,
		Currency: "USD", FinalizedAt: mar.Add(72 * time.Hour), Lines: []Line{
			{Kind: KindUsage, ServicePeriodStart: feb, ServicePeriodEnd: mar, Model: "m-small", TokenClass: ClassCachedInput,
				Quantity: 7, PerMillion: d("0.075"), Amount: Amount(7, d("0.075"))},
			{Kind: KindDiscount, ServicePeriodStart: feb, ServicePeriodEnd: mar, DiscountPercent: d("12.5"), Amount: d("-0.000000065625")},
			{Kind: KindAdjustment, ServicePeriodStart: jan, ServicePeriodEnd: feb, Model: "m-big", TokenClass: ClassOutput,
				Quantity: 1_234_567, PerMillion: d("10"), Amount: Amount(1_234_567, d("10"))},
		}}
	inv.finish()
	return inv
}

func TestCSVExport(t *testing.T) {
	inv := sample()
	var b bytes.Buffer
	if err := inv.CSV(&b); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatalf("the export is not CSV: %v", err)
	}
	if len(rows) != 1+len(inv.Lines)+2 {
		t.Fatalf("%d rows, want a header, %d lines, subtotal and total", len(rows), len(inv.Lines))
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	for i, l := range inv.Lines {
		r := rows[1+i]
		if r[col["kind"]] != l.Kind || r[col["amount"]] != l.Amount.String() || r[col["service_period_start"]] != l.ServicePeriodStart.Format(time.RFC3339) {
			t.Errorf("row %d = %v, want line %+v", i+1, r, l)
		}
	}
	if got := rows[2][col["amount"]]; got != "-0.000000065625" {
		t.Errorf("discount amount %q: not exact", got)
	}
	if got := rows[3][col["description"]]; !strings.Contains(got, "Prior-period adjustment for 2026-01") {
		t.Errorf("adjustment row description %q", got)
	}
	sub, tot := rows[len(rows)-2], rows[len(rows)-1]
	if sub[col["kind"]] != "subtotal" || sub[col["amount"]] != "12.345670459375" {
		t.Errorf("subtotal row %v, want the exact subtotal 12.345670459375", sub)
	}
	if tot[col["kind"]] != "total" || tot[col["amount"]] != "12.35" {
		t.Errorf("total row %v, want 12.35", tot)
	}
}

func TestHTMLExport(t *testing.T) {
	inv := sample()
	var b bytes.Buffer
	if err := inv.HTML(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{
		"<title>Invoice inv_x</title>",
		"ws_&lt;b&gt;acme&lt;/b&gt;", // escaped, never markup
		">0.000000525<",              // every amount exact
		">-0.000000065625<",
		">12.34567<",
		">12.345670459375<", // the exact subtotal
		">12.35 USD<",       // and the rounded total
		"Prior-period adjustment for 2026-01: m-big output tokens",
		"Discount 12.5% on 2026-02 usage",
		"finalized 2026-03-04",
		">1,234,567 tokens<", // quantities and prices with their units
		">10 per 1M tokens<",
		">12.5 %<",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(page, "<b>acme") {
		t.Error("the workspace ID was rendered as markup")
	}
}

// Every kind of line shows its quantity and unit price with their units, or nothing where
// its description says it all.
func TestLineShown(t *testing.T) {
	for _, c := range []struct {
		line            Line
		quantity, price string
	}{
		{Line{Kind: KindUsage, TokenClass: ClassInput, Quantity: 3200, PerMillion: d("2.50")}, "3,200 tokens", "2.5 per 1M tokens"},
		{Line{Kind: KindUsage, TokenClass: "output/tier:2", Quantity: 200_000, PerMillion: d("8")}, "200,000 tokens", "8 per 1M tokens"},
		{Line{Kind: KindUsage, TokenClass: "output/package:1000000", Quantity: 2_500_000, PerMillion: d("0.50")},
			"2,500,000 tokens", "0.5 per 1,000,000 tokens"},
		{Line{Kind: KindAdjustment, TokenClass: ClassOutput, Quantity: 7, PerMillion: d("10")}, "7 tokens", "10 per 1M tokens"},
		{Line{Kind: KindReversal, TokenClass: "output/volume:1", Quantity: 1_000_000, PerMillion: d("10")}, "1,000,000 tokens", "10 per 1M tokens"},
		{Line{Kind: KindFee, Quantity: 516, PerMillion: d("20.00")}, "516 hours", "20 per month"},
		{Line{Kind: KindDiscount, DiscountPercent: d("12.5")}, "", "12.5 %"},
		{Line{Kind: KindCommitment, PerMillion: d("100")}, "", ""},
		{Line{Kind: KindIncluded, PerMillion: d("5")}, "", ""},
		{Line{Kind: KindCredit, GrantID: "cg_1"}, "", ""},
	} {
		if q, p := c.line.Shown(); q != c.quantity || p != c.price {
			t.Errorf("%s %s: %q at %q, want %q at %q", c.line.Kind, c.line.TokenClass, q, p, c.quantity, c.price)
		}
	}
}

func TestJSONNamesLineKinds(t *testing.T) {
	b, err := json.Marshal(sample())
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Lines []map[string]any `json:"lines"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	l := got.Lines[2]
	if l["kind"] != KindAdjustment || l["service_period_start"] != "2026-01-01T00:00:00Z" || l["service_period_end"] != "2026-02-01T00:00:00Z" || l["amount"] != "12.34567" {
		t.Errorf("adjustment line JSON %v", l)
	}
	if _, ok := l["discount_percent"]; ok {
		t.Errorf("a usage line carries discount_percent: %v", l)
	}
	if got.Lines[1]["discount_percent"] != "12.5" {
		t.Errorf("discount line JSON %v", got.Lines[1])
	}
}
