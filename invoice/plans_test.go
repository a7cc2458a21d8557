package invoice

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// planBook is testBook with two plans:
//
//	pro: $20 a month, $100 minimum commitment; m-big input $2.00/1M, m-big output graduated
//	     (first 100,000 at $10, up to 1,000,000 at $8, beyond at $6), m-small output in
//	     packages of 1,000,000 tokens at $0.50.
//	vol: no fee, $1.00 of usage included; m-big output by volume (a period up to 500,000
//	     tokens at $10 each, above at $7 for every token).
const planBook = testBook + `plans:
  - id: pro
    name: Pro
    versions:
      - effective_from: "2026-01-01T00:00:00Z"
        fee: "20.00"
        commitment: "100.00"
        rates:
          - {model: m-big, token_class: input, pricing: per_unit, usd_per_million: "2.00"}
          - model: m-big
            token_class: output
            pricing: graduated
            tiers:
              - {up_to: 100000, usd_per_million: "10.00"}
              - {up_to: 1000000, usd_per_million: "8.00"}
              - {usd_per_million: "6.00"}
          - {model: m-small, token_class: output, pricing: package, package_size: 1000000, package_price: "0.50"}
  - id: vol
    name: Volume
    versions:
      - effective_from: "2026-01-01T00:00:00Z"
        included_usage: "1.00"
        rates:
          - model: m-big
            token_class: output
            pricing: volume
            tiers:
              - {up_to: 500000, usd_per_million: "10.00"}
              - {usd_per_million: "7.00"}
`

func newPlanEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	pb, err := ParsePriceBook([]byte(planBook))
	if err != nil {
		t.Fatal(err)
	}
	e.iv.prices = pb
	return e
}

func (e *env) subscribe(ws, plan string, from, now time.Time) {
	e.t.Helper()
	e.now = now
	if _, err := e.iv.Subscribe(ctx(e.t), ws, plan, from); err != nil {
		e.t.Fatal(err)
	}
}

