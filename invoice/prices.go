package invoice

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/sqlset"
	"gopkg.in/yaml.v3"
)

// Token classes priced separately.
const (
	ClassInput       = "input"        // prompt tokens not served from cache
	ClassCachedInput = "cached_input" // prompt tokens served from cache
	ClassOutput      = "output"       // completion tokens, reasoning included
)

// Classes lists the token classes in invoice order.
var Classes = []string{ClassInput, ClassCachedInput, ClassOutput}

// Price is the USD price per 1M tokens of each class for one model from EffectiveFrom on.
type Price struct {
	Model         string
	EffectiveFrom time.Time
	PerMillion    map[string]decimal.Decimal // by token class
}

// Discount is a workspace's percentage off its usage from EffectiveFrom on; a later
// Discount replaces it (Percent 0 ends it).
type Discount struct {
	EffectiveFrom time.Time
	Percent       decimal.Decimal
}

// Override is what one workspace pays differently from the price book: its own prices
// for some models and a discount on all usage, each versioned by effective_from.
type Override struct {
	Prices    map[string][]Price // by model, EffectiveFrom ascending
	Discounts []Discount         // EffectiveFrom ascending
}

// PriceBook holds every price version of every model, and the workspaces' overrides.
type PriceBook struct {
	Currency  string
	prices    map[string][]Price   // by model, EffectiveFrom ascending
	overrides map[string]*Override // by workspace
	plans     map[string]*Plan     // by ID
}

type priceEntry struct {
	Model         string `yaml:"model"`
	EffectiveFrom string `yaml:"effective_from"`
	Input         string `yaml:"input"`
	CachedInput   string `yaml:"cached_input"`
	Output        string `yaml:"output"`
}

type priceFile struct {
	Currency  string       `yaml:"currency"`
	Prices    []priceEntry `yaml:"prices"`
	Overrides map[string]struct {
		Discounts []struct {
			EffectiveFrom string `yaml:"effective_from"`
			Percent       string `yaml:"percent"`
		} `yaml:"discounts"`
		Prices []priceEntry `yaml:"prices"`
	} `yaml:"overrides"`
	Plans []planEntry `yaml:"plans"`
}

// LoadPriceBook reads a price file (see deploy/prices.yaml).
func LoadPriceBook(path string) (*PriceBook, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read price book: %w", err)
	}
	return ParsePriceBook(b)
}

