package deploy

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const dashboardPath = "grafana/venna.json"

// dashboardMust are series the dashboard has to chart: the lag, spool, errors,
// latency and invoice runs, one role after the other.
var dashboardMust = []string{
	"venna_ingest_consumer_lag",
	"venna_gateway_spool_bytes",
	"venna_gateway_requests_total", "venna_gateway_produce_failures_total",
	"venna_ingest_insert_failures_total", "venna_ingest_dlq_messages_total",
	"venna_gateway_upstream_seconds_bucket", "venna_gateway_added_seconds_bucket",
	"venna_ingest_insert_duration_seconds_bucket",
	"venna_api_requests_total", "venna_api_request_duration_seconds_bucket",
	"venna_aggregate_runs_total", "venna_aggregate_run_failures_total", "venna_aggregate_last_success_timestamp_seconds",
}

type dashboardPanel struct {
	ID         int              `json:"id"`
	Type       string           `json:"type"`
	Title      string           `json:"title"`
	Datasource *json.RawMessage `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"` // a collapsed row's
}

type dashboard struct {
	Title      string           `json:"title"`
	UID        string           `json:"uid"`
	Panels     []dashboardPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name, Type, Query string
		} `json:"list"`
	} `json:"templating"`
}

var (
	promStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	promRanges    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promVariables = regexp.MustCompile(`\$\{?\w+\}?`)
	promIdents    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promKeywords  = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "inf", "nan"}
)

// promMetricNames returns the metric names a PromQL expression selects: its identifiers
// outside label matchers, ranges and grouping clauses that are neither functions nor
// keywords.
func promMetricNames(expr string) []string {
	s := promStrings.ReplaceAllString(expr, `""`)
	s = promMatchers.ReplaceAllString(s, " ")
	s = promRanges.ReplaceAllString(s, " ")
	s = promGrouping.ReplaceAllString(s, " ")
	s = promVariables.ReplaceAllString(s, " ")
	var out []string
	for _, loc := range promIdents.FindAllStringIndex(s, -1) {
		id := s[loc[0]:loc[1]]
		if loc[0] > 0 && strings.ContainsAny(s[loc[0]-1:loc[0]], "0123456789.") {
			continue // the exponent of a number, e.g. 1e3
		}
		if strings.HasPrefix(strings.TrimLeft(s[loc[1]:], " \t\n"), "(") || slices.Contains(promKeywords, strings.ToLower(id)) {
			continue // a function call or aggregation, or a keyword
		}
		out = append(out, id)
	}
	return out
}

func TestPromMetricNames(t *testing.T) {
	cases := []struct {
		expr string
		want []string
	}{
		{`sum(rate(venna_gateway_requests_total[$__rate_interval]))`, []string{"venna_gateway_requests_total"}},
		{`histogram_quantile(0.99, sum by (le, route) (rate(venna_api_request_duration_seconds_bucket{code=~"5.."}[5m])))`, []string{"venna_api_request_duration_seconds_bucket"}},
		{`sum(rate(a_total{status=~"5.."}[1m])) / sum(rate(b_total[1m])) * 1e3`, []string{"a_total", "b_total"}},
		{`time() - max by (job) (x_seconds) offset 5m`, []string{"x_seconds"}},
		{`sum(max by (topic, partition) (venna_ingest_consumer_lag))`, []string{"venna_ingest_consumer_lag"}},
	}
	for _, c := range cases {
		if got := promMetricNames(c.expr); !slices.Equal(got, c.want) {
			t.Errorf("promMetricNames(%q) = %v, want %v", c.expr, got, c.want)
		}
	}
}

