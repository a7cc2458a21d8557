package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/venna/metering/apikey"
	"github.com/venna/metering/schema"
	"github.com/venna/metering/simupstream"
)

// testToken is the one key fakeAuth accepts; it resolves to testPrincipal.
const testToken = "vk_testkey_s3cr3ts3cr3t"

// upstreamKey is what the routes send to the fake upstream as its Bearer.
const upstreamKey = "sk-upstream-operator-key"

var testPrincipal = apikey.Principal{WorkspaceID: "ws_acme", KeyID: "key_testkey"}

// fakeAuth accepts exactly the tokens it maps.
type fakeAuth map[string]apikey.Principal

func (a fakeAuth) Authenticate(token string) (apikey.Principal, error) {
	p, ok := a[token]
	if !ok {
		return apikey.Principal{}, apikey.ErrUnauthorized
	}
	return p, nil
}

// recordingPublisher keeps every published event; err, when set, is returned instead.
type recordingPublisher struct {
	err    error
	mu     sync.Mutex
	events []schema.UsageEvent
}

func (p *recordingPublisher) Publish(_ context.Context, ev schema.UsageEvent) error {
	if p.err != nil {
		return p.err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, ev)
	return nil
}

func (p *recordingPublisher) Events() []schema.UsageEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]schema.UsageEvent(nil), p.events...)
}

// only returns the one published event, failing the test otherwise: a completion is
// billed exactly once.
func (p *recordingPublisher) only(t *testing.T) schema.UsageEvent {
	t.Helper()
	evs := p.Events()
	if len(evs) != 1 {
		t.Fatalf("published %d usage events, want exactly 1: %+v", len(evs), evs)
	}
	return evs[0]
}

// upstreamCall is one request the fake upstream received.
type upstreamCall struct {
	Path   string
	Header http.Header
	Body   []byte
}

// fakeUpstream answers by the upstream model name in the request, so that one server can
// play every upstream behaviour the tests need.
type fakeUpstream struct {
	mu    sync.Mutex
	calls []upstreamCall
}

// Upstream model names with a special behaviour; any other name gets okBody.
const (
	upOK      = "up-large"
	up500     = "up-500"
	up429     = "up-429"
	up400     = "up-400"
	up401     = "up-401"
	upSlow    = "up-slow"
	upNoUsage = "up-no-usage"
	upBadJSON = "up-bad-json"
)

// okBody is a completion with fields the gateway does not know, odd spacing and key order:
// the client must receive it byte for byte.
const okBody = `{"id":"chatcmpl-abc123","object":"chat.completion","created":1700000000,"model":"up-large",
  "system_fingerprint":"fp_44709d6fcb","service_tier":"scale","x_vendor_extension":{"n":[1,2,3]},
  "choices":[{"index":0,"finish_reason":"tool_calls","logprobs":null,"message":{"role":"assistant","content":null,"refusal":null,
    "tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]}}],
  "usage":{"prompt_tokens":120,"completion_tokens":50,"total_tokens":170,
    "prompt_tokens_details":{"cached_tokens":64,"audio_tokens":0},
    "completion_tokens_details":{"reasoning_tokens":30,"accepted_prediction_tokens":5,"rejected_prediction_tokens":3,"audio_tokens":0}}}
`

const noUsageBody = `{"id":"chatcmpl-nousage","object":"chat.completion","created":1700000000,"model":"up-no-usage","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"A reply from an upstream that reports no usage at all."}}]}`

func (u *fakeUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.calls = append(u.calls, upstreamCall{Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
	u.mu.Unlock()
	var req struct {
		Model string `json:"model"`
	}
	json.Unmarshal(body, &req)
	fail := func(status int, typ, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":{"message":%q,"type":%q,"param":null,"code":null}}`, msg, typ)
	}
	switch req.Model {
	case up500:
		fail(http.StatusInternalServerError, "server_error", "The server had an error while processing your request.")
	case up429:
		fail(http.StatusTooManyRequests, "requests", "Rate limit reached for requests.")
	case up400:
		fail(http.StatusBadRequest, "invalid_request_error", "Invalid value for 'temperature': must be at most 2.")
	case up401:
		fail(http.StatusUnauthorized, "invalid_request_error", "Incorrect API key provided: sk-upstr***.")
	case upSlow:
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		fail(http.StatusInternalServerError, "server_error", "too late")
	case upNoUsage:
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(noUsageBody))
	case upBadJSON:
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`<html>502 Bad Gateway</html>`))
	default:
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(okBody))
	}
}

