package schema

import (
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"
)

// validEvent is an event every field of which is set and within the contract.
func validEvent() UsageEvent {
	return UsageEvent{
		SchemaVersion:            EventVersion,
		EventID:                  "0190c3a2-7b1e-7cc1-9f00-5a1e2b3c4d5e",
		OccurredAt:               time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC),
		WorkspaceID:              "ws_acme",
		APIKeyID:                 "key_abc",
		Model:                    "venna-1",
		Upstream:                 "sim",
		UpstreamModel:            "sim-large",
		RequestID:                "chatcmpl-123",
		Status:                   StatusOK,
		HTTPStatus:               200,
		Stream:                   true,
		Estimated:                true,
		LatencyMS:                1234,
		PromptTokens:             120,
		CachedTokens:             64,
		CompletionTokens:         50,
		ReasoningTokens:          30,
		AcceptedPredictionTokens: 5,
		RejectedPredictionTokens: 3,
		TotalTokens:              170,
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name string
		edit func(*UsageEvent)
	}{
		{"complete event", func(*UsageEvent) {}},
		{"upstream error status", func(e *UsageEvent) { e.Status = StatusUpstreamError }},
		{"no api key id", func(e *UsageEvent) { e.APIKeyID = "" }},
		{"all tokens zero", func(e *UsageEvent) {
			e.PromptTokens, e.CachedTokens, e.CompletionTokens, e.ReasoningTokens = 0, 0, 0, 0
			e.AcceptedPredictionTokens, e.RejectedPredictionTokens, e.TotalTokens = 0, 0, 0
		}},
		{"tokens at MaxTokens", func(e *UsageEvent) { e.PromptTokens, e.TotalTokens = MaxTokens, MaxTokens }},
		{"whole prompt cached", func(e *UsageEvent) { e.CachedTokens = e.PromptTokens }},
		{"whole completion reasoning", func(e *UsageEvent) { e.ReasoningTokens = e.CompletionTokens }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := validEvent()
			tt.edit(&e)
			if err := e.Validate(); err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
		})
	}
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name string
		edit func(*UsageEvent)
	}{
		{"schema_version 0", func(e *UsageEvent) { e.SchemaVersion = 0 }},
		{"schema_version 2", func(e *UsageEvent) { e.SchemaVersion = EventVersion + 1 }},
		{"empty event_id", func(e *UsageEvent) { e.EventID = "" }},
		{"blank event_id", func(e *UsageEvent) { e.EventID = " \t" }},
		{"empty workspace_id", func(e *UsageEvent) { e.WorkspaceID = "" }},
		{"blank workspace_id", func(e *UsageEvent) { e.WorkspaceID = "  " }},
		{"empty model", func(e *UsageEvent) { e.Model = "" }},
		{"zero occurred_at", func(e *UsageEvent) { e.OccurredAt = time.Time{} }},
		{"empty status", func(e *UsageEvent) { e.Status = "" }},
		{"unknown status", func(e *UsageEvent) { e.Status = "OK" }},
		{"negative prompt_tokens", func(e *UsageEvent) { e.PromptTokens = -1 }},
		{"negative cached_tokens", func(e *UsageEvent) { e.CachedTokens = -1 }},
		{"negative completion_tokens", func(e *UsageEvent) { e.CompletionTokens = -1 }},
		{"negative reasoning_tokens", func(e *UsageEvent) { e.ReasoningTokens = -1 }},
		{"negative accepted_prediction_tokens", func(e *UsageEvent) { e.AcceptedPredictionTokens = -1 }},
		{"negative rejected_prediction_tokens", func(e *UsageEvent) { e.RejectedPredictionTokens = -1 }},
		{"negative total_tokens", func(e *UsageEvent) { e.TotalTokens = -1 }},
		{"prompt_tokens over MaxTokens", func(e *UsageEvent) { e.PromptTokens = MaxTokens + 1 }},
		{"completion_tokens over MaxTokens", func(e *UsageEvent) { e.CompletionTokens = MaxTokens + 1 }},
		{"accepted_prediction_tokens over MaxTokens", func(e *UsageEvent) { e.AcceptedPredictionTokens = MaxTokens + 1 }},
		{"rejected_prediction_tokens over MaxTokens", func(e *UsageEvent) { e.RejectedPredictionTokens = MaxTokens + 1 }},
		{"total_tokens over MaxTokens", func(e *UsageEvent) { e.TotalTokens = MaxTokens + 1 }},
		{"cached exceeds prompt", func(e *UsageEvent) { e.CachedTokens = e.PromptTokens + 1 }},
		{"reasoning exceeds completion", func(e *UsageEvent) { e.ReasoningTokens = e.CompletionTokens + 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := validEvent()
			tt.edit(&e)
			err := e.Validate()
			if err == nil {
				t.Fatalf("Validate() = nil for %+v", e)
			}
			if !errors.Is(err, ErrInvalidEvent) {
				t.Errorf("Validate() = %v, want it to wrap ErrInvalidEvent", err)
			}
		})
	}
}

