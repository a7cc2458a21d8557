package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/venna/metering/apikey"
)

// streamChunk is the part of a chat.completion.chunk an estimate reads: the generated text.
// (The relay reads a chunk's id and usage with parseChunk.)
type streamChunk struct {
	Choices []struct {
		Delta generated `json:"delta"`
	} `json:"choices"`
}

// forwardStream relays an SSE completion chunk by chunk, flushing each event as it
// arrives. The upstream was asked for usage (stream_options.include_usage) whatever the
// client asked; the usage chunk reaches the client only if it asked for it. The usage
// event is recorded before [DONE] is forwarded. If the stream ends without usage (the
// client went away, which cancels the upstream request, or the provider sends none), the
// gateway counts the prompt and what was generated with its tokenizer and marks the
// event estimated.
func (g *Gateway) forwardStream(w http.ResponseWriter, r *http.Request, p apikey.Principal, route Route, body []byte, clientWantsUsage bool, start time.Time) {
	ctx, cancel := g.upstreamContext(r)
	defer cancel()
	upStart := g.now()
	resp := g.callUpstream(ctx, w, r, p, route, body, start, true)
	if resp == nil {
		return
	}
	upstreamTook(w, g.now().Sub(upStart))
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		g.recordFailure(w, p, route, start, true, resp.StatusCode)
		g.upstreamFailed(w, route, resp.StatusCode, b)
		return
	}
	h := w.Header()
	h["Content-Type"], h["Cache-Control"], h["X-Accel-Buffering"] = hdrSSE, hdrNoCache, hdrNo
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)

	ev := g.newEvent(p, route, start, true)
	var payloads []byte // data payloads relayed so far, one per line, for an estimate if no usage comes
	var got *usage
	recorded := false
	record := func() {
		if recorded {
			return
		}
		recorded = true
		ev.LatencyMS = g.now().Sub(start).Milliseconds()
		if got != nil {
			got.apply(&ev)
		} else {
			ev.Estimated = true
			ev.PromptTokens = countPromptTokens(body)
			ev.CompletionTokens = countTokens(generatedText(payloads))
			ev.TotalTokens = ev.PromptTokens + ev.CompletionTokens
		}
		if err := g.emit(context.Background(), w, ev); err != nil {
			// The client already has the completion: nothing to withhold. Loud, never silent.
			g.log.Error("usage event of a streamed completion not recorded", "workspace", ev.WorkspaceID, "event_id", ev.EventID, "err", err)
		}
	}
	defer record()

	// Lines are relayed as they arrive; what arrived together goes out in one write and one
	// flush, made before the relay waits for more, so batching never delays a chunk.
	rd := bufio.NewReaderSize(resp.Body, 32<<10)
	var out []byte
	clientGone := false
	flush := func() {
		if clientGone || len(out) == 0 {
			return
		}
		if _, err := w.Write(out); err != nil {
			clientGone = true
			resp.Body.Close() // hang up on the upstream: stop generating what nobody reads
		} else if flusher != nil {
			flusher.Flush()
		}
		out = out[:0]
	}
	for {
		line, err := readLine(rd)
		if len(line) > 0 {
			payload, isData := bytes.CutPrefix(bytes.TrimRight(line, "\r\n"), []byte("data:"))
			payload = bytes.TrimSpace(payload)
			forward := true
			switch {
			case !isData:
			case bytes.Equal(payload, []byte("[DONE]")):
				record()
			default:
				// Most chunks are only relayed: decode the first (for its id) and any that
				// carries a usage object; keep the rest raw, decoded only if the stream ends
				// without usage and the gateway must count the generated text itself.
				payloads = append(append(payloads, payload...), '\n')
				if ev.RequestID != "" && !hasUsageObject(payload) {
					break
				}
				if c, err := parseChunk(payload); err == nil {
					if ev.RequestID == "" {
						ev.RequestID = c.id
					}
					if c.usage != nil {
						got = c.usage
						// The usage-only chunk (no choices) is the gateway's, unless asked for.
						if !c.hasChoices && !clientWantsUsage {
							forward = false
							readLine(rd) // its blank separator line
						}
					}
				}
			}
			if forward && !clientGone {
				out = append(out, line...)
			}
		}
		if err != nil {
			flush()
			return
		}
		if rd.Buffered() == 0 {
			flush()
		}
	}
}

// readLine reads one line through its '\n', or what precedes an error. The slice is
// valid until the next read unless the line outgrew the reader's buffer.
func readLine(rd *bufio.Reader) ([]byte, error) {
	line, err := rd.ReadSlice('\n')
	if err != bufio.ErrBufferFull {
		return line, err
	}
	long := append([]byte(nil), line...)
	for err == bufio.ErrBufferFull {
		line, err = rd.ReadSlice('\n')
		long = append(long, line...)
	}
	return long, err
}

// chunkHead is what the relay reads of a chunk: its id, usage, and whether it has choices.
type chunkHead struct {
	id         string
	usage      *usage
	hasChoices bool
}

var chunkKeys = []string{"id", "usage", "choices"}