func (u *fakeUpstream) Calls() []upstreamCall {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]upstreamCall(nil), u.calls...)
}

// only returns the one request the upstream received, failing the test otherwise.
func (u *fakeUpstream) only(t *testing.T) upstreamCall {
	t.Helper()
	calls := u.Calls()
	if len(calls) != 1 {
		t.Fatalf("upstream got %d requests, want exactly 1", len(calls))
	}
	return calls[0]
}

// closedURL returns an http base URL on which nothing listens.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr + "/v1"
}

// harness is a gateway wired to a fake upstream, a fake key store and a recording publisher.
type harness struct {
	URL      string
	Upstream *fakeUpstream
	Pub      *recordingPublisher
}

// newHarness starts a gateway whose public models route to the fake upstream: "venna-1"
// (upstream model up-large), "venna-same" (no rename), one model per upstream behaviour
// named after it, and "venna-dead" pointing at a closed port. edit may change the Config.
func newHarness(t *testing.T, edit func(*Config)) *harness {
	t.Helper()
	h := &harness{Upstream: &fakeUpstream{}, Pub: &recordingPublisher{}}
	up := httptest.NewServer(h.Upstream)
	t.Cleanup(up.Close)
	base := up.URL + "/v1"
	routes := Routes{
		"venna-1":    {Model: "venna-1", Upstream: "fake", BaseURL: base, APIKey: upstreamKey, UpstreamModel: upOK},
		"venna-same": {Model: "venna-same", Upstream: "fake", BaseURL: base, APIKey: upstreamKey, UpstreamModel: "venna-same"},
		"venna-dead": {Model: "venna-dead", Upstream: "dead", BaseURL: closedURL(t), UpstreamModel: upOK},
	}
	for _, m := range []string{up500, up429, up400, up401, upSlow, upNoUsage, upBadJSON} {
		routes["venna-"+m] = Route{Model: "venna-" + m, Upstream: "fake", BaseURL: base, APIKey: upstreamKey, UpstreamModel: m}
	}
	cfg := Config{Routes: routes}
	if edit != nil {
		edit(&cfg)
	}
	h.URL = newGateway(t, cfg, h.Pub)
	return h
}

