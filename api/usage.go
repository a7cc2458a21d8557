package api

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/venna/metering/internal/apierr"
)

// bucketWidths lists the widths /v1/usage serves, with default and maximum buckets a page.
var bucketWidths = map[string]struct {
	d            time.Duration
	sqlStart     string
	defLim, maxL int
}{
	"1h": {time.Hour, "hour", 24, 168},
	"1d": {24 * time.Hour, "toStartOfDay(hour)", 7, 31},
}

// UsageResult is one group's usage within a bucket; fields follow OpenAI's organization
// usage API (input_tokens includes input_cached_tokens), plus Venna's token details.
type UsageResult struct {
	Object                   string  `json:"object"`
	InputTokens              uint64  `json:"input_tokens"`
	InputCachedTokens        uint64  `json:"input_cached_tokens"`
	OutputTokens             uint64  `json:"output_tokens"`
	ReasoningTokens          uint64  `json:"reasoning_tokens"`
	AcceptedPredictionTokens uint64  `json:"accepted_prediction_tokens"`
	RejectedPredictionTokens uint64  `json:"rejected_prediction_tokens"`
	NumModelRequests         uint64  `json:"num_model_requests"`
	Model                    *string `json:"model"`
	APIKeyID                 *string `json:"api_key_id"`
}

// UsageBucket is one time bucket.
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

func (s *Server) usage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	width := q.Get("bucket_width")
	if width == "" {
		width = "1d"
	}
	bw, ok := bucketWidths[width]
	if !ok {
		badParam(w, "bucket_width", fmt.Sprintf("Invalid 'bucket_width': %q; use 1h or 1d.", width))
		return
	}
	start, ok := parseUnix(w, r, "start_time", true)
	if !ok {
		return
	}
	end, ok := parseUnix(w, r, "end_time", false)
	if !ok {
		return
	}
	if page := q.Get("page"); page != "" {
		n, err := strconv.ParseInt(page, 10, 64)
		if err != nil || n < start.Unix() {
			badParam(w, "page", "Invalid 'page': pass the next_page value of the previous response.")
			return
		}
		start = time.Unix(n, 0).UTC()
	}
	limit := bw.defLim
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > bw.maxL {
			badParam(w, "limit", fmt.Sprintf("Invalid 'limit': %q; use 1 to %d for bucket_width %s.", v, bw.maxL, width))
			return
		}
		limit = n
	}
	var groupModel, groupKey bool
	for _, g := range q["group_by"] {
		for _, f := range strings.Split(g, ",") {
			switch strings.TrimSpace(f) {
			case "model":
				groupModel = true
			case "api_key_id":
				groupKey = true
			default:
				badParam(w, "group_by", fmt.Sprintf("Invalid 'group_by': %q; use model and/or api_key_id.", f))
				return
			}
		}
	}
	start = start.Truncate(bw.d)
	pageEnd := start.Add(time.Duration(limit) * bw.d)
	if !end.IsZero() && !end.After(start) {
		badParam(w, "end_time", "Invalid 'end_time': it must be after start_time.")
		return
	}
	stop := pageEnd
	hasMore := true
	if !end.IsZero() && !end.After(pageEnd) {
		stop, hasMore = end, false
	}
	if end.IsZero() && !pageEnd.Before(time.Now()) {
		hasMore = false
	}

	modelCol, keyCol := "''", "''"
	if groupModel {
		modelCol = "model"
	}
	if groupKey {
		keyCol = "api_key_id"
	}
	sql := fmt.Sprintf(`SELECT toUInt32(%s) AS b, %s AS m, %s AS k, sum(requests), sum(prompt_tokens), sum(cached_tokens),
    sum(completion_tokens), sum(reasoning_tokens), sum(accepted_prediction_tokens), sum(rejected_prediction_tokens)
FROM %s.usage_hourly FINAL
WHERE workspace_id = ? AND hour >= toDateTime(%d, 'UTC') AND hour < toDateTime(%d, 'UTC')
GROUP BY b, m, k ORDER BY b, m, k`, bw.sqlStart, modelCol, keyCol, s.cfg.Database, start.Unix(), stop.Unix())
	rows, err := s.conn.Query(r.Context(), sql, principal(r).WorkspaceID)
	if err != nil {
		s.internalError(w, "query usage", err)
		return
	}
	defer rows.Close()
	byBucket := map[int64][]UsageResult{}
	for rows.Next() {
		var b uint32
		var m, k string
		var res UsageResult
		if err := rows.Scan(&b, &m, &k, &res.NumModelRequests, &res.InputTokens, &res.InputCachedTokens, &res.OutputTokens,
			&res.ReasoningTokens, &res.AcceptedPredictionTokens, &res.RejectedPredictionTokens); err != nil {
			s.internalError(w, "scan usage", err)
			return
		}
		res.Object = "organization.usage.completions.result"
		if groupModel {
			res.Model = &m
		}
		if groupKey {
			res.APIKeyID = &k
		}
		byBucket[int64(b)] = append(byBucket[int64(b)], res)
	}
	if err := rows.Err(); err != nil {
		s.internalError(w, "read usage", err)
		return
	}
	page := UsagePage{Object: "page", Data: []UsageBucket{}, HasMore: hasMore}
	for t := start; t.Before(stop); t = t.Add(bw.d) {
		res := byBucket[t.Unix()]
		if res == nil {
			res = []UsageResult{}
		}
		page.Data = append(page.Data, UsageBucket{Object: "bucket", StartTime: t.Unix(), EndTime: t.Add(bw.d).Unix(), Results: res})
	}
	if hasMore {
		next := strconv.FormatInt(stop.Unix(), 10)
		page.NextPage = &next
	}
	apierr.JSON(w, http.StatusOK, page)
}
