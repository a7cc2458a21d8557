package gateway

import (
	"net/http"
	"testing"
	"time"
)

func TestRateLimitHeaders(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0s", -time.Second: "0s", 300 * time.Microsecond: "1ms", 20 * time.Millisecond: "20ms",
		time.Second: "1s", 1499 * time.Millisecond: "1s", 90 * time.Second: "1m30s", 6 * time.Minute: "6m0s", time.Hour + 2*time.Minute + 3*time.Second: "1h2m3s"} {
		if got := string(appendReset(nil, d)); got != want {
			t.Errorf("appendReset(%s) = %q, want %q", d, got, want)
		}
		if d >= time.Second && d.Round(time.Second).String() != want {
			t.Errorf("%s: %q is not Go's own %q", d, want, d.Round(time.Second).String())
		}
	}
	h := http.Header{}
	RateLimitHeaders{Requests: RateLimitState{Limit: 600, Remaining: 599, Reset: 100 * time.Millisecond},
		Tokens: RateLimitState{Limit: 150000, Remaining: -5, Reset: 2 * time.Minute}}.write(h)
	want := map[string]string{"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "599", "x-ratelimit-reset-requests": "100ms",
		"x-ratelimit-limit-tokens": "150000", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2m0s"}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	only := http.Header{}
	RateLimitHeaders{Tokens: RateLimitState{Limit: 10, Remaining: 3}}.write(only)
	if len(only) != 3 || only.Get("x-ratelimit-limit-requests") != "" || only.Get("x-ratelimit-remaining-tokens") != "3" {
		t.Errorf("tokens only: %v", only)
	}
	none := http.Header{}
	RateLimitHeaders{}.write(none)
	if len(none) != 0 {
		t.Errorf("no limits: %v", none)
	}
}