// newGateway serves a gateway with cfg that accepts testToken and publishes to pub; it
// returns the server's URL.
func newGateway(t *testing.T, cfg Config, pub Publisher) string {
	t.Helper()
	g, err := New(cfg, fakeAuth{testToken: testPrincipal}, pub, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// response is what a client got back.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// do sends method to path with body and, if auth is not empty, the Authorization header.
func do(t *testing.T, method, url, auth, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// wantOK fails the test unless r is a 200, and returns r.
func wantOK(t *testing.T, r response) response {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("status = %d, want 200; body %s", r.Status, r.Body)
	}
	return r
}

func (h *harness) chat(t *testing.T, auth, body string) response {
	t.Helper()
	return do(t, http.MethodPost, h.URL+"/v1/chat/completions", auth, body)
}

// wantEnvelope is the error a client must see; a nil param means JSON null.
type wantEnvelope struct {
	status int
	typ    string
	code   string
	param  *string
}

func ptr(s string) *string { return &s }

// checkEnvelope asserts the seed's error shape: exactly {"error":{code,message,param,type}},
// served as application/json with the expected status.
func checkEnvelope(t *testing.T, r response, want wantEnvelope) {
	t.Helper()
	if r.Status != want.status {
		t.Errorf("status = %d, want %d; body %s", r.Status, want.status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var raw map[string]map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &raw); err != nil {
		t.Fatalf("body is not an error envelope: %v; body %s", err, r.Body)
	}
	if len(raw) != 1 || raw["error"] == nil {
		t.Fatalf("envelope keys = %v, want only \"error\"; body %s", keys(raw), r.Body)
	}
	detail := raw["error"]
	if got := keys(detail); !reflect.DeepEqual(got, []string{"code", "message", "param", "type"}) {
		t.Errorf("error keys = %v, want [code message param type]", got)
	}
	var d struct {
		Code    string  `json:"code"`
		Message string  `json:"message"`
		Param   *string `json:"param"`
		Type    string  `json:"type"`
	}
	b, _ := json.Marshal(detail)
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("error detail: %v; body %s", err, r.Body)
	}
	if d.Type != want.typ {
		t.Errorf("error.type = %q, want %q", d.Type, want.typ)
	}
	if d.Code != want.code {
		t.Errorf("error.code = %q, want %q", d.Code, want.code)
	}
	if strings.TrimSpace(d.Message) == "" {
		t.Errorf("error.message is empty")
	}
	switch {
	case want.param == nil && string(detail["param"]) != "null":
		t.Errorf("error.param = %s, want null", detail["param"])
	case want.param != nil && (d.Param == nil || *d.Param != *want.param):
		t.Errorf("error.param = %s, want %q", detail["param"], *want.param)
	}
}

func keys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

const bearer = "Bearer " + testToken

// chatBody is a minimal valid request for model.
func chatBody(model string) string {
	return `{"model":"` + model + `","messages":[{"role":"user","content":"Hello!"}]}`
}

func TestChatCompletionsErrors(t *testing.T) {
	tests := []struct {
		name   string
		method string // default POST
		auth   string
		body   string
		edit   func(*Config)
		want   wantEnvelope
		// reachesUpstream is true where the request is valid and the upstream's own
		// answer (or silence) is what fails.
		reachesUpstream bool
		upstreamFailed  bool // no upstream answer, but the exchange was attempted
	}{
		{name: "no Authorization header", body: chatBody("venna-1"),
			want: wantEnvelope{401, "invalid_request_error", "missing_api_key", nil}},
		{name: "Basic instead of Bearer", auth: "Basic dXNlcjpwYXNz", body: chatBody("venna-1"),
			want: wantEnvelope{401, "invalid_request_error", "missing_api_key", nil}},
		{name: "raw key without Bearer", auth: testToken, body: chatBody("venna-1"),
			want: wantEnvelope{401, "invalid_request_error", "missing_api_key", nil}},
		{name: "Bearer with empty token", auth: "Bearer   ", body: chatBody("venna-1"),
			want: wantEnvelope{401, "invalid_request_error", "missing_api_key", nil}},
		{name: "unknown key", auth: "Bearer vk_testkey_wrongsecret", body: chatBody("venna-1"),
			want: wantEnvelope{401, "invalid_request_error", "invalid_api_key", nil}},
		{name: "malformed key", auth: "Bearer sk-proj-notavennakey", body: chatBody("venna-1"),
			want: wantEnvelope{401, "invalid_request_error", "invalid_api_key", nil}},
		{name: "key with trailing junk", auth: bearer + "x", body: chatBody("venna-1"),
			want: wantEnvelope{401, "invalid_request_error", "invalid_api_key", nil}},
		{name: "bad JSON", auth: bearer, body: `{"model":"venna-1","messages":[`,
			want: wantEnvelope{400, "invalid_request_error", "invalid_json", nil}},
		{name: "body is a JSON array", auth: bearer, body: `[{"model":"venna-1"}]`,
			want: wantEnvelope{400, "invalid_request_error", "invalid_json", nil}},
		{name: "empty body", auth: bearer, body: ``,
			want: wantEnvelope{400, "invalid_request_error", "invalid_json", nil}},
		{name: "missing model", auth: bearer, body: `{"messages":[{"role":"user","content":"hi"}]}`,
			want: wantEnvelope{400, "invalid_request_error", "missing_required_parameter", ptr("model")}},
		{name: "empty model", auth: bearer, body: `{"model":"","messages":[{"role":"user","content":"hi"}]}`,
			want: wantEnvelope{400, "invalid_request_error", "missing_required_parameter", ptr("model")}},
		{name: "missing messages", auth: bearer, body: `{"model":"venna-1"}`,
			want: wantEnvelope{400, "invalid_request_error", "missing_required_parameter", ptr("messages")}},
		{name: "null messages", auth: bearer, body: `{"model":"venna-1","messages":null}`,
			want: wantEnvelope{400, "invalid_request_error", "missing_required_parameter", ptr("messages")}},
		{name: "messages is a string", auth: bearer, body: `{"model":"venna-1","messages":"Hello!"}`,
			want: wantEnvelope{400, "invalid_request_error", "invalid_value", ptr("messages")}},
		{name: "messages is an object", auth: bearer, body: `{"model":"venna-1","messages":{"role":"user"}}`,
			want: wantEnvelope{400, "invalid_request_error", "invalid_value", ptr("messages")}},
		{name: "messages is empty", auth: bearer, body: `{"model":"venna-1","messages":[]}`,
			want: wantEnvelope{400, "invalid_request_error", "invalid_value", ptr("messages")}},
		{name: "unknown model", auth: bearer, body: chatBody("gpt-unknown"),
			want: wantEnvelope{404, "invalid_request_error", "model_not_found", ptr("model")}},
		{name: "upstream model name is not a public model", auth: bearer, body: chatBody(upOK),
			want: wantEnvelope{404, "invalid_request_error", "model_not_found", ptr("model")}},
		{name: "GET", method: http.MethodGet, auth: bearer,
			want: wantEnvelope{405, "invalid_request_error", "method_not_allowed", nil}},
		{name: "PUT", method: http.MethodPut, auth: bearer, body: chatBody("venna-1"),
			want: wantEnvelope{405, "invalid_request_error", "method_not_allowed", nil}},
		{name: "body too large", auth: bearer,
			body: `{"model":"venna-1","messages":[{"role":"user","content":"` + strings.Repeat("a", 4096) + `"}]}`,
			edit: func(c *Config) { c.MaxBodyBytes = 256 },
			want: wantEnvelope{413, "invalid_request_error", "request_too_large", nil}},
		{name: "upstream 500", auth: bearer, body: chatBody("venna-" + up500), reachesUpstream: true,
			want: wantEnvelope{502, "upstream_error", "upstream_error", nil}},
		{name: "upstream 401 is the operator's key, not the client's", auth: bearer, body: chatBody("venna-" + up401), reachesUpstream: true,
			want: wantEnvelope{502, "upstream_error", "upstream_error", nil}},
		{name: "upstream 429", auth: bearer, body: chatBody("venna-" + up429), reachesUpstream: true,
			want: wantEnvelope{429, "rate_limit_error", "upstream_rate_limited", nil}},
		{name: "upstream 400", auth: bearer, body: chatBody("venna-" + up400), reachesUpstream: true,
			want: wantEnvelope{400, "invalid_request_error", "upstream_rejected", nil}},
		{name: "upstream answers 200 with invalid JSON", auth: bearer, body: chatBody("venna-" + upBadJSON), reachesUpstream: true,
			want: wantEnvelope{502, "upstream_error", "upstream_bad_response", nil}},
		{name: "upstream unreachable", auth: bearer, body: chatBody("venna-dead"), upstreamFailed: true,
			want: wantEnvelope{502, "upstream_error", "upstream_unreachable", nil}},
		{name: "upstream timeout", auth: bearer, body: chatBody("venna-" + upSlow), reachesUpstream: true,
			edit: func(c *Config) { c.UpstreamTimeout = 100 * time.Millisecond },
			want: wantEnvelope{504, "upstream_error", "upstream_timeout", nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.edit)
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			r := do(t, method, h.URL+"/v1/chat/completions", tt.auth, tt.body)
			checkEnvelope(t, r, tt.want)
			if tt.want.status == http.StatusMethodNotAllowed && r.Header.Get("Allow") != http.MethodPost {
				t.Errorf("Allow = %q, want POST", r.Header.Get("Allow"))
			}
			evs := h.Pub.Events()
			switch {
			case !tt.reachesUpstream && !tt.upstreamFailed && len(evs) != 0:
				t.Errorf("published %d usage events for a request the gateway refused, want none: %+v", len(evs), evs)
			case tt.reachesUpstream || tt.upstreamFailed:
				// A failed upstream exchange is recorded for analytics, with nothing billable.
				if len(evs) != 1 {
					t.Fatalf("published %d events for a failed upstream exchange, want 1", len(evs))
				}
				ev := evs[0]
				if ev.Status != schema.StatusUpstreamError || ev.TotalTokens != 0 || ev.PromptTokens != 0 || ev.CompletionTokens != 0 || ev.Validate() != nil {
					t.Errorf("failure event %+v: want status upstream_error, zero tokens, valid", ev)
				}
			}
			if n := len(h.Upstream.Calls()); !tt.reachesUpstream && n != 0 {
				t.Errorf("upstream called %d times for a request the gateway must refuse itself", n)
			}
		})
	}
}

func TestUpstreamErrorMessageReachesClient(t *testing.T) {
	h := newHarness(t, nil)
	r := h.chat(t, bearer, chatBody("venna-"+up400))
	if !bytes.Contains(r.Body, []byte("must be at most 2")) {
		t.Errorf("upstream's 400 message lost; body %s", r.Body)
	}
}

func TestUpstreamTimeoutIsBounded(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.UpstreamTimeout = 100 * time.Millisecond })
	start := time.Now()
	r := h.chat(t, bearer, chatBody("venna-"+upSlow))
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("timed-out request took %v; the upstream timeout is 100ms", took)
	}
	if r.Status != http.StatusGatewayTimeout {
		t.Errorf("status = %d, want 504", r.Status)
	}
}

