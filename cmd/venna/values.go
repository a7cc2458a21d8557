package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"
)

// Flag values that check what they are given, so that the flag parser refuses a bad one
// with its usual "invalid value" error, before anything is connected to.

// monthValue is a month, YYYY-MM; unset it is the zero time.
type monthValue struct{ t *time.Time }

func (v monthValue) String() string {
	if v.t == nil || v.t.IsZero() {
		return ""
	}
	return v.t.Format("2006-01")
}

func (v monthValue) Set(s string) error {
	t, err := time.Parse("2006-01", s)
	if err != nil {
		return errors.New("want YYYY-MM")
	}
	*v.t = t
	return nil
}

// optionalMonth is a month, YYYY-MM, or empty for none (the zero time).
type optionalMonth struct{ t *time.Time }

func (v optionalMonth) String() string { return monthValue(v).String() }

func (v optionalMonth) Set(s string) error {
	if s == "" {
		*v.t = time.Time{}
		return nil
	}
	return monthValue(v).Set(s)
}

func (v optionalMonth) typeName() string { return "YYYY-MM" }

// decimalValue is an exact decimal amount.
type decimalValue struct{ d *decimal.Decimal }

func (v decimalValue) String() string {
	if v.d == nil || v.d.IsZero() {
		return ""
	}
	return v.d.String()
}

func (v decimalValue) Set(s string) error {
	d, err := decimal.NewFromString(s)
	if err != nil {
		return errors.New("want a decimal amount, e.g. 25.00")
	}
	*v.d = d
	return nil
}

// percentsValue is a comma-separated list of whole percentages; empty is none.
type percentsValue struct{ p *[]int }

func (v percentsValue) String() string {
	if v.p == nil {
		return ""
	}
	parts := make([]string, len(*v.p))
	for i, n := range *v.p {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}

func (v percentsValue) Set(s string) error {
	out := []int{}
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return errors.New("want comma-separated percentages, e.g. 50,80,100")
		}
		out = append(out, n)
	}
	*v.p = out
	return nil
}

// timeValue is an RFC 3339 time, kept in UTC.
type timeValue struct{ t *time.Time }

func (v timeValue) String() string {
	if v.t == nil || v.t.IsZero() {
		return ""
	}
	return v.t.Format(time.RFC3339)
}

func (v timeValue) Set(s string) error {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return errors.New("want an RFC 3339 time, e.g. 2026-12-01T00:00:00Z")
	}
	*v.t = t.UTC()
	return nil
}

// countValue is a whole number from 0 to max (0: no bound).
type countValue struct {
	p   *uint64
	max uint64
}

func (v countValue) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.FormatUint(*v.p, 10)
}

func (v countValue) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || (v.max > 0 && n > v.max) {
		if v.max > 0 {
			return fmt.Errorf("want a whole number from 0 to %d", v.max)
		}
		return errors.New("want a whole number, 0 or more")
	}
	*v.p = n
	return nil
}

func (v countValue) typeName() string { return "N" }

func (v choiceValue) typeName() string { return strings.Join(v.from, "|") }

func (v cronValue) typeName() string { return "schedule" }

func (v levelValue) typeName() string { return "level" }

// plural is "1 event", "2 events".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
