package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/shopspring/decimal"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/invoice"
)

// chromiumPath is the Chromium the browser tests drive: VENNA_CHROMIUM, or chromium on
// PATH. Without one the tests skip, unless VENNA_REQUIRE_BROWSER=1 (CI) makes that a failure.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("VENNA_CHROMIUM"); p != "" {
		return p
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	msg := "no Chromium found: install it (apt-get install -y chromium) or set VENNA_CHROMIUM to its binary"
	if os.Getenv("VENNA_REQUIRE_BROWSER") == "1" {
		t.Fatal(msg + " (VENNA_REQUIRE_BROWSER=1)")
	}
	t.Skip(msg)
	return ""
}

// tab is one page of a headless Chromium of its own (fresh profile), with what the page
// did recorded: every request it sent, its script errors, its CSP violations.
type tab struct {
	t         *testing.T
	ctx       context.Context
	downloads string

	mu       sync.Mutex
	requests []string // URLs
	problems []string // uncaught exceptions, console and JavaScript errors
}

func newTab(t *testing.T) *tab {
	t.Helper()
	bin := chromiumPath(t)
	profile, downloads := t.TempDir(), t.TempDir()
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true), chromedp.UserDataDir(profile), chromedp.WindowSize(1280, 900))
	bctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(bctx, 3*time.Minute)
	// The browser goes before its profile directory is removed (cleanups run last first).
	t.Cleanup(func() { cancelTimeout(); cancelTab(); cancelAlloc() })
	b := &tab{t: t, ctx: ctx, downloads: downloads}
	err := chromedp.Listen(ctx, func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			b.requests = append(b.requests, ev.Request.URL)
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			text := d.Text
			if d.Exception != nil {
				text += " " + d.Exception.Description
			}
			b.problems = append(b.problems, "exception: "+text)
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				b.problems = append(b.problems, fmt.Sprintf("console.%s: %s", ev.Type, consoleArgs(ev.Args)))
			}
		case *cdplog.EventEntryAdded:
			// Network errors are the API's answers (a wrong key is a 401 on purpose);
			// CSP violations are counted by the page's listener below.
			if e := ev.Entry; e.Level == cdplog.EntryLevelError && e.Source != cdplog.EntrySourceNetwork && e.Source != cdplog.EntrySourceSecurity {
				b.problems = append(b.problems, fmt.Sprintf("log %s: %s", e.Source, e.Text))
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	b.do(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		// Runs before the page's own scripts, outside its CSP (DevTools injects it).
		_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
			Source: `window.__csp = []; document.addEventListener('securitypolicyviolation',
				(e) => window.__csp.push(e.effectiveDirective + ' ' + e.blockedURI));`,
		})
		if err != nil {
			return err
		}
		_, err = chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: downloads, EventsEnabled: new(true),
		})
		return err
	}))
	return b
}

func consoleArgs(args []*runtime.RemoteObject) string {
	var parts []string
	for _, a := range args {
		if a.Description != "" {
			parts = append(parts, a.Description)
		} else {
			parts = append(parts, string(a.Value))
		}
	}
	return strings.Join(parts, " ")
}

func (b *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatal(err)
	}
}