// parseChunk reads a chunk's head without decoding the rest.
func parseChunk(b []byte) (chunkHead, error) {
	var c chunkHead
	var v [3][]byte
	if err := pick(b, chunkKeys, v[:]); err != nil {
		return c, err
	}
	id, u, choices := v[0], v[1], v[2]
	c.id = jsonString(id)
	c.hasChoices = len(choices) > 0 && choices[0] == '[' && choices[skipSpace(choices, 1)] != ']'
	if len(u) > 0 && u[0] == '{' {
		c.usage = new(usage)
		if err := c.usage.parse(u); err != nil {
			return c, err
		}
	}
	return c, nil
}

// hasUsageObject reports whether a chunk may carry a usage object: a member named usage,
// spelled any way parseChunk matches it (any case, escapes), whose value is an object, not
// null (OpenAI sends "usage":null on every chunk but the last). It looks for a key before
// each '{'; false positives (a usage object deeper down, a brace in a string) only cost a
// decode, a false negative would bill the stream by estimate.
func hasUsageObject(p []byte) bool {
	for i := 0; ; i++ {
		j := bytes.IndexByte(p[i:], '{')
		if j < 0 {
			return false
		}
		i += j
		if usageKeyBefore(p, i) {
			return true
		}
	}
}

// maxUsageKey is the longest key that matches "usage": every letter escaped as \uXXXX.
const maxUsageKey = 5 * len(`\u0075`)

// usageKeyBefore reports whether p[:brace] ends in `"key":` (spaces around the colon),
// key usage as keyIs matches it.
func usageKeyBefore(p []byte, brace int) bool {
	i := skipSpaceBack(p, brace)
	if i < 0 || p[i] != ':' {
		return false
	}
	end := skipSpaceBack(p, i)
	if end < 0 || p[end] != '"' {
		return false
	}
	// The opening quote is the nearest one before that no backslash escapes: inside a
	// string an escaped quote has an odd number of backslashes before it.
	for start := end - 1; start >= 0 && end-start <= maxUsageKey+1; start-- {
		if p[start] != '"' {
			continue
		}
		backslashes := 0
		for k := start - 1; k >= 0 && p[k] == '\\'; k-- {
			backslashes++
		}
		if backslashes%2 == 0 {
			m := member{keyStart: start + 1, keyEnd: end, escaped: bytes.IndexByte(p[start+1:end], '\\') >= 0}
			return keyIs(p, m, "usage")
		}
	}
	return false
}

// skipSpaceBack returns the index of the last byte before p[i] that is not JSON
// whitespace, -1 if there is none.
func skipSpaceBack(p []byte, i int) int {
	for i--; i >= 0 && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'); i-- {
	}
	return i
}

// generatedText is the text of relayed chunks (payloads, one per line): reasoning, content
// and refusals.
func generatedText(payloads []byte) string {
	var b strings.Builder
	for p := range bytes.Lines(payloads) {
		var c streamChunk
		if json.Unmarshal(p, &c) != nil {
			continue
		}
		for _, ch := range c.Choices {
			ch.Delta.writeTo(&b)
		}
	}
	return b.String()
}

// prepareBody rewrites the request for the upstream: "model" becomes the route's upstream
// model and "stream" the value the gateway acted on, each after dropping every other
// spelling of the key (the gateway reads keys ignoring case, an upstream may not: a body
// with both "model" and "Model" must not be billed as one and served as the other); a
// stream gets stream_options.include_usage forced on. Every other member is copied as
// sent, byte for byte. It reports whether the client itself asked for the usage chunk.
func prepareBody(body []byte, model string, stream bool) ([]byte, bool, error) {
	out := make([]byte, 0, len(body)+len(model)+64)
	out = append(out, '{')
	var opts []byte
	hadStream := false
	add := func(b ...[]byte) {
		if len(out) > 1 {
			out = append(out, ',')
		}
		for _, p := range b {
			out = append(out, p...)
		}
	}
	err := members(body, func(m member) {
		switch {
		case keyIs(body, m, "model"):
		case keyIs(body, m, "stream"):
			hadStream = true
		case stream && !m.escaped && string(body[m.keyStart:m.keyEnd]) == "stream_options":
			opts = body[m.valueStart:m.valueEnd]
		default:
			add(body[m.keyStart-1 : m.valueEnd])
		}
	})
	if err != nil {
		return nil, false, fmt.Errorf("request body must be a JSON object: %w", err)
	}
	add([]byte(`"model":`), appendJSONString(nil, model))
	var wants bool
	if stream {
		var o map[string]json.RawMessage
		json.Unmarshal(opts, &o)
		if o == nil {
			o = map[string]json.RawMessage{}
		}
		json.Unmarshal(o["include_usage"], &wants)
		o["include_usage"] = json.RawMessage("true")
		ob, _ := json.Marshal(o)
		add([]byte(`"stream":true,"stream_options":`), ob)
	} else if hadStream {
		add([]byte(`"stream":false`))
	}
	return append(out, '}'), wants, nil
}
