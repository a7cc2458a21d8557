package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/venna/metering/schema"
	"github.com/venna/metering/simupstream"
)

// simGateway is a gateway in front of the simulated upstream (which streams like OpenAI).
func simGateway(t *testing.T, upstream http.Handler) (string, *recordingPublisher) {
	t.Helper()
	if upstream == nil {
		upstream = (&simupstream.Server{}).Handler()
	}
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	routes := Routes{}
	for _, m := range []string{"large", "reasoner", "large-slow"} {
		routes["venna-"+m] = Route{Model: "venna-" + m, Upstream: "sim", BaseURL: up.URL + "/v1", UpstreamModel: "sim-" + m}
	}
	pub := &recordingPublisher{}
	return newGateway(t, Config{Routes: routes}, pub), pub
}

func sdk(url string) openai.Client {
	return openai.NewClient(option.WithBaseURL(url+"/v1"), option.WithAPIKey(testToken), option.WithMaxRetries(0))
}

func TestStreamWithOpenAISDK(t *testing.T) {
	for _, tc := range []struct {
		name       string
		model      string
		wantsUsage bool
	}{
		{"usage not asked", "venna-large", false},
		{"usage asked", "venna-large", true},
		{"reasoning model, usage asked", "venna-reasoner", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, pub := simGateway(t, nil)
			client := sdk(url)
			params := openai.ChatCompletionNewParams{Model: tc.model, Messages: []openai.ChatCompletionMessageParamUnion{
				openai.SystemMessage("be brief"), openai.UserMessage("stream me a story about meters")}}
			if tc.wantsUsage {
				params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
			}
			stream := client.Chat.Completions.NewStreaming(context.Background(), params)
			var text strings.Builder
			var chunks int
			var sawUsage *openai.CompletionUsage
			for stream.Next() {
				c := stream.Current()
				chunks++
				for _, ch := range c.Choices {
					text.WriteString(ch.Delta.Content)
				}
				if c.JSON.Usage.Valid() && c.Usage.TotalTokens > 0 {
					u := c.Usage
					sawUsage = &u
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			if chunks < 5 || !strings.HasPrefix(text.String(), "Simulated answer") {
				t.Fatalf("%d chunks, text %q: the stream was not relayed chunk by chunk", chunks, text.String())
			}
			// What the upstream reports for this conversation, computed independently.
			_, want := simupstream.Complete("sim-"+strings.TrimPrefix(tc.model, "venna-"), simMessages(
				[2]string{"system", "be brief"}, [2]string{"user", "stream me a story about meters"}), 0)
			if tc.wantsUsage != (sawUsage != nil) {
				t.Fatalf("client asked for usage: %v, got a usage chunk: %v", tc.wantsUsage, sawUsage != nil)
			}
			if sawUsage != nil && (sawUsage.PromptTokens != want.PromptTokens || sawUsage.CompletionTokens != want.CompletionTokens) {
				t.Errorf("usage chunk %+v, want %+v", *sawUsage, want)
			}
			ev := pub.only(t)
			if ev.Estimated || !ev.Stream || ev.Status != schema.StatusOK || ev.RequestID == "" {
				t.Errorf("event %+v: want stream, not estimated, ok, with request id", ev)
			}
			if ev.PromptTokens != want.PromptTokens || ev.CachedTokens != want.PromptTokensDetails.CachedTokens ||
				ev.CompletionTokens != want.CompletionTokens || ev.ReasoningTokens != want.CompletionTokensDetails.ReasoningTokens {
				t.Errorf("event tokens %+v, upstream reported %+v", ev, want)
			}
		})
	}
}

// simMessages builds the simulated upstream's message type through JSON, as it decodes.
func simMessages(msgs ...[2]string) []simupstream.Message {
	out := make([]simupstream.Message, len(msgs))
	for i, m := range msgs {
		out[i] = simupstream.Message{Role: m[0], Content: []byte(fmt.Sprintf("%q", m[1]))}
	}
	return out
}

// A client that goes away mid-stream: the upstream request is cancelled and what was
// generated until then is still recorded, counted by the gateway's tokenizer.
func TestStreamClientDisconnectIsStillBilled(t *testing.T) {
	cancelled := make(chan struct{})
	sim := (&simupstream.Server{}).Handler()
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sim.ServeHTTP(w, r)
		if r.Context().Err() != nil {
			close(cancelled)
		}
	})
	url, pub := simGateway(t, upstream)
	ctx, cancel := context.WithCancel(context.Background())
	body := `{"model":"venna-large-slow","stream":true,"messages":[{"role":"user","content":"a long story please"}]}`
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(resp.Body)
	for data := 0; data < 3; {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("read stream: %v", err)
		}
		if strings.HasPrefix(line, "data: ") {
			data++
		}
	}
	cancel()
	resp.Body.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request was not cancelled after the client left")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(pub.Events()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	ev := pub.only(t)
	_, full := simupstream.Complete("sim-large-slow", simMessages([2]string{"user", "a long story please"}), 0)
	if !ev.Estimated || ev.PromptTokens == 0 || ev.CompletionTokens == 0 || ev.CompletionTokens >= full.CompletionTokens {
		t.Errorf("event %+v: want estimated, prompt counted, some but not all of the %d completion tokens", ev, full.CompletionTokens)
	}
	if ev.Validate() != nil {
		t.Errorf("estimated event invalid: %v", ev.Validate())
	}
}