func TestChatCompletionsPassesResponseThrough(t *testing.T) {
	h := newHarness(t, nil)
	r := wantOK(t, h.chat(t, bearer, chatBody("venna-1")))
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if string(r.Body) != okBody {
		t.Errorf("response body changed on the way through:\n got %s\nwant %s", r.Body, okBody)
	}
}

// decodeNumbers decodes JSON keeping numbers exact, so that a seed beyond 2^53 compares.
func decodeNumbers(t *testing.T, b []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return m
}

func TestChatCompletionsForwardsRequest(t *testing.T) {
	const extras = `"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],` +
		`"tool_choice":{"type":"function","function":{"name":"get_weather"}},` +
		`"response_format":{"type":"json_schema","json_schema":{"name":"w","strict":true,"schema":{"type":"object"}}},` +
		`"seed":9007199254740993,"n":2,"logprobs":true,"top_logprobs":3,"temperature":0.25,"max_completion_tokens":64,` +
		`"metadata":{"customer":"ünïcode ✓"},"stream":false,` +
		`"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Weather in Oslo?"}]}]`
	tests := []struct {
		name          string
		model         string
		upstreamModel string
	}{
		{"renamed model", "venna-1", upOK},
		{"same model name", "venna-same", "venna-same"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			sent := `{"model":"` + tt.model + `",` + extras + `}`
			wantOK(t, h.chat(t, bearer, sent))
			c := h.Upstream.only(t)
			if c.Path != "/v1/chat/completions" {
				t.Errorf("upstream path = %q, want /v1/chat/completions", c.Path)
			}
			if got := c.Header.Get("Authorization"); got != "Bearer "+upstreamKey {
				t.Errorf("upstream Authorization = %q, want the route's key, never the client's", got)
			}
			if bytes.Contains(c.Body, []byte(testToken)) || strings.Contains(fmt.Sprint(c.Header), testToken) {
				t.Errorf("the client's Venna key leaked to the upstream")
			}
			got := decodeNumbers(t, c.Body)
			want := decodeNumbers(t, []byte(sent))
			want["model"] = tt.upstreamModel
			if !reflect.DeepEqual(got, want) {
				t.Errorf("upstream received\n%s\nwant (sent with model %q)\n%s", c.Body, tt.upstreamModel, sent)
			}
		})
	}
}

