package sqlset_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/schema"
)

// fixture is the data every server under comparison gets, fixed once per run: three
// workspaces with keys (one renamed, one key revoked), raw events over the last two days
// and in the previous month, some delivered twice and some failed, a price book of two
// versions with a change inside a day of this month, a workspace's own prices and
// another's discount, and invoices: finalized, draft, void, and one from before
// migration 0003 (invoice_lines only).
type fixture struct {
	now, hour, month, prev, old time.Time
	priceChange                 time.Time // inside a day of this month: that day is priced by the hour
	ingested                    time.Time
	events                      [][]any
	hours                       []time.Time // the hours of the billable events
}

var d = decimal.RequireFromString

func newFixture(now time.Time) *fixture {
	now = now.Truncate(time.Second)
	f := &fixture{now: now, hour: now.Truncate(time.Hour)}
	f.month = time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	f.prev = f.month.AddDate(0, -1, 0)
	f.old = f.month.AddDate(0, -2, 0)
	f.priceChange = f.month.Add(24*time.Hour + 6*time.Hour)
	f.ingested = now.Add(-time.Hour)
	seen := map[int64]bool{}
	for i := range 300 {
		var at time.Time
		switch {
		case i < 200: // the last two days
			at = f.hour.Add(-time.Duration(1+i%50) * time.Hour).Add(7 * time.Minute)
		case i < 260: // the previous month
			at = f.prev.Add(72 * time.Hour).Add(time.Duration(i%20) * time.Hour).Add(11 * time.Minute)
		default: // the first two days of this month, across the price change
			at = f.month.Add(time.Duration(18+(i%20)*2) * time.Hour).Add(3 * time.Minute)
		}
		ws := []string{"ws_a", "ws_b", "ws_c"}[i%3]
		key := map[string][]string{"ws_a": {"key_a1", "key_a2"}, "ws_b": {"key_b1"}, "ws_c": {"key_c1"}}[ws]
		model := []string{"venna-1", "venna-1-mini"}[i%2]
		status, httpStatus := "ok", uint16(200)
		prompt, cached, completion := uint64(1000+7*i), uint64(100*(i%4)), uint64(200+3*i)
		if i%17 == 0 {
			status, httpStatus, prompt, cached, completion = "upstream_error", 502, 0, 0, 0
		} else {
			seen[at.Truncate(time.Hour).Unix()] = true
		}
		reasoning := uint64(10 * (i % 5))
		if reasoning > completion {
			reasoning = completion
		}
		f.events = append(f.events, []any{fmt.Sprintf("evt-%04d", i), uint8(1), at, f.ingested, ws, key[i%len(key)], model,
			"upstream-" + model, "up-" + model, fmt.Sprintf("req-%04d", i), status, httpStatus, uint8(i % 2), uint8(boolInt(i%11 == 0)),
			uint32(100 + i), prompt, cached, completion, reasoning, uint64(i % 3), uint64(i % 2), prompt + completion,
			int32(i % 4), int64(i)})
	}
	for h := range seen {
		f.hours = append(f.hours, time.Unix(h, 0).UTC())
	}
	return f
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// redelivered is the first 20 events again, as a redelivery stores them: ingested later,
// at other offsets.
func (f *fixture) redelivered() [][]any {
	var out [][]any
	for _, e := range f.events[:20] {
		c := append([]any(nil), e...)
		c[3] = f.ingested.Add(5 * time.Second)
		c[23] = e[23].(int64) + 1000
		out = append(out, c)
	}
	return out
}

var legacyColumns = []string{"invoice_id", "version", "line_no", "workspace_id", "model", "token_class", "quantity", "usd_per_million", "amount"}

// legacyLines are inv_c_old's lines, in invoice_lines as before migration 0003.
func (f *fixture) legacyLines() [][]any {
	return [][]any{
		{"inv_c_old", uint64(2), uint32(1), "ws_c", "venna-1", "input", uint64(10000), d("2.5"), d("0.025")},
		{"inv_c_old", uint64(2), uint32(2), "ws_c", "venna-1", "output", uint64(1250), d("10"), d("0.0125")},
		{"inv_c_old", uint64(1), uint32(1), "ws_c", "venna-1", "input", uint64(9000), d("2.5"), d("0.0225")},
	}
}

func unix(t time.Time) string { return fmt.Sprint(t.Unix()) }

// delivery is a webhook_deliveries row of the fixture.
func delivery(id, event, endpoint string, created time.Time, status string, attempts uint32, next time.Time, claimedBy string, claimedUntil time.Time, version uint64) []any {
	return []any{id, event, endpoint, "ws_a", "invoice.finalized", uint8(0), created, status, attempts, next, time.Unix(0, 0).UTC(),
		uint16(0), "", claimedBy, claimedUntil, version}
}

func dt(ts ...time.Time) string {
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = fmt.Sprintf("toDateTime(%d, 'UTC')", t.Unix())
	}
	return strings.Join(parts, ", ")
}

