package sqlset_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/venna/metering/internal/sqlset"
)

func TestParse(t *testing.T) {
	set, err := sqlset.Parse("p", `-- header, not a statement

-- name: one
-- What one does.
-- Second doc line.
SELECT a FROM {db}.t WHERE b = ? AND c IN ({list});

-- name: two
INSERT INTO {db}.t (a, b)
`)
	if err != nil {
		t.Fatal(err)
	}
	want := []sqlset.Statement{
		{Name: "one", Doc: "What one does.\nSecond doc line.", SQL: "SELECT a FROM {db}.t WHERE b = ? AND c IN ({list})"},
		{Name: "two", SQL: "INSERT INTO {db}.t (a, b)"},
	}
	if !reflect.DeepEqual(set.Statements, want) {
		t.Fatalf("got %#v\nwant %#v", set.Statements, want)
	}
	if got := set.Statements[0].Placeholders(); !reflect.DeepEqual(got, []string{"db", "list"}) {
		t.Errorf("placeholders %v", got)
	}
	if got := sqlset.Fill(set.Get("one"), "db", "d", "list", "1, 2"); got != "SELECT a FROM d.t WHERE b = ? AND c IN (1, 2)" {
		t.Errorf("Fill: %s", got)
	}
}

func TestParseRefuses(t *testing.T) {
	for name, src := range map[string]string{
		"no statement":  "-- just a comment\n",
		"empty":         "-- name: a\n-- doc only\n",
		"twice":         "-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n",
		"nameless":      "-- name:\nSELECT 1;\n",
		"empty between": "-- name: a\n-- name: b\nSELECT 1;\n",
	} {
		if _, err := sqlset.Parse("p", src); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestGetUnknownPanics(t *testing.T) {
	set := sqlset.MustParse("p", "-- name: a\nSELECT 1\n")
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), `no statement "b"`) {
			t.Errorf("recovered %v", r)
		}
	}()
	set.Get("b")
}