// TestModelIsTheBilledModel: whatever spelling of "model" a client sends, the upstream must
// be asked for exactly the upstream model of the route the event bills.
func TestModelIsTheBilledModel(t *testing.T) {
	const msgs = `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		name      string
		body      string
		billed    string
		upstreamM string
	}{
		{"other spelling after model, same-name route", `{"model":"gpt-expensive","Model":"venna-same",` + msgs + `}`, "venna-same", "venna-same"},
		{"other spelling after model, renamed route", `{"model":"gpt-expensive","MODEL":"venna-1",` + msgs + `}`, "venna-1", upOK},
		{"only another spelling", `{"Model":"venna-same",` + msgs + `}`, "venna-same", "venna-same"},
		{"model sent twice", `{"model":"gpt-expensive","model":"venna-same",` + msgs + `}`, "venna-same", "venna-same"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			wantOK(t, h.chat(t, bearer, tt.body))
			c := h.Upstream.only(t)
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(c.Body, &fields); err != nil {
				t.Fatal(err)
			}
			for k, v := range fields {
				if strings.EqualFold(k, "model") && (k != "model" || string(v) != `"`+tt.upstreamM+`"`) {
					t.Errorf("upstream got %s: %s, want only model %q", k, v, tt.upstreamM)
				}
			}
			if evs := h.Pub.Events(); len(evs) != 1 || evs[0].Model != tt.billed || evs[0].UpstreamModel != tt.upstreamM {
				t.Errorf("events = %+v, want one billing %s served by %s", evs, tt.billed, tt.upstreamM)
			}
		})
	}
}

func TestChatCompletionsWithoutRouteKeySendsNoAuthorization(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		r := c.Routes["venna-1"]
		r.APIKey = ""
		c.Routes["venna-1"] = r
	})
	wantOK(t, h.chat(t, bearer, chatBody("venna-1")))
	if got := h.Upstream.only(t).Header.Get("Authorization"); got != "" {
		t.Errorf("upstream Authorization = %q, want none (the client's key must not be forwarded)", got)
	}
}

func TestChatCompletionsPublishesOneEvent(t *testing.T) {
	h := newHarness(t, nil)
	before := time.Now()
	wantOK(t, h.chat(t, bearer, chatBody("venna-1")))
	after := time.Now()
	ev := h.Pub.only(t)
	if err := ev.Validate(); err != nil {
		t.Errorf("published event is invalid: %v", err)
	}
	if ev.OccurredAt.Location() != time.UTC {
		t.Errorf("occurred_at location = %v, want UTC", ev.OccurredAt.Location())
	}
	if ev.OccurredAt.Before(before.Add(-time.Millisecond)) || ev.OccurredAt.After(after) {
		t.Errorf("occurred_at = %v, want within the request [%v, %v]", ev.OccurredAt, before, after)
	}
	if ev.EventID == "" {
		t.Errorf("event_id is empty")
	}
	if ev.LatencyMS < 0 {
		t.Errorf("latency_ms = %d, want >= 0", ev.LatencyMS)
	}
	got := ev
	got.EventID, got.OccurredAt, got.LatencyMS = "", time.Time{}, 0
	want := schema.UsageEvent{
		SchemaVersion:            schema.EventVersion,
		WorkspaceID:              testPrincipal.WorkspaceID,
		APIKeyID:                 testPrincipal.KeyID,
		Model:                    "venna-1",
		Upstream:                 "fake",
		UpstreamModel:            upOK,
		RequestID:                "chatcmpl-abc123",
		Status:                   schema.StatusOK,
		HTTPStatus:               http.StatusOK,
		PromptTokens:             120,
		CachedTokens:             64,
		CompletionTokens:         50,
		ReasoningTokens:          30,
		AcceptedPredictionTokens: 5,
		RejectedPredictionTokens: 3,
		TotalTokens:              170,
	}
	if got != want {
		t.Errorf("event\n got %+v\nwant %+v", got, want)
	}
}

// TestEventTokensMatchResponseUsage runs against the simulated upstream: what the workspace
// is billed for must be what the completion it received says it used.
func TestEventTokensMatchResponseUsage(t *testing.T) {
	up := httptest.NewServer((&simupstream.Server{APIKey: upstreamKey}).Handler())
	t.Cleanup(up.Close)
	routes := Routes{}
	for m, um := range map[string]string{"venna-1": "sim-large", "venna-1-reasoning": "sim-reasoner"} {
		routes[m] = Route{Model: m, Upstream: "sim", BaseURL: up.URL + "/v1", APIKey: upstreamKey, UpstreamModel: um}
	}
	pub := &recordingPublisher{}
	url := newGateway(t, Config{Routes: routes}, pub)

	long := strings.Repeat("Some earlier context that the provider caches. ", 20)
	tests := []struct {
		name, model, messages string
	}{
		{"plain", "venna-1", `[{"role":"user","content":"Hello!"}]`},
		{"cached prefix", "venna-1", `[{"role":"system","content":"` + long + `"},{"role":"user","content":"And now?"}]`},
		{"reasoning", "venna-1-reasoning", `[{"role":"user","content":"Think about it."}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(pub.Events())
			r := wantOK(t, do(t, http.MethodPost, url+"/v1/chat/completions", bearer, `{"model":"`+tt.model+`","messages":`+tt.messages+`}`))
			var resp struct {
				ID    string            `json:"id"`
				Model string            `json:"model"`
				Usage simupstream.Usage `json:"usage"`
			}
			if err := json.Unmarshal(r.Body, &resp); err != nil {
				t.Fatalf("decode completion: %v", err)
			}
			evs := pub.Events()
			if len(evs) != before+1 {
				t.Fatalf("published %d events for one completion", len(evs)-before)
			}
			ev := evs[len(evs)-1]
			u := resp.Usage
			gotTokens := [5]int64{ev.PromptTokens, ev.CachedTokens, ev.CompletionTokens, ev.ReasoningTokens, ev.TotalTokens}
			wantTokens := [5]int64{u.PromptTokens, u.PromptTokensDetails.CachedTokens, u.CompletionTokens,
				u.CompletionTokensDetails.ReasoningTokens, u.TotalTokens}
			if gotTokens != wantTokens {
				t.Errorf("event tokens [prompt cached completion reasoning total] = %v, response usage says %v", gotTokens, wantTokens)
			}
			if tt.name != "plain" && wantTokens[1] == 0 && wantTokens[3] == 0 {
				t.Errorf("case %q exercises neither cached nor reasoning tokens: %v", tt.name, wantTokens)
			}
			if ev.RequestID != resp.ID || ev.Model != tt.model || ev.UpstreamModel != resp.Model || ev.Estimated {
				t.Errorf("event = %+v, want request_id %s, model %s, upstream_model %s, not estimated", ev, resp.ID, tt.model, resp.Model)
			}
			if err := ev.Validate(); err != nil {
				t.Errorf("event invalid: %v", err)
			}
		})
	}
}

