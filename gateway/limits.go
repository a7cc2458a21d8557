package gateway

import (
	"net/http"
	"strconv"
	"time"

	"github.com/venna/metering/apikey"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/schema"
)

// Limiter enforces budgets and rate limits before a completion goes upstream
// (package spend implements it). Neither method may wait on the network: the gateway
// calls both on the request path.
type Limiter interface {
	// Admit decides whether p may send a completion of model whose prompt is about
	// promptTokens tokens.
	Admit(p apikey.Principal, model string, promptTokens int64) Admission
	// Settle records what an admitted request used: the completion's event, or one with
	// no tokens when the upstream exchange failed.
	Settle(p apikey.Principal, a Admission, ev schema.UsageEvent)
}

// Admission is a Limiter's answer to one request.
type Admission struct {
	Refusal  *Refusal         // nil: admitted
	Headers  RateLimitHeaders // set on every answer, a refusal's included
	Reserved int64            // tokens taken from token limits at admission; Settle corrects them
	State    any              // the limiter's own, handed back to Settle
}

// Refusal is why a request is not admitted: a 429 (budget or rate limit) or a 503 (limits
// that cannot be checked, under a fail-closed policy), in OpenAI's error envelope.
type Refusal struct {
	Status     int
	Type, Code string
	Message    string
	RetryAfter time.Duration // sent as retry-after (whole seconds, at least 1) when positive
}

// RateLimitHeaders are OpenAI's x-ratelimit-* headers, for whichever limits apply.
type RateLimitHeaders struct {
	Requests, Tokens RateLimitState // Limit 0: no such limit, no headers
}

// RateLimitState is one limit as its headers state it: the limit per minute, what remains
// of it, and the time until it is whole again.
type RateLimitState struct {
	Limit, Remaining int64
	Reset            time.Duration
}

// Header names in canonical form: set into the map as they are, and read by clients
// without re-canonicalizing.
var rateLimitHeaderNames = [2][3]string{
	{"X-Ratelimit-Limit-Requests", "X-Ratelimit-Remaining-Requests", "X-Ratelimit-Reset-Requests"},
	{"X-Ratelimit-Limit-Tokens", "X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Reset-Tokens"},
}

// write sets the headers with two allocations whatever their number: every value goes
// into one string, and the header slices into one array.
func (h RateLimitHeaders) write(w http.Header) {
	states := [2]RateLimitState{h.Requests, h.Tokens}
	if states[0].Limit == 0 && states[1].Limit == 0 {
		return
	}
	var buf [128]byte
	b := buf[:0]
	var ends [6]int
	for i, s := range states {
		if s.Limit == 0 {
			continue
		}
		b = strconv.AppendInt(b, s.Limit, 10)
		ends[3*i] = len(b)
		b = strconv.AppendInt(b, max(s.Remaining, 0), 10)
		ends[3*i+1] = len(b)
		b = appendReset(b, s.Reset)
		ends[3*i+2] = len(b)
	}
	all := string(b)
	vals := make([]string, 6)
	start := 0
	for i, s := range states {
		if s.Limit == 0 {
			continue
		}
		for j := range 3 {
			k := 3*i + j
			vals[k] = all[start:ends[k]]
			start = ends[k]
			w[rateLimitHeaderNames[i][j]] = vals[k : k+1 : k+1]
		}
	}
}

// appendReset writes a duration as OpenAI's headers do: "20ms", "1s", "6m0s".
func appendReset(b []byte, d time.Duration) []byte {
	switch {
	case d <= 0:
		return append(b, "0s"...)
	case d < time.Second:
		return append(strconv.AppendInt(b, max(d.Milliseconds(), 1), 10), "ms"...)
	}
	s := int64(d.Round(time.Second) / time.Second)
	if s >= 3600 {
		b = append(strconv.AppendInt(b, s/3600, 10), 'h')
		s %= 3600
		b = append(strconv.AppendInt(b, s/60, 10), 'm')
	} else if s >= 60 {
		b = append(strconv.AppendInt(b, s/60, 10), 'm')
	}
	return append(strconv.AppendInt(b, s%60, 10), 's')
}

// admit asks the limiter about a request; false means it answered the refusal.
func (g *Gateway) admit(w http.ResponseWriter, p apikey.Principal, model string, body []byte) (Admission, bool) {
	if g.limits == nil {
		return Admission{}, true
	}
	// About four bytes of JSON a token: enough to admit by, corrected with the real usage.
	a := g.limits.Admit(p, model, int64(len(body)/4))
	a.Headers.write(w.Header())
	if r := a.Refusal; r != nil {
		if r.RetryAfter > 0 {
			w.Header().Set("retry-after", strconv.FormatInt(int64(max(1, (r.RetryAfter+time.Second-1)/time.Second)), 10))
		}
		apierr.Write(w, r.Status, r.Type, r.Code, r.Message, "")
		return a, false
	}
	return a, true
}

// SetLimiter makes the gateway enforce l's budgets and rate limits. Call it before serving.
func (g *Gateway) SetLimiter(l Limiter) { g.limits = l }
