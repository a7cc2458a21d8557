package gateway

import (
	"encoding/json"
	"strings"
	"sync"

	"github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"
)

// When an upstream reports no usage (a stream cut off by the client, or a provider that
// does not send it), the gateway counts tokens itself with a real BPE tokenizer
// (o200k_base, the GPT-4o family's, loaded from files embedded in the binary) and marks the
// event estimated. The tokenizer is loaded on first use: the common path never needs it.
var (
	encOnce sync.Once
	enc     *tiktoken.Tiktoken
	encErr  error
)

func encoding() (*tiktoken.Tiktoken, error) {
	encOnce.Do(func() {
		tiktoken.SetBpeLoader(tiktoken_loader.NewOfflineLoader())
		enc, encErr = tiktoken.GetEncoding("o200k_base")
	})
	return enc, encErr
}

// generated is the text a completion produced: a choice's message, or a stream delta.
type generated struct {
	Content          string `json:"content"`
	ReasoningContent string `json:"reasoning_content"`
	Refusal          string `json:"refusal"`
}

// writeTo appends every kind of generated text, all of it billed as completion tokens.
func (g generated) writeTo(b *strings.Builder) {
	b.WriteString(g.ReasoningContent)
	b.WriteString(g.Content)
	b.WriteString(g.Refusal)
}

// countTokens counts text's tokens, falling back to 4 bytes a token if the tokenizer
// cannot load.
func countTokens(text string) int64 {
	e, err := encoding()
	if err != nil {
		return int64((len(text) + 3) / 4)
	}
	return int64(len(e.EncodeOrdinary(text)))
}

// countPromptTokens estimates a chat request's prompt tokens the way OpenAI's cookbook
// does: each message costs 3 tokens of framing plus its content and name, and the reply
// is primed with 3 more.
func countPromptTokens(body []byte) int64 {
	var req struct {
		Messages []struct {
			Role    string          `json:"role"`
			Name    string          `json:"name"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	}
	if json.Unmarshal(body, &req) != nil {
		return countTokens(string(body))
	}
	n := int64(3)
	for _, m := range req.Messages {
		n += 3 + countTokens(m.Role) + countTokens(contentText(m.Content))
		if m.Name != "" {
			n += 1 + countTokens(m.Name)
		}
	}
	return n
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
	var out []byte
	for _, p := range parts {
		out = append(out, p.Text...)
	}
	return string(out)
}
