package gateway

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"testing"
)

// FuzzMembersValidatesLikeEncodingJSON holds the scanner's validation to encoding/json's;
// the targets here hold what the request and relay paths read with it to what encoding/json
// decodes: the members pick hands out (keys matched ignoring case, Unicode's folds
// included; the last of duplicates wins), the request's model, messages and stream, and
// an upstream answer's or chunk's id, usage and choices.

// jsonSeeds are bodies for every target: requests, answers and chunks, and the key
// spellings encoding/json matches.
var jsonSeeds = []string{
	`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}`,
	`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":false,"stream_options":{"include_usage":true}}`,
	` { "model" : "m" , "messages" : [ 1 ] } `,
	`{"Model":"a","MODEL":"b","messages":[{}]}`,
	`{"model":"a","messages":[{}],"Stream":true,"stream":null}`,
	`{"mod\u0065l":"esc","messages":[{}]}`,
	`{"\u004dODEL":"esc","messages":[{}]}`,
	`{"model":"a","messages":[{}],"ſtream":true}`,
	`{"model":"a","messages":[{}],"\u017ftream":true}`,
	`{"model":"a\u00e9\ud83d\ude00","messages":[{}]}`,
	"{\"model\":\"a\xff\",\"messages\":[{}]}",
	`{"model":"a\ud800","messages":[{}]}`,
	`{"model":"","messages":[{}]}`,
	`{"model":null,"messages":[{}]}`,
	`{"model":7,"messages":[{}]}`,
	`{"model":"a","messages":[]}`,
	`{"model":"a","messages":[ ]}`,
	`{"model":"a","messages":{}}`,
	`{"model":"a","messages":null}`,
	`{"model":"a","messages":[{}],"stream":"true"}`,
	`{"model":"a","messages":[{}],"stream":1}`,
	`{"model":"a","model":null,"messages":[{}]}`,
	`{"x":{"model":"inner"},"model":"outer","messages":[{}]}`,
	`{"model":"a","messages":[{}]`,
	`[{"model":"a"}]`,
	`null`,
	`{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"}}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}`,
	`{"id":"c","choices":[{"delta":{"content":"x"}}],"usage":null}`,
	`{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`,
	`{"ID":"upper","Choices":[{}],"Usage":{"Prompt_Tokens":4}}`,
	`{"id":"a","id":"b","choices":[{}],"choices":[]}`,
	`{"id":7,"choices":{},"usage":[]}`,
	`{"usage":{"prompt_tokens":1},"usage":null}`,
	`{"usage":{"prompt_tokens":1},"usage":{"completion_tokens":2}}`,
	`{"usage":{"prompt_tokens":1,"prompt_tokens":null}}`,
	`{"usage":{"prompt_tokens_details":{"cached_tokens":4},"prompt_tokens_details":null}}`,
	`{"usage":{"completion_tokens_details":{"reasoning_tokens":4},"completion_tokens_details":5}}`,
	`{"usage":{"prompt_tokens":1.5}}`,
	`{"usage":{"prompt_tokens":"1"}}`,
	`{"usage":{"prompt_tokens":-0,"total_tokens":9223372036854775807}}`,
	`{"usage":{"prompt_tokens":9223372036854775808}}`,
	`{"usage":{"completion_tokens_details":{"reasoning_to\u212aens":3}}}`,
	`{"usage":{"completion_tokens_details":{"reasoning_toKens":3}}}`,
	"{\"usage\":{\"prompt_to\u212aens\":3}}", // the Kelvin sign, unescaped: it folds to k
	`{"Usage":{"prompt_tokens":2}}`,
	`{"us\u0061ge" : {"prompt_tokens":2}}`,
	`{"choices":[{"delta":{"content":"the \"usage\":{ word"}}],"usage":null}`,
}

// refKeys decodes the members pick is asked for, as encoding/json matches them.
type refKeys struct {
	Model    json.RawMessage `json:"model"`
	Messages json.RawMessage `json:"messages"`
	Stream   json.RawMessage `json:"stream"`
	ID       json.RawMessage `json:"id"`
	Usage    json.RawMessage `json:"usage"`
	Choices  json.RawMessage `json:"choices"`
}

func (r refKeys) get(name string) json.RawMessage {
	return map[string]json.RawMessage{"model": r.Model, "messages": r.Messages, "stream": r.Stream,
		"id": r.ID, "usage": r.Usage, "choices": r.Choices}[name]
}

// isObject reports whether b is valid JSON and an object.
func isObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{' && json.Valid(b)
}

