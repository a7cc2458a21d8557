package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/internal/instant"
	"github.com/venna/metering/internal/sqlset"
)

var (
	watermarkSQL   = Queries.Get("watermark")
	usageDailySQL  = Queries.Get("usage_daily")
	usageHourlySQL = Queries.Get("usage_hourly")
	usageRawSQL    = Queries.Get("usage_raw")
)

// width is one bucket_width /v1/usage serves.
type width struct {
	d                  time.Duration
	defLimit, maxLimit int  // buckets per page
	rawOnly            bool // finer than the hourly rollups: always read raw events
}

// A range of any length is served, a page of at most maxLimit buckets at a time.
var widths = map[string]width{
	"1m": {time.Minute, 60, 1440, true},
	"1h": {time.Hour, 24, 168, false},
	"1d": {24 * time.Hour, 7, 31, false},
}

// maxFilterValues bounds the models and api_key_ids filters.
const maxFilterValues = 100

// UsageResult is one group's usage within a bucket. Fields follow OpenAI's organization
// usage API: input_tokens includes input_cached_tokens, output_tokens includes
// reasoning_tokens. Cost is the exact USD price at the prices in force (a decimal string),
// null when some of the usage has no price.
type UsageResult struct {
	Object                   string  `json:"object"`
	InputTokens              uint64  `json:"input_tokens"`
	InputCachedTokens        uint64  `json:"input_cached_tokens"`
	OutputTokens             uint64  `json:"output_tokens"`
	ReasoningTokens          uint64  `json:"reasoning_tokens"`
	AcceptedPredictionTokens uint64  `json:"accepted_prediction_tokens"`
	RejectedPredictionTokens uint64  `json:"rejected_prediction_tokens"`
	NumModelRequests         uint64  `json:"num_model_requests"`
	Cost                     *string `json:"cost"`
	Model                    *string `json:"model"`
	APIKeyID                 *string `json:"api_key_id"`
}

// add adds o's requests and tokens to u.
func (u *UsageResult) add(o UsageResult) {
	u.NumModelRequests += o.NumModelRequests
	u.InputTokens += o.InputTokens
	u.InputCachedTokens += o.InputCachedTokens
	u.OutputTokens += o.OutputTokens
	u.ReasoningTokens += o.ReasoningTokens
	u.AcceptedPredictionTokens += o.AcceptedPredictionTokens
	u.RejectedPredictionTokens += o.RejectedPredictionTokens
}

// UsageBucket is one time bucket [StartTime, EndTime).
type UsageBucket struct {
	Object    string        `json:"object"`
	StartTime int64         `json:"start_time"`
	EndTime   int64         `json:"end_time"`
	Results   []UsageResult `json:"results"`
}

// UsagePage is the /v1/usage response.
type UsagePage struct {
	Object   string        `json:"object"`
	Data     []UsageBucket `json:"data"`
	HasMore  bool          `json:"has_more"`
	NextPage *string       `json:"next_page"`
}

// usageRequest is a validated /v1/usage query.
type usageRequest struct {
	w                    width
	start, end           time.Time // the whole range, rounded out to whole buckets
	pageStart, pageEnd   time.Time // this page's buckets
	groupModel, groupKey bool
	models, keys         []string // filters; empty: all
}

// paramError is a bad query parameter: a 400 naming it.
type paramError struct{ param, msg string }

func (e *paramError) Error() string { return e.param + ": " + e.msg }

func badf(param, format string, args ...any) error {
	return &paramError{param, fmt.Sprintf(format, args...)}
}

// values returns a list parameter given as repeated name=a&name=b, as name[]=a (the form
// some OpenAI clients send) or comma-separated, without empty items.
func values(q url.Values, name string) []string {
	var out []string
	for _, v := range slices.Concat(q[name], q[name+"[]"]) {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				out = append(out, f)
			}
		}
	}
	return out
}

// maxUnix bounds accepted times (year 2242): anything later is a typo, e.g. milliseconds.
const maxUnix = 1 << 33

