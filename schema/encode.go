package schema

import (
	"encoding/json"
	"strconv"
	"time"
)

// AppendJSON appends e's JSON encoding, the same document encoding/json produces (a test
// holds them equal), without reflection: the gateway encodes one event per completion on
// its request path.
func (e *UsageEvent) AppendJSON(b []byte) []byte {
	b = append(b, `{"schema_version":`...)
	b = strconv.AppendInt(b, int64(e.SchemaVersion), 10)
	b = appendStr(b, `,"event_id":`, e.EventID)
	b = append(b, `,"occurred_at":"`...)
	b = e.OccurredAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = appendStr(b, `,"workspace_id":`, e.WorkspaceID)
	b = appendStr(b, `,"api_key_id":`, e.APIKeyID)
	b = appendStr(b, `,"model":`, e.Model)
	b = appendStr(b, `,"upstream":`, e.Upstream)
	b = appendStr(b, `,"upstream_model":`, e.UpstreamModel)
	b = appendStr(b, `,"request_id":`, e.RequestID)
	b = appendStr(b, `,"status":`, e.Status)
	b = appendInt(b, `,"http_status":`, int64(e.HTTPStatus))
	b = append(b, `,"stream":`...)
	b = strconv.AppendBool(b, e.Stream)
	b = append(b, `,"estimated":`...)
	b = strconv.AppendBool(b, e.Estimated)
	b = appendInt(b, `,"latency_ms":`, e.LatencyMS)
	b = appendInt(b, `,"prompt_tokens":`, e.PromptTokens)
	b = appendInt(b, `,"cached_tokens":`, e.CachedTokens)
	b = appendInt(b, `,"completion_tokens":`, e.CompletionTokens)
	b = appendInt(b, `,"reasoning_tokens":`, e.ReasoningTokens)
	b = appendInt(b, `,"accepted_prediction_tokens":`, e.AcceptedPredictionTokens)
	b = appendInt(b, `,"rejected_prediction_tokens":`, e.RejectedPredictionTokens)
	b = appendInt(b, `,"total_tokens":`, e.TotalTokens)
	return append(b, '}')
}

func appendInt(b []byte, key string, v int64) []byte {
	return strconv.AppendInt(append(b, key...), v, 10)
}

func appendStr(b []byte, key, s string) []byte {
	b = append(b, key...)
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 || c == '<' || c == '>' || c == '&' {
			// Rare in IDs and model names: let encoding/json escape exactly as it does.
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
