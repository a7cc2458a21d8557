package invoice

import (
	"strings"
	"testing"
	"time"
)

func TestParsePriceBookRefuses(t *testing.T) {
	const head = "currency: USD\nprices:\n  - {model: m, effective_from: \"2026-01-01T00:00:00Z\", input: \"2.50\", cached_input: \"1.25\", output: \"10\"}\n"
	for _, c := range []struct{ name, book, want string }{
		{"no prices", "currency: USD\n", "no prices"},
		{"euro", strings.Replace(head, "USD", "EUR", 1), "only USD"},
		{"float-ish price", strings.Replace(head, `"2.50"`, `"2.5000001"`, 1), "more than 6 decimals"},
		{"mid-hour", strings.Replace(head, "00:00:00Z", "00:30:00Z", 1), "not on a whole hour"},
		{"unknown field", head + "overrides:\n  ws_a:\n    discount: \"10\"\n", "field discount not found"},
		{"percent above 100", head + "overrides:\n  ws_a:\n    discounts: [{effective_from: \"2026-01-01T00:00:00Z\", percent: \"101\"}]\n", "between 0 and 100"},
		{"inexact discount", head + "overrides:\n  ws_a:\n    discounts: [{effective_from: \"2026-01-01T00:00:00Z\", percent: \"0.00001\"}]\n", "more than 6 decimals"},
		{"inexact on a custom price", head + "overrides:\n  ws_a:\n    discounts: [{effective_from: \"2026-01-01T00:00:00Z\", percent: \"10\"}]\n" +
			"    prices: [{model: m, effective_from: \"2026-01-01T00:00:00Z\", input: \"0.000001\", cached_input: \"0\", output: \"0\"}]\n", "m's input price 0.000001"},
		{"two discounts at once", head + "overrides:\n  ws_a:\n    discounts:\n      - {effective_from: \"2026-01-01T00:00:00Z\", percent: \"10\"}\n      - {effective_from: \"2026-01-01T00:00:00Z\", percent: \"20\"}\n", "two discounts"},
		{"custom price without model", head + "overrides:\n  ws_a:\n    prices: [{effective_from: \"2026-01-01T00:00:00Z\", input: \"1\", cached_input: \"1\", output: \"1\"}]\n", "model is empty"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParsePriceBook([]byte(c.book))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ParsePriceBook: %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestPriceBookForAndDiscountAt(t *testing.T) {
	pb, err := ParsePriceBook([]byte(testBook))
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(mustDuration(s)) }
	for _, c := range []struct {
		ws, model string
		at        time.Time
		input     string
	}{
		{"ws_any", "m-big", at("0h"), "2.5"},
		{"ws_any", "m-big", at("347h"), "2.5"}, // Jan 15 11:00
		{"ws_any", "m-big", at("348h"), "3"},   // Jan 15 12:00
		{"ws_custom", "m-small", at("1h"), "0.1"},
		{"ws_custom", "m-big", at("1h"), "2.5"},
		{"ws_any", "m-small", at("1h"), "0.15"},
	} {
		p, err := pb.For(c.ws, c.model, c.at)
		if err != nil || !p.PerMillion[ClassInput].Equal(d(c.input)) {
			t.Errorf("For(%s, %s, %s) = %v %v, want input %s", c.ws, c.model, c.at, p.PerMillion[ClassInput], err, c.input)
		}
	}
	if got := pb.DiscountAt("ws_disc", at("10h")); !got.Equal(d("10")) {
		t.Errorf("ws_disc discount on Jan 1: %s, want 10", got)
	}
	if got := pb.DiscountAt("ws_disc", at("500h")); !got.IsZero() {
		t.Errorf("ws_disc discount after Jan 20: %s, want 0", got)
	}
	want := []time.Time{at("348h"), at("456h")} // the m-big change, the end of ws_disc's discount
	if got := pb.Breakpoints(jan, feb); len(got) != 2 || !got[0].Equal(want[0]) || !got[1].Equal(want[1]) {
		t.Errorf("Breakpoints(January) = %v, want %v", got, want)
	}
}

func mustDuration(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return d
}

func TestSyncStoresOverridesForAnalysts(t *testing.T) {
	e := newEnv(t)
	if err := e.iv.prices.Sync(ctx(t), e.conn, e.db); err != nil {
		t.Fatal(err)
	}
	var price string
	err := e.conn.QueryRow(ctx(t), `SELECT toString(usd_per_million) FROM `+e.db+`.workspace_prices FINAL
		WHERE workspace_id = 'ws_custom' AND model = 'm-small' AND token_class = 'cached_input'
		AND version = (SELECT max(version) FROM `+e.db+`.prices)`).Scan(&price)
	if err != nil || !d(price).Equal(d("0.05")) {
		t.Errorf("ws_custom's m-small cached_input price in ClickHouse: %q %v, want 0.05", price, err)
	}
	var n uint64
	err = e.conn.QueryRow(ctx(t), `SELECT count() FROM `+e.db+`.workspace_discounts FINAL WHERE workspace_id = 'ws_disc'
		AND version = (SELECT max(version) FROM `+e.db+`.prices)`).Scan(&n)
	if err != nil || n != 2 {
		t.Errorf("ws_disc discounts in ClickHouse: %d %v, want 2", n, err)
	}
}
