package invoice

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"
)

// Rate-card pricing models.
const (
	PricingPerUnit   = "per_unit"  // every token at one price per 1M
	PricingGraduated = "graduated" // each tier's tokens at that tier's price
	PricingVolume    = "volume"    // every token at the price of the tier the period's total reaches
	PricingPackage   = "package"   // per started block of PackageSize tokens
)

// Plan is a priced offer workspaces subscribe to, versioned by effective_from like prices:
// the version in force when usage happened prices it.
type Plan struct {
	ID       string        `json:"id"`
	Name     string        `json:"name"`
	Versions []PlanVersion `json:"versions"` // EffectiveFrom ascending
}

// PlanVersion is what a plan charges from EffectiveFrom on. Amounts are in the book's
// currency; Fee, Commitment and IncludedUsage are per calendar month and prorated by the
// hour of subscription.
type PlanVersion struct {
	EffectiveFrom time.Time       `json:"effective_from"`
	Fee           decimal.Decimal `json:"fee"`            // flat fee
	Commitment    decimal.Decimal `json:"commitment"`     // minimum usage amount; a true-up line bills the shortfall
	IncludedUsage decimal.Decimal `json:"included_usage"` // usage amount the fee includes
	Rates         map[string]Rate `json:"rates"`          // by model + "/" + token class
}

// Rate prices one model's token class on a plan. Classes and models without a rate are
// priced by the price book (or the workspace's own prices), per unit.
type Rate struct {
	Model        string          `json:"model"`
	Class        string          `json:"token_class"`
	Pricing      string          `json:"pricing"`
	PerMillion   decimal.Decimal `json:"usd_per_million,omitzero"` // per_unit
	Tiers        []Tier          `json:"tiers,omitempty"`          // graduated, volume: UpTo ascending, the last unbounded
	PackageSize  uint64          `json:"package_size,omitempty"`   // package: tokens per package
	PackagePrice decimal.Decimal `json:"package_price,omitzero"`   // package: price of one package
}

// Tier is a band of a period's tokens: up to UpTo (0: no bound) at PerMillion per 1M.
type Tier struct {
	UpTo       uint64          `json:"up_to"` // 0: no bound
	PerMillion decimal.Decimal `json:"usd_per_million"`
}

type planEntry struct {
	ID       string `yaml:"id"`
	Name     string `yaml:"name"`
	Versions []struct {
		EffectiveFrom string `yaml:"effective_from"`
		Fee           string `yaml:"fee"`
		Commitment    string `yaml:"commitment"`
		IncludedUsage string `yaml:"included_usage"`
		Rates         []struct {
			Model        string `yaml:"model"`
			TokenClass   string `yaml:"token_class"`
			Pricing      string `yaml:"pricing"`
			PerMillion   string `yaml:"usd_per_million"`
			PackageSize  uint64 `yaml:"package_size"`
			PackagePrice string `yaml:"package_price"`
			Tiers        []struct {
				UpTo       uint64 `yaml:"up_to"`
				PerMillion string `yaml:"usd_per_million"`
			} `yaml:"tiers"`
		} `yaml:"rates"`
	} `yaml:"versions"`
}

// DefaultPlan is the plan of a workspace that never subscribed, or cancelled: no fee, no
// commitment, the price book's prices.
const DefaultPlan = ""

// money parses an amount of at most 6 decimals, zero when empty.
func money(where, field, s string) (decimal.Decimal, error) {
	if s == "" {
		return decimal.Zero, nil
	}
	d, err := decimal.NewFromString(s)
	switch {
	case err != nil:
		return decimal.Zero, fmt.Errorf("%s: %s %q is not a decimal", where, field, s)
	case d.IsNegative():
		return decimal.Zero, fmt.Errorf("%s: %s is negative", where, field)
	case !exactAt(d, 6):
		return decimal.Zero, fmt.Errorf("%s: %s %s has more than 6 decimals", where, field, s)
	}
	return d, nil
}