// A provider that ignores stream_options still gets its stream metered, by estimate.
func TestStreamWithoutUpstreamUsageIsEstimated(t *testing.T) {
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, word := range []string{"Hello", " there", ", friend"} {
			fmt.Fprintf(w, "data: {\"id\":\"x1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}]}\n\n", word)
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	})
	url, pub := simGateway(t, upstream)
	client := sdk(url)
	stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model: "venna-large", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	var text strings.Builder
	for stream.Next() {
		for _, c := range stream.Current().Choices {
			text.WriteString(c.Delta.Content)
		}
	}
	if stream.Err() != nil || text.String() != "Hello there, friend" {
		t.Fatalf("stream %q, err %v", text.String(), stream.Err())
	}
	ev := pub.only(t)
	// o200k_base: "Hello", " there", ",", " friend".
	if !ev.Estimated || ev.CompletionTokens != 4 || ev.PromptTokens == 0 {
		t.Errorf("event %+v: want estimated with 4 completion tokens", ev)
	}
}

// The gateway asks the upstream for usage even when the client did not, without
// disturbing the client's other stream options.
func TestPrepareBodyForcesUsageOnStreams(t *testing.T) {
	for _, tc := range []struct {
		name, in   string
		stream     bool
		wantUsage  bool
		wantSubstr []string
	}{
		{"plain", `{"model":"m","stream":true}`, true, false, []string{`"include_usage":true`, `"model":"up"`, `"stream":true`}},
		{"client asked", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, true, true, []string{`"include_usage":true`}},
		{"other options kept", `{"model":"m","stream":true,"stream_options":{"include_obfuscation":false}}`, true, false, []string{`"include_obfuscation":false`, `"include_usage":true`}},
		{"case trick on stream", `{"model":"m","Stream":true,"stream":false}`, false, false, []string{`"stream":false`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, wants, err := prepareBody([]byte(tc.in), "up", tc.stream)
			if err != nil {
				t.Fatal(err)
			}
			if wants != tc.wantUsage {
				t.Errorf("client wants usage = %v, want %v", wants, tc.wantUsage)
			}
			for _, s := range tc.wantSubstr {
				if !strings.Contains(string(out), s) {
					t.Errorf("%s lacks %s", out, s)
				}
			}
			if strings.Contains(string(out), `"Stream"`) {
				t.Errorf("%s keeps another spelling of stream", out)
			}
		})
	}
}

