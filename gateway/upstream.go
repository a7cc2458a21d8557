package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/venna/metering/apikey"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/schema"
)

// usage is OpenAI's usage object.
type usage struct {
	PromptTokens            int64              `json:"prompt_tokens"`
	CompletionTokens        int64              `json:"completion_tokens"`
	TotalTokens             int64              `json:"total_tokens"`
	PromptTokensDetails     *promptDetails     `json:"prompt_tokens_details"`
	CompletionTokensDetails *completionDetails `json:"completion_tokens_details"`
}

type promptDetails struct {
	CachedTokens int64 `json:"cached_tokens"`
}

type completionDetails struct {
	ReasoningTokens          int64 `json:"reasoning_tokens"`
	AcceptedPredictionTokens int64 `json:"accepted_prediction_tokens"`
	RejectedPredictionTokens int64 `json:"rejected_prediction_tokens"`
}

// parse reads a usage object (valid JSON) without reflection: the counts and their two
// detail objects. Unknown members are skipped; a count that is not an integer is an error;
// details that are not an object count as absent.
func (u *usage) parse(b []byte) error {
	var err error
	num := func(v []byte, dst *int64) {
		if string(v) == "null" || err != nil {
			return
		}
		*dst, err = strconv.ParseInt(string(v), 10, 64)
	}
	if e := members(b, func(m member) {
		v := b[m.valueStart:m.valueEnd]
		switch {
		case keyIs(b, m, "prompt_tokens"):
			num(v, &u.PromptTokens)
		case keyIs(b, m, "completion_tokens"):
			num(v, &u.CompletionTokens)
		case keyIs(b, m, "total_tokens"):
			num(v, &u.TotalTokens)
		// A details member decides as the last of its duplicates: an object is read whole,
		// anything else (null) leaves no details.
		case keyIs(b, m, "prompt_tokens_details"):
			u.PromptTokensDetails = nil
			if v[0] != '{' {
				break
			}
			pd := &promptDetails{}
			u.PromptTokensDetails = pd
			members(v, func(d member) {
				if keyIs(v, d, "cached_tokens") {
					num(v[d.valueStart:d.valueEnd], &pd.CachedTokens)
				}
			})
		case keyIs(b, m, "completion_tokens_details"):
			u.CompletionTokensDetails = nil
			if v[0] != '{' {
				break
			}
			cd := &completionDetails{}
			u.CompletionTokensDetails = cd
			members(v, func(d member) {
				dv := v[d.valueStart:d.valueEnd]
				switch {
				case keyIs(v, d, "reasoning_tokens"):
					num(dv, &cd.ReasoningTokens)
				case keyIs(v, d, "accepted_prediction_tokens"):
					num(dv, &cd.AcceptedPredictionTokens)
				case keyIs(v, d, "rejected_prediction_tokens"):
					num(dv, &cd.RejectedPredictionTokens)
				}
			})
		}
	}); e != nil {
		return e
	}
	if err != nil {
		return fmt.Errorf("usage: %w", err)
	}
	return nil
}

// apply copies the upstream's counts onto ev.
func (u *usage) apply(ev *schema.UsageEvent) {
	ev.PromptTokens = u.PromptTokens
	ev.CompletionTokens = u.CompletionTokens
	if d := u.PromptTokensDetails; d != nil {
		ev.CachedTokens = d.CachedTokens
	}
	if d := u.CompletionTokensDetails; d != nil {
		ev.ReasoningTokens = d.ReasoningTokens
		ev.AcceptedPredictionTokens = d.AcceptedPredictionTokens
		ev.RejectedPredictionTokens = d.RejectedPredictionTokens
	}
	ev.TotalTokens = ev.PromptTokens + ev.CompletionTokens
}

// Header values shared by every request: never mutated, so never allocated per request.
var (
	hdrJSON    = []string{"application/json"}
	hdrSSE     = []string{"text/event-stream"}
	hdrNoCache = []string{"no-cache"}
	hdrNo      = []string{"no"}
)

// newEvent starts the usage event of one request.
func (g *Gateway) newEvent(p apikey.Principal, route Route, start time.Time, stream bool) schema.UsageEvent {
	return schema.UsageEvent{
		SchemaVersion: schema.EventVersion,
		EventID:       newEventID(),
		OccurredAt:    start.UTC(),
		WorkspaceID:   p.WorkspaceID,
		APIKeyID:      p.KeyID,
		Model:         route.Model,
		Upstream:      route.Upstream,
		UpstreamModel: route.UpstreamModel,
		Status:        schema.StatusOK,
		HTTPStatus:    http.StatusOK,
		Stream:        stream,
	}
}

// callUpstream sends body to the route's upstream. On a transport failure it answers the
// client (502, or 504 on timeout), records a failed event and returns nil.
func (g *Gateway) callUpstream(ctx context.Context, w http.ResponseWriter, r *http.Request, p apikey.Principal, route Route, body []byte, start time.Time, stream bool) *http.Response {
	// Built from the route's parsed URL and shared headers, not parsed per request.
	up := (&http.Request{Method: http.MethodPost, URL: route.url, Host: route.url.Host, Header: route.header,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Body: memBody{bytes.NewReader(body), body}, ContentLength: int64(len(body)),
		GetBody: func() (io.ReadCloser, error) { return memBody{bytes.NewReader(body), body}, nil },
	}).WithContext(ctx)
	if stream {
		up.Header = route.streamHeader
	}
	// The transport directly: no redirects to follow on an API POST, and no per-request
	// header copying that http.Client does for them.
	resp, err := g.client.Transport.RoundTrip(up)
	if err == nil {
		return resp
	}
	status, code, msg := http.StatusBadGateway, "upstream_unreachable", "The upstream provider could not be reached."
	if errors.Is(err, context.DeadlineExceeded) {
		status, code, msg = http.StatusGatewayTimeout, "upstream_timeout", "The upstream provider did not answer in time."
	}
	if r.Context().Err() == nil {
		g.log.Warn("upstream request failed", "upstream", route.Upstream, "model", route.Model, "err", err)
	}
	g.recordFailure(w, p, route, start, stream, status)
	apierr.Write(w, status, "upstream_error", code, msg, "")
	return nil
}

// memBody is a request body already in memory; Bytes hands it to the transport uncopied.
type memBody struct {
	*bytes.Reader
	b []byte
}

func (m memBody) Bytes() []byte { return m.b }
func (memBody) Close() error    { return nil }

// recordFailure emits an event with no billable tokens for an exchange that produced no
// completion, so analysts see upstream error rates. It is best effort: nothing is billed.
func (g *Gateway) recordFailure(w http.ResponseWriter, p apikey.Principal, route Route, start time.Time, stream bool, httpStatus int) {
	ev := g.newEvent(p, route, start, stream)
	ev.Status = schema.StatusUpstreamError
	ev.HTTPStatus = httpStatus
	ev.LatencyMS = g.now().Sub(start).Milliseconds()
	if err := g.emit(context.Background(), w, ev); err != nil {
		g.log.Warn("failed-request event not recorded", "model", route.Model, "err", err)
	}
}

// emit publishes a request's usage event and keeps it for the limiter to settle.
func (g *Gateway) emit(ctx context.Context, w http.ResponseWriter, ev schema.UsageEvent) error {
	if err := g.pub.Publish(ctx, ev); err != nil {
		return err
	}
	if sw, ok := w.(*statusWriter); ok {
		sw.event = ev
	}
	return nil
}