func parsePlans(entries []planEntry) (map[string]*Plan, error) {
	plans := map[string]*Plan{}
	for i, e := range entries {
		where := fmt.Sprintf("price book: plans[%d] (%s)", i, e.ID)
		if !validPlanID(e.ID) {
			return nil, fmt.Errorf("%s: id %q: want 1 to 64 letters, digits, '-', '_' or '.'", where, e.ID)
		}
		if plans[e.ID] != nil {
			return nil, fmt.Errorf("%s: plan %s defined twice", where, e.ID)
		}
		if len(e.Versions) == 0 {
			return nil, fmt.Errorf("%s: no versions", where)
		}
		p := &Plan{ID: e.ID, Name: e.Name}
		for j, v := range e.Versions {
			vw := fmt.Sprintf("%s.versions[%d]", where, j)
			from, err := parseHour(vw, v.EffectiveFrom)
			if err != nil {
				return nil, err
			}
			pv := PlanVersion{EffectiveFrom: from, Rates: map[string]Rate{}}
			if pv.Fee, err = money(vw, "fee", v.Fee); err != nil {
				return nil, err
			}
			if pv.Commitment, err = money(vw, "commitment", v.Commitment); err != nil {
				return nil, err
			}
			if pv.IncludedUsage, err = money(vw, "included_usage", v.IncludedUsage); err != nil {
				return nil, err
			}
			for k, r := range v.Rates {
				rw := fmt.Sprintf("%s.rates[%d] (%s %s)", vw, k, r.Model, r.TokenClass)
				rate := Rate{Model: r.Model, Class: r.TokenClass, Pricing: r.Pricing, PackageSize: r.PackageSize}
				if r.Model == "" {
					return nil, fmt.Errorf("%s: model is empty", rw)
				}
				if !isClass(r.TokenClass) {
					return nil, fmt.Errorf("%s: token_class %q: want input, cached_input or output", rw, r.TokenClass)
				}
				key := r.Model + "/" + r.TokenClass
				if _, dup := pv.Rates[key]; dup {
					return nil, fmt.Errorf("%s: %s %s priced twice", rw, r.Model, r.TokenClass)
				}
				switch r.Pricing {
				case PricingPerUnit:
					if r.PerMillion == "" {
						return nil, fmt.Errorf("%s: per_unit needs usd_per_million", rw)
					}
					if rate.PerMillion, err = money(rw, "usd_per_million", r.PerMillion); err != nil {
						return nil, err
					}
				case PricingGraduated, PricingVolume:
					if len(r.Tiers) == 0 {
						return nil, fmt.Errorf("%s: %s needs tiers", rw, r.Pricing)
					}
					for n, t := range r.Tiers {
						tw := fmt.Sprintf("%s.tiers[%d]", rw, n)
						last := n == len(r.Tiers)-1
						switch {
						case last && t.UpTo != 0:
							return nil, fmt.Errorf("%s: the last tier has no up_to (it takes every token above the one before)", tw)
						case !last && t.UpTo == 0:
							return nil, fmt.Errorf("%s: up_to is missing (only the last tier is unbounded)", tw)
						case n > 0 && !last && t.UpTo <= r.Tiers[n-1].UpTo:
							return nil, fmt.Errorf("%s: up_to %d is not above the tier before (%d)", tw, t.UpTo, r.Tiers[n-1].UpTo)
						}
						if t.PerMillion == "" {
							return nil, fmt.Errorf("%s: usd_per_million is missing", tw)
						}
						price, err := money(tw, "usd_per_million", t.PerMillion)
						if err != nil {
							return nil, err
						}
						rate.Tiers = append(rate.Tiers, Tier{UpTo: t.UpTo, PerMillion: price})
					}
				case PricingPackage:
					if r.PackageSize == 0 || r.PackagePrice == "" {
						return nil, fmt.Errorf("%s: package needs package_size (tokens, at least 1) and package_price", rw)
					}
					if rate.PackagePrice, err = money(rw, "package_price", r.PackagePrice); err != nil {
						return nil, err
					}
				default:
					return nil, fmt.Errorf("%s: pricing %q: want per_unit, graduated, volume or package", rw, r.Pricing)
				}
				if r.Pricing != PricingPerUnit && r.PerMillion != "" {
					return nil, fmt.Errorf("%s: usd_per_million belongs to per_unit pricing (tiers carry their own)", rw)
				}
				if r.Pricing != PricingPackage && (r.PackageSize != 0 || r.PackagePrice != "") {
					return nil, fmt.Errorf("%s: package_size and package_price belong to package pricing", rw)
				}
				if r.Pricing != PricingGraduated && r.Pricing != PricingVolume && len(r.Tiers) > 0 {
					return nil, fmt.Errorf("%s: tiers belong to graduated or volume pricing", rw)
				}
				pv.Rates[key] = rate
			}
			p.Versions = append(p.Versions, pv)
		}
		sort.Slice(p.Versions, func(a, b int) bool { return p.Versions[a].EffectiveFrom.Before(p.Versions[b].EffectiveFrom) })
		for j := 1; j < len(p.Versions); j++ {
			if p.Versions[j].EffectiveFrom.Equal(p.Versions[j-1].EffectiveFrom) {
				return nil, fmt.Errorf("%s: two versions effective from %s", where, p.Versions[j].EffectiveFrom.Format(time.RFC3339))
			}
		}
		plans[e.ID] = p
	}
	return plans, nil
}