// ParsePriceBook parses a price file. Prices are decimal strings (never floats) in USD per
// 1M tokens with at most 6 decimals, so that every amount is exact at 12 decimals; an
// effective_from must fall on a whole UTC hour, the grain of the rollups.
//
// An optional overrides section, keyed by workspace ID, gives a workspace its own prices
// for some models (same fields as prices) and discounts (effective_from, percent between
// 0 and 100). A discount must leave every price it can apply to with at most 6 decimals
// (10% off 0.075 is 0.0675: fine), so that discount lines are exact at 12 decimals too.
func ParsePriceBook(b []byte) (*PriceBook, error) {
	var f priceFile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse price book: %w", err)
	}
	if f.Currency != "USD" {
		return nil, fmt.Errorf("price book: currency %q: only USD is supported", f.Currency)
	}
	pb := &PriceBook{Currency: f.Currency, prices: map[string][]Price{}, overrides: map[string]*Override{}}
	var err error
	for i, p := range f.Prices {
		pr, err := parsePrice(fmt.Sprintf("price book: prices[%d] (%s)", i, p.Model), p)
		if err != nil {
			return nil, err
		}
		pb.prices[p.Model] = append(pb.prices[p.Model], pr)
	}
	if len(pb.prices) == 0 {
		return nil, errors.New("price book: no prices")
	}
	if err := sortPrices("price book", pb.prices); err != nil {
		return nil, err
	}
	for ws, o := range f.Overrides {
		if ws == "" {
			return nil, errors.New("price book: overrides: empty workspace ID")
		}
		ov := &Override{Prices: map[string][]Price{}}
		for i, p := range o.Prices {
			pr, err := parsePrice(fmt.Sprintf("price book: overrides.%s.prices[%d] (%s)", ws, i, p.Model), p)
			if err != nil {
				return nil, err
			}
			ov.Prices[p.Model] = append(ov.Prices[p.Model], pr)
		}
		if err := sortPrices("price book: overrides."+ws, ov.Prices); err != nil {
			return nil, err
		}
		for i, d := range o.Discounts {
			where := fmt.Sprintf("price book: overrides.%s.discounts[%d]", ws, i)
			from, err := parseHour(where, d.EffectiveFrom)
			if err != nil {
				return nil, err
			}
			pct, err := decimal.NewFromString(d.Percent)
			if err != nil || pct.IsNegative() || pct.GreaterThan(decimal.NewFromInt(100)) {
				return nil, fmt.Errorf("%s: percent %q is not a decimal between 0 and 100", where, d.Percent)
			}
			if err := pb.checkDiscount(ov, pct); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			ov.Discounts = append(ov.Discounts, Discount{EffectiveFrom: from, Percent: pct})
		}
		sort.Slice(ov.Discounts, func(i, j int) bool { return ov.Discounts[i].EffectiveFrom.Before(ov.Discounts[j].EffectiveFrom) })
		for i := 1; i < len(ov.Discounts); i++ {
			if ov.Discounts[i].EffectiveFrom.Equal(ov.Discounts[i-1].EffectiveFrom) {
				return nil, fmt.Errorf("price book: overrides.%s has two discounts effective from %s", ws, ov.Discounts[i].EffectiveFrom.Format(time.RFC3339))
			}
		}
		pb.overrides[ws] = ov
	}
	if pb.plans, err = parsePlans(f.Plans); err != nil {
		return nil, err
	}
	return pb, nil
}

func parseHour(where, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: effective_from: %w", where, err)
	}
	t = t.UTC()
	if !t.Equal(t.Truncate(time.Hour)) {
		return time.Time{}, fmt.Errorf("%s: effective_from %s is not on a whole hour", where, s)
	}
	return t, nil
}

func parsePrice(where string, p priceEntry) (Price, error) {
	if p.Model == "" {
		return Price{}, fmt.Errorf("%s: model is empty", where)
	}
	from, err := parseHour(where, p.EffectiveFrom)
	if err != nil {
		return Price{}, err
	}
	pr := Price{Model: p.Model, EffectiveFrom: from, PerMillion: map[string]decimal.Decimal{}}
	for class, s := range map[string]string{ClassInput: p.Input, ClassCachedInput: p.CachedInput, ClassOutput: p.Output} {
		d, err := decimal.NewFromString(s)
		switch {
		case err != nil:
			return Price{}, fmt.Errorf("%s: %s %q is not a decimal", where, class, s)
		case d.IsNegative():
			return Price{}, fmt.Errorf("%s: %s is negative", where, class)
		case !exactAt(d, 6):
			return Price{}, fmt.Errorf("%s: %s %s has more than 6 decimals", where, class, s)
		}
		pr.PerMillion[class] = d
	}
	return pr, nil
}

func exactAt(d decimal.Decimal, places int32) bool { return d.Equal(d.Truncate(places)) }

func sortPrices(where string, prices map[string][]Price) error {
	for m, ps := range prices {
		sort.Slice(ps, func(i, j int) bool { return ps[i].EffectiveFrom.Before(ps[j].EffectiveFrom) })
		for i := 1; i < len(ps); i++ {
			if ps[i].EffectiveFrom.Equal(ps[i-1].EffectiveFrom) {
				return fmt.Errorf("%s: model %s has two prices effective from %s", where, m, ps[i].EffectiveFrom.Format(time.RFC3339))
			}
		}
	}
	return nil
}