// The story, every amount worked out by hand in README's rules: a workspace uses
// the book's prices until it subscribes to pro on Jan 10 12:00, then sends traffic.
//
//	fee:        $20 × 516 h / 744 h = 13.870967741… → 13.870968
//	usage on pro: input 80,000 × $2 = 0.16; cached 20,000 at the book's 1.25 = 0.025;
//	            output 1,200,000 graduated: 100,000 × $10 = 1.00, 900,000 × $8 = 7.20,
//	            200,000 × $6 = 1.20; m-small 2,500,000 tokens = 3 packages × $0.50 = 1.50
//	            → 11.085
//	commitment: $100 × 516 / 744 = 69.354838… → 69.354839; true-up 69.354839 − 11.085 = 58.269839
//	before:     Jan 5 on the book: input 10,000 × 2.50 = 0.025, output 50,000 × 10 = 0.50
//	subtotal:   83.750807, total 83.75
func TestPlanInvoice(t *testing.T) {
	e := newPlanEnv(t)
	subAt := time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	e.subscribe("ws_pro", "pro", subAt, subAt.Add(20*time.Minute))
	e.send(
		event{ws: "ws_pro", model: "m-big", at: time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC), prompt: 10000, completion: 50000},
		event{ws: "ws_pro", model: "m-big", at: time.Date(2026, 1, 12, 9, 0, 0, 0, time.UTC), prompt: 100000, cached: 20000, completion: 300000},
		event{ws: "ws_pro", model: "m-big", at: time.Date(2026, 1, 20, 9, 0, 0, 0, time.UTC), completion: 900000},
		event{ws: "ws_pro", model: "m-small", at: time.Date(2026, 1, 21, 9, 0, 0, 0, time.UTC), completion: 2500000},
	)
	e.run(jan, time.Date(2026, 1, 25, 0, 0, 0, 0, time.UTC))
	inv := e.get("ws_pro", jan)
	checkLines(t, inv, []line{
		{kind: KindFee, model: "pro", qty: 516, price: "20", amount: "13.870968"},
		{kind: KindUsage, model: "m-big", class: "input", qty: 10000, price: "2.5", amount: "0.025"},
		{kind: KindUsage, model: "m-big", class: "input", qty: 80000, price: "2", amount: "0.16"},
		{kind: KindUsage, model: "m-big", class: "cached_input", qty: 20000, price: "1.25", amount: "0.025"},
		{kind: KindUsage, model: "m-big", class: "output", qty: 50000, price: "10", amount: "0.5"},
		{kind: KindUsage, model: "m-big", class: "output/tier:1", qty: 100000, price: "10", amount: "1"},
		{kind: KindUsage, model: "m-big", class: "output/tier:2", qty: 900000, price: "8", amount: "7.2"},
		{kind: KindUsage, model: "m-big", class: "output/tier:3", qty: 200000, price: "6", amount: "1.2"},
		{kind: KindUsage, model: "m-small", class: "output/package:1000000", qty: 2500000, price: "0.5", amount: "1.5"},
		{kind: KindCommitment, model: "pro", price: "69.354839", amount: "58.269839"},
	}, "83.750807", "83.75")
	e.reconcileClean(inv)
	for _, want := range []string{"Plan pro fee of 20 a month, 516 of 744 hours", "m-big output tokens, tier 2",
		"m-small output tokens in packages of 1000000 at 0.5", "Plan pro: usage below the minimum commitment of 69.354839, true-up"} {
		found := false
		for _, l := range inv.Lines {
			found = found || l.Description == want
		}
		if !found {
			t.Errorf("no line described %q:\n%s", want, dump(inv))
		}
	}

	// Above the commitment, the true-up is gone; a rerun changes nothing else.
	e.send(event{ws: "ws_pro", model: "m-big", at: time.Date(2026, 1, 26, 9, 0, 0, 0, time.UTC), completion: 10000000})
	e.run(jan, time.Date(2026, 1, 27, 0, 0, 0, 0, time.UTC))
	inv = e.get("ws_pro", jan)
	// 10,000,000 more output tokens, all in tier 3: 10,200,000 × $6 = 61.20; usage on pro
	// 11.085 − 1.20 + 61.20 = 71.085 ≥ 69.354839: no true-up.
	checkLines(t, inv, []line{
		{kind: KindFee, model: "pro", qty: 516, price: "20", amount: "13.870968"},
		{kind: KindUsage, model: "m-big", class: "input", qty: 10000, price: "2.5", amount: "0.025"},
		{kind: KindUsage, model: "m-big", class: "input", qty: 80000, price: "2", amount: "0.16"},
		{kind: KindUsage, model: "m-big", class: "cached_input", qty: 20000, price: "1.25", amount: "0.025"},
		{kind: KindUsage, model: "m-big", class: "output", qty: 50000, price: "10", amount: "0.5"},
		{kind: KindUsage, model: "m-big", class: "output/tier:1", qty: 100000, price: "10", amount: "1"},
		{kind: KindUsage, model: "m-big", class: "output/tier:2", qty: 900000, price: "8", amount: "7.2"},
		{kind: KindUsage, model: "m-big", class: "output/tier:3", qty: 10200000, price: "6", amount: "61.2"},
		{kind: KindUsage, model: "m-small", class: "output/package:1000000", qty: 2500000, price: "0.5", amount: "1.5"},
	}, "85.480968", "85.48")
	e.reconcileClean(inv)
}

