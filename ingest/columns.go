package ingest

import (
	_ "embed"
	"strings"
	"time"

	"github.com/venna/metering/internal/sqlset"
	"github.com/venna/metering/schema"
)

// eventColumns holds a batch column by column, as the native protocol sends it, so that
// an insert appends whole slices instead of converting row by row.
type eventColumns struct {
	n                                                                int
	eventID, workspaceID, apiKeyID, model, upstream, upstreamModel   []string
	requestID, status                                                []string
	schemaVersion, stream, estimated                                 []uint8
	occurredAt, ingestedAt                                           []time.Time
	httpStatus                                                       []uint16
	latencyMS                                                        []uint32
	prompt, cached, completion, reasoning, accepted, rejected, total []uint64
	partition                                                        []int32
	offset                                                           []int64
}

// eventColumnList is usage_events' columns in INSERT order, each with its slice.
var eventColumnList = []struct {
	name   string
	values func(*eventColumns) any
}{
	{"event_id", func(c *eventColumns) any { return c.eventID }},
	{"schema_version", func(c *eventColumns) any { return c.schemaVersion }},
	{"occurred_at", func(c *eventColumns) any { return c.occurredAt }},
	{"ingested_at", func(c *eventColumns) any { return c.ingestedAt }},
	{"workspace_id", func(c *eventColumns) any { return c.workspaceID }},
	{"api_key_id", func(c *eventColumns) any { return c.apiKeyID }},
	{"model", func(c *eventColumns) any { return c.model }},
	{"upstream", func(c *eventColumns) any { return c.upstream }},
	{"upstream_model", func(c *eventColumns) any { return c.upstreamModel }},
	{"request_id", func(c *eventColumns) any { return c.requestID }},
	{"status", func(c *eventColumns) any { return c.status }},
	{"http_status", func(c *eventColumns) any { return c.httpStatus }},
	{"stream", func(c *eventColumns) any { return c.stream }},
	{"estimated", func(c *eventColumns) any { return c.estimated }},
	{"latency_ms", func(c *eventColumns) any { return c.latencyMS }},
	{"prompt_tokens", func(c *eventColumns) any { return c.prompt }},
	{"cached_tokens", func(c *eventColumns) any { return c.cached }},
	{"completion_tokens", func(c *eventColumns) any { return c.completion }},
	{"reasoning_tokens", func(c *eventColumns) any { return c.reasoning }},
	{"accepted_prediction_tokens", func(c *eventColumns) any { return c.accepted }},
	{"rejected_prediction_tokens", func(c *eventColumns) any { return c.rejected }},
	{"total_tokens", func(c *eventColumns) any { return c.total }},
	{"kafka_partition", func(c *eventColumns) any { return c.partition }},
	{"kafka_offset", func(c *eventColumns) any { return c.offset }},
}

//go:embed queries.sql
var queriesFile string

// Queries is every statement this package sends to ClickHouse (queries.sql).
var Queries = sqlset.MustParse("ingest", queriesFile)

// insertEventsSQL is insert_events, whose column list must be eventColumnList's: the
// batch appends each column by position.
var insertEventsSQL = func() string {
	q := Queries.Get("insert_events")
	names := make([]string, len(eventColumnList))
	for i, c := range eventColumnList {
		names[i] = c.name
	}
	open, end := strings.Index(q, "("), strings.LastIndex(q, ")")
	listed := strings.Fields(strings.ReplaceAll(q[open+1:end], ",", " "))
	if strings.Join(listed, ",") != strings.Join(names, ",") {
		panic("ingest: queries.sql insert_events lists columns " + strings.Join(listed, ",") + ", eventColumnList " + strings.Join(names, ","))
	}
	return q
}()

func (c *eventColumns) grow(n int) {
	c.eventID, c.workspaceID, c.apiKeyID = make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
	c.model, c.upstream, c.upstreamModel = make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
	c.requestID, c.status = make([]string, 0, n), make([]string, 0, n)
	c.schemaVersion, c.stream, c.estimated = make([]uint8, 0, n), make([]uint8, 0, n), make([]uint8, 0, n)
	c.occurredAt = make([]time.Time, 0, n)
	c.httpStatus, c.latencyMS = make([]uint16, 0, n), make([]uint32, 0, n)
	c.prompt, c.cached, c.completion = make([]uint64, 0, n), make([]uint64, 0, n), make([]uint64, 0, n)
	c.reasoning, c.accepted, c.rejected = make([]uint64, 0, n), make([]uint64, 0, n), make([]uint64, 0, n)
	c.total = make([]uint64, 0, n)
	c.partition, c.offset = make([]int32, 0, n), make([]int64, 0, n)
}

// add appends a validated event.
func (c *eventColumns) add(e *schema.UsageEvent, partition int32, offset int64) {
	c.n++
	c.eventID = append(c.eventID, e.EventID)
	c.schemaVersion = append(c.schemaVersion, uint8(e.SchemaVersion))
	c.occurredAt = append(c.occurredAt, e.OccurredAt)
	c.workspaceID = append(c.workspaceID, e.WorkspaceID)
	c.apiKeyID = append(c.apiKeyID, e.APIKeyID)
	c.model = append(c.model, e.Model)
	c.upstream = append(c.upstream, e.Upstream)
	c.upstreamModel = append(c.upstreamModel, e.UpstreamModel)
	c.requestID = append(c.requestID, e.RequestID)
	c.status = append(c.status, e.Status)
	c.httpStatus = append(c.httpStatus, uint16(min(max(e.HTTPStatus, 0), 65535)))
	c.stream = append(c.stream, boolU8(e.Stream))
	c.estimated = append(c.estimated, boolU8(e.Estimated))
	c.latencyMS = append(c.latencyMS, uint32(min(max(e.LatencyMS, 0), 1<<32-1)))
	// Validate bounded every count to [0, 2^32].
	c.prompt = append(c.prompt, uint64(e.PromptTokens))
	c.cached = append(c.cached, uint64(e.CachedTokens))
	c.completion = append(c.completion, uint64(e.CompletionTokens))
	c.reasoning = append(c.reasoning, uint64(e.ReasoningTokens))
	c.accepted = append(c.accepted, uint64(e.AcceptedPredictionTokens))
	c.rejected = append(c.rejected, uint64(e.RejectedPredictionTokens))
	c.total = append(c.total, uint64(e.TotalTokens))
	c.partition = append(c.partition, partition)
	c.offset = append(c.offset, offset)
}

// stamp sets every row's ingested_at to t.
func (c *eventColumns) stamp(t time.Time) {
	t = t.UTC().Truncate(time.Second)
	c.ingestedAt = c.ingestedAt[:0]
	for range c.n {
		c.ingestedAt = append(c.ingestedAt, t)
	}
}

func boolU8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