func eval[T any](b *tab, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor waits until the JavaScript expression is true.
func (b *tab) waitFor(what, expr string) {
	b.t.Helper()
	_, err := chromedp.Run(b.ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil {
		b.mu.Lock()
		problems := slices.Clone(b.problems)
		b.mu.Unlock()
		b.t.Fatalf("waiting for %s (%s): %v; the page says %q; its errors: %q", what, expr, err,
			eval[string](b, `document.getElementById('status').textContent + ' ' + document.getElementById('signin-error').textContent + ' ' + document.getElementById('totals').dataset.state`), problems)
	}
}

// choose sets a control as a user would and lets the page react.
func (b *tab) choose(id, value string) {
	b.t.Helper()
	b.do(chromedp.SetValue(chromedp.ID(id), value),
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.getElementById(%q).dispatchEvent(new Event('change', {bubbles: true}))`, id)))
}

// download clicks a download button and returns the saved file's bytes.
func (b *tab) download(button string) []byte {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	progress := chromedp.Events(ctx, browser.DownloadProgress)
	b.do(chromedp.Click(chromedp.ID(button)))
	for ev, err := range progress {
		if err != nil {
			b.t.Fatalf("download from #%s: %v", button, err)
		}
		switch ev.State {
		case browser.DownloadProgressStateCompleted:
			body, err := os.ReadFile(filepath.Join(b.downloads, ev.GUID))
			if err != nil {
				b.t.Fatal(err)
			}
			return body
		case browser.DownloadProgressStateCanceled:
			b.t.Fatalf("download from #%s canceled", button)
		}
	}
	return nil
}

// checkClean fails on anything the page should never do: script errors, CSP violations,
// a request to another origin, the key in any URL.
func (b *tab) checkClean(origin string, secrets ...string) {
	b.t.Helper()
	b.mu.Lock()
	problems, requests := slices.Clone(b.problems), slices.Clone(b.requests)
	b.mu.Unlock()
	for _, p := range problems {
		b.t.Errorf("page: %s", p)
	}
	if v := eval[[]string](b, `window.__csp`); len(v) > 0 {
		b.t.Errorf("CSP violations: %v", v)
	}
	loc := eval[string](b, `location.href`)
	for _, u := range append(requests, loc) {
		if strings.HasPrefix(u, "data:") {
			continue // the browser's own images, e.g. the date field's calendar icon
		}
		if !strings.HasPrefix(u, origin+"/") && !strings.HasPrefix(u, "blob:"+origin+"/") {
			b.t.Errorf("the page requested %s, outside %s", u, origin)
		}
		for _, s := range secrets {
			if strings.Contains(u, s) || strings.Contains(u, url.QueryEscape(s)) {
				b.t.Errorf("a URL holds the key: %s", u)
			}
		}
	}
}

// pageUsage is what the usage section shows.
type pageUsage struct {
	State    string     `json:"state"`
	Start    string     `json:"start"`
	End      string     `json:"end"`
	Width    string     `json:"width"`
	Group    string     `json:"group"`
	Total    pageSums   `json:"total"`
	Groups   []pageSums `json:"groups"`
	Canvases int        `json:"canvases"`
	Legend   [][]string `json:"legend"`
}

type pageSums struct {
	Label    string `json:"label"`
	Requests string `json:"requests"`
	Input    string `json:"input"`
	Cached   string `json:"cached"`
	Output   string `json:"output"`
	Cost     string `json:"cost"`
}

const readUsage = `(() => {
  const text = (el, sel) => el.querySelector(sel).textContent;
  const d = document.getElementById('totals').dataset;
  const doc = document;
  return {
    state: d.state, start: d.start, end: d.end, width: d.width, group: d.group,
    total: { requests: text(doc, '#total-requests'), input: text(doc, '#total-input'), cached: text(doc, '#total-cached'),
      output: text(doc, '#total-output'), cost: text(doc, '#total-cost') },
    groups: [...doc.querySelectorAll('#groups tbody tr')].map((tr) => ({ label: tr.dataset.group,
      requests: text(tr, '.requests'), input: text(tr, '.input'), cached: text(tr, '.cached'), output: text(tr, '.output'), cost: text(tr, '.cost') })),
    canvases: doc.querySelectorAll('#chart-tokens canvas, #chart-cost canvas').length,
    legend: [...doc.querySelectorAll('.u-legend')].map((l) => [...l.querySelectorAll('.u-series .u-label')].map((s) => s.textContent)),
  };
})()`

// sums are a range's totals as the test computes them: from the API or from the events.
type sums struct {
	requests, input, cached, output uint64
	cost                            decimal.Decimal
	unpriced                        bool
}

func (s sums) page(label string) pageSums {
	cost := s.cost.String()
	if s.unpriced {
		cost = "unknown"
	}
	f := func(n uint64) string { return addCommas(strconv.FormatUint(n, 10)) }
	return pageSums{Label: label, Requests: f(s.requests), Input: f(s.input), Cached: f(s.cached), Output: f(s.output), Cost: cost}
}

func addCommas(s string) string {
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// apiUsage reads every page of GET /v1/usage for the range, as a client would, and sums
// it per group and in all.
func (f *fixture) apiUsage(ws string, start, end, width, group string) (sums, map[string]sums) {
	f.t.Helper()
	var total sums
	groups := map[string]sums{}
	next := ""
	for range 1000 {
		q := url.Values{"bucket_width": {width}, "start_time": {start}, "end_time": {end}, "group_by": {group}}
		if next != "" {
			q.Set("page", next)
		}
		page := f.usage(ws, q.Encode())
		for _, b := range page.Data {
			for _, r := range b.Results {
				label := r.Model
				if group == "api_key_id" {
					label = r.APIKeyID
				}
				g := groups[*label]
				for _, s := range []*sums{&total, &g} {
					s.requests += r.NumModelRequests
					s.input += r.InputTokens
					s.cached += r.InputCachedTokens
					s.output += r.OutputTokens
					if r.Cost == nil {
						s.unpriced = true
					} else {
						s.cost = s.cost.Add(decimal.RequireFromString(*r.Cost))
					}
				}
				groups[*label] = g
			}
		}
		if !page.HasMore {
			return total, groups
		}
		next = *page.NextPage
	}
	f.t.Fatal("usage pages do not end")
	return total, groups
}

// browserEvent is a usage event the browser test inserts.
type browserEvent struct {
	at                         time.Time
	ws, key, model             string
	prompt, cached, completion uint64
}

// expected sums the events of ws in [start, end), per group, priced as invoices price them.
func expected(f *fixture, events []browserEvent, ws string, start, end int64, group string) (sums, map[string]sums) {
	var total sums
	groups := map[string]sums{}
	for _, e := range events {
		if e.ws != ws || e.at.Unix() < start || e.at.Unix() >= end {
			continue
		}
		label := e.model
		if group == "api_key_id" {
			label = e.key
		}
		cost, ok := f.prices.Cost(ws, e.model, e.at, e.prompt-e.cached, e.cached, e.completion)
		if !ok {
			f.t.Fatalf("no price for %+v", e)
		}
		g := groups[label]
		for _, s := range []*sums{&total, &g} {
			s.requests++
			s.input += e.prompt
			s.cached += e.cached
			s.output += e.completion
			s.cost = s.cost.Add(cost)
		}
		groups[label] = g
	}
	return total, groups
}

// The usage page in a real browser: a workspace owner signs in with a key and sees exactly
// what the API serves for the workspace, in every range and grouping, its month against
// budget and credit, its invoices (whose CSV and HTML it downloads byte for byte) and its
// keys; never another workspace's data, never the key in a URL, no script error, no CSP
// violation; and it fits a phone's width.
func TestUsagePageInBrowser(t *testing.T) {
	chromiumPath(t) // skip before starting anything
	f := newFixture(t)
	ctx := context.Background()
	now := time.Now().UTC()

	// ws_a has three keys, one revoked; ws_b one.
	batch, _, err := f.store.IssueKey(ctx, "ws_a", "batch jobs")
	if err != nil {
		t.Fatal(err)
	}
	old, _, err := f.store.IssueKey(ctx, "ws_a", "old laptop")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.Revoke(ctx, old.ID); err != nil {
		t.Fatal(err)
	}
	keysA := []string{f.keyIDs["ws_a"], batch.ID, old.ID}

	// Ten days of usage of both workspaces, over two models, three keys and the price
	// change of the fixture (yesterday 12:00), every 4 hours, and hourly over the last day.
	var events []browserEvent
	models := []string{"venna-1", "venna-1-mini"}
	for i := range 60 {
		at := now.Add(-time.Duration(i)*4*time.Hour - 13*time.Minute).Truncate(time.Second)
		events = append(events,
			browserEvent{at: at, ws: "ws_a", key: keysA[i%3], model: models[i%2], prompt: uint64(1000 + 37*i), cached: uint64(11*i) % 500, completion: uint64(200 + 13*i)},
			browserEvent{at: at.Add(-time.Minute), ws: "ws_b", key: f.keyIDs["ws_b"], model: "venna-1", prompt: 90000, cached: 1000, completion: 7777})
	}
	for j := range 20 {
		at := now.Add(-time.Duration(j)*time.Hour - 5*time.Minute).Truncate(time.Second)
		events = append(events, browserEvent{at: at, ws: "ws_a", key: keysA[j%2], model: models[(j/2)%2], prompt: uint64(300 + j), cached: uint64(j * 7), completion: uint64(50 + 3*j)})
	}
	rows := make([]event, len(events))
	for i, e := range events {
		rows[i] = event{at: e.at, ws: e.ws, key: e.key, model: e.model, prompt: e.prompt, cached: e.cached, completion: e.completion}
	}
	f.insert(rows...)
	f.rollup()
	thisMonth, _ := invoice.Month(now)
	// ws_a is on the plan team from this hour: this month's invoice has its fee.
	f.do(http.MethodPut, "/v1/admin/workspaces/ws_a/subscription", adminToken, map[string]any{"plan_id": "team"}, http.StatusOK, nil)
	for _, m := range []time.Time{thisMonth.AddDate(0, -1, 0), thisMonth} {
		f.do(http.MethodPost, "/v1/admin/invoices/run", adminToken, map[string]string{"period": m.Format("2006-01")}, http.StatusOK, nil)
	}
	// A budget for the workspace and one for a key, a rate limit, credit for both workspaces.
	f.do(http.MethodPut, "/v1/admin/workspaces/ws_a/budget", adminToken, map[string]any{"monthly_usd": "25.00", "hard_limit": true}, http.StatusOK, nil)
	f.do(http.MethodPut, "/v1/admin/workspaces/ws_a/budget", adminToken, map[string]any{"api_key_id": batch.ID, "monthly_usd": "0.01"}, http.StatusOK, nil)
	f.do(http.MethodPut, "/v1/admin/workspaces/ws_a/rate_limit", adminToken, map[string]any{"rpm": 600, "tpm": 150000}, http.StatusOK, nil)
	f.do(http.MethodPost, "/v1/admin/workspaces/ws_a/credits", adminToken, map[string]any{"amount_usd": "20", "reason": "welcome credit"}, http.StatusCreated, nil)
	f.do(http.MethodPost, "/v1/admin/workspaces/ws_b/credits", adminToken, map[string]any{"amount_usd": "99", "reason": "credit of the other workspace"}, http.StatusCreated, nil)
	if err := f.auth.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	var invB struct{ Data []invoice.Invoice }
	f.get("/v1/invoices", f.tokens["ws_b"], http.StatusOK, &invB)
	if len(invB.Data) != 2 {
		t.Fatalf("ws_b has %d invoices, want 2", len(invB.Data))
	}
	// Nothing of ws_b may ever be on ws_a's page.
	foreign := []string{"ws_b", f.keyIDs["ws_b"], invB.Data[0].ID, invB.Data[1].ID, "credit of the other workspace"}
	token := f.tokens["ws_a"]
	secrets := []string{token, token[strings.LastIndex(token, "_")+1:], f.tokens["ws_b"]}

	b := newTab(t)
	origin := f.hs.URL
	b.do(chromedp.Navigate(origin+"/"), chromedp.WaitVisible(chromedp.ID("key-input")))

	// A wrong key: the API's own message, nothing kept.
	var wrong struct {
		Error struct{ Message string }
	}
	f.get("/v1/keys", "vk_wrong_key", http.StatusUnauthorized, &wrong)
	b.do(chromedp.SendKeys(chromedp.ID("key-input"), "vk_wrong_key"+kb.Enter))
	b.waitFor("the sign-in error", `document.getElementById('signin-error').textContent !== ''`)
	if got := eval[string](b, `document.getElementById('signin-error').textContent`); got != wrong.Error.Message {
		t.Errorf("sign-in error %q, want the API's %q", got, wrong.Error.Message)
	}
	if eval[bool](b, `sessionStorage.length > 0 || !document.getElementById('dashboard').hidden`) {
		t.Error("a wrong key was kept or opened the page")
	}

	// The right key, typed over the wrong one (the page selects it) and sent with Enter.
	b.do(chromedp.SendKeys(chromedp.ID("key-input"), token+kb.Enter))
	b.waitFor("the usage of the last 7 days", `document.getElementById('totals').dataset.state === 'ready'`)
	if eval[string](b, `sessionStorage.getItem('venna.apiKey')`) != token || eval[int](b, `localStorage.length`) != 0 ||
		eval[string](b, `document.cookie`) != "" || eval[string](b, `document.getElementById('key-input').value`) != "" {
		t.Error("the key is not kept in sessionStorage alone")
	}
	if got := eval[string](b, `document.getElementById('workspace-id').textContent`); got != "ws_a" {
		t.Errorf("workspace shown: %q", got)
	}

	// checkUsage compares the page with GET /v1/usage for the range it shows and with the
	// inserted events.
	checkUsage := func(name, width, group string, mayBeEmpty bool) {
		t.Helper()
		b.waitFor(name, fmt.Sprintf(`(() => { const d = document.getElementById('totals').dataset;
			return d.state === 'ready' && d.width === %q && d.group === %q; })()`, width, group))
		got := eval[pageUsage](b, readUsage)
		start, _ := strconv.ParseInt(got.Start, 10, 64)
		end, _ := strconv.ParseInt(got.End, 10, 64)
		apiTotal, apiGroups := f.apiUsage("ws_a", got.Start, got.End, width, group)
		evTotal, evGroups := expected(f, events, "ws_a", start, end, group)
		if apiTotal.requests == 0 && !mayBeEmpty {
			t.Fatalf("%s: no usage in the range %s to %s: the test shows nothing", name, got.Start, got.End)
		}
		if want := apiTotal.page(""); got.Total != want {
			t.Errorf("%s: page totals %+v, API's %+v", name, got.Total, want)
		}
		if a, e := apiTotal.page(""), evTotal.page(""); a != e {
			t.Errorf("%s: API totals %+v, inserted %+v", name, a, e)
		}
		var want []pageSums
		for label, s := range apiGroups {
			want = append(want, s.page(label))
			if e := evGroups[label].page(label); e != s.page(label) {
				t.Errorf("%s: API's %s %+v, inserted %+v", name, label, s.page(label), e)
			}
		}
		slices.SortFunc(want, func(a, b pageSums) int { return strings.Compare(a.Label, b.Label) })
		if !slices.Equal(got.Groups, want) {
			t.Errorf("%s: page groups\n%+v\nAPI's\n%+v", name, got.Groups, want)
		}
		if len(want) == 0 {
			if got.Canvases != 0 || !eval[bool](b, `!document.getElementById('no-usage').hidden`) {
				t.Errorf("%s: no usage, but %d chart canvases and no notice", name, got.Canvases)
			}
		} else if got.Canvases != 2 || len(got.Legend) != 2 || len(got.Legend[0]) != len(want)+1 {
			t.Errorf("%s: %d chart canvases, legends %v; want 2 charts of %d series", name, got.Canvases, got.Legend, len(want))
		}
		if group == "api_key_id" {
			for _, g := range want {
				if !slices.Contains(keysA, g.Label) {
					t.Errorf("%s: a group of key %s", name, g.Label)
				}
			}
		}
	}
	checkUsage("last 7 days by model", "1d", "model", false)

	// By key, chosen with the keyboard.
	b.do(chromedp.Focus(chromedp.ID("group")), chromedp.KeyEvent(kb.ArrowDown))
	checkUsage("last 7 days by key", "1d", "api_key_id", false)
	b.choose("range", "24h")
	checkUsage("last 24 hours by key", "1h", "api_key_id", false)
	b.choose("group", "model")
	checkUsage("last 24 hours by model", "1h", "model", false)
	b.choose("range", "30d")
	checkUsage("last 30 days by model", "1d", "model", false)
	// This month: minutes into a month it may hold nothing yet.
	b.choose("range", "month")
	checkUsage("this month by model", "1d", "model", true)
	if got := eval[pageUsage](b, readUsage); got.Start != strconv.FormatInt(thisMonth.Unix(), 10) {
		t.Errorf("this month starts at %s, want %d", got.Start, thisMonth.Unix())
	}
	// A custom range: hourly over three days two to four days ago.
	b.choose("range", "custom")
	b.do(chromedp.SetValue(chromedp.ID("width"), "1h"))
	b.choose("from", now.AddDate(0, 0, -4).Format("2006-01-02"))
	b.choose("to", now.AddDate(0, 0, -2).Format("2006-01-02"))
	checkUsage("custom range, hourly", "1h", "model", false)
	if got := eval[pageUsage](b, readUsage); got.Start != strconv.FormatInt(now.AddDate(0, 0, -4).Truncate(24*time.Hour).Unix(), 10) {
		t.Errorf("custom range starts at %s", got.Start)
	}

	// A range without usage: zeros, and a notice instead of charts.
	b.choose("to", now.AddDate(0, 0, -59).Format("2006-01-02"))
	b.choose("from", now.AddDate(0, 0, -60).Format("2006-01-02"))
	checkUsage("a range without usage", "1h", "model", true)
	if got := eval[pageUsage](b, readUsage); got.Total != (sums{}).page("") || len(got.Groups) != 0 {
		t.Errorf("a range without usage shows %+v", got)
	}

	// The month so far.
	var spend struct {
		SpendUSD string `json:"spend_usd"`
		Budgets  []struct {
			APIKeyID     string `json:"api_key_id"`
			RemainingUSD string `json:"remaining_usd"`
			Exceeded     bool   `json:"exceeded"`
		} `json:"budgets"`
	}
	f.get("/v1/spend", token, http.StatusOK, &spend)
	var credits struct {
		BalanceUSD string `json:"balance_usd"`
	}
	f.get("/v1/credits", token, http.StatusOK, &credits)
	b.waitFor("the month so far", `document.getElementById('credit-balance').textContent !== '–' && document.getElementById('spend-usd').textContent !== '–'`)
	if got := eval[string](b, `document.getElementById('spend-usd').textContent`); got != spend.SpendUSD {
		t.Errorf("spend %q, API's %q", got, spend.SpendUSD)
	}
	if got := eval[string](b, `document.getElementById('credit-balance').textContent`); got != credits.BalanceUSD {
		t.Errorf("credit balance %q, API's %q", got, credits.BalanceUSD)
	}
	var sub struct {
		Changes []invoice.Subscription `json:"changes"`
	}
	f.get("/v1/subscription", token, http.StatusOK, &sub)
	if len(sub.Changes) != 1 {
		t.Fatalf("subscription changes %+v, want the one", sub.Changes)
	}
	if got, want := eval[string](b, `document.getElementById('plan').textContent`), "team since "+sub.Changes[0].EffectiveFrom.UTC().Format("2006-01-02 15:04")+" UTC"; got != want {
		t.Errorf("plan %q, want %q", got, want)
	}
	if len(spend.Budgets) != 2 {
		t.Fatalf("budgets %+v", spend.Budgets)
	}
	for _, bu := range spend.Budgets {
		li := fmt.Sprintf(`document.querySelector('#budgets li[data-key=%q]')`, bu.APIKeyID)
		if got := eval[string](b, li+`.querySelector('.remaining').textContent`); got != bu.RemainingUSD {
			t.Errorf("budget of %q: %q left, API's %q", bu.APIKeyID, got, bu.RemainingUSD)
		}
		if got := eval[bool](b, li+`.classList.contains('exceeded')`); got != bu.Exceeded {
			t.Errorf("budget of %q: exceeded %v, API's %v", bu.APIKeyID, got, bu.Exceeded)
		}
	}

	// The keys: names, creation, revocation; the signed-in one marked.
	var keys struct{ Data []apikey.Key }
	f.get("/v1/keys", token, http.StatusOK, &keys)
	type pageKey struct {
		ID     string `json:"id"`
		Name   string `json:"name"`
		Status string `json:"status"`
		Own    bool   `json:"own"`
	}
	gotKeys := eval[[]pageKey](b, `[...document.querySelectorAll('#keys tbody tr')].map((tr) => ({ id: tr.dataset.key,
		name: tr.querySelector('th').firstChild.textContent, status: tr.querySelector('.key-status').textContent,
		own: !!tr.querySelector('.badge') }))`)
	if len(gotKeys) != len(keys.Data) || len(gotKeys) != 3 {
		t.Fatalf("page keys %+v, API's %+v", gotKeys, keys.Data)
	}
	for i, k := range keys.Data {
		g := gotKeys[i]
		if g.ID != k.ID || g.Name != k.Name || strings.HasPrefix(g.Status, "revoked") != !k.RevokedAt.IsZero() || g.Own != (k.ID == f.keyIDs["ws_a"]) {
			t.Errorf("page key %+v, API's %+v", g, k)
		}
	}

	// Invoices: the list, one opened with the keyboard, its exports downloaded.
	var list struct{ Data []invoice.Invoice }
	f.get("/v1/invoices", token, http.StatusOK, &list)
	gotIDs := eval[[]string](b, `[...document.querySelectorAll('#invoices tbody tr')].map((tr) => tr.dataset.invoiceId)`)
	var wantIDs []string
	for _, inv := range list.Data {
		wantIDs = append(wantIDs, inv.ID)
	}
	slices.Sort(gotIDs)
	slices.Sort(wantIDs)
	if len(wantIDs) != 2 || !slices.Equal(gotIDs, wantIDs) {
		t.Fatalf("page invoices %v, API's %v", gotIDs, wantIDs)
	}
	last := invoice.ID("ws_a", thisMonth.AddDate(0, -1, 0), thisMonth)
	b.do(chromedp.Focus(chromedp.CSS(fmt.Sprintf(`button[data-invoice-id=%q]`, last))), chromedp.KeyEvent(kb.Enter))
	b.waitFor("the invoice", fmt.Sprintf(`document.getElementById('invoice-detail').dataset.invoiceId === %q && !document.getElementById('invoice-detail').hidden`, last))
	var inv invoice.Invoice
	f.get("/v1/invoices/"+last, token, http.StatusOK, &inv)
	amounts := eval[[]string](b, `[...document.querySelectorAll('#invoice-lines tbody tr .amount')].map((td) => td.textContent)`)
	if len(inv.Lines) == 0 || len(amounts) != len(inv.Lines) {
		t.Fatalf("page lines %v, API's %d", amounts, len(inv.Lines))
	}
	for i, l := range inv.Lines {
		if amounts[i] != l.Amount.String() {
			t.Errorf("line %d: %s, API's %s", l.No, amounts[i], l.Amount)
		}
	}
	if got, want := eval[string](b, `document.getElementById('invoice-subtotal').textContent`), inv.Subtotal.String()+" USD"; got != want {
		t.Errorf("subtotal %q, want %q", got, want)
	}
	for ext, button := range map[string]string{"csv": "download-csv", "html": "download-html"} {
		got := b.download(button)
		resp, want := f.raw("/v1/invoices/"+last+"."+ext, token)
		if resp.StatusCode != http.StatusOK || len(want) == 0 || string(got) != string(want) {
			t.Errorf("downloaded %s (%d bytes) differs from GET %s (%d, %d bytes)", ext, len(got), resp.Request.URL.Path, resp.StatusCode, len(want))
		}
	}

	// This month's invoice, on the plan since this hour: each line's quantity and unit price
	// as the invoice's HTML page shows them (invoice.Line.Shown), the plan's fee among them.
	current := invoice.ID("ws_a", thisMonth, thisMonth.AddDate(0, 1, 0))
	b.do(chromedp.Click(chromedp.CSS(fmt.Sprintf(`button[data-invoice-id=%q]`, current))))
	b.waitFor("this month's invoice", fmt.Sprintf(`document.getElementById('invoice-detail').dataset.invoiceId === %q`, current))
	var cur invoice.Invoice
	f.get("/v1/invoices/"+current, token, http.StatusOK, &cur)
	cells := eval[[][]string](b, `[...document.querySelectorAll('#invoice-lines tbody tr')].map((tr) => [tr.cells[1].textContent, tr.cells[3].textContent, tr.cells[4].textContent])`)
	if len(cells) != len(cur.Lines) {
		t.Fatalf("page lines %v, API's %d", cells, len(cur.Lines))
	}
	fees := 0
	for i, l := range cur.Lines {
		q, p := l.Shown()
		if want := []string{l.Kind, q, p}; !slices.Equal(cells[i], want) {
			t.Errorf("line %d: the page shows %q, want %q", l.No, cells[i], want)
		}
		if l.Kind == invoice.KindFee && strings.HasSuffix(q, " hours") && p == "30 per month" {
			fees++
		}
	}
	if fees != 1 {
		t.Errorf("this month's invoice has %d fee lines of the plan, want 1: %q", fees, cells)
	}

	b.checkClean(origin, secrets...)

	// The CSP holds in the browser: an inline script does not run.
	if eval[bool](b, `(() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1';
		document.head.append(s); return window.__inline === 1; })()`) {
		t.Error("an inline script ran")
	}
	b.waitFor("the CSP violation", `window.__csp.length > 0`)
	eval[chromedp.Void](b, `window.__csp.length = 0`)

	html := eval[string](b, `document.documentElement.outerHTML`)
	for _, s := range append(foreign, secrets...) {
		if strings.Contains(html, s) {
			t.Errorf("the page shows %q", s)
		}
	}
	b.checkClean(origin, secrets...)

	// A phone: one column, nothing wider than the screen.
	b.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
	b.waitFor("the phone layout", `document.documentElement.scrollWidth <= window.innerWidth`)
	screenshots(t, b)
	b.do(chromedp.EmulateViewport(1280, 900))

	// Sign out: the key and the data are gone.
	b.do(chromedp.Click(chromedp.ID("sign-out")))
	b.waitFor("the sign-in form", `!document.getElementById('signin').hidden && document.getElementById('dashboard').hidden`)
	if eval[int](b, `sessionStorage.length`) != 0 || eval[string](b, `document.getElementById('total-requests').textContent`) != "–" ||
		eval[int](b, `document.querySelectorAll('#invoices tbody tr, #keys tbody tr').length`) != 0 {
		t.Error("signing out left the key or the data")
	}
	b.do(chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("key-input")))
	if !eval[bool](b, `document.getElementById('dashboard').hidden`) {
		t.Error("a reload after signing out shows the data")
	}
	b.checkClean(origin, secrets...)
}

// screenshots writes docs/usage-page.png (desktop) and docs/usage-page-phone.png when
// VENNA_UPDATE_SCREENSHOT=1; the page is at phone width when called.
func screenshots(t *testing.T, b *tab) {
	t.Helper()
	if os.Getenv("VENNA_UPDATE_SCREENSHOT") != "1" {
		return
	}
	save := func(name string) {
		png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "docs", name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b.choose("range", "7d")
	b.waitFor("the last 7 days", `document.getElementById('totals').dataset.state === 'ready' && document.getElementById('totals').dataset.width === '1d'`)
	b.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(1)))
	b.waitFor("the phone layout", `document.documentElement.scrollWidth <= window.innerWidth`)
	save("usage-page-phone.png")
	b.do(chromedp.EmulateViewport(1280, 900))
	b.waitFor("the desktop layout", `window.innerWidth === 1280`)
	save("usage-page.png")
}

// moduleTab is a browser tab on the page of a server without data, for tests that run
// the page's modules; origin is the server's.
func moduleTab(t *testing.T) (*tab, string) {
	chromiumPath(t)
	hs := httptest.NewServer(adminServer(t))
	t.Cleanup(hs.Close)
	b := newTab(t)
	b.do(chromedp.Navigate(hs.URL + "/"))
	return b, hs.URL
}

// The page shows an invoice line's quantity and unit price as the invoice's HTML page does:
// format.js's lineColumns, run in the browser on each kind of line as the API serves it,
// equals invoice.Line.Shown.
func TestUsagePageLineColumns(t *testing.T) {
	b, origin := moduleTab(t)
	d := decimal.RequireFromString
	for _, l := range []invoice.Line{
		{Kind: invoice.KindUsage, TokenClass: invoice.ClassInput, Quantity: 3200, PerMillion: d("2.50")},
		{Kind: invoice.KindUsage, TokenClass: "output/tier:2", Quantity: 200_000, PerMillion: d("8")},
		{Kind: invoice.KindUsage, TokenClass: "output/package:1000000", Quantity: 2_500_000, PerMillion: d("0.50")},
		{Kind: invoice.KindAdjustment, TokenClass: invoice.ClassOutput, Quantity: 9_007_199_254, PerMillion: d("10")},
		{Kind: invoice.KindReversal, TokenClass: "output/volume:1", Quantity: 1_000_000, PerMillion: d("10")},
		{Kind: invoice.KindFee, Quantity: 516, PerMillion: d("20.00")},
		{Kind: invoice.KindDiscount, DiscountPercent: d("12.5")},
		{Kind: invoice.KindCommitment, PerMillion: d("100")},
		{Kind: invoice.KindIncluded, PerMillion: d("5")},
		{Kind: invoice.KindCredit, GrantID: "cg_1"},
	} {
		raw, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		got, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](
			fmt.Sprintf(`import('./ui/format.js').then((m) => m.lineColumns(%s))`, raw), chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatal(err)
		}
		if q, p := l.Shown(); len(got) != 2 || got[0] != q || got[1] != p {
			t.Errorf("%s %s: the page shows %q, the invoice page %q and %q", l.Kind, l.TokenClass, got, q, p)
		}
	}
	b.checkClean(origin)
}

// The page adds money as the API does: the sums of format.js's addDecimals, run in the
// browser, are shopspring/decimal's to the last digit, however many decimals and however
// large; and token totals are BigInt sums, exact past 2^53 (each count as JSON gives it is
// exact below 2^53, far above any one bucket's tokens).
func TestUsagePageArithmetic(t *testing.T) {
	b, origin := moduleTab(t)
	for name, terms := range map[string][]string{
		"cents":                 {"0.1", "0.2"},
		"trailing zeros":        {"1.50", "2.50"},
		"zero":                  {"0", "0.000"},
		"nano":                  {"0.000000000001", "0.000000000002", "12.5"},
		"negative credit":       {"10.25", "-12.000000000001"},
		"to zero":               {"-0.5", "0.5"},
		"large":                 {"123456789012345678901234.123456789012", "0.000000000001"},
		"many lines of a month": slices.Repeat([]string{"0.0000123", "0.0421875", "1.25"}, 400),
	} {
		t.Run(name, func(t *testing.T) {
			want := decimal.Zero
			for _, s := range terms {
				want = want.Add(decimal.RequireFromString(s))
			}
			args, _ := json.Marshal(terms)
			got, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](
				fmt.Sprintf(`import('./ui/format.js').then((m) => m.addDecimals(...%s))`, args), chromedp.EvalAwaitPromise))
			if err != nil {
				t.Fatal(err)
			}
			if got != want.String() {
				t.Errorf("addDecimals%v = %s, want %s", terms, got, want)
			}
		})
	}
	got, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](
		`import('./ui/format.js').then((m) => m.formatInt(m.toBigInt(9007199254740993n) + 2n))`, chromedp.EvalAwaitPromise))
	if err != nil || got != "9,007,199,254,740,995" {
		t.Errorf("formatInt past 2^53: %q %v", got, err)
	}
	b.checkClean(origin)
}