func TestUncachedPromptTokens(t *testing.T) {
	e := validEvent()
	if got := e.UncachedPromptTokens(); got != 56 {
		t.Errorf("UncachedPromptTokens() = %d, want 120 - 64 = 56", got)
	}
}

func TestEventJSONRoundTrip(t *testing.T) {
	in := validEvent()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out UsageEvent
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	if !out.OccurredAt.Equal(in.OccurredAt) {
		t.Errorf("occurred_at = %v, want %v", out.OccurredAt, in.OccurredAt)
	}
	out.OccurredAt = in.OccurredAt
	if out != in {
		t.Errorf("round trip lost fields:\n got %+v\nwant %+v", out, in)
	}
	// Every field of validEvent is non-zero, so a field the JSON drops shows up above; make
	// sure that stays true when fields are added.
	v := reflect.ValueOf(in)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Errorf("validEvent leaves %s zero; set it so the round trip covers it", v.Type().Field(i).Name)
		}
	}
}

func TestEventJSONFieldNames(t *testing.T) {
	b, err := json.Marshal(validEvent())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"accepted_prediction_tokens", "api_key_id", "cached_tokens", "completion_tokens", "estimated",
		"event_id", "http_status", "latency_ms", "model", "occurred_at", "prompt_tokens",
		"reasoning_tokens", "rejected_prediction_tokens", "request_id", "schema_version", "status",
		"stream", "total_tokens", "upstream", "upstream_model", "workspace_id",
	}
	if got := slices.Sorted(maps.Keys(m)); !slices.Equal(got, want) {
		t.Errorf("JSON fields =\n%v\nwant\n%v", got, want)
	}
	if got := m["occurred_at"]; got != "2025-03-14T15:09:26.535897Z" {
		t.Errorf("occurred_at = %v, want RFC 3339 in UTC", got)
	}
	if got := m["schema_version"]; got != float64(EventVersion) {
		t.Errorf("schema_version = %v, want %d", got, EventVersion)
	}
}

func TestEventJSONDecodesDocumentedNames(t *testing.T) {
	// A producer written from the documentation alone, not from this struct.
	const doc = `{"schema_version":1,"event_id":"e1","occurred_at":"2025-01-02T03:04:05Z","workspace_id":"ws",
		"api_key_id":"k","model":"m","upstream":"u","upstream_model":"um","request_id":"r","status":"ok",
		"http_status":200,"stream":false,"estimated":false,"latency_ms":7,"prompt_tokens":10,"cached_tokens":4,
		"completion_tokens":6,"reasoning_tokens":2,"accepted_prediction_tokens":1,"rejected_prediction_tokens":1,
		"total_tokens":16}`
	var e UsageEvent
	if err := json.Unmarshal([]byte(doc), &e); err != nil {
		t.Fatal(err)
	}
	want := UsageEvent{
		SchemaVersion: 1, EventID: "e1", OccurredAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), WorkspaceID: "ws",
		APIKeyID: "k", Model: "m", Upstream: "u", UpstreamModel: "um", RequestID: "r", Status: StatusOK,
		HTTPStatus: 200, LatencyMS: 7, PromptTokens: 10, CachedTokens: 4, CompletionTokens: 6, ReasoningTokens: 2,
		AcceptedPredictionTokens: 1, RejectedPredictionTokens: 1, TotalTokens: 16,
	}
	if !e.OccurredAt.Equal(want.OccurredAt) {
		t.Errorf("occurred_at = %v, want %v", e.OccurredAt, want.OccurredAt)
	}
	e.OccurredAt = want.OccurredAt
	if e != want {
		t.Errorf("decoded\n%+v\nwant\n%+v", e, want)
	}
	if err := e.Validate(); err != nil {
		t.Errorf("documented example invalid: %v", err)
	}
}
