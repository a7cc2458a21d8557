// Package sqlset reads the catalogue of SQL statements a package sends to ClickHouse: one
// queries.sql per package, embedded in it, each statement under a name. The package takes
// its statements from the catalogue by name; the catalogue's test runs every statement of
// every package against each ClickHouse version the project supports and compares the
// results (sqlset_test.go).
//
// A file is a sequence of statements, each introduced by a line "-- name: NAME", followed
// by comment lines documenting it, then its text up to the next name line; a trailing
// semicolon is dropped. Text in braces, {db} for instance, is a placeholder the code
// fills before sending (Fill); ? is a value bound by the driver.
package sqlset

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Statement is one named statement of a catalogue.
type Statement struct {
	Name string
	Doc  string // the comment lines under its name, without "-- "
	SQL  string
}

// Placeholders are the names in braces SQL holds, in order of first appearance.
func (s Statement) Placeholders() []string {
	var out []string
	seen := map[string]bool{}
	for _, m := range placeholder.FindAllStringSubmatch(s.SQL, -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			out = append(out, m[1])
		}
	}
	return out
}

var placeholder = regexp.MustCompile(`\{([a-z_]+)\}`)

// Set is one package's catalogue.
type Set struct {
	Package    string
	Statements []Statement
}

// Parse reads a catalogue file of package pkg.
func Parse(pkg, src string) (*Set, error) {
	set := &Set{Package: pkg}
	var cur *Statement
	var body []string
	finish := func() error {
		if cur == nil {
			return nil
		}
		cur.SQL = strings.TrimSuffix(strings.TrimSpace(strings.Join(body, "\n")), ";")
		if cur.SQL == "" {
			return fmt.Errorf("%s: statement %s is empty", pkg, cur.Name)
		}
		set.Statements = append(set.Statements, *cur)
		return nil
	}
	names := map[string]bool{}
	for i, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if name, ok := strings.CutPrefix(trimmed, "-- name:"); ok {
			if err := finish(); err != nil {
				return nil, err
			}
			name = strings.TrimSpace(name)
			if name == "" || names[name] {
				return nil, fmt.Errorf("%s line %d: statement name %q is empty or used twice", pkg, i+1, name)
			}
			names[name] = true
			cur, body = &Statement{Name: name}, nil
			continue
		}
		if cur == nil {
			continue // the file's own header comment
		}
		if len(body) == 0 && strings.HasPrefix(trimmed, "--") {
			cur.Doc = strings.TrimSpace(cur.Doc + "\n" + strings.TrimSpace(strings.TrimPrefix(trimmed, "--")))
			continue
		}
		if len(body) == 0 && trimmed == "" {
			continue
		}
		body = append(body, line)
	}
	if err := finish(); err != nil {
		return nil, err
	}
	if len(set.Statements) == 0 {
		return nil, fmt.Errorf("%s: no statement (each starts with a line \"-- name: NAME\")", pkg)
	}
	return set, nil
}

// MustParse is Parse for a package's embedded catalogue: a malformed file is a bug that
// fails at the package's initialization, so in every test.
func MustParse(pkg, src string) *Set {
	s, err := Parse(pkg, src)
	if err != nil {
		panic("sqlset: " + err.Error())
	}
	return s
}

// Get returns the text of the named statement; an unknown name panics, which, called
// while the package initializes its statement variables, fails every test at once.
func (s *Set) Get(name string) string {
	for _, st := range s.Statements {
		if st.Name == name {
			return st.SQL
		}
	}
	panic(fmt.Sprintf("sqlset: package %s has no statement %q in its queries.sql", s.Package, name))
}

// Fill replaces each placeholder {k} of sql by its value; pairs are k1, v1, k2, v2, ...
func Fill(sql string, pairs ...string) string {
	if len(pairs)%2 != 0 {
		panic("sqlset: Fill needs name, value pairs")
	}
	old := make([]string, len(pairs))
	for i := 0; i < len(pairs); i += 2 {
		old[i], old[i+1] = "{"+pairs[i]+"}", pairs[i+1]
	}
	return strings.NewReplacer(old...).Replace(sql)
}

// DateTime is the literal of instant t: toDateTime(<unix seconds>, 'UTC').
func DateTime(t time.Time) string { return fmt.Sprintf("toDateTime(%d, 'UTC')", t.Unix()) }

// DateTimes is a comma-separated list of DateTime literals, for IN (...).
func DateTimes(ts []time.Time) string {
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = DateTime(t)
	}
	return strings.Join(parts, ", ")
}

// Between is the condition from <= col < to.
func Between(col string, from, to time.Time) string {
	return col + " >= " + DateTime(from) + " AND " + col + " < " + DateTime(to)
}

// Segment is the price-segment expression of the time column col: how many of breaks
// (ascending) happened at or before it, as a UInt64. Usage of one segment shares its
// prices (and grants).
func Segment(col string, breaks []time.Time) string {
	if len(breaks) == 0 {
		return "toUInt64(0)"
	}
	parts := make([]string, len(breaks))
	for i, b := range breaks {
		parts[i] = "toUInt64(" + col + " >= " + DateTime(b) + ")"
	}
	return strings.Join(parts, " + ")
}
