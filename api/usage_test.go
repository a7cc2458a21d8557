package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/api"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/invoice"
)

func q(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// Usage is visible within seconds of ingest: events just inserted, never rolled up, are
// in every bucket width. Duplicate deliveries count once, failed requests not at all.
func TestUsageIsFreshWithoutRollup(t *testing.T) {
	f := newFixture(t)
	now := time.Now().UTC()
	ids := f.insert(
		event{ws: "ws_a", at: now.Add(-10 * time.Second), prompt: 100, cached: 40, completion: 50, reasoning: 20, accepted: 3, rejected: 2},
		event{ws: "ws_a", at: now.Add(-5 * time.Second), model: "venna-1-mini", prompt: 10, completion: 5},
		event{ws: "ws_a", at: now.Add(-5 * time.Second), status: "upstream_error", prompt: 999},
		event{ws: "ws_b", at: now.Add(-5 * time.Second), prompt: 7777},
	)
	// The first event delivered again: ingest's at-least-once redelivery.
	f.insert(event{id: ids[0], ws: "ws_a", at: now.Add(-10 * time.Second), prompt: 100, cached: 40, completion: 50, reasoning: 20, accepted: 3, rejected: 2})

	want := map[string]totals{
		"venna-1":      {requests: 1, input: 100, cached: 40, output: 50, reasoning: 20, accepted: 3, rejected: 2},
		"venna-1-mini": {requests: 1, input: 10, output: 5},
	}
	start := now.Add(-time.Hour).Unix()
	for _, width := range []string{"1m", "1h", "1d"} {
		t.Run(width, func(t *testing.T) {
			page := f.usage("ws_a", q("bucket_width=%s&start_time=%d&end_time=%d&group_by=model&limit=%d", width, start, now.Add(time.Minute).Unix(), map[string]int{"1m": 70, "1h": 3, "1d": 2}[width]))
			got := sumPage(page)
			if len(got) != len(want) || got["venna-1"] != want["venna-1"] || got["venna-1-mini"] != want["venna-1-mini"] {
				t.Errorf("usage %+v, want %+v", got, want)
			}
		})
	}
}

// Days and hours the aggregator has rolled up are read from the rollups, the recent part
// from raw events: together they count every event once, and a new event shows up at once.
func TestUsageJoinsRollupsAndRecentEvents(t *testing.T) {
	f := newFixture(t)
	now := time.Now().UTC()
	old := now.Add(-50 * time.Hour) // a day before yesterday at the latest: a whole rolled-up day
	f.insert(
		event{ws: "ws_a", at: old, prompt: 100, completion: 10},
		event{ws: "ws_a", at: now.Add(-90 * time.Minute), prompt: 200, completion: 20},
	)
	f.rollup()
	f.insert(event{ws: "ws_a", at: now.Add(-time.Second), prompt: 300, completion: 30})

	queries := map[string]string{
		"hourly": q("bucket_width=1h&start_time=%d&end_time=%d&limit=60", now.Add(-52*time.Hour).Unix(), now.Add(time.Minute).Unix()),
		"daily":  q("bucket_width=1d&start_time=%d&end_time=%d", now.Add(-72*time.Hour).Unix(), now.Add(time.Minute).Unix()),
	}
	check := func(when string, want totals) {
		t.Helper()
		for name, query := range queries {
			if got := sumPage(f.usage("ws_a", query))[""]; got != want {
				t.Errorf("%s, %s buckets: %+v, want %+v", when, name, got, want)
			}
		}
	}
	check("after a rollup and a new event", totals{requests: 3, input: 600, output: 60})

	// An event arriving late for a window already rolled up waits for the next rollup:
	// old windows are read from the rollups, not from raw events.
	f.insert(event{ws: "ws_a", at: old, prompt: 1000, completion: 100})
	check("late event before the next rollup", totals{requests: 3, input: 600, output: 60})
	f.rollup()
	check("late event after the next rollup", totals{requests: 4, input: 1600, output: 160})
}

// Cost is priced at the price in force when the usage happened, exactly, by the invoice's
// token classes; usage of a model without a price has a null cost, never 0.
func TestUsageCost(t *testing.T) {
	f := newFixture(t)
	day := f.priceChange.Truncate(24 * time.Hour)
	f.insert(
		// Before the change: 1000 uncached input at 2.50, 1000 cached at 1.25, 2000 output at 10.00 per 1M.
		event{ws: "ws_a", at: day.Add(6 * time.Hour), prompt: 2000, cached: 1000, completion: 2000, reasoning: 500},
		// After: doubled prices.
		event{ws: "ws_a", at: day.Add(18 * time.Hour), prompt: 1000, completion: 1000},
		event{ws: "ws_a", at: day.Add(18 * time.Hour), model: "venna-1-mini", prompt: 1000000, cached: 1000000},
		event{ws: "ws_a", at: day.Add(19 * time.Hour), model: "unpriced", prompt: 10, completion: 10},
	)
	before := decimal.RequireFromString("0.0025").Add(decimal.RequireFromString("0.00125")).Add(decimal.RequireFromString("0.02"))
	after := decimal.RequireFromString("0.005").Add(decimal.RequireFromString("0.02"))
	mini := decimal.RequireFromString("0.075")

	check := func(t *testing.T) {
		t.Helper()
		daily := f.usage("ws_a", q("bucket_width=1d&start_time=%d&end_time=%d&group_by=model", day.Unix(), day.Add(24*time.Hour).Unix()))
		costs := map[string]*string{}
		for _, b := range daily.Data {
			for _, r := range b.Results {
				costs[*r.Model] = r.Cost
			}
		}
		wantCost(t, "venna-1 over the price change", costs["venna-1"], before.Add(after))
		wantCost(t, "venna-1-mini", costs["venna-1-mini"], mini)
		if c, ok := costs["unpriced"]; !ok || c != nil {
			t.Errorf("unpriced model: cost %v (present %v), want null", c, ok)
		}
		ungrouped := f.usage("ws_a", q("bucket_width=1d&start_time=%d&end_time=%d", day.Unix(), day.Add(24*time.Hour).Unix()))
		if r := ungrouped.Data[0].Results; len(r) != 1 || r[0].Cost != nil {
			t.Errorf("ungrouped bucket with unpriced usage: %+v, want one result with a null cost", r)
		}
		hourly := f.usage("ws_a", q("bucket_width=1h&start_time=%d&end_time=%d&models=venna-1", day.Unix(), day.Add(24*time.Hour).Unix()))
		got := map[int64]*string{}
		for _, b := range hourly.Data {
			for _, r := range b.Results {
				got[b.StartTime] = r.Cost
			}
		}
		wantCost(t, "06:00 bucket", got[day.Add(6*time.Hour).Unix()], before)
		wantCost(t, "18:00 bucket", got[day.Add(18*time.Hour).Unix()], after)
		if len(got) != 2 {
			t.Errorf("models=venna-1 returned %d hourly buckets with usage, want 2", len(got))
		}
	}
	t.Run("raw events", check)
	f.rollup()
	t.Run("rollups", check)

	// ws_b pays its own venna-1 price (1.00 / 0.50 / 4.00 per 1M) less 10%.
	f.insert(event{ws: "ws_b", at: day.Add(18 * time.Hour), prompt: 2000, cached: 1000, completion: 1000})
	f.rollup() // the hour is rolled up already: the event waits for the next rollup
	page := f.usage("ws_b", q("bucket_width=1d&start_time=%d&end_time=%d", day.Unix(), day.Add(24*time.Hour).Unix()))
	listed := decimal.RequireFromString("0.001").Add(decimal.RequireFromString("0.0005")).Add(decimal.RequireFromString("0.004"))
	if r := page.Data[0].Results; len(r) != 1 {
		t.Errorf("ws_b: %+v, want one result", r)
	} else {
		wantCost(t, "ws_b's own price less its discount", r[0].Cost, listed.Mul(decimal.RequireFromString("0.9")))
	}
}

// A month of usage costs what its invoice says: the sum of the daily costs is the
// invoice's subtotal, for a workspace on the price book and one with its own prices and
// a discount.
func TestUsageCostAddsUpToTheInvoice(t *testing.T) {
	f := newFixture(t)
	at := thisMonth(t)
	for _, ws := range []string{"ws_a", "ws_b"} {
		f.insert(
			event{ws: ws, at: at, prompt: 123457, cached: 23456, completion: 34567},
			event{ws: ws, at: at.Add(time.Hour), model: "venna-1-mini", prompt: 99991, cached: 7, completion: 12345},
		)
	}
	f.rollup()
	invs := f.runInvoices()
	start, end := invoice.Month(time.Now())
	for _, ws := range []string{"ws_a", "ws_b"} {
		page := f.usage(ws, q("bucket_width=1d&start_time=%d&end_time=%d&limit=31", start.Unix(), end.Unix()))
		sum := decimal.Zero
		for _, b := range page.Data {
			for _, r := range b.Results {
				if r.Cost == nil {
					t.Fatalf("%s: null cost in %+v", ws, b)
				}
				sum = sum.Add(decimal.RequireFromString(*r.Cost))
			}
		}
		if inv := invs[ws]; inv == nil || !sum.Equal(inv.Subtotal) {
			t.Errorf("%s: daily costs add up to %s, invoice subtotal %+v", ws, sum, inv)
		}
	}
}

func wantCost(t *testing.T, what string, got *string, want decimal.Decimal) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: cost null, want %s", what, want)
		return
	}
	if d, err := decimal.NewFromString(*got); err != nil || !d.Equal(want) {
		t.Errorf("%s: cost %q, want exactly %s", what, *got, want)
	}
}