func parseUnix(q url.Values, name string) (time.Time, bool, error) {
	if !q.Has(name) {
		return time.Time{}, false, nil
	}
	v := q.Get(name)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > maxUnix {
		return time.Time{}, false, badf(name, "Invalid '%s': %q is not a Unix time in seconds.", name, v)
	}
	return time.Unix(n, 0).UTC(), true, nil
}

// parseUsage validates every parameter of a /v1/usage query; a bad one is a *paramError.
func parseUsage(q url.Values, now time.Time) (usageRequest, error) {
	var req usageRequest
	// A parameter given empty is refused, as any other value outside its kind: only one
	// left out takes its default.
	name := "1d"
	if q.Has("bucket_width") {
		name = q.Get("bucket_width")
	}
	w, ok := widths[name]
	if !ok {
		return req, badf("bucket_width", "Invalid 'bucket_width': %q; use 1m, 1h or 1d.", name)
	}
	req.w = w
	start, ok, err := parseUnix(q, "start_time")
	if err != nil {
		return req, err
	}
	if !ok {
		return req, badf("start_time", "Missing required parameter: 'start_time' (Unix seconds).")
	}
	end, ok, err := parseUnix(q, "end_time")
	switch {
	case err != nil:
		return req, err
	case !ok:
		end = now.UTC()
	}
	// A range that ends where it starts, or before (a start in the future without an
	// end), holds no bucket: an empty page, not an error.
	empty := !end.After(start)
	for _, g := range values(q, "group_by") {
		switch g {
		case "model":
			req.groupModel = true
		case "api_key_id":
			req.groupKey = true
		default:
			return req, badf("group_by", "Invalid 'group_by': %q; use model and/or api_key_id.", g)
		}
	}
	req.models, req.keys = values(q, "models"), values(q, "api_key_ids")
	for _, param := range []string{"models", "api_key_ids"} {
		// The count the API states: the parameter's repeats (the query string's length
		// bounds what comma-separated values add).
		if n := len(q[param]) + len(q[param+"[]"]); n > maxFilterValues {
			return req, badf(param, "Invalid '%s': at most %d values.", param, maxFilterValues)
		}
	}
	limit := w.defLimit
	if q.Has("limit") {
		v := q.Get("limit")
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1440 {
			return req, badf("limit", "Invalid 'limit': %q; use 1 to 1440 (pages hold at most 1440 buckets of 1m, 168 of 1h, 31 of 1d).", v)
		}
		limit = min(n, w.maxLimit)
	}
	// Buckets are whole: start rounds down and end up to the bucket grid (UTC).
	req.start = start.Truncate(w.d)
	req.end = end.Truncate(w.d)
	if req.end.Before(end) {
		req.end = req.end.Add(w.d)
	}
	if empty {
		req.end = req.start
	}
	req.pageStart = req.start
	if q.Has("page") {
		v := q.Get("page")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > maxUnix {
			return req, badf("page", "Invalid 'page': %q; pass the next_page of the previous response with the same parameters.", v)
		}
		// A page is the start of its first bucket, within the range: anything else
		// is taken to the bucket it falls in, and clamped to the range.
		req.pageStart = time.Unix(n, 0).UTC().Truncate(w.d)
		req.pageStart = instant.Max(req.start, instant.Min(req.pageStart, req.end))
	}
	req.pageEnd = instant.Min(req.pageStart.Add(time.Duration(limit)*w.d), req.end)
	return req, nil
}

func (s *Server) usage(w http.ResponseWriter, r *http.Request) {
	req, err := parseUsage(r.URL.Query(), s.now())
	var pe *paramError
	if errors.As(err, &pe) {
		badParam(w, pe.param, pe.msg)
		return
	}
	byBucket, err := s.readUsage(r.Context(), workspace(r), req)
	if err != nil {
		s.serverError(w, "read usage", err)
		return
	}
	page := UsagePage{Object: "page", Data: []UsageBucket{}, HasMore: req.pageEnd.Before(req.end)}
	for t := req.pageStart; t.Before(req.pageEnd); t = t.Add(req.w.d) {
		res := byBucket[t.Unix()]
		if res == nil {
			res = []UsageResult{}
		}
		page.Data = append(page.Data, UsageBucket{Object: "bucket", StartTime: t.Unix(), EndTime: t.Add(req.w.d).Unix(), Results: res})
	}
	if page.HasMore {
		next := strconv.FormatInt(req.pageEnd.Unix(), 10)
		page.NextPage = &next
	}
	apierr.JSON(w, http.StatusOK, page)
}