// checkDiscount refuses a discount that would take some price it can apply to (any book
// price, any of the workspace's own) below 6 decimals.
func (pb *PriceBook) checkDiscount(ov *Override, pct decimal.Decimal) error {
	for _, prices := range []map[string][]Price{pb.prices, ov.Prices} {
		for _, ps := range prices {
			for _, p := range ps {
				for _, class := range Classes {
					if off := percentOf(p.PerMillion[class], pct); !exactAt(off, 6) {
						return fmt.Errorf("%s%% of %s's %s price %s is %s, more than 6 decimals: discount line amounts would not be exact",
							pct, p.Model, class, p.PerMillion[class], off)
					}
				}
			}
		}
	}
	return nil
}

// percentOf is pct percent of a price per 1M tokens.
func percentOf(perMillion, pct decimal.Decimal) decimal.Decimal { return perMillion.Mul(pct).Shift(-2) }

// ErrNoPrice is returned when usage exists for a model with no price in force.
var ErrNoPrice = errors.New("no price")

// At returns the price book's price of model in force at t.
func (pb *PriceBook) At(model string, t time.Time) (Price, error) {
	if p, ok := priceAt(pb.prices[model], t); ok {
		return p, nil
	}
	return Price{}, fmt.Errorf("%w for model %q at %s", ErrNoPrice, model, t.UTC().Format(time.RFC3339))
}

// For returns the price workspaceID pays for model at t: its own price if one is in force,
// otherwise the price book's.
func (pb *PriceBook) For(workspaceID, model string, t time.Time) (Price, error) {
	if ov := pb.overrides[workspaceID]; ov != nil {
		if p, ok := priceAt(ov.Prices[model], t); ok {
			return p, nil
		}
	}
	return pb.At(model, t)
}

func priceAt(ps []Price, t time.Time) (Price, bool) {
	for i := len(ps) - 1; i >= 0; i-- {
		if !ps[i].EffectiveFrom.After(t) {
			return ps[i], true
		}
	}
	return Price{}, false
}

// DiscountAt returns the discount percentage in force for workspaceID at t (zero: none).
func (pb *PriceBook) DiscountAt(workspaceID string, t time.Time) decimal.Decimal {
	if ov := pb.overrides[workspaceID]; ov != nil {
		for i := len(ov.Discounts) - 1; i >= 0; i-- {
			if !ov.Discounts[i].EffectiveFrom.After(t) {
				return ov.Discounts[i].Percent
			}
		}
	}
	return decimal.Zero
}

// Override returns workspaceID's overrides, nil if it has none.
func (pb *PriceBook) Override(workspaceID string) *Override { return pb.overrides[workspaceID] }