func TestEventTokensFromPartialUsage(t *testing.T) {
	tests := []struct {
		name  string
		usage string
		want  [7]int64 // prompt, cached, completion, reasoning, accepted, rejected, total
	}{
		{"no details", `{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}`, [7]int64{11, 0, 7, 0, 0, 0, 18}},
		{"null details", `{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18,"prompt_tokens_details":null,"completion_tokens_details":null}`, [7]int64{11, 0, 7, 0, 0, 0, 18}},
		{"zero completion", `{"prompt_tokens":5,"completion_tokens":0,"total_tokens":5}`, [7]int64{5, 0, 0, 0, 0, 0, 5}},
		{"total is prompt plus completion", `{"prompt_tokens":10,"completion_tokens":4,"total_tokens":999}`, [7]int64{10, 0, 4, 0, 0, 0, 14}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","choices":[],"usage":%s}`, tt.usage)
			}))
			t.Cleanup(up.Close)
			pub := &recordingPublisher{}
			url := newGateway(t, Config{Routes: Routes{"m": {Model: "m", Upstream: "u", BaseURL: up.URL, UpstreamModel: "m"}}}, pub)
			wantOK(t, do(t, http.MethodPost, url+"/v1/chat/completions", bearer, chatBody("m")))
			ev := pub.only(t)
			got := [7]int64{ev.PromptTokens, ev.CachedTokens, ev.CompletionTokens, ev.ReasoningTokens,
				ev.AcceptedPredictionTokens, ev.RejectedPredictionTokens, ev.TotalTokens}
			if got != tt.want || ev.Estimated {
				t.Errorf("tokens = %v estimated=%v, want %v not estimated", got, ev.Estimated, tt.want)
			}
		})
	}
}