// rollupCutoff is where /v1/usage switches from rollups to raw events. Hours before it are
// read from the rollups: their events were ingested before the aggregator's watermark, so
// their rollups are complete. The hour of the watermark is only partly rolled up, and
// the current and previous hour are read raw even when the aggregator is current, so an
// event is visible as soon as it is inserted, and one ingested a little late around an
// hour boundary does not wait for the next rollup. The raw part is at most a few hours
// of one workspace, found by the primary key.
func rollupCutoff(watermark, now time.Time) time.Time {
	c := now.UTC().Truncate(time.Hour).Add(-time.Hour)
	if wm := watermark.UTC().Truncate(time.Hour); wm.Before(c) {
		return wm
	}
	return c
}

type usageKey struct {
	bucket     int64
	model, key string
}

// usageQuery is one source's query and its arguments.
type usageQuery struct {
	sql  string
	args []any
}

// usageQueries builds the queries of a page split at cutoff: rollups before it, raw events
// after. Daily buckets take whole days before the cutoff's day from usage_daily (30 rows
// a month per model and key instead of 720), except days in which a price changes, whose
// hours must be priced apart.
func (s *Server) usageQueries(ws string, req usageRequest, cutoff time.Time, breaks []time.Time) []usageQuery {
	key := "''"
	if req.groupKey {
		key = "api_key_id"
	}
	var out []usageQuery
	add := func(tmpl, col, cond string) {
		c := "workspace_id = ? AND (" + cond + ")"
		args := []any{ws}
		if len(req.models) > 0 {
			c += " AND has(?, model)"
			args = append(args, req.models)
		}
		if len(req.keys) > 0 {
			c += " AND has(?, api_key_id)"
			args = append(args, req.keys)
		}
		q := sqlset.Fill(tmpl, "db", s.cfg.Database, "width", strconv.Itoa(int(req.w.d/time.Second)),
			"key", key, "seg", sqlset.Segment(col, breaks), "cond", c)
		out = append(out, usageQuery{q, args})
	}
	hourlyFrom := req.pageStart
	if req.w.d == 24*time.Hour {
		cutoffDay := cutoff.Truncate(24 * time.Hour)
		var split []time.Time // days with a price change inside
		for _, b := range breaks {
			if d := b.Truncate(24 * time.Hour); !d.Equal(b) && d.Before(cutoffDay) && (len(split) == 0 || !split[len(split)-1].Equal(d)) {
				split = append(split, d)
			}
		}
		if req.pageStart.Before(cutoffDay) {
			cond := sqlset.Between("day", req.pageStart, cutoffDay)
			if len(split) > 0 {
				cond += " AND day NOT IN (" + sqlset.DateTimes(split) + ")"
			}
			add(usageDailySQL, "day", cond)
			if len(split) > 0 {
				add(usageHourlySQL, "hour", sqlset.Between("hour", req.pageStart, cutoffDay)+" AND toStartOfDay(hour) IN ("+sqlset.DateTimes(split)+")")
			}
			hourlyFrom = cutoffDay
		}
	}
	if hourlyFrom.Before(cutoff) {
		add(usageHourlySQL, "hour", sqlset.Between("hour", hourlyFrom, cutoff))
	}
	if cutoff.Before(req.pageEnd) {
		add(usageRawSQL, "occurred_at", sqlset.Between("occurred_at", cutoff, req.pageEnd))
	}
	return out
}