// pick hands out the member encoding/json decodes for each name of each key list the
// gateway uses.
func FuzzPickLikeEncodingJSON(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !isObject(b) {
			return // members' validation has FuzzMembersValidatesLikeEncodingJSON
		}
		var ref refKeys
		if err := json.Unmarshal(b, &ref); err != nil {
			t.Fatalf("%q: encoding/json: %v", b, err)
		}
		for _, names := range [][]string{chatRequestKeys, answerKeys, chunkKeys} {
			out := make([][]byte, len(names))
			if err := pick(b, names, out); err != nil {
				t.Fatalf("%q: pick: %v", b, err)
			}
			for i, name := range names {
				if want := ref.get(name); !bytes.Equal(out[i], want) || (out[i] == nil) != (want == nil) {
					t.Errorf("%q: pick(%q) = %q, encoding/json %q", b, name, out[i], want)
				}
			}
		}
	})
}

// refChatRequest is parseChatRequest written with encoding/json: the error code and
// parameter it answers, or the request.
func refChatRequest(body []byte) (chatRequest, string) {
	if !isObject(body) {
		return chatRequest{}, "invalid_json"
	}
	var v struct {
		Model, Messages, Stream json.RawMessage
	}
	if err := json.Unmarshal(body, &v); err != nil {
		panic(err) // a valid object decodes into RawMessages
	}
	var req chatRequest
	if v.Model == nil || string(v.Model) == "null" {
		return req, "missing_required_parameter model"
	}
	if json.Unmarshal(v.Model, &req.Model) != nil {
		return req, "invalid_type model"
	}
	if req.Model == "" {
		return req, "missing_required_parameter model"
	}
	if v.Messages == nil || string(v.Messages) == "null" {
		return req, "missing_required_parameter messages"
	}
	var messages []json.RawMessage
	if json.Unmarshal(v.Messages, &messages) != nil || len(messages) == 0 {
		return req, "invalid_value messages"
	}
	var stream *bool
	if v.Stream != nil && json.Unmarshal(v.Stream, &stream) != nil {
		return req, "invalid_type stream"
	}
	req.Stream = stream != nil && *stream
	return req, ""
}

// parseChatRequest decides as a decoder built on encoding/json does: the same error, or
// the same model and stream.
func FuzzParseChatRequestLikeEncodingJSON(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, bad := parseChatRequest(body)
		want, wantBad := refChatRequest(body)
		gotBad := ""
		if bad != nil {
			gotBad = bad.code
			if bad.param != "" {
				gotBad += " " + bad.param
			}
		}
		if gotBad != wantBad {
			t.Fatalf("%q: parseChatRequest says %q, encoding/json %q", body, gotBad, wantBad)
		}
		if bad == nil && got != want {
			t.Errorf("%q: parseChatRequest = %+v, encoding/json %+v", body, got, want)
		}
	})
}