// A volume rate re-priced by late usage after its month was finalized: January's 400,000
// tokens were billed at tier 1 ($10: 4.00, less the $1.00 included); 200,000 late tokens
// take the month to 600,000, which prices every token at tier 2 ($7: 4.20). February's
// invoice takes the 400,000 back at $10 (−4.00) and bills 600,000 at $7 (+4.20): +0.20.
func TestPlanVolumeRepricedByLateUsage(t *testing.T) {
	e := newPlanEnv(t)
	e.subscribe("ws_vol", "vol", jan, jan.Add(10*time.Minute))
	e.send(event{ws: "ws_vol", model: "m-big", at: time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC), completion: 400000})
	e.run(jan, time.Date(2026, 2, 10, 0, 0, 0, 0, time.UTC))
	janInv := e.get("ws_vol", jan)
	if janInv.Status != StatusFinalized {
		t.Fatalf("January is %s after its grace, want finalized", janInv.Status)
	}
	checkLines(t, janInv, []line{
		{kind: KindUsage, model: "m-big", class: "output/volume:1", qty: 400000, price: "10", amount: "4"},
		{kind: KindIncluded, model: "vol", price: "1", amount: "-1"},
	}, "3", "3")
	e.reconcileClean(janInv)

	e.send(event{ws: "ws_vol", model: "m-big", at: time.Date(2026, 1, 20, 0, 0, 0, 0, time.UTC), completion: 200000})
	e.run(feb, time.Date(2026, 2, 10, 1, 0, 0, 0, time.UTC))
	febInv := e.get("ws_vol", feb)
	checkLines(t, febInv, []line{
		{kind: KindReversal, model: "m-big", class: "output/volume:1", period: jan, qty: 400000, price: "10", amount: "-4"},
		{kind: KindAdjustment, model: "m-big", class: "output/volume:2", period: jan, qty: 600000, price: "7", amount: "4.2"},
	}, "0.2", "0.2")
	e.reconcileClean(febInv)
	// A rerun finds nothing more to adjust.
	e.run(feb, time.Date(2026, 2, 10, 2, 0, 0, 0, time.UTC))
	checkLines(t, e.get("ws_vol", feb), []line{
		{kind: KindReversal, model: "m-big", class: "output/volume:1", period: jan, qty: 400000, price: "10", amount: "-4"},
		{kind: KindAdjustment, model: "m-big", class: "output/volume:2", period: jan, qty: 600000, price: "7", amount: "4.2"},
	}, "0.2", "0.2")
}

// A subscription without usage is billed its fee and its whole commitment; cancelling
// mid-month stops both at the hour.
func TestPlanFeeWithoutUsageAndCancel(t *testing.T) {
	e := newPlanEnv(t)
	e.subscribe("ws_idle", "pro", jan, jan)
	e.subscribe("ws_idle", DefaultPlan, time.Date(2026, 1, 11, 6, 0, 0, 0, time.UTC), jan.Add(time.Hour))
	e.run(jan, time.Date(2026, 1, 20, 0, 0, 0, 0, time.UTC))
	// 246 hours (10 days and 6 hours): fee 20 × 246 / 744 = 6.612903…, commitment
	// 100 × 246 / 744 = 33.064516…
	inv := e.get("ws_idle", jan)
	checkLines(t, inv, []line{
		{kind: KindFee, model: "pro", qty: 246, price: "20", amount: "6.612903"},
		{kind: KindCommitment, model: "pro", price: "33.064516", amount: "33.064516"},
	}, "39.677419", "39.68")
	e.reconcileClean(inv)
}