func TestEventIDsAreUnique(t *testing.T) {
	const n = 50
	h := newHarness(t, nil)
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, h.URL+"/v1/chat/completions", strings.NewReader(chatBody("venna-1")))
			req.Header.Set("Authorization", bearer)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				failed.Add(1)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed", f, n)
	}
	evs := h.Pub.Events()
	if len(evs) != n {
		t.Fatalf("published %d events for %d completions, want one each", len(evs), n)
	}
	seen := map[string]bool{}
	for _, ev := range evs {
		if seen[ev.EventID] {
			t.Errorf("event_id %s published twice", ev.EventID)
		}
		seen[ev.EventID] = true
	}
}

func TestChatCompletionsWithoutUpstreamUsageIsEstimated(t *testing.T) {
	h := newHarness(t, nil)
	r := wantOK(t, h.chat(t, bearer, chatBody("venna-"+upNoUsage)))
	if string(r.Body) != noUsageBody {
		t.Errorf("response changed on the way through: %s", r.Body)
	}
	ev := h.Pub.only(t)
	if !ev.Estimated {
		t.Errorf("estimated = false, want true")
	}
	if ev.PromptTokens <= 0 || ev.CompletionTokens <= 0 || ev.TotalTokens != ev.PromptTokens+ev.CompletionTokens {
		t.Errorf("tokens prompt=%d completion=%d total=%d, want nonzero with total = prompt + completion",
			ev.PromptTokens, ev.CompletionTokens, ev.TotalTokens)
	}
	if err := ev.Validate(); err != nil {
		t.Errorf("event invalid: %v", err)
	}
}