func TestHasUsageObject(t *testing.T) {
	for in, want := range map[string]bool{
		`{"choices":[],"usage":{"prompt_tokens":1}}`:               true,
		`{"choices":[], "usage" : { "prompt_tokens":1}}`:           true,
		`{"choices":[{"delta":{"content":"x"}}],"usage":null}`:     false,
		`{"choices":[{"delta":{"content":"the \"usage\" word"}}]}`: false,
		`{"choices":[]}`:                        false,
		`{"Usage":{"prompt_tokens":1}}`:         true, // parseChunk matches keys ignoring case
		`{"us\u0061ge" : {"prompt_tokens":1}}`:  true,
		`{"choices":[],"usage":{},"x":{"y":1}}`: true,
	} {
		if got := hasUsageObject([]byte(in)); got != want {
			t.Errorf("hasUsageObject(%s) = %v, want %v", in, got, want)
		}
	}
}

// parseChunk reads what encoding/json reads of a chunk: id, usage, whether it has choices.
func TestParseChunkMatchesEncodingJSON(t *testing.T) {
	for name, in := range map[string]string{
		"content":      `{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}`,
		"usage only":   `{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"completion_tokens_details":{"reasoning_tokens":1}}}`,
		"usage spaced": `{ "usage" : { "prompt_tokens" : 3 } , "choices" : [ ] , "id" : "x" }`,
		"no choices":   `{"id":"c","usage":{"prompt_tokens":1}}`,
		"null choices": `{"id":"c","choices":null}`,
		"escaped id":   `{"id":"chat\u0063mpl-\"2\"","choices":[{"delta":{}}]}`,
		"other case":   `{"ID":"upper","Choices":[{}],"Usage":{"Prompt_Tokens":4}}`,
		"last wins":    `{"id":"a","id":"b","choices":[{}],"choices":[]}`,
	} {
		t.Run(name, func(t *testing.T) {
			var want struct {
				ID      string            `json:"id"`
				Choices []json.RawMessage `json:"choices"`
				Usage   *usage            `json:"usage"`
			}
			if err := json.Unmarshal([]byte(in), &want); err != nil {
				t.Fatal(err)
			}
			got, err := parseChunk([]byte(in))
			if err != nil {
				t.Fatal(err)
			}
			if got.id != want.ID || got.hasChoices != (len(want.Choices) > 0) || !reflect.DeepEqual(got.usage, want.Usage) {
				t.Errorf("parseChunk = %+v (usage %+v), encoding/json = %+v (usage %+v)", got, got.usage, want, want.Usage)
			}
		})
	}
}

// An upstream that stalls mid-stream past UpstreamTimeout: the gateway hangs up on it, ends
// the client's stream, and bills what was generated, estimated.
func TestStreamUpstreamTimeoutEndsStreamAndBills(t *testing.T) {
	hungUp := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello there, partial answer\"}}]}\n\n")
		w.(http.Flusher).Flush()
		select { // stalls: no more chunks, no usage, no [DONE]
		case <-r.Context().Done():
			close(hungUp)
		case <-time.After(10 * time.Second):
		}
	}))
	defer up.Close()
	pub := &recordingPublisher{}
	url := newGateway(t, Config{UpstreamTimeout: 300 * time.Millisecond,
		Routes: Routes{"m": {Model: "m", Upstream: "u", BaseURL: up.URL, UpstreamModel: "m"}}}, pub)
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body) // ends: the gateway closed the stream
	resp.Body.Close()
	if err != nil || !strings.Contains(string(got), "partial answer") {
		t.Fatalf("stream %q, %v", got, err)
	}
	select {
	case <-hungUp:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream never saw the gateway hang up")
	}
	ev := pub.only(t)
	if !ev.Estimated || ev.CompletionTokens == 0 || ev.PromptTokens == 0 {
		t.Errorf("event %+v: want the partial answer billed, estimated", ev)
	}
}