func TestGraduatedVolumePackageProrate(t *testing.T) {
	tiers := []Tier{{UpTo: 100, PerMillion: d("10")}, {UpTo: 1000, PerMillion: d("8")}, {PerMillion: d("6")}}
	for _, c := range []struct {
		pos, qty uint64
		want     string // tier:qty …
	}{
		{0, 50, "1:50"},
		{0, 100, "1:100"},
		{0, 101, "1:100 2:1"},
		{50, 2000, "1:50 2:900 3:1050"},
		{100, 900, "2:900"},
		{1000, 5, "3:5"},
		{2000, 0, ""},
	} {
		var got []string
		for _, t := range graduated(tiers, c.pos, c.qty) {
			got = append(got, fmt.Sprintf("%d:%d", t.tier, t.qty))
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("graduated(pos %d, qty %d) = %v, want %s", c.pos, c.qty, got, c.want)
		}
	}
	for total, want := range map[uint64]int{0: 1, 100: 1, 101: 2, 1000: 2, 1001: 3, 1 << 40: 3} {
		if tier, _ := volumeTier(tiers, total); tier != want {
			t.Errorf("volumeTier(%d) = %d, want %d", total, tier, want)
		}
	}
	for _, c := range []struct{ qty, size, want uint64 }{{0, 10, 0}, {1, 10, 1}, {10, 10, 1}, {11, 10, 2}, {2500000, 1000000, 3}} {
		if got := packages(c.qty, c.size); got != c.want {
			t.Errorf("packages(%d, %d) = %d, want %d", c.qty, c.size, got, c.want)
		}
	}
	for _, c := range []struct {
		amount      string
		hours, of   int64
		want        string
		description string
	}{
		{"20", 744, 744, "20", "the whole month"},
		{"20", 516, 744, "13.870968", "13.8709677… rounds up"},
		{"100", 246, 744, "33.064516", "33.0645161… rounds down"},
		{"0.000001", 1, 744, "0", "below half a micro-unit"},
		{"10", 1, 672, "0.014881", "February: 0.01488095…"},
	} {
		if got := Prorate(d(c.amount), c.hours, c.of); !got.Equal(d(c.want)) {
			t.Errorf("Prorate(%s, %d/%d) = %s, want %s (%s)", c.amount, c.hours, c.of, got, c.want, c.description)
		}
	}
	if MonthHours(feb) != 672 || MonthHours(jan) != 744 {
		t.Errorf("MonthHours: February %d, January %d", MonthHours(feb), MonthHours(jan))
	}
}

func TestPlansInPriceBookRefused(t *testing.T) {
	for _, c := range []struct{ name, plans, want string }{
		{"no id", `[{versions: [{effective_from: "2026-01-01T00:00:00Z"}]}]`, "id"},
		{"bad id", `[{id: "a b", versions: [{effective_from: "2026-01-01T00:00:00Z"}]}]`, "id"},
		{"twice", `[{id: p, versions: [{effective_from: "2026-01-01T00:00:00Z"}]}, {id: p, versions: [{effective_from: "2026-01-01T00:00:00Z"}]}]`, "twice"},
		{"no versions", `[{id: p}]`, "no versions"},
		{"not on the hour", `[{id: p, versions: [{effective_from: "2026-01-01T00:30:00Z"}]}]`, "whole hour"},
		{"same instant", `[{id: p, versions: [{effective_from: "2026-01-01T00:00:00Z"}, {effective_from: "2026-01-01T00:00:00Z"}]}]`, "two versions"},
		{"fee decimals", `[{id: p, versions: [{effective_from: "2026-01-01T00:00:00Z", fee: "1.0000001"}]}]`, "6 decimals"},
		{"negative commitment", `[{id: p, versions: [{effective_from: "2026-01-01T00:00:00Z", commitment: "-1"}]}]`, "negative"},
		{"class", `[{id: p, versions: [{effective_from: "2026-01-01T00:00:00Z", rates: [{model: m, token_class: reasoning, pricing: per_unit, usd_per_million: "1"}]}]}]`, "token_class"},
		{"pricing", `[{id: p, versions: [{effective_from: "2026-01-01T00:00:00Z", rates: [{model: m, token_class: output, pricing: tiered}]}]}]`, "pricing"},
		{"per unit without price", `[{id: p, versions: [{effective_from: "2026-01-01T00:00:00Z", rates: [{model: m, token_class: output, pricing: per_unit}]}]}]`, "usd_per_million"},
		{"tiers not ascending", `[{id: p, versions: [{effective_from: "2026-01-01T00:00:00Z", rates: [{model: m, token_class: output, pricing: graduated, tiers: [{up_to: 10, usd_per_million: "1"}, {up_to: 10, usd_per_million: "1"}, {usd_per_million: "1"}]}]}]}]`, "not above"},
		{"last tier bounded", `[{id: p, versions: [{effective_from: "2026-01-01T00:00:00Z", rates: [{model: m, token_class: output, pricing: volume, tiers: [{up_to: 10, usd_per_million: "1"}]}]}]}]`, "last tier"},
		{"middle tier unbounded", `[{id: p, versions: [{effective_from: "2026-01-01T00:00:00Z", rates: [{model: m, token_class: output, pricing: volume, tiers: [{usd_per_million: "1"}, {usd_per_million: "1"}]}]}]}]`, "up_to is missing"},
		{"package size", `[{id: p, versions: [{effective_from: "2026-01-01T00:00:00Z", rates: [{model: m, token_class: output, pricing: package, package_price: "1"}]}]}]`, "package_size"},
		{"tiers on per unit", `[{id: p, versions: [{effective_from: "2026-01-01T00:00:00Z", rates: [{model: m, token_class: output, pricing: per_unit, usd_per_million: "1", tiers: [{usd_per_million: "1"}]}]}]}]`, "tiers belong"},
		{"priced twice", `[{id: p, versions: [{effective_from: "2026-01-01T00:00:00Z", rates: [{model: m, token_class: output, pricing: per_unit, usd_per_million: "1"}, {model: m, token_class: output, pricing: per_unit, usd_per_million: "2"}]}]}]`, "priced twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParsePriceBook([]byte(testBook + "plans: " + c.plans + "\n"))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error about %s", err, c.want)
			}
		})
	}
}