func days(hours []time.Time) []time.Time {
	seen := map[int64]bool{}
	var out []time.Time
	for _, h := range hours {
		d := h.Truncate(24 * time.Hour)
		if !seen[d.Unix()] {
			seen[d.Unix()] = true
			out = append(out, d)
		}
	}
	return out
}

func bounds(ts []time.Time, width time.Duration) (string, string) {
	lo, hi := ts[0], ts[0]
	for _, t := range ts {
		if t.Before(lo) {
			lo = t
		}
		if t.After(hi) {
			hi = t
		}
	}
	return unix(lo), unix(hi.Add(width))
}

// examples are the statements in the order the test runs them: the fixture written
// through the catalogue's own inserts, then the rollups, then every read.
func (f *fixture) examples() []example {
	const v1, v2 = uint64(1_000), uint64(2_000)
	prices := func(version uint64, from time.Time, scale string) [][]any {
		var rows [][]any
		for _, m := range []struct{ model, in, cached, out string }{
			{"venna-1", "2.5", "1.25", "10"}, {"venna-1-mini", "0.15", "0.075", "0.6"},
		} {
			for class, p := range map[string]string{"input": m.in, "cached_input": m.cached, "output": m.out} {
				rows = append(rows, []any{m.model, class, from, d(p).Mul(d(scale)), version})
			}
		}
		return rows
	}
	book := append(prices(v1, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), "1"), prices(v2, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), "1")...)
	book = append(book, prices(v2, f.priceChange, "0.8")...)

	inv := func(id, ws string, period time.Time, status string, subtotal string, version uint64) []any {
		end := period.AddDate(0, 1, 0)
		finalized := time.Unix(0, 0).UTC()
		if status != "draft" {
			finalized = end.Add(72 * time.Hour)
		}
		return []any{id, ws, period, end, status, "USD", d(subtotal), d(subtotal).Round(2), f.ingested, finalized, version}
	}
	item := func(id string, version uint64, no uint32, ws string, period time.Time, kind string, service time.Time, model, class string, qty uint64, price, pct, amount string) []any {
		return []any{id, version, no, ws, period, kind, service, service.AddDate(0, 1, 0), model, class, qty, d(price), d(pct), d(amount)}
	}
	hourWindows := f.hours
	dayWindows := days(f.hours)
	hlo, hhi := bounds(hourWindows, time.Hour)
	dlo, dhi := bounds(dayWindows, 24*time.Hour)
	segment := func(col string) string {
		return fmt.Sprintf("toUInt64(%s >= toDateTime(%d, 'UTC'))", col, f.priceChange.Unix())
	}
	monthEnd := f.month.AddDate(0, 1, 0)
	usageCond := func(col string, from, to time.Time) string {
		return fmt.Sprintf("workspace_id = ? AND (%s >= toDateTime(%d, 'UTC') AND %s < toDateTime(%d, 'UTC')) AND has(?, model)", col, from.Unix(), col, to.Unix())
	}
	twoMonths := f.prev.AddDate(0, 2, 0)

	return []example{
		// The schema (migrate ran these once already; they are idempotent).
		{set: "schema", name: "create_database", fill: []string{"on_cluster", ""}},
		{set: "schema", name: "create_schema_migrations", prepare: func(sql, db string) string {
			out, err := schema.Cluster{}.Statements(db, sql)
			if err != nil || len(out) != 1 {
				panic(fmt.Sprint("qualify create_schema_migrations: ", out, err))
			}
			return out[0]
		}},
		{set: "schema", name: "record_migration", rows: [][]any{{uint32(9999), "9999_catalogue_test", f.ingested}}},
		{set: "schema", name: "applied_migrations"},
		{set: "schema", name: "tables", fill: nil, args: []any{"{db}"}},

		// The fixture, through the inserts that write it in production.
		{set: "apikey", name: "insert_workspace", rows: [][]any{
			{"ws_a", "Alpha", f.old, uint64(1)}, {"ws_b", "Beta", f.old, uint64(1)}, {"ws_c", "Gamma", f.old, uint64(1)},
			{"ws_a", "Alpha Inc.", f.old, uint64(2)},
		}},
		{set: "apikey", name: "insert_key", rows: [][]any{
			{"key_a1", "ws_a", "laptop", strings.Repeat("a", 64), f.old, time.Unix(0, 0).UTC(), uint64(1)},
			{"key_a2", "ws_a", "ci", strings.Repeat("b", 64), f.old, time.Unix(0, 0).UTC(), uint64(1)},
			{"key_b1", "ws_b", "server", strings.Repeat("c", 64), f.old, time.Unix(0, 0).UTC(), uint64(1)},
			{"key_c1", "ws_c", "batch", strings.Repeat("d", 64), f.old, time.Unix(0, 0).UTC(), uint64(1)},
			{"key_c1", "ws_c", "batch", strings.Repeat("d", 64), f.old, f.prev, uint64(2)},
		}},
		{set: "ingest", name: "insert_events", rows: append(append([][]any{}, f.events...), f.redelivered()...)},
		{set: "invoice", name: "insert_prices", rows: book},
		{set: "invoice", name: "insert_workspace_prices", rows: [][]any{
			{"ws_b", "venna-1", "input", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), d("2"), v2},
			{"ws_b", "venna-1", "cached_input", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), d("1"), v2},
			{"ws_b", "venna-1", "output", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), d("8"), v2},
		}},
		{set: "invoice", name: "insert_workspace_discounts", rows: [][]any{
			{"ws_c", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), d("10"), v2},
		}},
		{set: "invoice", name: "insert_invoice_items", rows: [][]any{
			item("inv_a_prev", 7, 1, "ws_a", f.prev, "usage", f.prev, "venna-1", "input", 5000, "2.5", "0", "0.0125"),
			item("inv_a_prev", 7, 2, "ws_a", f.prev, "usage", f.prev, "venna-1", "output", 3000, "10", "0", "0.03"),
			item("inv_a_now", 9, 1, "ws_a", f.month, "usage", f.month, "venna-1-mini", "input", 4000, "0.15", "0", "0.0006"),
			item("inv_a_now", 9, 2, "ws_a", f.month, "adjustment", f.old, "venna-1", "output", 1000, "10", "0", "0.01"),
			item("inv_b_prev", 5, 1, "ws_b", f.prev, "usage", f.prev, "venna-1", "input", 2000, "2", "0", "0.004"),
			item("inv_b_prev", 6, 1, "ws_b", f.prev, "usage", f.prev, "venna-1", "input", 2000, "2", "0", "0.004"),
			item("inv_c_prev", 3, 1, "ws_c", f.prev, "usage", f.prev, "venna-1-mini", "output", 10000, "0.6", "0", "0.006"),
			item("inv_c_prev", 3, 2, "ws_c", f.prev, "discount", f.prev, "", "", 0, "0", "10", "-0.0006"),
			item("inv_c_prev", 3, 3, "ws_c", f.prev, "credit", f.prev, "gr_c1", "", 0, "0", "0", "-0.004"),
			item("inv_b_prev", 5, 2, "ws_b", f.prev, "credit", f.prev, "gr_b1", "", 0, "0", "0", "-0.001"),
		}},
		{set: "invoice", name: "insert_invoices", rows: [][]any{
			inv("inv_a_prev", "ws_a", f.prev, "finalized", "0.0425", 7),
			inv("inv_a_now", "ws_a", f.month, "draft", "0.0106", 9),
			inv("inv_b_prev", "ws_b", f.prev, "finalized", "0.004", 5),
			inv("inv_b_prev", "ws_b", f.prev, "void", "0.004", 6),
			inv("inv_c_prev", "ws_c", f.prev, "finalized", "0.0054", 3),
			inv("inv_c_old", "ws_c", f.old, "finalized", "0.0375", 2),
		}},
		// inv_c_old's lines are in invoice_lines only, as before migration 0003: upgraded.
		{set: "invoice", name: "upgrade_invoice_lines"},

		// Credits.
		{set: "invoice", name: "insert_grant", rows: [][]any{
			{"gr_c1", "ws_c", d("5"), f.old, time.Unix(0, 0).UTC(), uint16(0), "welcome", f.old, uint8(0), uint64(1)},
			{"gr_c2", "ws_c", d("1.5"), f.prev, f.month.AddDate(0, 1, 0), uint16(3), "promo", f.prev, uint8(0), uint64(1)},
			{"gr_b1", "ws_b", d("2"), f.prev, time.Unix(0, 0).UTC(), uint16(0), "", f.prev, uint8(0), uint64(1)},
			{"gr_b1", "ws_b", d("2"), f.prev, time.Unix(0, 0).UTC(), uint16(0), "", f.prev, uint8(1), uint64(2)},
		}},
		{set: "invoice", name: "insert_billing_mode", rows: [][]any{
			{"ws_c", f.old, uint8(1), uint64(1)}, {"ws_b", f.prev, uint8(1), uint64(2)}, {"ws_b", f.month, uint8(0), uint64(3)},
		}},
		{set: "invoice", name: "grants", fill: []string{"workspaces", ""}},
		{set: "invoice", name: "credits_applied", fill: []string{"workspaces", "AND workspace_id IN ('ws_b', 'ws_c')"}},
		{set: "invoice", name: "billing_modes"},

		// Plans.
		{set: "invoice", name: "insert_plans", rows: [][]any{
			{"pro", f.old, "Pro", d("20"), d("100"), d("0"), v2},
			{"pro", f.month, "Pro", d("25"), d("100"), d("5"), v2},
		}},
		{set: "invoice", name: "insert_plan_rates", rows: [][]any{
			{"pro", f.old, "venna-1", "output", "graduated", uint16(1), uint64(100000), d("10"), uint64(0), d("0"), v2},
			{"pro", f.old, "venna-1", "output", "graduated", uint16(2), uint64(0), d("8"), uint64(0), d("0"), v2},
			{"pro", f.month, "venna-1-mini", "output", "package", uint16(1), uint64(0), d("0"), uint64(1000000), d("0.5"), v2},
		}},
		{set: "invoice", name: "insert_subscription", rows: [][]any{
			{"ws_a", f.prev, "pro", f.prev, uint64(1)}, {"ws_a", f.month, "", f.month, uint64(2)}, {"ws_a", f.month, "pro", f.month, uint64(3)},
			{"ws_b", f.month, "pro", f.month, uint64(1)},
		}},
		{set: "invoice", name: "subscriptions", fill: []string{"workspaces", "AND workspace_id IN ('ws_a')"}},

		// Stripe pushes: ws_a's previous invoice pushed, ws_c's halfway; the others pending.
		{set: "stripesync", name: "insert_customer", rows: [][]any{
			{"ws_a", "cus_a", f.ingested, uint64(1)}, {"ws_c", "cus_c", f.ingested, uint64(2)}, {"ws_a", "cus_a", f.ingested, uint64(3)},
		}},
		{set: "stripesync", name: "insert_sync_state", rows: [][]any{
			{"inv_a_prev", "ws_a", f.prev, uint64(7), "items", "", "cus_a", "in_a", uint32(1), uint32(2), int64(4), "usd", uint32(0), "", time.Unix(0, 0).UTC(), f.ingested, uint64(10)},
			{"inv_a_prev", "ws_a", f.prev, uint64(7), "finalized", "finalized", "cus_a", "in_a", uint32(2), uint32(2), int64(4), "usd", uint32(0), "", time.Unix(0, 0).UTC(), f.ingested, uint64(11)},
			{"inv_c_prev", "ws_c", f.prev, uint64(3), "invoice_created", "", "cus_c", "in_c", uint32(0), uint32(3), int64(1), "usd", uint32(2), "stripe: 500", f.ingested.Add(time.Hour), f.ingested, uint64(12)},
		}},
		{set: "stripesync", name: "pending", fill: []string{"since", unix(f.old)}},
		{set: "stripesync", name: "sync_states", fill: []string{"where", "workspace_id = ?"}, args: []any{"ws_a"}},
		{set: "stripesync", name: "customer", args: []any{"ws_c"}},
		{set: "stripesync", name: "workspace_name", args: []any{"ws_a"}},

		// Spend control.
		{set: "spend", name: "insert_budget", rows: [][]any{
			{"ws_a", "", f.old, uint8(1), d("10"), []uint8{50, 80, 100}, uint8(1), uint64(1)},
			{"ws_a", "", f.month, uint8(1), d("0.05"), []uint8{50, 100}, uint8(1), uint64(2)},
			{"ws_a", "key_a2", f.month, uint8(1), d("0.01"), []uint8{}, uint8(0), uint64(3)},
			{"ws_b", "", f.prev, uint8(0), d("0"), []uint8{}, uint8(0), uint64(4)},
		}},
		{set: "spend", name: "insert_rate_limit", rows: [][]any{
			{"ws_a", "", f.old, uint32(600), uint64(100000), uint64(1)},
			{"ws_a", "key_a1", f.month, uint32(60), uint64(0), uint64(2)},
		}},
		{set: "spend", name: "insert_alert", rows: [][]any{
			{"alert_1", "budget.threshold_reached", "ws_a", "", f.month, uint16(50), d("0.05"), d("0.03"), uint8(1), f.ingested, uint64(5)},
			{"alert_2", "budget.exceeded", "ws_a", "", f.month, uint16(100), d("0.05"), d("0.06"), uint8(1), f.ingested, uint64(6)},
		}},
		{set: "spend", name: "budgets"},
		{set: "spend", name: "rate_limits"},
		{set: "spend", name: "alerts", fill: []string{"since", unix(f.prev)}, args: []any{"ws_a"}},
		{set: "spend", name: "alerted", fill: []string{"period", unix(f.month)}},

		// Webhooks: two endpoints (one disabled in its second version), a rotated secret,
		// events of the fixture's invoices, deliveries at several steps, attempts.
		{set: "webhook", name: "insert_endpoint", rows: [][]any{
			{"we_a", "ws_a", "https://hooks.example.com/a", "billing", []string{"*"}, uint8(1), f.old, f.old, uint64(1)},
			{"we_g", "", "http://127.0.0.1:9/all", "", []string{"invoice.finalized", "invoice.voided"}, uint8(1), f.old, f.old, uint64(1)},
			{"we_a", "ws_a", "https://hooks.example.com/a", "billing", []string{"*"}, uint8(0), f.old, f.prev, uint64(2)},
			{"we_b", "ws_b", "https://hooks.example.com/b", "", []string{"budget.exceeded"}, uint8(1), f.prev, f.prev, uint64(1)},
		}},
		{set: "webhook", name: "endpoints", fill: []string{"where", "1 = 1"}},
		{set: "webhook", name: "insert_secret", rows: [][]any{
			{"we_a", "whsec_1", f.old, time.Unix(0, 0).UTC(), uint64(1)},
			{"we_g", "whsec_2", f.old, time.Unix(0, 0).UTC(), uint64(1)},
			{"we_g", "whsec_3", f.prev, time.Unix(0, 0).UTC(), uint64(2)},
			{"we_g", "whsec_2", f.old, f.prev.Add(24 * time.Hour), uint64(2)},
		}},
		{set: "webhook", name: "secrets", fill: []string{"where", "has(?, endpoint_id)"}, args: []any{[]string{"we_a", "we_g"}}},
		{set: "webhook", name: "read_watermark"},
		{set: "webhook", name: "advance_watermark", args: []any{f.ingested.Unix(), uint64(7)}},
		{set: "webhook", name: "changed_invoices", fill: []string{"since", "0"}},
		{set: "webhook", name: "changed_alerts", fill: []string{"since", unix(f.prev)}},
		{set: "webhook", name: "changed_grants", fill: []string{"since_ns", "2"}},
		{set: "webhook", name: "insert_events", rows: [][]any{
			{"evt_1", "invoice.created", "ws_a", "inv_a_prev", f.prev, f.ingested, `{"id":"evt_1"}`, uint64(1)<<63 - 5},
			{"evt_2", "invoice.finalized", "ws_a", "inv_a_prev", f.month, f.ingested, `{"id":"evt_2"}`, uint64(1)<<63 - 5},
			{"evt_2", "invoice.finalized", "ws_a", "inv_a_prev", f.month, f.ingested, `{"id":"evt_2","later":true}`, uint64(1)<<63 - 9},
			{"evt_3", "budget.exceeded", "ws_b", "alert_2", f.month, f.ingested, `{"id":"evt_3"}`, uint64(1)<<63 - 5},
		}},
		{set: "webhook", name: "recorded_events", args: []any{[]string{"evt_2", "evt_9"}}},
		{set: "webhook", name: "insert_deliveries", rows: [][]any{
			delivery("wd_1", "evt_1", "we_a", f.ingested, "pending", 0, f.ingested, "", time.Unix(0, 0).UTC(), 10),
			delivery("wd_2", "evt_2", "we_g", f.ingested, "pending", 0, f.ingested, "", time.Unix(0, 0).UTC(), 10),
			delivery("wd_2", "evt_2", "we_g", f.ingested, "pending", 0, f.ingested, "disp-a", f.now.Add(time.Hour), 1<<53|1<<52|10),
			delivery("wd_2", "evt_2", "we_g", f.ingested, "pending", 1, f.now.Add(-time.Minute), "", time.Unix(0, 0).UTC(), 2<<53|10),
			delivery("wd_3", "evt_2", "we_b", f.ingested, "succeeded", 1, time.Unix(0, 0).UTC(), "", time.Unix(0, 0).UTC(), 2<<53|10),
			delivery("wd_4", "evt_3", "we_b", f.ingested, "pending", 0, f.ingested, "disp-b", f.now.Add(time.Hour), 1<<53|1<<52|10),
		}},
		{set: "webhook", name: "due_deliveries", fill: []string{"now", unix(f.now), "per_endpoint", "1", "limit", "10"},
			args: []any{[]string{"we_a"}, []string{""}}},
		{set: "webhook", name: "deliveries", fill: []string{"where", "1 = 1", "limit", "10"}},
		{set: "webhook", name: "payloads", args: []any{[]string{"evt_1", "evt_2"}}},
		{set: "webhook", name: "events", fill: []string{"where", "workspace_id = ?", "limit", "10"}, args: []any{"ws_a"}},
		{set: "webhook", name: "insert_attempt", rows: [][]any{
			{"we_g", "wd_2", uint32(1), "evt_2", "invoice.finalized", "ws_a", "http://127.0.0.1:9/all", f.ingested, uint32(12), uint16(500),
				"HTTP 500", "oops", "retrying", f.now.Add(-time.Minute), "disp-a"},
			{"we_b", "wd_3", uint32(1), "evt_2", "invoice.finalized", "ws_a", "https://hooks.example.com/b", f.ingested, uint32(3), uint16(200),
				"", "", "succeeded", time.Unix(0, 0).UTC(), "disp-a"},
		}},
		{set: "webhook", name: "attempts", args: []any{[]string{"wd_2", "wd_3"}}},
		{set: "webhook", name: "deliveries_engine", args: []any{"{db}"}},
		// One server: refused as ClickHouse refuses it for a table that is not replicated,
		// which proves both versions parse it; e2e/cluster_webhook_test.go runs it replicated.
		{set: "webhook", name: "sync_deliveries", wantErr: "is not replicated"},

		// Rollups.
		{set: "aggregate", name: "read_watermark", args: []any{"usage_hourly"}},
		{set: "aggregate", name: "touched_hours", args: []any{time.Unix(0, 0).UTC()}},
		{set: "aggregate", name: "recompute_hours", fill: []string{"windows", dt(hourWindows...), "lo", hlo, "hi", hhi, "base", fmt.Sprint(uint64(1) << 62)}},
		{set: "aggregate", name: "days_without_daily_rollup"},
		{set: "aggregate", name: "recompute_days", fill: []string{"windows", dt(dayWindows...), "lo", dlo, "hi", dhi, "base", fmt.Sprint(uint64(1) << 62)}},
		{set: "aggregate", name: "advance_watermark", args: []any{"usage_hourly", f.ingested.Add(-time.Hour).Unix(), uint64(42)}},

		// Reads.
		{set: "apikey", name: "workspaces"},
		{set: "apikey", name: "workspace_exists", args: []any{"ws_b"}},
		{set: "apikey", name: "keys", fill: []string{"where", "WHERE workspace_id = ?"}, args: []any{"ws_c"}},
		{set: "invoice", name: "usage_from_rollups", fill: []string{"segment", "toUInt64(0)", "start", unix(f.prev), "end", unix(f.month), "workspaces", ""}},
		{set: "invoice", name: "usage_from_rollups_split", fill: []string{"segment", segment("hour"), "start", unix(f.month), "end", unix(monthEnd),
			"split", dt(f.priceChange.Truncate(24 * time.Hour)), "workspaces", "AND workspace_id IN ('ws_a', 'ws_c')"}},
		{set: "invoice", name: "usage_from_raw_events", fill: []string{"segment", segment("hour"), "start", unix(f.month), "end", unix(monthEnd), "workspaces", ""}},
		{set: "invoice", name: "billed", fill: []string{"periods", dt(f.prev, f.old), "except", unix(f.month), "workspaces", ""}},
		{set: "invoice", name: "pending", fill: []string{"q", unix(f.month), "workspaces", ""}},
		{set: "invoice", name: "earlier_invoices", fill: []string{"q", unix(f.month), "workspaces", "AND workspace_id IN ('ws_b', 'ws_c')"}},
		{set: "invoice", name: "invoice_headers", fill: []string{"where", "workspace_id = ?"}, args: []any{"ws_a"}},
		{set: "invoice", name: "invoice_lines", args: []any{"inv_c_old", uint64(2)}},
		{set: "api", name: "watermark"},
		{set: "api", name: "usage_daily", fill: []string{"width", "86400", "key", "api_key_id", "seg", segment("day"),
			"cond", usageCond("day", f.prev, twoMonths)}, args: []any{"ws_a", []string{"venna-1", "venna-1-mini"}}},
		{set: "api", name: "usage_hourly", fill: []string{"width", "3600", "key", "''", "seg", "toUInt64(0)",
			"cond", usageCond("hour", f.hour.Add(-72*time.Hour), f.hour)}, args: []any{"ws_b", []string{"venna-1"}}},
		{set: "api", name: "usage_raw", fill: []string{"width", "60", "key", "api_key_id", "seg", segment("occurred_at"),
			"cond", usageCond("occurred_at", f.prev, twoMonths)}, args: []any{"ws_c", []string{"venna-1-mini"}}},
		{set: "spend", name: "watermark"},
		{set: "spend", name: "spend_daily", fill: []string{"seg", segment("day"), "cond", fmt.Sprintf("day >= toDateTime(%d, 'UTC') AND day < toDateTime(%d, 'UTC')", f.prev.Unix(), twoMonths.Unix())}},
		{set: "spend", name: "spend_hourly", fill: []string{"seg", segment("hour"), "cond", fmt.Sprintf("workspace_id = 'ws_b' AND hour >= toDateTime(%d, 'UTC')", f.prev.Unix())}},
		{set: "spend", name: "spend_raw", fill: []string{"seg", segment("occurred_at"), "cond", fmt.Sprintf("occurred_at >= toDateTime(%d, 'UTC')", f.month.Unix())}},
		{set: "cmd/venna", name: "count_events", fill: []string{"workspaces", "'ws_a','ws_c'"}},

		// The analysts' examples (unqualified: they run in the fixture's database).
		{set: "analyst", name: "01_top_workspaces_by_spend"},
		{set: "analyst", name: "02_spend_per_model_per_day"},
		{set: "analyst", name: "03_cache_hit_ratio_by_model"},
		{set: "analyst", name: "04_reasoning_share_by_model"},
		{set: "analyst", name: "05_daily_active_keys"},
		{set: "analyst", name: "06_requests_per_hour"},
		{set: "analyst", name: "07_latency_by_model"},
		{set: "analyst", name: "08_error_rate_by_upstream"},
		{set: "analyst", name: "09_top_keys_by_tokens"},
		{set: "analyst", name: "10_tokens_per_request_by_model"},
		{set: "analyst", name: "11_pending_duplicates", volatile: "raw_rows counts duplicates that background merges may have folded on one server and not yet on the other"},
		{set: "analyst", name: "12_rollup_vs_raw"},
		{set: "analyst", name: "13_estimated_usage_share"},
		{set: "analyst", name: "14_usage_by_workspace_last_7_days"},
		{set: "analyst", name: "15_invoice_lines_this_month"},
		{set: "analyst", name: "16_budget_alerts_this_month"},
		{set: "analyst", name: "17_webhook_deliveries_by_endpoint"},
	}
}
