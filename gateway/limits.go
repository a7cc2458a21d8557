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
	Requests, Tokens *RateLimitState
}

// RateLimitState is one limit as its headers state it: the limit per minute, what remains
// of it, and the time until it is whole again.
type RateLimitState struct {
	Limit, Remaining int64
	Reset            time.Duration
}

func (h RateLimitHeaders) write(w http.Header) {
	for _, s := range []struct {
		kind  string
		state *RateLimitState
	}{{"requests", h.Requests}, {"tokens", h.Tokens}} {
		if s.state == nil {
			continue
		}
		w.Set("x-ratelimit-limit-"+s.kind, strconv.FormatInt(s.state.Limit, 10))
		w.Set("x-ratelimit-remaining-"+s.kind, strconv.FormatInt(max(s.state.Remaining, 0), 10))
		w.Set("x-ratelimit-reset-"+s.kind, formatReset(s.state.Reset))
	}
}

// formatReset writes a duration as OpenAI's headers do: "20ms", "1s", "6m0s".
func formatReset(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return strconv.FormatInt(max(d.Milliseconds(), 1), 10) + "ms"
	}
	return d.Round(time.Second).String()
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

// settle tells the limiter what an admitted request used.
func (g *Gateway) settle(p apikey.Principal, a Admission, ev schema.UsageEvent) {
	if g.limits != nil {
		g.limits.Settle(p, a, ev)
	}
}

// SetLimiter makes the gateway enforce l's budgets and rate limits. Call it before serving.
func (g *Gateway) SetLimiter(l Limiter) { g.limits = l }