func TestSubscribeRefuses(t *testing.T) {
	e := newPlanEnv(t)
	e.now = time.Date(2026, 1, 10, 10, 30, 0, 0, time.UTC)
	for _, c := range []struct {
		name, plan string
		from       time.Time
	}{
		{"unknown plan", "gold", time.Date(2026, 1, 11, 0, 0, 0, 0, time.UTC)},
		{"not on the hour", "pro", time.Date(2026, 1, 11, 0, 30, 0, 0, time.UTC)},
		{"a closed month", "pro", time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC)},
		{"too far ahead", "pro", time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)},
	} {
		if _, err := e.iv.Subscribe(ctx(t), "ws_x", c.plan, c.from); !errors.Is(err, ErrInvalidSubscription) {
			t.Errorf("%s: got %v, want ErrInvalidSubscription", c.name, err)
		}
	}
	if subs, err := e.iv.Subscriptions(ctx(t), []string{"ws_x"}); err != nil || len(subs["ws_x"]) != 0 {
		t.Errorf("refused changes were stored: %v %v", subs, err)
	}
}

// README's worked example ("Plans and rate cards"), on deploy/prices.yaml.
func TestReadmePlanExample(t *testing.T) {
	e := newEnv(t)
	pb, err := LoadPriceBook("../deploy/prices.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e.iv.prices = pb
	dec := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	subAt := time.Date(2026, 12, 10, 12, 0, 0, 0, time.UTC)
	e.subscribe("ws_readme", "team", subAt, subAt)
	e.send(
		event{ws: "ws_readme", model: "venna-1", at: subAt.Add(2 * time.Hour), prompt: 100000, completion: 1200000},
		event{ws: "ws_readme", model: "venna-1-mini", at: subAt.Add(3 * time.Hour), completion: 2500000},
	)
	e.run(dec, time.Date(2026, 12, 20, 0, 0, 0, 0, time.UTC))
	inv := e.get("ws_readme", dec)
	checkLines(t, inv, []line{
		{kind: KindFee, model: "team", qty: 516, price: "20", amount: "13.870968"},
		{kind: KindUsage, model: "venna-1", class: "input", qty: 100000, price: "2.5", amount: "0.25"},
		{kind: KindUsage, model: "venna-1", class: "output/tier:1", qty: 1000000, price: "10", amount: "10"},
		{kind: KindUsage, model: "venna-1", class: "output/tier:2", qty: 200000, price: "8", amount: "1.6"},
		{kind: KindUsage, model: "venna-1-mini", class: "output/package:1000000", qty: 2500000, price: "0.5", amount: "1.5"},
		{kind: KindCommitment, model: "team", price: "69.354839", amount: "56.004839"},
	}, "83.225807", "83.23")
	e.reconcileClean(inv)
}
