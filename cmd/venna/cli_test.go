package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// venna runs the command line args as main does and returns its exit status, stdout and stderr.
func venna(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errs strings.Builder
	code = runMain(t.Context(), args, &out, &errs)
	return code, out.String(), errs.String()
}

// helpFlags are the flags a -h output lists.
func helpFlags(help string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^  --([a-z0-9-]+)`).FindAllStringSubmatch(help, -1) {
		out = append(out, m[1])
	}
	return out
}

// Each command's -h is about that command: usage, what it does, an example, and only the
// flags it takes — not every setting of every role.
func TestHelpListsOnlyTheCommandsFlags(t *testing.T) {
	cases := []struct {
		args      []string
		usage     []string // usage lines it must show
		want, not []string // flags it must and must not list
	}{
		{[]string{"key", "create", "-h"},
			[]string{"venna key create --workspace ID [--name N]", "venna key list --workspace ID", "venna key revoke KEY_ID"},
			[]string{"workspace", "name", "clickhouse-addr", "clickhouse-password", "key-refresh", "log-level"},
			[]string{"kafka-brokers", "kafka-topic", "aggregate-schedule", "invoice-schedule", "spool-dir", "gateway-addr", "api-addr", "sim-addr", "redis-addr", "ingest-batch-size"}},
		{[]string{"invoice", "--help"},
			[]string{"venna invoice run [--period YYYY-MM]", "venna invoice export --workspace ID [--format csv|html|json] INVOICE_ID", "venna invoice reconcile --workspace ID INVOICE_ID"},
			[]string{"workspace", "period", "format", "clickhouse-addr", "prices-file", "invoice-grace"},
			[]string{"kafka-brokers", "spool-dir", "aggregate-schedule", "gateway-addr", "redis-addr", "key-refresh"}},
		{[]string{"ingest", "-h"}, []string{"venna ingest"},
			[]string{"clickhouse-addr", "kafka-brokers", "kafka-topic", "ingest-dlq-topic", "ingest-batch-size", "ingest-metrics-addr"},
			[]string{"kafka-partitions", "clickhouse-cluster", "gateway-addr", "spool-dir", "prices-file", "aggregate-schedule", "admin-token"}},
		{[]string{"dlq", "-h"}, []string{"venna dlq redrive [--limit N]"},
			[]string{"limit", "kafka-brokers", "kafka-topic", "ingest-dlq-topic"},
			[]string{"clickhouse-addr", "ingest-group", "spool-dir"}},
		{[]string{"sim-upstream", "-h"}, []string{"venna sim-upstream"},
			[]string{"sim-addr", "sim-api-key", "log-level"},
			[]string{"clickhouse-addr", "kafka-brokers"}},
		{[]string{"probe", "-h"}, []string{"venna probe [--role ROLE] [--timeout D] [URL | --url URL]"},
			[]string{"url", "role", "timeout"},
			[]string{"clickhouse-addr", "log-level", "gateway-addr"}},
		{[]string{"webhook", "-h"},
			[]string{"venna webhook add --url URL [--workspace ID] [--events TYPES] [--description D]", "venna webhook replay --endpoint ID EVENT_ID",
				"venna webhook deliveries [--endpoint ID] [--event ID] [--workspace ID] [--status S] [--limit N]"},
			[]string{"url", "events", "endpoint", "overlap", "clickhouse-addr", "log-level"},
			[]string{"webhook-timeout", "webhook-schedule", "kafka-brokers", "prices-file", "admin-token"}},
		{[]string{"aggregate", "-h"}, []string{"venna aggregate [--once]"},
			[]string{"once", "webhook-schedule", "webhook-timeout", "webhook-concurrency", "webhook-retry-for", "alert-schedule"},
			[]string{"kafka-brokers", "admin-token", "url"}},
		{[]string{"help", "migrate"}, []string{"venna migrate"},
			[]string{"clickhouse-cluster", "kafka-partitions", "kafka-retention", "ingest-dlq-topic", "prices-file"},
			[]string{"ingest-group", "spool-dir", "gateway-addr"}},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, out, errs := venna(t, c.args...)
			if code != exitOK || errs != "" {
				t.Fatalf("exit %d, stderr %q; want 0 and the help on stdout", code, errs)
			}
			for _, u := range c.usage {
				if !strings.Contains(out, "\n  "+u+"\n") {
					t.Errorf("help lacks the usage line %q:\n%s", u, out)
				}
			}
			if !strings.Contains(out, "\nExample:\n  venna ") && !strings.Contains(out, "\nExample:\n  VENNA_") {
				t.Errorf("help has no example:\n%s", out)
			}
			listed := helpFlags(out)
			for _, f := range c.want {
				if !slices.Contains(listed, f) {
					t.Errorf("help does not list --%s:\n%s", f, out)
				}
			}
			for _, f := range c.not {
				if slices.Contains(listed, f) {
					t.Errorf("help lists --%s, which this command does not read", f)
				}
			}
		})
	}
}

// What -h lists is exactly what the command accepts: its own flags and its groups' settings.
func TestEveryCommandsHelpMatchesItsFlags(t *testing.T) {
	for _, cmd := range commands() {
		t.Run(cmd.name, func(t *testing.T) {
			code, out, _ := venna(t, cmd.name, "-h")
			if code != exitOK || !strings.HasPrefix(out, "Usage:\n  venna "+cmd.name) || !strings.Contains(out, "\nExample:\n") {
				t.Fatalf("venna %s -h: exit %d, want 0 with usage and an example:\n%s", cmd.name, code, out)
			}
			var cfg Config
			fs, _, bad := lookup(cmd.name).flagSet(&cfg)
			if len(bad) > 0 {
				t.Fatal(bad)
			}
			var accepted []string
			fs.VisitAll(func(f *flag.Flag) { accepted = append(accepted, f.Name) })
			listed := helpFlags(out)
			slices.Sort(listed)
			if !slices.Equal(listed, accepted) {
				t.Errorf("-h lists %v, the command accepts %v", listed, accepted)
			}
			var want []string
			for _, s := range cfg.settings() {
				if slices.Contains(cmd.groups, s.group) {
					want = append(want, s.flag)
				}
			}
			for _, f := range want {
				if !slices.Contains(accepted, f) {
					t.Errorf("takes group %s but not its --%s", settingGroup(f), f)
				}
			}
		})
	}
}

// Every setting's built-in default is a value its flag takes: bind falls back on it when
// an environment variable's value is refused.
func TestSettingDefaultsAreValid(t *testing.T) {
	var cfg Config
	for _, s := range cfg.settings() {
		if err := s.bind(flag.NewFlagSet("test", flag.ContinueOnError), s.flag, s.def, ""); err != nil {
			t.Errorf("--%s: default %q: %v", s.flag, s.def, err)
		}
	}
}

// Every setting belongs to a known group that some command takes, and `all` takes every
// role's settings.
func TestSettingGroups(t *testing.T) {
	var cfg Config
	known := map[string]bool{}
	for _, g := range groups {
		known[g.name] = true
	}
	taken := map[string]bool{}
	for _, c := range commands() {
		for _, g := range c.groups {
			if !known[g] {
				t.Errorf("%s takes unknown group %q", c.name, g)
			}
			taken[g] = true
		}
	}
	for _, s := range cfg.settings() {
		if !known[s.group] {
			t.Errorf("--%s is in unknown group %q", s.flag, s.group)
		}
	}
	for g := range known {
		if !taken[g] {
			t.Errorf("group %s: no command takes it", g)
		}
	}
	all := lookup("all")
	for _, role := range []string{"gateway", "ingest", "aggregate", "api", "sim-upstream"} {
		for _, g := range lookup(role).groups {
			if !all.takes(g) {
				t.Errorf("all does not take group %s, which %s reads", g, role)
			}
		}
	}
	if lookup("config-table").groups != nil {
		t.Error("config-table takes settings it does not read")
	}
}

// countingListener stands in for ClickHouse, Kafka and Redis: it counts the connections
// made to it and closes them at once, so that a command that dials fails fast.
func countingListener(t *testing.T) (addr string, dialed *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	dialed = new(atomic.Int32)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			dialed.Add(1)
			c.Close()
		}
	}()
	return l.Addr().String(), dialed
}

// A wrong command line is a usage error: exit 2, what is wrong and the usage on stderr,
// and nothing connected to. The control case shows that a command that does get as far as
// connecting is seen doing it, and fails with 1.
func TestUsageErrorsExit2WithoutConnecting(t *testing.T) {
	addr, dialed := countingListener(t)
	for _, env := range []string{"VENNA_CLICKHOUSE_ADDR", "VENNA_KAFKA_BROKERS", "VENNA_REDIS_ADDR"} {
		t.Setenv(env, addr)
	}
	t.Setenv("VENNA_LOG_LEVEL", "error")
	t.Setenv("VENNA_PRICES_FILE", "../../deploy/prices.yaml")
	t.Setenv("VENNA_ROUTES_FILE", "../../deploy/routes.yaml")
	cases := []struct {
		args   []string
		code   int
		stderr string            // in what stderr says
		env    map[string]string // besides the servers'
	}{
		{nil, exitUsage, "no command given", nil},
		{[]string{"nope"}, exitUsage, `unknown command "nope"`, nil},
		{[]string{"--log-level", "debug", "gateway"}, exitUsage, `unknown command "--log-level"`, nil},
		{[]string{"invoice"}, exitUsage, "missing subcommand: want run, show, finalize, void, export or reconcile", nil},
		{[]string{"key", "frobnicate"}, exitUsage, `unknown subcommand "frobnicate"`, nil},
		{[]string{"workspace"}, exitUsage, "missing subcommand", nil},
		{[]string{"budget", "--workspace", "ws_1"}, exitUsage, "missing subcommand", nil},
		{[]string{"credit", "refund", "--workspace", "ws_1"}, exitUsage, `unknown subcommand "refund"`, nil},
		{[]string{"ratelimit"}, exitUsage, "missing subcommand", nil},
		{[]string{"dlq"}, exitUsage, "missing subcommand: want redrive", nil},
		{[]string{"key", "create"}, exitUsage, "create: --workspace is required", nil},
		{[]string{"workspace", "create"}, exitUsage, "create: --name is required", nil},
		{[]string{"key", "revoke"}, exitUsage, "revoke: missing KEY_ID", nil},
		{[]string{"key", "revoke", "key_1", "key_2"}, exitUsage, `unexpected argument "key_2"`, nil},
		{[]string{"key", "create", "--workspace", "ws_1", "--kafka-topic", "x"}, exitUsage, "flag provided but not defined: -kafka-topic", nil},
		{[]string{"invoice", "run", "--workspace", "ws_1"}, exitUsage, "run does not take --workspace", nil},
		{[]string{"invoice", "run", "--period", "2026-13"}, exitUsage, `invalid value "2026-13" for flag -period`, nil},
		{[]string{"invoice", "export", "--workspace", "ws_1", "--format", "pdf", "inv_1"}, exitUsage, `invalid value "pdf" for flag -format`, nil},
		{[]string{"invoice", "finalize", "--workspace", "ws_1"}, exitUsage, "finalize: missing INVOICE_ID", nil},
		{[]string{"budget", "set", "--workspace", "ws_1", "--monthly-usd", "lots"}, exitUsage, `invalid value "lots" for flag -monthly-usd`, nil},
		{[]string{"budget", "set", "--workspace", "ws_1", "--monthly-usd", "-5"}, exitUsage, "monthly_usd is negative", nil},
		{[]string{"ratelimit", "set", "--workspace", "ws_1", "--rpm", "99999999999"}, exitUsage, `invalid value "99999999999" for flag -rpm`, nil},
		{[]string{"credit", "grant", "--workspace", "ws_1", "--amount-usd", "5", "--effective-from", "2026-12-01T00:30:00Z"}, exitUsage, "whole UTC hour", nil},
		{[]string{"credit", "prepaid", "--workspace", "ws_1", "maybe"}, exitUsage, `"maybe": want on or off`, nil},
		{[]string{"dlq", "redrive", "--limit", "-1"}, exitUsage, `invalid value "-1" for flag -limit`, nil},
		{[]string{"plan", "subscribe", "--workspace", "ws_1"}, exitUsage, "subscribe: --plan is required", nil},
		{[]string{"plan", "cancel", "--workspace", "ws_1", "--plan", "team"}, exitUsage, "cancel does not take --plan", nil},
		{[]string{"plan", "subscribe", "--workspace", "ws_1", "--plan", "team", "--effective-from", "soon"}, exitUsage, `invalid value "soon" for flag -effective-from`, nil},
		{[]string{"webhook"}, exitUsage, "missing subcommand: want add, list, enable, disable, rotate, events, deliveries or replay", nil},
		{[]string{"webhook", "add"}, exitUsage, "add: --url is required", nil},
		{[]string{"webhook", "add", "--url", "ftp://hooks.example.com/"}, exitUsage, "want http:// or https://", nil},
		{[]string{"webhook", "add", "--url", "https://hooks.example.com/#top"}, exitUsage, "a fragment (#)", nil},
		{[]string{"webhook", "add", "--url", "https://hooks.example.com/", "--events", "invoice.paid"}, exitUsage, `invalid value "invoice.paid" for flag -events`, nil},
		{[]string{"webhook", "replay", "evt_1"}, exitUsage, "replay: --endpoint is required", nil},
		{[]string{"webhook", "replay", "--endpoint", "we_1"}, exitUsage, "replay: missing EVENT_ID", nil},
		{[]string{"webhook", "rotate", "--overlap", "200h", "we_1"}, exitUsage, "--overlap 200h0m0s: want 0 to 168h0m0s", nil},
		{[]string{"webhook", "deliveries", "--status", "lost"}, exitUsage, `invalid value "lost" for flag -status`, nil},
		{[]string{"webhook", "list", "--url", "https://x/"}, exitUsage, "list does not take --url", nil},
		{[]string{"aggregate", "--webhook-concurrency", "-2"}, exitUsage, "Concurrency (VENNA_WEBHOOK_CONCURRENCY) is negative", nil},
		{[]string{"aggregate", "--webhook-schedule", "often"}, exitUsage, `invalid value "often" for flag -webhook-schedule`, nil},
		{[]string{"migrate", "--kafka-partitions", "0"}, exitUsage, "--kafka-partitions 0", nil},
		{[]string{"migrate", "--ingest-batch-size", "5"}, exitUsage, "flag provided but not defined: -ingest-batch-size", nil},
		{[]string{"gateway", "--limits-on-failure", "maybe"}, exitUsage, `invalid value "maybe" for flag -limits-on-failure`, nil},
		{[]string{"gateway", "extra"}, exitUsage, `unexpected argument "extra"`, nil},
		{[]string{"api", "--admin-token", "short"}, exitUsage, "AdminToken (VENNA_ADMIN_TOKEN) is 5 characters", nil},
		{[]string{"ingest", "--ingest-batch-size", "-1"}, exitUsage, "BatchSize (VENNA_INGEST_BATCH_SIZE) is negative", nil},
		{[]string{"aggregate", "--invoice-schedule", "sometimes"}, exitUsage, `invalid value "sometimes" for flag -invoice-schedule`, nil},
		{[]string{"all", "--kafka-partitions", "24"}, exitUsage, "flag provided but not defined: -kafka-partitions", nil},
		{[]string{"workspace", "list", "--log-level", "loud"}, exitUsage, `invalid value "loud" for flag -log-level`, nil},
		{[]string{"probe", "--role", "db"}, exitUsage, `invalid value "db" for flag -role`, nil},
		{[]string{"probe", "--url", "http://a/", "http://b/"}, exitUsage, "give the URL once", nil},
		{[]string{"probe", "ftp://a/"}, exitUsage, "want an http:// or https:// URL", nil},
		{[]string{"help", "nope"}, exitUsage, `unknown command "nope"`, nil},
		// A setting's environment variable is checked like its flag, unless the flag is given.
		{[]string{"ingest"}, exitUsage, `VENNA_INGEST_BATCH_SIZE="many": want an integer`, map[string]string{"VENNA_INGEST_BATCH_SIZE": "many"}},
		{[]string{"gateway"}, exitUsage, `VENNA_LIMITS_ON_FAILURE="sometimes": want open or closed`, map[string]string{"VENNA_LIMITS_ON_FAILURE": "sometimes"}},
		{[]string{"workspace", "list"}, exitUsage, "VENNA_CLICKHOUSE_PROTOCOL", map[string]string{"VENNA_CLICKHOUSE_PROTOCOL": "grpc"}},
		// Controls: valid, so they connect — to the listener, which hangs up.
		{[]string{"workspace", "list"}, exitFailure, "venna: ", nil},
		{[]string{"workspace", "list"}, exitFailure, "venna: ", map[string]string{"VENNA_INGEST_BATCH_SIZE": "many"}}, // not a setting it reads
		{[]string{"ingest", "--ingest-batch-size", "5", "--ingest-metrics-addr", ""}, exitFailure, "venna: ", map[string]string{"VENNA_INGEST_BATCH_SIZE": "many"}},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			before := dialed.Load()
			code, out, errs := venna(t, c.args...)
			if code != c.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, c.code, errs)
			}
			if !strings.Contains(errs, c.stderr) {
				t.Errorf("stderr does not say %q:\n%s", c.stderr, errs)
			}
			n := dialed.Load() - before
			if c.code == exitUsage {
				if n > 0 {
					t.Errorf("a usage error made %d connections", n)
				}
				if out != "" {
					t.Errorf("a usage error wrote to stdout: %q", out)
				}
				if !strings.Contains(errs, "Usage:") {
					t.Errorf("stderr shows no usage:\n%s", errs)
				}
			} else if n == 0 {
				t.Errorf("exit %d without connecting: the control case proves nothing", code)
			}
		})
	}
}

// The exit status is decided in one place: usage errors 2 however they are wrapped,
// other failures 1, help 0.
func TestExitCode(t *testing.T) {
	failed := errors.New("clickhouse unreachable")
	cases := []struct {
		name string
		err  error
		want int
	}{
		{"done", nil, exitOK},
		{"help", flag.ErrHelp, exitOK},
		{"failure", failed, exitFailure},
		{"usage", usagef("missing subcommand"), exitUsage},
		{"wrapped usage", fmt.Errorf("gateway: %w", invalid(failed)), exitUsage},
		{"one role of all refused its config", errors.Join(fmt.Errorf("api: %w", invalid(failed)), nil), exitUsage},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := exitCode(c.err); got != c.want {
				t.Errorf("exitCode(%v) = %d, want %d", c.err, got, c.want)
			}
		})
	}
}

// `venna -h` and `venna help` print every command on stdout and exit 0.
func TestOverview(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}} {
		code, out, errs := venna(t, args...)
		if code != exitOK || errs != "" {
			t.Errorf("venna %v: exit %d, stderr %q", args, code, errs)
		}
		for _, c := range commands() {
			if !strings.Contains(out, "\n  "+c.name+" ") {
				t.Errorf("venna %v does not list %s", args, c.name)
			}
		}
		if !strings.Contains(out, "venna key revoke KEY_ID") || !strings.Contains(out, "2 usage error") {
			t.Errorf("venna %v lacks the subcommands or the exit statuses:\n%s", args, out)
		}
	}
}

// `venna probe` is a container healthcheck: 0 and silent on 200, 1 otherwise.
func TestProbe(t *testing.T) {
	status := func(code int) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(code)
		}))
		t.Cleanup(s.Close)
		return s
	}
	ok, unavailable := status(http.StatusOK), status(http.StatusServiceUnavailable)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	moved := httptest.NewServer(http.RedirectHandler(ok.URL+"/healthz", http.StatusFound))
	t.Cleanup(moved.Close)
	closed := freeAddr(t) // nothing listens there
	_, okPort, _ := net.SplitHostPort(ok.Listener.Addr().String())

	cases := []struct {
		name   string
		env    map[string]string
		args   []string
		code   int
		stderr string
	}{
		{"200", nil, []string{ok.URL + "/healthz"}, exitOK, ""},
		{"200 with --url", nil, []string{"--url", ok.URL + "/healthz"}, exitOK, ""},
		{"503", nil, []string{unavailable.URL + "/healthz"}, exitFailure, "503 Service Unavailable"},
		{"404", nil, []string{ok.URL + "/nope"}, exitFailure, "404"},
		{"closed port", nil, []string{"http://" + closed + "/healthz"}, exitFailure, "connection refused"},
		{"slower than --timeout", nil, []string{"--timeout", "200ms", slow.URL + "/healthz"}, exitFailure, "Client.Timeout"},
		{"redirect is not 200", nil, []string{moved.URL}, exitFailure, "302 Found"},
		// Without a URL: the role's /healthz where its setting says it listens, on loopback.
		{"--role api", map[string]string{"VENNA_API_ADDR": "0.0.0.0:" + okPort}, []string{"--role", "api"}, exitOK, ""},
		{"gateway by default", map[string]string{"VENNA_GATEWAY_ADDR": ":" + okPort}, nil, exitOK, ""},
		{"--role ingest, down", map[string]string{"VENNA_INGEST_METRICS_ADDR": closed}, []string{"--role", "ingest"}, exitFailure, "connection refused"},
		{"--role ingest, no ops server", map[string]string{"VENNA_INGEST_METRICS_ADDR": ""}, []string{"--role", "ingest"}, exitUsage, "VENNA_INGEST_METRICS_ADDR is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			start := time.Now()
			code, out, errs := venna(t, append([]string{"probe"}, c.args...)...)
			if code != c.code {
				t.Errorf("exit %d, want %d; stderr %q", code, c.code, errs)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
			if c.code == exitOK && errs != "" {
				t.Errorf("stderr %q on success, want nothing", errs)
			}
			if !strings.Contains(errs, c.stderr) {
				t.Errorf("stderr %q does not say %q", errs, c.stderr)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %s: the probe must give up within its timeout", d)
			}
		})
	}
}

// Progress is drawn on a terminal, in place, and nowhere else.
func TestProgress(t *testing.T) {
	cases := []struct {
		name     string
		terminal bool
		want     string
	}{
		{"terminal", true, "\rinvoicing 2026-11: computing…\rinvoiced 1000 of 2000 workspaces \rinvoiced 2000 of 2000 workspaces \n"},
		{"not a terminal", false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var w strings.Builder
			p := newProgress(&w, c.terminal)
			if p != nil {
				p.every = 0 // draw every update
			}
			p.Update("invoicing %s: computing…", "2026-11")
			p.Update("invoiced %d of %d workspaces ", 1000, 2000) // longer than the first: nothing to blank
			p.Update("invoiced %d of %d workspaces", 2000, 2000)  // one shorter: one blank
			p.Done()
			p.Done() // twice is harmless
			if got := w.String(); got != c.want {
				t.Errorf("wrote %q, want %q", got, c.want)
			}
		})
	}
	t.Run("held updates are drawn by Done", func(t *testing.T) {
		var w strings.Builder
		p := newProgress(&w, true)
		p.every = time.Hour
		p.Update("re-driven %s", plural(1, "event"))
		p.Update("re-driven %s", plural(1000, "event")) // within the hour: held
		if strings.Contains(w.String(), "1000") {
			t.Errorf("drew an update within p.every: %q", w.String())
		}
		p.Done()
		if got, want := w.String(), "\rre-driven 1 event\rre-driven 1000 events\n"; got != want {
			t.Errorf("wrote %q, want %q", got, want)
		}
	})
}

// A test's stderr is a pipe or a file, never a terminal: venna must not take it for one.
func TestIsTerminal(t *testing.T) {
	var b strings.Builder
	if isTerminal(&b) {
		t.Error("a strings.Builder is a terminal")
	}
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Error("a regular file is a terminal")
	}
}