func TestPublishFailureWithholdsCompletion(t *testing.T) {
	h := newHarness(t, nil)
	h.Pub.err = errors.New("usage queue full")
	r := h.chat(t, bearer, chatBody("venna-1"))
	checkEnvelope(t, r, wantEnvelope{503, "server_error", "usage_unavailable", nil})
	if bytes.Contains(r.Body, []byte("get_weather")) || bytes.Contains(r.Body, []byte("chatcmpl-abc123")) {
		t.Errorf("an unmetered completion reached the client: %s", r.Body)
	}
}

func TestModels(t *testing.T) {
	routes := Routes{
		"venna-1":      {Model: "venna-1", Upstream: "sim", BaseURL: "http://127.0.0.1:1/v1", UpstreamModel: "sim-large"},
		"venna-1-mini": {Model: "venna-1-mini", Upstream: "sim", BaseURL: "http://127.0.0.1:1/v1", UpstreamModel: "sim-small"},
		"alpha":        {Model: "alpha", Upstream: "openai", BaseURL: "http://127.0.0.1:1/v1", UpstreamModel: "gpt-4o"},
	}
	url := newGateway(t, Config{Routes: routes}, &recordingPublisher{}) + "/v1/models"
	tests := []struct {
		name string
		auth string
		want *wantEnvelope // nil: the model list
	}{
		{"no key", "", &wantEnvelope{401, "invalid_request_error", "missing_api_key", nil}},
		{"invalid key", "Bearer vk_nope_nope", &wantEnvelope{401, "invalid_request_error", "invalid_api_key", nil}},
		{"valid key", bearer, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, http.MethodGet, url, tt.auth, "")
			if tt.want != nil {
				checkEnvelope(t, r, *tt.want)
				return
			}
			if r.Status != http.StatusOK {
				t.Fatalf("status = %d; body %s", r.Status, r.Body)
			}
			if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			type model struct {
				ID      string `json:"id"`
				Object  string `json:"object"`
				OwnedBy string `json:"owned_by"`
			}
			var list struct {
				Object string  `json:"object"`
				Data   []model `json:"data"`
			}
			if err := json.Unmarshal(r.Body, &list); err != nil {
				t.Fatalf("decode: %v; body %s", err, r.Body)
			}
			want := []model{{"alpha", "model", "openai"}, {"venna-1", "model", "sim"}, {"venna-1-mini", "model", "sim"}}
			if list.Object != "list" || !reflect.DeepEqual(list.Data, want) {
				t.Errorf("models = %s, want object list with %+v (public names only, sorted)", r.Body, want)
			}
		})
	}
}

func TestNewRefusesInvalidConfig(t *testing.T) {
	ok := Routes{"m": {Model: "m", Upstream: "u", BaseURL: "http://127.0.0.1:1", UpstreamModel: "m"}}
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no routes", Config{}},
		{"negative timeout", Config{Routes: ok, UpstreamTimeout: -time.Second}},
		{"negative body limit", Config{Routes: ok, MaxBodyBytes: -1}},
		{"base URL not http", Config{Routes: Routes{"m": {Model: "m", Upstream: "u", BaseURL: "ftp://h/v1", UpstreamModel: "m"}}}},
		{"base URL without host", Config{Routes: Routes{"m": {Model: "m", Upstream: "u", BaseURL: "http:///v1", UpstreamModel: "m"}}}},
		{"line break in upstream key", Config{Routes: Routes{"m": {Model: "m", Upstream: "u", BaseURL: "http://h/v1", APIKey: "k\r\nX: y", UpstreamModel: "m"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg, fakeAuth{}, &recordingPublisher{}, slog.New(slog.DiscardHandler)); err == nil {
				t.Errorf("New accepted %+v", tt.cfg)
			}
		})
	}
}

// A long answer comes back byte for byte with its length declared, not chunked.
func TestLongAnswerHasContentLength(t *testing.T) {
	answer := []byte(`{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"` +
		strings.Repeat("long ", 4000) + `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":4000,"total_tokens":4005}}`)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(answer)
	}))
	defer up.Close()
	pub := &recordingPublisher{}
	url := newGateway(t, Config{Routes: Routes{"m": {Model: "m", Upstream: "u", BaseURL: up.URL, UpstreamModel: "m"}}}, pub)
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if !bytes.Equal(got, answer) || resp.ContentLength != int64(len(answer)) || resp.TransferEncoding != nil {
		t.Fatalf("%d bytes (want %d), Content-Length %d, Transfer-Encoding %v", len(got), len(answer), resp.ContentLength, resp.TransferEncoding)
	}
}
