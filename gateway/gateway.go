// Package gateway serves the OpenAI-compatible POST /v1/chat/completions: it authenticates
// the workspace key, routes the model to its upstream, returns the upstream's completion
// untouched and emits exactly one usage event per completion to a Publisher.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/schema"
)

// Authenticator resolves a bearer token to its workspace.
type Authenticator interface {
	Authenticate(token string) (apikey.Principal, error)
}

// Publisher takes usage events off the request path. Publish must not wait on Kafka.
type Publisher interface {
	Publish(ctx context.Context, ev schema.UsageEvent) error
}

// Config configures the gateway handler.
type Config struct {
	Routes          Routes
	UpstreamTimeout time.Duration // whole upstream exchange; default 10m
	MaxBodyBytes    int64         // request body limit; default 16 MiB
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case len(c.Routes) == 0:
		return errors.New("gateway: Routes is empty (VENNA_ROUTES_FILE)")
	case c.UpstreamTimeout < 0:
		return errors.New("gateway: UpstreamTimeout is negative")
	case c.MaxBodyBytes < 0:
		return errors.New("gateway: MaxBodyBytes is negative")
	}
	return nil
}

// Gateway is the chat completions handler.
type Gateway struct {
	cfg    Config
	auth   Authenticator
	pub    Publisher
	client *http.Client
	log    *slog.Logger
	now    func() time.Time
	m      *metrics
	limits Limiter // nil: no budgets or rate limits

	onServed func(total, upstream time.Duration) // benchmarks: each chat request's timings
}

// New returns a Gateway; it refuses an invalid Config.
func New(cfg Config, auth Authenticator, pub Publisher, log *slog.Logger) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.UpstreamTimeout == 0 {
		cfg.UpstreamTimeout = 10 * time.Minute
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 16 << 20
	}
	routes := make(Routes, len(cfg.Routes))
	for m, r := range cfg.Routes {
		u, err := url.Parse(r.BaseURL + "/chat/completions")
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("gateway: route %s: base URL %q is not an http(s) URL", m, r.BaseURL)
		}
		if strings.ContainsAny(r.APIKey, "\r\n") {
			return nil, fmt.Errorf("gateway: route %s: the upstream API key contains a line break", m)
		}
		r.url = u
		r.header = http.Header{"Content-Type": hdrJSON, "Accept": hdrJSON}
		r.streamHeader = http.Header{"Content-Type": hdrJSON, "Accept": hdrSSE}
		if r.APIKey != "" {
			auth := []string{"Bearer " + r.APIKey}
			r.header["Authorization"], r.streamHeader["Authorization"] = auth, auth
		}
		routes[m] = r
	}
	cfg.Routes = routes
	tr := upstreamTransport(routes, http.ProxyFromEnvironment)
	if h1, ok := tr.(*h1Transport); ok {
		h1.timeout = cfg.UpstreamTimeout
	}
	return &Gateway{cfg: cfg, auth: auth, pub: pub, log: log, now: time.Now, client: &http.Client{Transport: tr}}, nil
}

// upstreamContext is the context of an upstream exchange: the request's, which ends when
// the client goes away, bounded by UpstreamTimeout unless the transport bounds the
// exchange itself.
func (g *Gateway) upstreamContext(r *http.Request) (context.Context, context.CancelFunc) {
	if h1, ok := g.client.Transport.(*h1Transport); ok && h1.timeout == g.cfg.UpstreamTimeout {
		return r.Context(), func() {}
	}
	return context.WithTimeout(r.Context(), g.cfg.UpstreamTimeout)
}

// upstreamTransport is the lean HTTP/1.1 transport, or net/http's when proxy sends any
// route's upstream through a proxy: net/http knows proxies (HTTPS_PROXY, NO_PROXY …).
func upstreamTransport(routes Routes, proxy func(*http.Request) (*url.URL, error)) http.RoundTripper {
	for _, r := range routes {
		req, err := http.NewRequest(http.MethodPost, r.BaseURL, nil)
		if err != nil {
			continue
		}
		if u, err := proxy(req); err != nil || u != nil {
			return &http.Transport{
				Proxy:               proxy,
				DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
				MaxIdleConns:        1024,
				MaxIdleConnsPerHost: 512,
				IdleConnTimeout:     90 * time.Second,
				ForceAttemptHTTP2:   true,
			}
		}
	}
	return newH1Transport()
}