func TestUsageGroupByKeyAndFilters(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	k2, _, err := f.store.IssueKey(ctx, "ws_a", "second")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	f.insert(
		event{ws: "ws_a", at: now.Add(-time.Minute), prompt: 1},
		event{ws: "ws_a", at: now.Add(-time.Minute), key: k2.ID, prompt: 2},
		event{ws: "ws_a", at: now.Add(-time.Minute), key: k2.ID, model: "venna-1-mini", prompt: 4},
	)
	base := q("bucket_width=1h&start_time=%d", now.Add(-2*time.Hour).Unix())
	cases := []struct {
		name, query string
		want        map[string]uint64 // label → input tokens
	}{
		{"none", "", map[string]uint64{"": 7}},
		{"api_key_id", "&group_by=api_key_id", map[string]uint64{f.keyIDs["ws_a"]: 1, k2.ID: 6}},
		{"both, comma-separated", "&group_by=model,api_key_id", map[string]uint64{"venna-1/" + f.keyIDs["ws_a"]: 1, "venna-1/" + k2.ID: 2, "venna-1-mini/" + k2.ID: 4}},
		{"both, repeated with []", "&group_by[]=model&group_by[]=api_key_id", map[string]uint64{"venna-1/" + f.keyIDs["ws_a"]: 1, "venna-1/" + k2.ID: 2, "venna-1-mini/" + k2.ID: 4}},
		{"models filter", "&models=venna-1-mini", map[string]uint64{"": 4}},
		{"api_key_ids filter", "&group_by=model&api_key_ids=" + k2.ID, map[string]uint64{"venna-1": 2, "venna-1-mini": 4}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := map[string]uint64{}
			for l, tot := range sumPage(f.usage("ws_a", base+c.query)) {
				got[l] = tot.input
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("input tokens by group %v, want %v", got, c.want)
			}
		})
	}
}