func isClass(c string) bool { return c == ClassInput || c == ClassCachedInput || c == ClassOutput }

// validPlanID accepts what fits a URL path segment and a ClickHouse string without escaping.
func validPlanID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// ErrNoPlan is returned for a plan the price book does not define.
var ErrNoPlan = errors.New("no such plan")

// Plan returns the plan with id, or ErrNoPlan.
func (pb *PriceBook) Plan(id string) (*Plan, error) {
	if p := pb.plans[id]; p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrNoPlan, id)
}

// Plans lists the price book's plans by ID.
func (pb *PriceBook) Plans() []*Plan {
	out := make([]*Plan, 0, len(pb.plans))
	for _, p := range pb.plans {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// At returns the plan's version in force at t (false: none yet).
func (p *Plan) At(t time.Time) (PlanVersion, bool) {
	for i := len(p.Versions) - 1; i >= 0; i-- {
		if !p.Versions[i].EffectiveFrom.After(t) {
			return p.Versions[i], true
		}
	}
	return PlanVersion{}, false
}

// Rate returns the version's rate for a model's token class.
func (v PlanVersion) Rate(model, class string) (Rate, bool) {
	r, ok := v.Rates[model+"/"+class]
	return r, ok
}

// Qualified token classes name how a plan line priced its tokens: "output/tier:2" (the
// second tier of a graduated rate), "output/volume:2" (a volume rate's second tier, which
// the period's total reached), "output/package:1000000" (packages of that many tokens).
// The part before "/" is the token class.
func tierClass(class string, tier int) string   { return class + "/tier:" + strconv.Itoa(tier) }
func volumeClass(class string, tier int) string { return class + "/volume:" + strconv.Itoa(tier) }
func packageClass(class string, size uint64) string {
	return class + "/package:" + strconv.FormatUint(size, 10)
}

// BaseClass is the token class of a possibly qualified one ("output/tier:2" → "output").
func BaseClass(class string) string {
	base, _, _ := strings.Cut(class, "/")
	return base
}

// tiered reports whether a line of this class was priced at a position among the period's
// tokens, so that late usage can move tokens already billed to another tier.
func tiered(class string) bool {
	return strings.Contains(class, "/tier:") || strings.Contains(class, "/volume:")
}

// graduated splits qty tokens that follow the period's first pos tokens over the tiers:
// the quantity each tier (1-based) takes.
func graduated(tiers []Tier, pos, qty uint64) []tierQty {
	var out []tierQty
	lo := uint64(0)
	for i, t := range tiers {
		hi := t.UpTo
		from, to := max(pos, lo), pos+qty
		if hi != 0 {
			to = min(to, hi)
		}
		if to > from {
			out = append(out, tierQty{tier: i + 1, qty: to - from, perMillion: t.PerMillion})
		}
		if hi == 0 || pos+qty <= hi {
			break
		}
		lo = hi
	}
	return out
}

type tierQty struct {
	tier       int
	qty        uint64
	perMillion decimal.Decimal
}

// volumeTier is the tier (1-based) a period total of tokens reaches, and its price.
func volumeTier(tiers []Tier, total uint64) (int, decimal.Decimal) {
	for i, t := range tiers {
		if t.UpTo == 0 || total <= t.UpTo {
			return i + 1, t.PerMillion
		}
	}
	last := len(tiers) - 1
	return last + 1, tiers[last].PerMillion
}

// packages is the number of started packages of size tokens in qty tokens.
func packages(qty, size uint64) uint64 { return (qty + size - 1) / size }

// packaged reports whether a line of this class was priced by packages: its quantity
// counts tokens, its unit price is a package's, and its amount is what the packages the
// period's tokens start cost less what earlier lines of the period billed.
func packaged(class string) bool { return strings.Contains(class, "/package:") }

// Prorate is the one rule for the monthly amounts of a plan (fee, commitment, included
// usage) over part of a month: amount × hours ÷ the month's hours, rounded to 6 decimals,
// half away from zero.
func Prorate(monthly decimal.Decimal, hours, monthHours int64) decimal.Decimal {
	if hours == monthHours {
		return monthly
	}
	return monthly.Mul(decimal.NewFromInt(hours)).DivRound(decimal.NewFromInt(monthHours), 6)
}

// MonthHours is the number of hours of the calendar month starting at start.
func MonthHours(start time.Time) int64 {
	s, e := Month(start)
	return int64(e.Sub(s) / time.Hour)
}

// hasOwnPrice reports whether workspaceID has its own price for model in force at t: it
// wins over a plan's rate card, as over the price book.
func (pb *PriceBook) hasOwnPrice(workspaceID, model string, t time.Time) bool {
	ov := pb.overrides[workspaceID]
	if ov == nil {
		return false
	}
	_, ok := priceAt(ov.Prices[model], t)
	return ok
}

// ratedUsage is usage of one class in one price segment that a plan's rate card prices.
type ratedUsage struct {
	ws, plan, model string
	at              time.Time
	qty             uint64
	rate            Rate
}

func addTo(m map[string]map[string]decimal.Decimal, ws, plan string, amount decimal.Decimal) {
	if m[ws] == nil {
		m[ws] = map[string]decimal.Decimal{}
	}
	m[ws][plan] = m[ws][plan].Add(amount)
}

// priceRated prices the usage plans' rate cards price, a workspace's period at a time:
// graduated rates in time order, each token at the tier its position among the period's
// tokens of that model and class falls in; volume rates at the tier the period's total
// reaches; packages on the period's total, rounded up. It adds the charges to out, and the
// amounts to net (by the hour they happened, for credits) and onPlan (for commitments).
func priceRated(rated []ratedUsage, failed map[string]error, out map[string]charges, net map[string]map[int64]decimal.Decimal,
	onPlan map[string]map[string]decimal.Decimal) {
	sort.SliceStable(rated, func(i, j int) bool {
		a, b := rated[i], rated[j]
		if a.ws != b.ws {
			return a.ws < b.ws
		}
		if !a.at.Equal(b.at) {
			return a.at.Before(b.at)
		}
		if a.model != b.model {
			return a.model < b.model
		}
		return a.rate.Class < b.rate.Class
	})
	type mc struct{ model, class string }
	type pkg struct {
		mc
		plan  string
		size  uint64
		price string
	}
	for len(rated) > 0 {
		ws := rated[0].ws
		n := 1
		for n < len(rated) && rated[n].ws == ws {
			n++
		}
		uses := rated[:n]
		rated = rated[n:]
		if failed[ws] != nil {
			continue
		}
		c := out[ws]
		if c == nil {
			c = charges{}
			out[ws] = c
		}
		if net[ws] == nil {
			net[ws] = map[int64]decimal.Decimal{}
		}
		volume := map[mc]uint64{}
		for _, u := range uses {
			if u.rate.Pricing == PricingVolume {
				volume[mc{u.model, u.rate.Class}] += u.qty
			}
		}
		pos := map[mc]uint64{}
		pkgQty := map[pkg]uint64{}
		pkgAt := map[pkg]time.Time{}
		var pkgOrder []pkg
		for _, u := range uses {
			k := mc{u.model, u.rate.Class}
			amount := decimal.Zero
			switch u.rate.Pricing {
			case PricingPerUnit:
				amount = Amount(u.qty, u.rate.PerMillion)
				c.addUsage(u.model, k.class, u.qty, u.rate.PerMillion, amount)
			case PricingGraduated:
				for _, t := range graduated(u.rate.Tiers, pos[k], u.qty) {
					a := Amount(t.qty, t.perMillion)
					c.addUsage(u.model, tierClass(k.class, t.tier), t.qty, t.perMillion, a)
					amount = amount.Add(a)
				}
				pos[k] += u.qty
			case PricingVolume:
				tier, price := volumeTier(u.rate.Tiers, volume[k])
				amount = Amount(u.qty, price)
				c.addUsage(u.model, volumeClass(k.class, tier), u.qty, price, amount)
			case PricingPackage:
				p := pkg{k, u.plan, u.rate.PackageSize, u.rate.PackagePrice.String()}
				if _, seen := pkgQty[p]; !seen {
					pkgOrder = append(pkgOrder, p)
					pkgAt[p] = u.at
				}
				pkgQty[p] += u.qty
				continue
			}
			net[ws][u.at.Unix()] = net[ws][u.at.Unix()].Add(amount)
			addTo(onPlan, ws, u.plan, amount)
		}
		for _, p := range pkgOrder {
			price := decimal.RequireFromString(p.price)
			amount := price.Mul(decimal.NewFromUint64(packages(pkgQty[p], p.size)))
			// A package line counts tokens; its unit price is the price of one package.
			c.addUsage(p.model, packageClass(p.class, p.size), pkgQty[p], price, amount)
			net[ws][pkgAt[p].Unix()] = net[ws][pkgAt[p].Unix()].Add(amount)
			addTo(onPlan, ws, p.plan, amount)
		}
	}
}

// planAmounts adds to c a workspace's plan amounts for the month starting at start, from
// the stretches it spent on plans and the usage amounts billed while on each (onPlan):
// each stretch's fee prorated; per plan, the included usage (up to the usage) and the
// true-up of the usage to the prorated commitment.
func planAmounts(c charges, stretches []planStretch, onPlan map[string]decimal.Decimal, start time.Time) {
	monthHours := MonthHours(start)
	var order []string
	commit, included := map[string]decimal.Decimal{}, map[string]decimal.Decimal{}
	for _, s := range stretches {
		id := s.plan.ID
		if _, seen := commit[id]; !seen {
			order = append(order, id)
			commit[id], included[id] = decimal.Zero, decimal.Zero
		}
		hours := int64(s.end.Sub(s.start) / time.Hour)
		if s.version.Fee.IsPositive() {
			c.addPlan(KindFee, id, uint64(hours), s.version.Fee, Prorate(s.version.Fee, hours, monthHours))
		}
		commit[id] = commit[id].Add(Prorate(s.version.Commitment, hours, monthHours))
		included[id] = included[id].Add(Prorate(s.version.IncludedUsage, hours, monthHours))
	}
	for _, id := range order {
		usage := decimal.Max(onPlan[id], decimal.Zero)
		if inc := decimal.Min(included[id], usage); inc.IsPositive() {
			c.addPlan(KindIncluded, id, 0, included[id], inc.Neg())
		}
		if short := commit[id].Sub(usage); short.IsPositive() {
			c.addPlan(KindCommitment, id, 0, commit[id], short)
		}
	}
}