// Handler returns the gateway's routes.
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/chat/completions", g.chatCompletions)
	mux.HandleFunc("GET /v1/models", g.models)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apierr.Write(w, http.StatusNotFound, "invalid_request_error", "unknown_url",
			fmt.Sprintf("Unknown request URL: %s %s", r.Method, r.URL.Path), "")
	})
	return mux
}

// chatRequest is the part of the request the gateway reads; everything else passes through.
type chatRequest struct {
	Model  string
	Stream bool
}

type badRequest struct{ code, msg, param string }

var chatRequestKeys = []string{"model", "messages", "stream"}

// parseChatRequest checks the body is a JSON object with a model and a non-empty messages
// array, and reads model and stream. Like encoding/json it matches keys ignoring case and
// takes the last of duplicates; prepareBody then writes exactly what was read here.
func parseChatRequest(body []byte) (chatRequest, *badRequest) {
	var req chatRequest
	var v [3][]byte
	err := pick(body, chatRequestKeys, v[:])
	model, messages, stream := v[0], v[1], v[2]
	switch {
	case errors.Is(err, errSyntax):
		// Rare: encoding/json says what is wrong, as clients of OpenAI's API are used to.
		var v any
		msg := "invalid JSON"
		if err := json.Unmarshal(body, &v); err != nil {
			msg = err.Error()
		}
		return req, &badRequest{"invalid_json", "We could not parse the JSON body of your request: " + msg, ""}
	case err != nil:
		return req, &badRequest{"invalid_json", "The request body must be a JSON object.", ""}
	}
	switch {
	case len(model) == 0 || string(model) == "null" || string(model) == `""`:
		return req, &badRequest{"missing_required_parameter", "Missing required parameter: 'model'.", "model"}
	case model[0] != '"':
		return req, &badRequest{"invalid_type", "Invalid type for 'model': expected a string.", "model"}
	}
	req.Model = jsonString(model)
	if len(messages) == 0 || string(messages) == "null" {
		return req, &badRequest{"missing_required_parameter", "Missing required parameter: 'messages'.", "messages"}
	}
	if messages[0] != '[' || messages[skipSpace(messages, 1)] == ']' {
		return req, &badRequest{"invalid_value", "Invalid 'messages': expected a non-empty array of messages.", "messages"}
	}
	switch string(stream) {
	case "", "null", "false":
	case "true":
		req.Stream = true
	default:
		return req, &badRequest{"invalid_type", "Invalid type for 'stream': expected a boolean.", "stream"}
	}
	return req, nil
}

func (g *Gateway) authenticate(w http.ResponseWriter, r *http.Request) (apikey.Principal, bool) {
	h := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || strings.TrimSpace(token) == "" {
		apierr.Write(w, http.StatusUnauthorized, "invalid_request_error", "missing_api_key",
			"You didn't provide an API key. Provide it in the Authorization header as 'Bearer vk_...'.", "")
		return apikey.Principal{}, false
	}
	p, err := g.auth.Authenticate(strings.TrimSpace(token))
	if err != nil {
		apierr.Write(w, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key",
			"Incorrect API key provided.", "")
		return apikey.Principal{}, false
	}
	return p, true
}

