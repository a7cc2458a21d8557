package testenv

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"testing"
)

// StripeMockURL returns the stripe-mock the suite shares (VENNA_STRIPE_MOCK_URL), failing
// the test if none is set.
func StripeMockURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("VENNA_STRIPE_MOCK_URL")
	if u == "" {
		t.Fatalf("VENNA_STRIPE_MOCK_URL is not set: %s", hint)
	}
	return u
}

// StripeRequest is one request a StripeRecorder passed on to stripe-mock.
type StripeRequest struct {
	Method, Path   string
	IdempotencyKey string
	Form           url.Values // the form-encoded body
	Status         int        // stripe-mock's answer
}

// StripeRecorder is a reverse proxy in front of stripe-mock that records every request:
// stripe-mock keeps no state, so what Venna sent is only seen here.
type StripeRecorder struct {
	URL string // point the Stripe client here

	mu       sync.Mutex
	requests []StripeRequest
}

// NewStripeRecorder starts a recording proxy to the suite's stripe-mock, stopped when the
// test ends.
func NewStripeRecorder(t testing.TB) *StripeRecorder {
	t.Helper()
	target, err := url.Parse(StripeMockURL(t))
	if err != nil {
		t.Fatal(err)
	}
	rec := &StripeRecorder{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		r := resp.Request
		body, _ := r.Context().Value(bodyKey{}).([]byte)
		form, _ := url.ParseQuery(string(body))
		rec.mu.Lock()
		rec.requests = append(rec.requests, StripeRequest{Method: r.Method, Path: r.URL.Path,
			IdempotencyKey: r.Header.Get("Idempotency-Key"), Form: form, Status: resp.StatusCode})
		rec.mu.Unlock()
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		proxy.ServeHTTP(w, r.WithContext(contextWith(r, body)))
	}))
	t.Cleanup(srv.Close)
	rec.URL = srv.URL
	return rec
}

// Requests are the requests recorded so far, in order.
func (r *StripeRecorder) Requests() []StripeRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]StripeRequest(nil), r.requests...)
}

// Reset forgets the requests recorded so far.
func (r *StripeRecorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = nil
}

type bodyKey struct{}

func contextWith(r *http.Request, body []byte) context.Context {
	return context.WithValue(r.Context(), bodyKey{}, body)
}