// readUsage returns the page's results by bucket start (Unix seconds).
func (s *Server) readUsage(ctx context.Context, ws string, req usageRequest) (map[int64][]UsageResult, error) {
	cutoff := req.pageStart
	if !req.w.rawOnly {
		var wm time.Time
		if err := s.conn.QueryRow(ctx, sqlset.Fill(watermarkSQL, "db", s.cfg.Database)).Scan(&wm); err != nil {
			return nil, fmt.Errorf("read rollup watermark: %w", err)
		}
		cutoff = rollupCutoff(wm, s.now())
		if cutoff.Before(req.pageStart) {
			cutoff = req.pageStart
		}
		if cutoff.After(req.pageEnd) {
			cutoff = req.pageEnd
		}
	}
	var breaks []time.Time
	if s.prices != nil {
		breaks = s.prices.Breakpoints(req.pageStart, req.pageEnd)
	}
	// The sources run at once: a page costs the slowest of them, not their sum.
	queries := s.usageQueries(ws, req, cutoff, breaks)
	results := make([][]usageRow, len(queries))
	errs := make([]error, len(queries))
	var wg sync.WaitGroup
	for i, q := range queries {
		wg.Go(func() { results[i], errs[i] = s.queryUsage(ctx, q) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	type acc struct {
		UsageResult
		cost    decimal.Decimal
		unknown bool // some usage has no price: the cost is null, never a partial sum
	}
	groups := map[usageKey]*acc{}
	for _, rows := range results {
		for _, r := range rows {
			// The prices and discount in force over this bucket and segment: at its first instant.
			at := time.Unix(int64(r.bucket), 0).UTC()
			if r.seg > 0 && breaks[r.seg-1].After(at) {
				at = breaks[r.seg-1]
			}
			cost, priced := s.cost(ws, r.model, at, r.u)
			gk := usageKey{bucket: int64(r.bucket)}
			if req.groupModel {
				gk.model = r.model
			}
			if req.groupKey {
				gk.key = r.key
			}
			g := groups[gk]
			if g == nil {
				g = &acc{}
				groups[gk] = g
			}
			g.add(r.u)
			g.cost = g.cost.Add(cost)
			g.unknown = g.unknown || !priced
		}
	}

	keys := make([]usageKey, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.bucket != b.bucket {
			return a.bucket < b.bucket
		}
		if a.model != b.model {
			return a.model < b.model
		}
		return a.key < b.key
	})
	out := map[int64][]UsageResult{}
	for _, k := range keys {
		g := groups[k]
		res := g.UsageResult
		res.Object = "organization.usage.completions.result"
		if !g.unknown {
			c := g.cost.String()
			res.Cost = &c
		}
		if req.groupModel {
			res.Model = &k.model
		}
		if req.groupKey {
			res.APIKeyID = &k.key
		}
		out[k.bucket] = append(out[k.bucket], res)
	}
	return out, nil
}

// usageRow is one source's sums of one bucket x model x key x price segment.
type usageRow struct {
	bucket, seg uint64
	model, key  string
	u           UsageResult
}

func (s *Server) queryUsage(ctx context.Context, q usageQuery) ([]usageRow, error) {
	rows, err := s.conn.Query(ctx, q.sql, q.args...)
	if err != nil {
		return nil, fmt.Errorf("query usage: %w", err)
	}
	defer rows.Close()
	var out []usageRow
	for rows.Next() {
		var r usageRow
		if err := rows.Scan(&r.bucket, &r.model, &r.key, &r.seg, &r.u.NumModelRequests, &r.u.InputTokens, &r.u.InputCachedTokens,
			&r.u.OutputTokens, &r.u.ReasoningTokens, &r.u.AcceptedPredictionTokens, &r.u.RejectedPredictionTokens); err != nil {
			return nil, fmt.Errorf("scan usage: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read usage: %w", err)
	}
	return out, nil
}

// cost prices u, a model's usage by workspace ws, as its invoice does (invoice.PriceBook.Cost):
// input is the uncached prompt, cached_input the cached prompt, output every completion
// token, reasoning and prediction tokens included. It reports false when the model has no
// price then.
func (s *Server) cost(ws, model string, t time.Time, u UsageResult) (decimal.Decimal, bool) {
	if s.prices == nil {
		return decimal.Zero, false
	}
	uncached := uint64(0)
	if u.InputTokens > u.InputCachedTokens {
		uncached = u.InputTokens - u.InputCachedTokens
	}
	return s.prices.Cost(ws, model, t, uncached, u.InputCachedTokens, u.OutputTokens)
}