func (g *Gateway) models(w http.ResponseWriter, r *http.Request) {
	if _, ok := g.authenticate(w, r); !ok {
		return
	}
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	var data []model
	for _, m := range g.cfg.Routes.Models() {
		data = append(data, model{ID: m, Object: "model", OwnedBy: g.cfg.Routes[m].Upstream})
	}
	apierr.JSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

func (g *Gateway) chatCompletions(w http.ResponseWriter, r *http.Request) {
	start := g.now()
	sw := &statusWriter{ResponseWriter: w}
	model, stream := g.serveChat(sw, r, start)
	if sw.admitted && g.limits != nil {
		g.limits.Settle(sw.principal, sw.admission, sw.event)
	}
	total := g.now().Sub(start)
	g.m.observe(model, sw.status, total, sw.upstream, stream)
	if g.onServed != nil {
		g.onServed(total, sw.upstream)
	}
}

// upstreamTook records on w how long the upstream exchange took.
func upstreamTook(w http.ResponseWriter, d time.Duration) {
	if sw, ok := w.(*statusWriter); ok {
		sw.upstream = d
	}
}

// serveChat handles one request; it returns the model label and whether it streamed.
func (g *Gateway) serveChat(w http.ResponseWriter, r *http.Request, start time.Time) (label string, stream bool) {
	label = "-" // no routable model: one series, whatever clients send
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		apierr.Write(w, http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed",
			fmt.Sprintf("Method %s is not allowed on /v1/chat/completions; use POST.", r.Method), "")
		return
	}
	p, ok := g.authenticate(w, r)
	if !ok {
		return
	}
	body, err := readBody(w, r, g.cfg.MaxBodyBytes)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			apierr.Write(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large",
				fmt.Sprintf("Request body exceeds %d bytes.", g.cfg.MaxBodyBytes), "")
			return
		}
		apierr.Write(w, http.StatusBadRequest, "invalid_request_error", "invalid_body", "Could not read the request body.", "")
		return
	}
	req, bad := parseChatRequest(body)
	if bad != nil {
		apierr.Write(w, http.StatusBadRequest, "invalid_request_error", bad.code, bad.msg, bad.param)
		return
	}
	route, ok := g.cfg.Routes[req.Model]
	if !ok {
		apierr.Write(w, http.StatusNotFound, "invalid_request_error", "model_not_found",
			fmt.Sprintf("The model '%s' does not exist or you do not have access to it.", req.Model), "model")
		return
	}
	label, stream = route.Model, req.Stream
	adm, ok := g.admit(w, p, route.Model, body)
	if !ok {
		return
	}
	if sw, ok := w.(*statusWriter); ok {
		sw.admitted, sw.principal, sw.admission = true, p, adm
	}
	body, wantsUsage, err := prepareBody(body, route.UpstreamModel, req.Stream)
	if err != nil {
		apierr.Write(w, http.StatusBadRequest, "invalid_request_error", "invalid_json", err.Error(), "")
		return
	}
	if req.Stream {
		g.forwardStream(w, r, p, route, body, wantsUsage, start)
		return
	}
	g.forward(w, r, p, route, body, start)
	return
}

// readBody reads a request body of at most max bytes (else an *http.MaxBytesError) into
// one buffer of its declared length.
func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, error) {
	if r.ContentLength > max {
		return nil, &http.MaxBytesError{Limit: max}
	}
	return readN(http.MaxBytesReader(w, r.Body, max), r.ContentLength)
}

// readN reads rd to its end into one buffer when its length n is known (n ≥ 0).
func readN(rd io.Reader, n int64) ([]byte, error) {
	if n < 0 || n > 64<<20 {
		return io.ReadAll(rd)
	}
	// One byte more than announced, so the EOF is seen in the same read.
	b := make([]byte, 0, n+1)
	for {
		k, err := rd.Read(b[len(b):cap(b)])
		b = b[:len(b)+k]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) { // more than announced
			rest, err := io.ReadAll(rd)
			return append(b, rest...), err
		}
	}
}

// upstreamAnswer is the part of a chat completion the gateway reads.
type upstreamAnswer struct {
	ID    string
	Usage *usage
}

var answerKeys = []string{"id", "usage"}

// parseAnswer reads the id and usage of a completion, decoding only the usage object.
func parseAnswer(b []byte) (upstreamAnswer, error) {
	var a upstreamAnswer
	var v [2][]byte
	if err := pick(b, answerKeys, v[:]); err != nil {
		return a, err
	}
	id, u := v[0], v[1]
	a.ID = jsonString(id)
	if len(u) > 0 && u[0] == '{' {
		a.Usage = new(usage)
		if err := a.Usage.parse(u); err != nil {
			return a, err
		}
	}
	return a, nil
}