// Following next_page walks the whole range once, in order.
func TestUsagePagination(t *testing.T) {
	f := newFixture(t)
	end := time.Now().UTC().Truncate(time.Hour)
	start := end.Add(-5 * time.Hour)
	for h := range 5 {
		f.insert(event{ws: "ws_a", at: start.Add(time.Duration(h)*time.Hour + time.Minute), prompt: uint64(h + 1)})
	}
	query := q("bucket_width=1h&start_time=%d&end_time=%d&limit=2", start.Unix(), end.Unix())
	var starts []int64
	var input uint64
	page := f.usage("ws_a", query)
	for n := 0; ; n++ {
		for _, b := range page.Data {
			starts = append(starts, b.StartTime)
			for _, r := range b.Results {
				input += r.InputTokens
			}
		}
		if !page.HasMore {
			if page.NextPage != nil {
				t.Errorf("last page has next_page %q", *page.NextPage)
			}
			break
		}
		if n > 5 || page.NextPage == nil {
			t.Fatalf("page %d: has_more without a usable next_page: %+v", n, page)
		}
		page = f.usage("ws_a", query+"&page="+*page.NextPage)
	}
	if len(starts) != 5 || input != 15 {
		t.Errorf("pages gave %d buckets (%v) and %d input tokens, want 5 hourly buckets and 15", len(starts), starts, input)
	}
	for i := 1; i < len(starts); i++ {
		if starts[i] != starts[i-1]+3600 {
			t.Errorf("bucket %d starts at %d after %d: not consecutive hours", i, starts[i], starts[i-1])
		}
	}
}