// Breakpoints returns every distinct EffectiveFrom strictly inside (start, end), ascending:
// the instants at which some price, custom price, discount or plan version changes during
// the period.
func (pb *PriceBook) Breakpoints(start, end time.Time) []time.Time {
	set := map[int64]time.Time{}
	add := func(t time.Time) {
		if t.After(start) && t.Before(end) {
			set[t.Unix()] = t
		}
	}
	for _, ps := range pb.prices {
		for _, p := range ps {
			add(p.EffectiveFrom)
		}
	}
	for _, ov := range pb.overrides {
		for _, ps := range ov.Prices {
			for _, p := range ps {
				add(p.EffectiveFrom)
			}
		}
		for _, d := range ov.Discounts {
			add(d.EffectiveFrom)
		}
	}
	for _, p := range pb.plans {
		for _, v := range p.Versions {
			add(v.EffectiveFrom)
		}
	}
	out := make([]time.Time, 0, len(set))
	for _, t := range set {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

// Sync stores the price book in ClickHouse so that analysts can join it: prices, the
// overrides in workspace_prices and workspace_discounts, the plans in plans and plan_rates. Every row of one sync carries the
// same version, so the book in force is the rows whose version is max(prices.version)
// (a row removed from the file stays behind with an older version).
func (pb *PriceBook) Sync(ctx context.Context, conn driver.Conn, database string) error {
	version := uint64(time.Now().UnixNano())
	var prices, custom, discounts [][]any
	for _, ps := range pb.prices {
		for _, p := range ps {
			for _, class := range Classes {
				prices = append(prices, []any{p.Model, class, p.EffectiveFrom, p.PerMillion[class], version})
			}
		}
	}
	for ws, ov := range pb.overrides {
		for _, ps := range ov.Prices {
			for _, p := range ps {
				for _, class := range Classes {
					custom = append(custom, []any{ws, p.Model, class, p.EffectiveFrom, p.PerMillion[class], version})
				}
			}
		}
		for _, d := range ov.Discounts {
			discounts = append(discounts, []any{ws, d.EffectiveFrom, d.Percent, version})
		}
	}
	var plans, rates [][]any
	for _, p := range pb.Plans() {
		for _, v := range p.Versions {
			plans = append(plans, []any{p.ID, v.EffectiveFrom, p.Name, v.Fee, v.Commitment, v.IncludedUsage, version})
			for _, r := range v.Rates {
				row := func(tier uint16, upTo uint64, perMillion decimal.Decimal) []any {
					return []any{p.ID, v.EffectiveFrom, r.Model, r.Class, r.Pricing, tier, upTo, perMillion, r.PackageSize, r.PackagePrice, version}
				}
				switch r.Pricing {
				case PricingGraduated, PricingVolume:
					for i, t := range r.Tiers {
						rates = append(rates, row(uint16(i+1), t.UpTo, t.PerMillion))
					}
				default:
					rates = append(rates, row(1, 0, r.PerMillion))
				}
			}
		}
	}
	// Overrides and plans before prices: a reader taking max(prices.version) never sees a book whose
	// overrides are still missing.
	for _, w := range []struct {
		insert string
		rows   [][]any
	}{
		{insertCustomPricesSQL, custom},
		{insertDiscountsSQL, discounts},
		{insertPlanRatesSQL, rates},
		{insertPlansSQL, plans},
		{insertPricesSQL, prices},
	} {
		if err := chdb.Insert(ctx, conn, sqlset.Fill(w.insert, "db", database), w.rows); err != nil {
			return fmt.Errorf("sync price book: %w", err)
		}
	}
	return nil
}

// Cost prices usage of model by workspaceID at t as its invoice does: input (the uncached
// prompt), cached input and output tokens at the price workspaceID pays in force at t, less
// its discount in force at t. Exact, never rounded. It reports false when model has no
// price then.
func (pb *PriceBook) Cost(workspaceID, model string, t time.Time, input, cached, output uint64) (decimal.Decimal, bool) {
	p, err := pb.For(workspaceID, model, t)
	if err != nil {
		return decimal.Zero, false
	}
	c := Amount(input, p.PerMillion[ClassInput]).
		Add(Amount(cached, p.PerMillion[ClassCachedInput])).
		Add(Amount(output, p.PerMillion[ClassOutput]))
	if pct := pb.DiscountAt(workspaceID, t); !pct.IsZero() {
		c = c.Sub(c.Mul(pct).Shift(-2))
	}
	return c, true
}

// Models lists the models with a price (in the book or a workspace's own), sorted.
func (pb *PriceBook) Models() []string {
	set := map[string]bool{}
	for m := range pb.prices {
		set[m] = true
	}
	for _, ov := range pb.overrides {
		for m := range ov.Prices {
			set[m] = true
		}
	}
	out := make([]string, 0, len(set))
	for m := range set {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// OverriddenWorkspaces lists the workspaces with prices or discounts of their own, sorted.
func (pb *PriceBook) OverriddenWorkspaces() []string {
	out := make([]string, 0, len(pb.overrides))
	for ws := range pb.overrides {
		out = append(out, ws)
	}
	sort.Strings(out)
	return out
}