// exportedMetrics returns the metric names the Go code of the repository defines: the
// Name (with Namespace and Subsystem) of every prometheus *Opts literal, the first
// argument of every NewDesc, and every string constant shaped like a venna metric name.
// prefixes holds go_ and process_ when some role registers the standard collectors.
func exportedMetrics(t *testing.T) (names map[string]bool, prefixes []string) {
	t.Helper()
	names = map[string]bool{}
	literal := func(e ast.Expr) (string, bool) {
		if bl, ok := e.(*ast.BasicLit); ok && bl.Kind == token.STRING {
			s, err := strconv.Unquote(bl.Value)
			return s, err == nil
		}
		return "", false
	}
	fqName := func(parts ...string) string {
		var nonEmpty []string
		for _, p := range parts {
			if p != "" {
				nonEmpty = append(nonEmpty, p)
			}
		}
		return strings.Join(nonEmpty, "_")
	}
	vennaName := regexp.MustCompile(`^venna_[a-z0-9_]+$`)
	fset := token.NewFileSet()
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != repoRoot && (strings.HasPrefix(n, ".") || n == "vendor" || n == "testdata" || n == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return nil // a file being edited; the build reports it
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BasicLit:
				if s, ok := literal(n); ok && vennaName.MatchString(s) {
					names[s] = true
				}
			case *ast.CompositeLit:
				sel, ok := n.Type.(*ast.SelectorExpr)
				if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
					return true
				}
				fields := map[string]string{}
				for _, el := range n.Elts {
					if kv, ok := el.(*ast.KeyValueExpr); ok {
						if k, ok := kv.Key.(*ast.Ident); ok {
							if v, ok := literal(kv.Value); ok {
								fields[k.Name] = v
							}
						}
					}
				}
				if fields["Name"] != "" {
					names[fqName(fields["Namespace"], fields["Subsystem"], fields["Name"])] = true
				}
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				switch sel.Sel.Name {
				case "NewDesc":
					if len(n.Args) > 0 {
						if s, ok := literal(n.Args[0]); ok {
							names[s] = true
						}
					}
				case "BuildFQName":
					var parts []string
					for _, a := range n.Args {
						s, _ := literal(a)
						parts = append(parts, s)
					}
					names[fqName(parts...)] = true
				case "NewGoCollector":
					prefixes = append(prefixes, "go_")
				case "NewProcessCollector":
					prefixes = append(prefixes, "process_")
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names, prefixes
}

// exported reports whether a series name is exported: the name itself, or the
// _bucket/_sum/_count series of an exported histogram, or a standard collector's.
func exported(name string, names map[string]bool, prefixes []string) bool {
	if names[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && names[base] {
			return true
		}
	}
	return slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(name, p) })
}

func flattenPanels(ps []dashboardPanel) []dashboardPanel {
	var out []dashboardPanel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, flattenPanels(p.Panels)...)
	}
	return out
}

func TestGrafanaDashboard(t *testing.T) {
	var d dashboard
	if err := json.Unmarshal(readFile(t, dashboardPath), &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("%s: title %q uid %q: both are needed to import it", dashboardPath, d.Title, d.UID)
	}
	panels := flattenPanels(d.Panels)
	names, prefixes := exportedMetrics(t)
	if len(names) == 0 {
		t.Fatal("no metric names found in the Go code")
	}

	used := map[string]bool{}
	t.Run("every series is exported", func(t *testing.T) {
		for _, p := range panels {
			for _, tg := range p.Targets {
				series := promMetricNames(tg.Expr)
				if len(series) == 0 {
					t.Errorf("%s: panel %q: expression %q selects no series", dashboardPath, p.Title, tg.Expr)
				}
				for _, s := range series {
					used[s] = true
					if !exported(s, names, prefixes) {
						t.Errorf("%s: panel %q: %s is exported by no role (expression %q)", dashboardPath, p.Title, s, tg.Expr)
					}
				}
			}
		}
	})

	t.Run("charts lag, spool, errors, latency, invoice runs", func(t *testing.T) {
		for _, s := range dashboardMust {
			if !used[s] {
				t.Errorf("%s: no panel charts %s", dashboardPath, s)
			}
		}
	})

	t.Run("datasource", func(t *testing.T) {
		ok := slices.ContainsFunc(d.Templating.List, func(v struct{ Name, Type, Query string }) bool {
			return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
		})
		if !ok {
			t.Errorf("%s: no Prometheus datasource variable named datasource", dashboardPath)
		}
		for _, p := range panels {
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || !strings.Contains(string(*p.Datasource), "${datasource}") {
				t.Errorf("%s: panel %q does not query ${datasource}", dashboardPath, p.Title)
			}
		}
	})

	t.Run("layout", func(t *testing.T) {
		ids := map[int]bool{}
		for i, p := range panels {
			if ids[p.ID] {
				t.Errorf("%s: panel %q: id %d is not unique", dashboardPath, p.Title, p.ID)
			}
			ids[p.ID] = true
			g := p.GridPos
			if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
				t.Errorf("%s: panel %q: gridPos %+v outside the 24-column grid", dashboardPath, p.Title, g)
			}
			for _, q := range panels[:i] {
				h := q.GridPos
				if g.X < h.X+h.W && h.X < g.X+g.W && g.Y < h.Y+h.H && h.Y < g.Y+g.H {
					t.Errorf("%s: panels %q and %q overlap", dashboardPath, q.Title, p.Title)
				}
			}
		}
	})
}