// Every bad parameter is a 400 naming it, never a 500.
func TestUsageBadParameters(t *testing.T) {
	f := newFixture(t)
	now := time.Now().Unix()
	day := int64(86400)
	longList := strings.Repeat("&models=m", 101)
	longKeys := strings.Repeat("&api_key_ids[]=k", 101)
	cases := []struct {
		name, query, param string
	}{
		{"missing start_time", "bucket_width=1h", "start_time"},
		{"start_time not a number", "start_time=yesterday", "start_time"},
		{"start_time negative", "start_time=-5", "start_time"},
		{"start_time in milliseconds", q("start_time=%d", now*1000), "start_time"},
		{"end_time not a number", q("start_time=%d&end_time=1.5", now-day), "end_time"},
		{"unknown bucket_width", q("start_time=%d&bucket_width=1w", now-day), "bucket_width"},
		{"unknown group_by", q("start_time=%d&group_by=project_id", now-day), "group_by"},
		{"one bad group_by of two", q("start_time=%d&group_by=model,user", now-day), "group_by"},
		{"limit zero", q("start_time=%d&limit=0", now-day), "limit"},
		{"limit over any page", q("start_time=%d&bucket_width=1m&limit=1441", now-day), "limit"},
		{"page negative", q("start_time=%d&page=-3600", now-day), "page"},
		{"limit not a number", q("start_time=%d&limit=ten", now-day), "limit"},
		{"page not a number", q("start_time=%d&page=abc", now-day), "page"},
		{"too many models", q("start_time=%d%s", now-day, longList), "models"},
		{"too many api_key_ids", q("start_time=%d%s", now-day, longKeys), "api_key_ids"},
		// Given empty is not left out (Schemathesis found bucket_width= served as 1d).
		{"bucket_width empty", q("start_time=%d&bucket_width=", now-day), "bucket_width"},
		{"start_time empty", "start_time=", "start_time"},
		{"end_time empty", q("start_time=%d&end_time=", now-day), "end_time"},
		{"limit empty", q("start_time=%d&limit=", now-day), "limit"},
		{"page empty", q("start_time=%d&page=", now-day), "page"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body apierr.Body
			f.get("/v1/usage?"+c.query, f.tokens["ws_a"], http.StatusBadRequest, &body)
			if body.Error.Param == nil || *body.Error.Param != c.param || body.Error.Type != "invalid_request_error" {
				t.Errorf("error %+v, want an invalid_request_error naming %q", body.Error, c.param)
			}
		})
	}
	// The admin's view of a workspace validates the same way.
	var body apierr.Body
	f.get("/v1/admin/workspaces/ws_a/usage?start_time=x", adminToken, http.StatusBadRequest, &body)
	if body.Error.Param == nil || *body.Error.Param != "start_time" {
		t.Errorf("admin usage with a bad start_time: %+v", body.Error)
	}
}

