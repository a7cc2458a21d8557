// Package simupstream is an OpenAI-compatible chat completions server that answers
// deterministically and reports realistic usage (cached prompt tokens, reasoning tokens).
// It is the peer the local stack, the demo and the tests run the gateway against; it is
// not part of the product, and the gateway works unchanged against a real provider.
package simupstream

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// Server answers POST /v1/chat/completions and GET /v1/models.
type Server struct {
	// APIKey, when set, must be presented as "Authorization: Bearer <APIKey>".
	APIKey string
	seq    atomic.Uint64
}

// Handler returns the server's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.chat)
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"list","data":[{"id":"sim-small","object":"model","created":0,"owned_by":"sim"},{"id":"sim-large","object":"model","created":0,"owned_by":"sim"},{"id":"sim-reasoner","object":"model","created":0,"owned_by":"sim"}]}`)
	})
	return mux
}

// Message is one chat message as the upstream decodes it.
type Message struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type request struct {
	Model               string    `json:"model"`
	Messages            []Message `json:"messages"`
	MaxTokens           *int64    `json:"max_tokens"`
	MaxCompletionTokens *int64    `json:"max_completion_tokens"`
	Stream              bool      `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

// Usage mirrors OpenAI's usage object.
type Usage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	TotalTokens         int64 `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails struct {
		ReasoningTokens          int64 `json:"reasoning_tokens"`
		AcceptedPredictionTokens int64 `json:"accepted_prediction_tokens"`
		RejectedPredictionTokens int64 `json:"rejected_prediction_tokens"`
	} `json:"completion_tokens_details"`
}

func writeError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": typ}})
	w.Write(b)
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	if s.APIKey != "" && r.Header.Get("Authorization") != "Bearer "+s.APIKey {
		writeError(w, http.StatusUnauthorized, "invalid_api_key", "simulated upstream: bad api key")
		return
	}
	var req request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "simulated upstream: "+err.Error())
		return
	}
	if len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "simulated upstream: messages is empty")
		return
	}
	if req.Model == "sim-fail" {
		writeError(w, http.StatusInternalServerError, "server_error", "simulated upstream failure")
		return
	}
	text, usage := Complete(req.Model, req.Messages, maxTokens(req))
	n := s.seq.Add(1)
	if req.Stream {
		s.stream(w, r, req, n, text, usage)
		return
	}
	resp := map[string]any{
		"id":                 fmt.Sprintf("chatcmpl-sim-%d", n),
		"object":             "chat.completion",
		"created":            time.Now().Unix(),
		"model":              req.Model,
		"service_tier":       "default",
		"system_fingerprint": "fp_sim",
		"choices": []any{map[string]any{
			"index":         0,
			"finish_reason": "stop",
			"message":       map[string]any{"role": "assistant", "content": text, "refusal": nil},
		}},
		"usage": usage,
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

func maxTokens(r request) int64 {
	switch {
	case r.MaxCompletionTokens != nil:
		return *r.MaxCompletionTokens
	case r.MaxTokens != nil:
		return *r.MaxTokens
	}
	return 0
}

// contentText returns a message's text whether content is a string or an array of parts.
func contentText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []struct {
		Text string `json:"text"`
	}
	json.Unmarshal(raw, &parts)
	var b strings.Builder
	for _, p := range parts {
		b.WriteString(p.Text)
	}
	return b.String()
}

// countTokens approximates a tokenizer: one token per 4 bytes of text, at least one per word.
func countTokens(s string) int64 {
	n := int64((len(s) + 3) / 4)
	if w := int64(len(strings.Fields(s))); w > n {
		n = w
	}
	return n
}

// Complete computes the deterministic answer and usage for a conversation. Each message
// costs 4 tokens of framing plus its text; every message before the last counts as a
// cached prefix in blocks of 16 tokens; "reasoner" models think 3 tokens per answer token.
func Complete(model string, msgs []Message, max int64) (string, Usage) {
	var u Usage
	var prefix int64
	last := ""
	for i, m := range msgs {
		text := contentText(m.Content)
		t := 4 + countTokens(text)
		u.PromptTokens += t
		if i < len(msgs)-1 {
			prefix += t
		} else {
			last = text
		}
	}
	u.PromptTokens += 3 // reply priming
	u.PromptTokensDetails.CachedTokens = prefix / 16 * 16

	h := fnv.New32a()
	h.Write([]byte(model + "\x00" + last))
	words := 8 + int(h.Sum32()%24)
	if max > 0 && int64(words) > max {
		words = int(max)
	}
	var b strings.Builder
	b.WriteString("Simulated answer")
	for i := 2; i < words; i++ {
		b.WriteString(" w")
		b.WriteByte(byte('a' + (int(h.Sum32())+i)%26))
	}
	if words >= 2 {
		b.WriteByte('.')
	}
	answer := int64(words)
	u.CompletionTokens = answer
	if strings.Contains(model, "reason") {
		u.CompletionTokensDetails.ReasoningTokens = 3 * answer
		u.CompletionTokens += 3 * answer
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return b.String(), u
}

// stream answers in Server-Sent Events as OpenAI does: a role chunk, one chunk per word,
// a finish chunk, then (with stream_options.include_usage) a usage chunk with empty
// choices, then [DONE]. Models named "*-slow" wait 20ms between chunks, so tests can
// disconnect midway.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, req request, n uint64, text string, usage Usage) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	id := fmt.Sprintf("chatcmpl-sim-%d", n)
	created := time.Now().Unix()
	wantUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	send := func(choices []any, u *Usage) bool {
		chunk := map[string]any{"id": id, "object": "chat.completion.chunk", "created": created, "model": req.Model,
			"system_fingerprint": "fp_sim", "choices": choices}
		if wantUsage {
			chunk["usage"] = u // null on every chunk but the last, as OpenAI does
		}
		b, _ := json.Marshal(chunk)
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		if strings.HasSuffix(req.Model, "-slow") {
			select {
			case <-r.Context().Done():
				return false
			case <-time.After(20 * time.Millisecond):
			}
		}
		return r.Context().Err() == nil
	}
	delta := func(d map[string]any, finish any) []any {
		return []any{map[string]any{"index": 0, "delta": d, "finish_reason": finish, "logprobs": nil}}
	}
	if !send(delta(map[string]any{"role": "assistant", "content": ""}, nil), nil) {
		return
	}
	words := strings.SplitAfter(text, " ")
	for _, wd := range words {
		if !send(delta(map[string]any{"content": wd}, nil), nil) {
			return
		}
	}
	if !send(delta(map[string]any{}, "stop"), nil) {
		return
	}
	if wantUsage && !send([]any{}, &usage) {
		return
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	if flusher != nil {
		flusher.Flush()
	}
}