func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, p apikey.Principal, route Route, body []byte, start time.Time) {
	ctx, cancel := g.upstreamContext(r)
	defer cancel()
	upStart := g.now()
	resp := g.callUpstream(ctx, w, r, p, route, body, start, false)
	if resp == nil {
		return
	}
	defer resp.Body.Close()
	respBody, err := readN(resp.Body, resp.ContentLength)
	upstreamTook(w, g.now().Sub(upStart))
	if err != nil {
		g.recordFailure(w, p, route, start, false, http.StatusBadGateway)
		if errors.Is(err, context.DeadlineExceeded) {
			apierr.Write(w, http.StatusGatewayTimeout, "upstream_error", "upstream_timeout", "The upstream provider did not answer in time.", "")
			return
		}
		apierr.Write(w, http.StatusBadGateway, "upstream_error", "upstream_read_failed", "The upstream provider's answer was cut off.", "")
		return
	}
	if resp.StatusCode != http.StatusOK {
		g.recordFailure(w, p, route, start, false, resp.StatusCode)
		g.upstreamFailed(w, route, resp.StatusCode, respBody)
		return
	}
	a, err := parseAnswer(respBody)
	if err != nil {
		g.recordFailure(w, p, route, start, false, http.StatusBadGateway)
		apierr.Write(w, http.StatusBadGateway, "upstream_error", "upstream_bad_response", "The upstream provider answered with invalid JSON.", "")
		return
	}
	ev := g.newEvent(p, route, start, false)
	ev.RequestID = a.ID
	ev.LatencyMS = g.now().Sub(start).Milliseconds()
	if a.Usage == nil {
		// The upstream did not report usage: count it with the tokenizer rather than serve
		// an unbilled completion, and mark the event so analysts can tell.
		ev.Estimated = true
		ev.PromptTokens = countPromptTokens(body)
		ev.CompletionTokens = countTokens(completionText(respBody))
		ev.TotalTokens = ev.PromptTokens + ev.CompletionTokens
	} else {
		a.Usage.apply(&ev)
	}
	// The event is durable before the client sees its completion: a completion that got a
	// 200 always has its event.
	if err := g.emit(r.Context(), w, ev); err != nil {
		g.log.Error("usage event not recorded; completion withheld", "workspace", ev.WorkspaceID, "event_id", ev.EventID, "err", err)
		apierr.Write(w, http.StatusServiceUnavailable, "server_error", "usage_unavailable",
			"The completion could not be metered; retry shortly.", "")
		return
	}
	h := w.Header()
	h["Content-Type"] = hdrJSON // shared, never mutated: no allocation
	// Declared, so that an answer longer than net/http's 2 KiB buffer is not sent chunked.
	h["Content-Length"] = []string{strconv.Itoa(len(respBody))}
	w.WriteHeader(http.StatusOK)
	w.Write(respBody)
}

// completionText is the generated text of a chat completion, for estimating its tokens.
func completionText(body []byte) string {
	var c struct {
		Choices []struct {
			Message generated `json:"message"`
		} `json:"choices"`
	}
	json.Unmarshal(body, &c)
	var out strings.Builder
	for _, ch := range c.Choices {
		ch.Message.writeTo(&out)
	}
	return out.String()
}

// upstreamFailed passes an upstream's OpenAI-style client error through, and maps server
// errors to 502 so that clients can tell the gateway from the provider.
func (g *Gateway) upstreamFailed(w http.ResponseWriter, route Route, status int, body []byte) {
	var env struct {
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	msg := fmt.Sprintf("The upstream provider answered %d.", status)
	if json.Unmarshal(body, &env) == nil && env.Error != nil && env.Error.Message != "" {
		msg = "Upstream: " + env.Error.Message
	}
	switch {
	case status == http.StatusTooManyRequests:
		apierr.Write(w, status, "rate_limit_error", "upstream_rate_limited", msg, "")
	case status >= 400 && status < 500 && status != http.StatusUnauthorized && status != http.StatusForbidden:
		apierr.Write(w, status, "invalid_request_error", "upstream_rejected", msg, "")
	default:
		// 401/403 from the upstream is the operator's misconfigured key, not the client's.
		g.log.Warn("upstream error", "upstream", route.Upstream, "model", route.Model, "status", status)
		apierr.Write(w, http.StatusBadGateway, "upstream_error", "upstream_error", msg, "")
	}
}

func newEventID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}
