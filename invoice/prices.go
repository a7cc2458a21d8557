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

// PriceBook holds every price version of every model.
type PriceBook struct {
	Currency string
	prices   map[string][]Price // by model, EffectiveFrom ascending
}

type priceFile struct {
	Currency string `yaml:"currency"`
	Prices   []struct {
		Model         string `yaml:"model"`
		EffectiveFrom string `yaml:"effective_from"`
		Input         string `yaml:"input"`
		CachedInput   string `yaml:"cached_input"`
		Output        string `yaml:"output"`
	} `yaml:"prices"`
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
	pb := &PriceBook{Currency: f.Currency, prices: map[string][]Price{}}
	for i, p := range f.Prices {
		where := fmt.Sprintf("price book: prices[%d] (%s)", i, p.Model)
		if p.Model == "" {
			return nil, fmt.Errorf("%s: model is empty", where)
		}
		from, err := time.Parse(time.RFC3339, p.EffectiveFrom)
		if err != nil {
			return nil, fmt.Errorf("%s: effective_from: %w", where, err)
		}
		from = from.UTC()
		if !from.Equal(from.Truncate(time.Hour)) {
			return nil, fmt.Errorf("%s: effective_from %s is not on a whole hour", where, p.EffectiveFrom)
		}
		pr := Price{Model: p.Model, EffectiveFrom: from, PerMillion: map[string]decimal.Decimal{}}
		for class, s := range map[string]string{ClassInput: p.Input, ClassCachedInput: p.CachedInput, ClassOutput: p.Output} {
			d, err := decimal.NewFromString(s)
			switch {
			case err != nil:
				return nil, fmt.Errorf("%s: %s %q is not a decimal", where, class, s)
			case d.IsNegative():
				return nil, fmt.Errorf("%s: %s is negative", where, class)
			case d.Exponent() < -6 && !d.Equal(d.Truncate(6)):
				return nil, fmt.Errorf("%s: %s %s has more than 6 decimals", where, class, s)
			}
			pr.PerMillion[class] = d
		}
		pb.prices[p.Model] = append(pb.prices[p.Model], pr)
	}
	for m, ps := range pb.prices {
		sort.Slice(ps, func(i, j int) bool { return ps[i].EffectiveFrom.Before(ps[j].EffectiveFrom) })
		for i := 1; i < len(ps); i++ {
			if ps[i].EffectiveFrom.Equal(ps[i-1].EffectiveFrom) {
				return nil, fmt.Errorf("price book: model %s has two prices effective from %s", m, ps[i].EffectiveFrom.Format(time.RFC3339))
			}
		}
	}
	if len(pb.prices) == 0 {
		return nil, errors.New("price book: no prices")
	}
	return pb, nil
}

// ErrNoPrice is returned when usage exists for a model with no price in force.
var ErrNoPrice = errors.New("no price")

// At returns the price of model in force at t.
func (pb *PriceBook) At(model string, t time.Time) (Price, error) {
	ps := pb.prices[model]
	for i := len(ps) - 1; i >= 0; i-- {
		if !ps[i].EffectiveFrom.After(t) {
			return ps[i], nil
		}
	}
	return Price{}, fmt.Errorf("%w for model %q at %s", ErrNoPrice, model, t.UTC().Format(time.RFC3339))
}

// Breakpoints returns every distinct EffectiveFrom strictly inside (start, end), ascending:
// the instants at which some price changes during the period.
func (pb *PriceBook) Breakpoints(start, end time.Time) []time.Time {
	set := map[int64]time.Time{}
	for _, ps := range pb.prices {
		for _, p := range ps {
			if p.EffectiveFrom.After(start) && p.EffectiveFrom.Before(end) {
				set[p.EffectiveFrom.Unix()] = p.EffectiveFrom
			}
		}
	}
	out := make([]time.Time, 0, len(set))
	for _, t := range set {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

// Sync stores the price book in the prices table so that analysts can join it.
func (pb *PriceBook) Sync(ctx context.Context, conn driver.Conn, database string) error {
	var rows [][]any
	version := uint64(time.Now().UnixNano())
	for _, ps := range pb.prices {
		for _, p := range ps {
			for _, class := range Classes {
				rows = append(rows, []any{p.Model, class, p.EffectiveFrom, p.PerMillion[class], version})
			}
		}
	}
	err := chdb.Insert(ctx, conn, database+".prices", []string{"model", "token_class", "effective_from", "usd_per_million", "version"}, rows)
	if err != nil {
		return fmt.Errorf("sync price book: %w", err)
	}
	return nil
}