// refUsage decodes a usage object with encoding/json, detail objects as the gateway reads
// them (see refUpstream).
func refUsage(b []byte) (*usage, error) {
	var v struct {
		PromptTokens            int64           `json:"prompt_tokens"`
		CompletionTokens        int64           `json:"completion_tokens"`
		TotalTokens             int64           `json:"total_tokens"`
		PromptTokensDetails     json.RawMessage `json:"prompt_tokens_details"`
		CompletionTokensDetails json.RawMessage `json:"completion_tokens_details"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	u := &usage{PromptTokens: v.PromptTokens, CompletionTokens: v.CompletionTokens, TotalTokens: v.TotalTokens}
	if isObject(v.PromptTokensDetails) {
		u.PromptTokensDetails = new(promptDetails)
		if err := json.Unmarshal(v.PromptTokensDetails, u.PromptTokensDetails); err != nil {
			return nil, err
		}
	}
	if isObject(v.CompletionTokensDetails) {
		u.CompletionTokensDetails = new(completionDetails)
		if err := json.Unmarshal(v.CompletionTokensDetails, u.CompletionTokensDetails); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// refUpstream reads an answer or a chunk with encoding/json as the gateway means to, which
// differs from decoding it into typed fields in two ways, both on purpose:
//   - a member of the wrong type (an id that is no string, a usage that is no object,
//     choices that are no array) counts as absent: the gateway serves the completion and
//     bills it by estimate rather than refuse what the client is waiting for; encoding/json
//     would refuse the whole document;
//   - of duplicate object members the last counts whole, as in JavaScript and Python, the
//     languages of most upstreams; encoding/json merges them into one struct.
func refUpstream(b []byte) (id string, u *usage, hasChoices bool, err error) {
	var v struct {
		ID, Usage, Choices json.RawMessage
	}
	if err := json.Unmarshal(b, &v); err != nil {
		panic(err) // a valid object decodes into RawMessages
	}
	json.Unmarshal(v.ID, &id) // "" unless a string
	var choices []json.RawMessage
	json.Unmarshal(v.Choices, &choices)
	if isObject(v.Usage) {
		u, err = refUsage(v.Usage)
	}
	return id, u, len(choices) > 0, err
}

// parseAnswer and parseChunk read an upstream's id, usage and choices as refUpstream does,
// and hasUsageObject, the relay's filter for chunks worth decoding, passes every chunk
// that has a usage.
func FuzzParseUpstreamLikeEncodingJSON(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !isObject(b) {
			return
		}
		id, u, hasChoices, err := refUpstream(b)
		a, aErr := parseAnswer(b)
		c, cErr := parseChunk(b)
		if (aErr != nil) != (err != nil) || (cErr != nil) != (err != nil) {
			t.Fatalf("%q: parseAnswer error %v, parseChunk error %v; encoding/json %v", b, aErr, cErr, err)
		}
		if err != nil {
			return
		}
		if a.ID != id || !reflect.DeepEqual(a.Usage, u) {
			t.Errorf("%q: parseAnswer = id %q usage %+v; encoding/json id %q usage %+v", b, a.ID, a.Usage, id, u)
		}
		if c.id != id || c.hasChoices != hasChoices || !reflect.DeepEqual(c.usage, u) {
			t.Errorf("%q: parseChunk = id %q choices %v usage %+v; encoding/json id %q choices %v usage %+v",
				b, c.id, c.hasChoices, c.usage, id, hasChoices, u)
		}
		if u != nil && !hasUsageObject(b) {
			t.Errorf("%q: has a usage object, hasUsageObject says no: the relay would bill it by estimate", b)
		}
	})
}

// The upstream reads prepareBody's output as the gateway acted on it, whichever way its
// JSON library matches keys: ignoring case, the last duplicate winning (Go's
// encoding/json), or exactly, the last winning (Python's json, JavaScript's JSON.parse).
// Every other member goes out as the client sent it, in its order.
func FuzzPrepareBody(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"model":"m","messages":[{}],"stream":true,"Stream_Options":{"include_usage":false},"stream_options":5}`))
	f.Add([]byte(`{"model":"m","messages":[{}],"stream":true,"stream\u005foptions":{"include_usage":true}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, bad := parseChatRequest(body)
		if bad != nil {
			return
		}
		const upstreamModel = "up-\"model\"\u00e9"
		out, _, err := prepareBody(body, upstreamModel, req.Stream)
		if err != nil {
			t.Fatalf("%q: prepareBody: %v", body, err)
		}
		wantModel := appendJSONString(nil, upstreamModel)
		wantStream := ""
		switch {
		case req.Stream:
			wantStream = "true"
		case keyPresent(body, "stream"):
			wantStream = "false"
		}
		var folded struct {
			Model, Stream json.RawMessage
			Options       json.RawMessage `json:"stream_options"`
		}
		if err := json.Unmarshal(out, &folded); err != nil {
			t.Fatalf("%q: prepareBody wrote %q: %v", body, out, err)
		}
		var exact map[string]json.RawMessage
		json.Unmarshal(out, &exact)
		for view, v := range map[string][3]json.RawMessage{
			"ignoring case": {folded.Model, folded.Stream, folded.Options},
			"exactly":       {exact["model"], exact["stream"], exact["stream_options"]},
		} {
			if !bytes.Equal(v[0], wantModel) || string(v[1]) != wantStream {
				t.Errorf("%q: out %q read %s: model %s stream %s; want %s, %q", body, out, view, v[0], v[1], wantModel, wantStream)
			}
			var opts struct {
				IncludeUsage bool `json:"include_usage"`
			}
			if req.Stream && (json.Unmarshal(v[2], &opts) != nil || !opts.IncludeUsage) {
				t.Errorf("%q: out %q read %s: stream_options %s", body, out, view, v[2])
			}
		}
		// The client's other members, byte for byte and in order, before the gateway's.
		var sent, kept [][]byte
		members(body, func(m member) {
			switch {
			case keyIs(body, m, "model"), keyIs(body, m, "stream"):
			case req.Stream && !m.escaped && string(body[m.keyStart:m.keyEnd]) == "stream_options":
			default:
				sent = append(sent, body[m.keyStart-1:m.valueEnd])
			}
		})
		members(out, func(m member) { kept = append(kept, out[m.keyStart-1:m.valueEnd]) })
		if len(kept) < len(sent) || !slices.EqualFunc(sent, kept[:len(sent)], bytes.Equal) {
			t.Errorf("%q: out %q does not keep the client's members %q", body, out, sent)
		}
		// And the gateway reads it as the request it acted on.
		if again, bad := parseChatRequest(out); bad != nil || again != (chatRequest{Model: upstreamModel, Stream: req.Stream}) {
			t.Errorf("%q: out %q reads as %+v, %+v", body, out, again, bad)
		}
	})
}

// keyPresent reports whether the object b has a member named name, as keyIs matches.
func keyPresent(b []byte, name string) bool {
	found := false
	members(b, func(m member) { found = found || keyIs(b, m, name) })
	return found
}
