// Package schema holds Venna's data contracts: the usage event that flows from the gateway
// through Kafka into ClickHouse, and the ClickHouse migrations that store it. Every stage
// imports the event type from here; EVENT.md is its written contract.
package schema

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// EventVersion is the schema version of UsageEvent written by this build.
const EventVersion = 1

// Event statuses. Only StatusOK events carry billable tokens.
const (
	StatusOK            = "ok"
	StatusUpstreamError = "upstream_error"
)

// UsageEvent is one completion's usage: exactly one per completion served by the gateway.
// Token fields follow OpenAI's usage object: PromptTokens includes CachedTokens and
// CompletionTokens includes ReasoningTokens (and accepted/rejected prediction tokens).
type UsageEvent struct {
	SchemaVersion int       `json:"schema_version"`
	EventID       string    `json:"event_id"`
	OccurredAt    time.Time `json:"occurred_at"`
	WorkspaceID   string    `json:"workspace_id"`
	APIKeyID      string    `json:"api_key_id"`
	Model         string    `json:"model"`
	Upstream      string    `json:"upstream"`
	UpstreamModel string    `json:"upstream_model"`
	RequestID     string    `json:"request_id"`
	Status        string    `json:"status"`
	HTTPStatus    int       `json:"http_status"`
	Stream        bool      `json:"stream"`
	Estimated     bool      `json:"estimated"`
	LatencyMS     int64     `json:"latency_ms"`

	PromptTokens             int64 `json:"prompt_tokens"`
	CachedTokens             int64 `json:"cached_tokens"`
	CompletionTokens         int64 `json:"completion_tokens"`
	ReasoningTokens          int64 `json:"reasoning_tokens"`
	AcceptedPredictionTokens int64 `json:"accepted_prediction_tokens"`
	RejectedPredictionTokens int64 `json:"rejected_prediction_tokens"`
	TotalTokens              int64 `json:"total_tokens"`
}

// MaxTokens bounds any single token count; a larger value is corrupt data, not usage.
const MaxTokens = 1 << 32

// ErrInvalidEvent marks an event that breaks the contract; see Validate.
var ErrInvalidEvent = errors.New("invalid usage event")

// Validate reports the first way e breaks the v1 contract, wrapping ErrInvalidEvent.
func (e *UsageEvent) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidEvent, fmt.Sprintf(format, args...))
	}
	switch {
	case e.SchemaVersion != EventVersion:
		return bad("schema_version %d, want %d", e.SchemaVersion, EventVersion)
	case strings.TrimSpace(e.EventID) == "":
		return bad("event_id is empty")
	case strings.TrimSpace(e.WorkspaceID) == "":
		return bad("workspace_id is empty")
	case strings.TrimSpace(e.Model) == "":
		return bad("model is empty")
	case e.OccurredAt.IsZero():
		return bad("occurred_at is missing")
	case e.Status != StatusOK && e.Status != StatusUpstreamError:
		return bad("status %q is unknown", e.Status)
	}
	counts := []struct {
		name string
		v    int64
	}{
		{"prompt_tokens", e.PromptTokens},
		{"cached_tokens", e.CachedTokens},
		{"completion_tokens", e.CompletionTokens},
		{"reasoning_tokens", e.ReasoningTokens},
		{"accepted_prediction_tokens", e.AcceptedPredictionTokens},
		{"rejected_prediction_tokens", e.RejectedPredictionTokens},
		{"total_tokens", e.TotalTokens},
	}
	for _, c := range counts {
		if c.v < 0 || c.v > MaxTokens {
			return bad("%s %d out of range [0, %d]", c.name, c.v, int64(MaxTokens))
		}
	}
	if e.CachedTokens > e.PromptTokens {
		return bad("cached_tokens %d exceed prompt_tokens %d", e.CachedTokens, e.PromptTokens)
	}
	if e.ReasoningTokens > e.CompletionTokens {
		return bad("reasoning_tokens %d exceed completion_tokens %d", e.ReasoningTokens, e.CompletionTokens)
	}
	return nil
}

// UncachedPromptTokens is the prompt tokens billed at the full input price.
func (e *UsageEvent) UncachedPromptTokens() int64 { return e.PromptTokens - e.CachedTokens }