// What the spec allows is served: an empty or reversed range is an empty page, a limit
// above a bucket width's page size gives a full page, a page is taken to its bucket and
// the range, and a range of any length is served a page at a time.
func TestUsageLenientParameters(t *testing.T) {
	f := newFixture(t)
	now := time.Now().Unix()
	day := int64(86400)
	hour := now / 3600 * 3600
	cases := []struct {
		name, query string
		buckets     int
		first       int64 // start of the first bucket (0: none)
		more        bool
	}{
		{"end_time before start_time", q("start_time=%d&end_time=%d", now-day, now-2*day), 0, 0, false},
		{"end_time equal to start_time", q("start_time=%d&end_time=%d&bucket_width=1h", hour-day, hour-day), 0, 0, false},
		{"start_time in the future without end_time", q("start_time=%d", now+3600), 0, 0, false},
		{"1d limit above 31", q("start_time=%d&end_time=%d&limit=40", now-60*day, now), 31, now/day*day - 60*day, true},
		{"1h limit above 168", q("start_time=%d&end_time=%d&bucket_width=1h&limit=500", hour-300*3600, hour), 168, hour - 300*3600, true},
		{"1m over two days", q("start_time=%d&end_time=%d&bucket_width=1m", hour-2*day, hour), 60, hour - 2*day, true},
		{"page before start_time", q("start_time=%d&end_time=%d&bucket_width=1h&page=%d", hour-day, hour, hour-2*day), 24, hour - day, false},
		{"page off the bucket grid", q("start_time=%d&end_time=%d&bucket_width=1h&page=%d", hour-day, hour, hour-3600+17), 1, hour - 3600, false},
		{"page after end_time", q("start_time=%d&end_time=%d&bucket_width=1h&page=%d", hour-2*day, hour-day, hour), 0, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var page api.UsagePage
			f.get("/v1/usage?"+c.query, f.tokens["ws_a"], http.StatusOK, &page)
			if len(page.Data) != c.buckets || page.HasMore != c.more || (c.buckets > 0 && page.Data[0].StartTime != c.first) {
				first := int64(0)
				if len(page.Data) > 0 {
					first = page.Data[0].StartTime
				}
				t.Errorf("%d buckets from %d, has_more %t; want %d from %d, %t", len(page.Data), first, page.HasMore, c.buckets, c.first, c.more)
			}
		})
	}
}

// Buckets are whole and aligned to UTC; without end_time the range ends now.
func TestUsageBucketGrid(t *testing.T) {
	f := newFixture(t)
	now := time.Now().UTC()
	page := f.usage("ws_a", q("bucket_width=1d&start_time=%d", now.Add(-49*time.Hour).Unix()))
	if len(page.Data) != 3 && len(page.Data) != 4 {
		t.Fatalf("%d daily buckets for the last 49 hours, want 3 or 4", len(page.Data))
	}
	first, last := page.Data[0], page.Data[len(page.Data)-1]
	if first.StartTime%86400 != 0 || first.EndTime-first.StartTime != 86400 {
		t.Errorf("first bucket [%d, %d) is not a UTC day", first.StartTime, first.EndTime)
	}
	if last.StartTime > now.Unix() || last.EndTime <= now.Unix() {
		t.Errorf("last bucket [%d, %d) does not contain now (%d)", last.StartTime, last.EndTime, now.Unix())
	}
	if page.HasMore || page.Object != "page" || first.Object != "bucket" {
		t.Errorf("page shape: %+v", page)
	}
	var _ api.UsagePage = page
}
