package schema

import (
	"encoding/json"
	"testing"
	"time"
)

func TestAppendJSONEqualsEncodingJSON(t *testing.T) {
	base := UsageEvent{SchemaVersion: 1, EventID: "019ab8a4-5f3e-7c1d-9a0b-3c4d5e6f7a8b",
		OccurredAt: time.Date(2026, 11, 25, 12, 45, 54, 123456789, time.UTC), WorkspaceID: "ws_acme", APIKeyID: "key_x",
		Model: "venna-1", Upstream: "sim", UpstreamModel: "sim-large", RequestID: "chatcmpl-1", Status: StatusOK,
		HTTPStatus: 200, Stream: true, LatencyMS: 12, PromptTokens: 41, CachedTokens: 16, CompletionTokens: 64,
		ReasoningTokens: 48, AcceptedPredictionTokens: 2, RejectedPredictionTokens: 3, TotalTokens: 105}
	cases := map[string]func(*UsageEvent){
		"plain":               func(*UsageEvent) {},
		"zero values":         func(e *UsageEvent) { *e = UsageEvent{} },
		"whole second":        func(e *UsageEvent) { e.OccurredAt = e.OccurredAt.Truncate(time.Second) },
		"escapes":             func(e *UsageEvent) { e.Model = "a\"b\\c\n<d>&" },
		"unicode":             func(e *UsageEvent) { e.WorkspaceID = "wörkspace ✓" },
		"invalid utf-8":       func(e *UsageEvent) { e.RequestID = "bad\xffbyte" },
		"negative and large":  func(e *UsageEvent) { e.LatencyMS, e.TotalTokens = -1, 1<<40 },
		"estimated no stream": func(e *UsageEvent) { e.Stream, e.Estimated = false, true },
	}
	for name, edit := range cases {
		t.Run(name, func(t *testing.T) {
			ev := base
			edit(&ev)
			want, err := json.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			if got := ev.AppendJSON(nil); string(got) != string(want) {
				t.Errorf("AppendJSON:\n%s\nencoding/json:\n%s", got, want)
			}
		})
	}
}
