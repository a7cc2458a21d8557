package ingest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strconv"

	"github.com/venna/metering/schema"
)

// decodeEvent parses one Kafka message value into ev exactly as encoding/json would.
//
// A usage event is a flat object of strings, integers, booleans and one timestamp, and
// decoding it is most of the consumer's CPU: the fast path below parses that shape in one
// pass without reflection. It accepts only input it is sure about (exact, unescaped keys;
// integer literals; plain strings) and hands anything else — escapes, non-ASCII text, a
// key in another case, a type mismatch, a syntax error — to encoding/json, whose answer
// (value or error) is then the answer. So both paths agree by construction on odd input,
// and TestDecodeMatchesEncodingJSON / FuzzDecodeMatchesEncodingJSON check the rest.
//
// Strings of the fields with few distinct values (workspace, key, model, upstream,
// status) come from strs when it is not nil, which saves most of an event's allocations
// and shares the strings between the rows of a batch.
func decodeEvent(data []byte, ev *schema.UsageEvent, strs *interner) error {
	*ev = schema.UsageEvent{}
	if (&eventParser{data: data, strs: strs}).parse(ev) {
		return nil
	}
	*ev = schema.UsageEvent{}
	return json.Unmarshal(data, ev)
}

type eventParser struct {
	data []byte
	pos  int
	strs *interner
}

// interner hands out one string per distinct value; it forgets everything when it holds
// maxInterned values, so that a stream of distinct values cannot grow it without bound.
type interner map[string]string

const maxInterned = 1 << 16

func (in *interner) get(b []byte) string {
	if in == nil {
		return string(b)
	}
	if s, ok := (*in)[string(b)]; ok { // no allocation: the compiler looks up without converting
		return s
	}
	if *in == nil || len(*in) >= maxInterned {
		*in = make(interner)
	}
	s := string(b)
	(*in)[s] = s
	return s
}

func (p *eventParser) ws() {
	i := p.pos
	for i < len(p.data) {
		switch p.data[i] {
		case ' ', '\t', '\n', '\r':
			i++
			continue
		}
		break
	}
	p.pos = i
}

// parse reports whether it decoded the whole input; false means "ask encoding/json".
func (p *eventParser) parse(ev *schema.UsageEvent) bool {
	p.ws()
	if !p.eat('{') {
		return false
	}
	p.ws()
	if p.eat('}') {
		return p.end()
	}
	for {
		p.ws()
		key, ok := p.plainString()
		if !ok {
			return false
		}
		p.ws()
		if !p.eat(':') {
			return false
		}
		p.ws()
		if !p.field(key, ev) {
			return false
		}
		p.ws()
		if p.eat(',') {
			continue
		}
		if p.eat('}') {
			return p.end()
		}
		return false
	}
}

func (p *eventParser) end() bool {
	p.ws()
	return p.pos == len(p.data)
}

func (p *eventParser) eat(c byte) bool {
	if p.pos < len(p.data) && p.data[p.pos] == c {
		p.pos++
		return true
	}
	return false
}

// field decodes the value of key into ev. An unknown key's value is skipped, as the
// contract asks; a key that is not an exact field name but might match one
// case-insensitively (encoding/json's rule) falls back.
func (p *eventParser) field(key []byte, ev *schema.UsageEvent) bool {
	switch string(key) {
	case "schema_version":
		v, ok := p.int()
		ev.SchemaVersion = int(v)
		return ok
	case "event_id":
		return p.str(&ev.EventID, false)
	case "occurred_at":
		start := p.pos
		if !p.skipValue(0) {
			return false
		}
		// Exactly what encoding/json does with a time.Time field: hand it the raw token.
		return ev.OccurredAt.UnmarshalJSON(p.data[start:p.pos]) == nil
	case "workspace_id":
		return p.str(&ev.WorkspaceID, true)
	case "api_key_id":
		return p.str(&ev.APIKeyID, true)
	case "model":
		return p.str(&ev.Model, true)
	case "upstream":
		return p.str(&ev.Upstream, true)
	case "upstream_model":
		return p.str(&ev.UpstreamModel, true)
	case "request_id":
		return p.str(&ev.RequestID, false)
	case "status":
		return p.str(&ev.Status, true)
	case "http_status":
		v, ok := p.int()
		ev.HTTPStatus = int(v)
		return ok
	case "stream":
		return p.bool(&ev.Stream)
	case "estimated":
		return p.bool(&ev.Estimated)
	case "latency_ms":
		return p.int64(&ev.LatencyMS)
	case "prompt_tokens":
		return p.int64(&ev.PromptTokens)
	case "cached_tokens":
		return p.int64(&ev.CachedTokens)
	case "completion_tokens":
		return p.int64(&ev.CompletionTokens)
	case "reasoning_tokens":
		return p.int64(&ev.ReasoningTokens)
	case "accepted_prediction_tokens":
		return p.int64(&ev.AcceptedPredictionTokens)
	case "rejected_prediction_tokens":
		return p.int64(&ev.RejectedPredictionTokens)
	case "total_tokens":
		return p.int64(&ev.TotalTokens)
	}
	for _, c := range key {
		// An upper-case letter (or the Kelvin/long-s signs, which are non-ASCII) may fold
		// onto a field name; only encoding/json knows its rule exactly.
		if c >= 'A' && c <= 'Z' || c >= 0x80 {
			return false
		}
	}
	return p.skipValue(0)
}

// plainString returns the contents of a string with no escapes, control characters or
// non-ASCII bytes; anything else is left to encoding/json. It finds the closing quote with
// bytes.IndexByte and checks the bytes before it eight at a time: strings are most of
// an event's bytes.
func (p *eventParser) plainString() ([]byte, bool) {
	data, i := p.data, p.pos
	if i >= len(data) || data[i] != '"' {
		return nil, false
	}
	i++
	n := bytes.IndexByte(data[i:], '"')
	if n < 0 {
		return nil, false
	}
	s := data[i : i+n]
	j := 0
	for ; j+8 <= len(s); j += 8 {
		if special(binary.LittleEndian.Uint64(s[j:])) {
			return nil, false
		}
	}
	for ; j < len(s); j++ {
		if !plain[s[j]] {
			return nil, false
		}
	}
	p.pos = i + n + 1
	return s, true
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// special reports whether any of the eight bytes in x is a control character (< 0x20),
// non-ASCII (>= 0x80) or a backslash (bit tricks from "Bit Twiddling Hacks": hasless).
func special(x uint64) bool {
	backslashes := x ^ (ones * '\\')
	return x&highs != 0 || (x-ones*0x20)&^x&highs != 0 || (backslashes-ones)&^backslashes&highs != 0
}

// plain marks the bytes that stand for themselves inside a JSON string: printable ASCII
// other than the quote and the backslash.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str decodes a string field, from strs when intern is set (see decodeEvent); null
// leaves it unchanged, as encoding/json does.
func (p *eventParser) str(dst *string, intern bool) bool {
	if p.literal("null") {
		return true
	}
	s, ok := p.plainString()
	switch {
	case ok && intern:
		*dst = p.strs.get(s)
	case ok:
		*dst = string(s)
	}
	return ok
}

func (p *eventParser) bool(dst *bool) bool {
	switch {
	case p.literal("true"):
		*dst = true
	case p.literal("false"):
		*dst = false
	case p.literal("null"):
	default:
		return false
	}
	return true
}

func (p *eventParser) int64(dst *int64) bool {
	if p.literal("null") {
		return true
	}
	v, ok := p.int()
	if ok {
		*dst = v
	}
	return ok
}

// int parses an integer literal: -?(0|[1-9][0-9]*). A fraction or exponent (which
// encoding/json refuses for an integer field) or an overflow falls back.
func (p *eventParser) int() (int64, bool) {
	start := p.pos
	p.eat('-')
	digits := p.pos
	for p.pos < len(p.data) && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
		p.pos++
	}
	n := p.pos - digits
	if n == 0 || n > 1 && p.data[digits] == '0' || n > 18 {
		return 0, false // 19 digits may overflow: leave the exact rule to strconv via encoding/json
	}
	if p.pos < len(p.data) {
		switch p.data[p.pos] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	var v int64
	for _, c := range p.data[digits:p.pos] {
		v = v*10 + int64(c-'0')
	}
	if p.data[start] == '-' {
		v = -v
	}
	return v, true
}

func (p *eventParser) literal(lit string) bool {
	if len(p.data)-p.pos >= len(lit) && string(p.data[p.pos:p.pos+len(lit)]) == lit {
		p.pos += len(lit)
		return true
	}
	return false
}

// skipValue passes over one JSON value of any kind, checking its syntax on the way.
func (p *eventParser) skipValue(depth int) bool {
	if depth > 100 || p.pos >= len(p.data) {
		return false
	}
	switch c := p.data[p.pos]; {
	case c == '"':
		return p.skipString()
	case c == '{' || c == '[':
		return p.skipContainer(c, depth)
	case c == '-' || c >= '0' && c <= '9':
		return p.skipNumber()
	default:
		return p.literal("true") || p.literal("false") || p.literal("null")
	}
}

// skipString passes over a string whose escapes are well formed and that has no control
// characters; non-ASCII bytes are left to encoding/json, which checks their UTF-8.
func (p *eventParser) skipString() bool {
	p.pos++
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch {
		case c == '"':
			p.pos++
			return true
		case c < 0x20 || c >= 0x80:
			return false
		case c == '\\':
			p.pos++
			if p.pos >= len(p.data) {
				return false
			}
			switch p.data[p.pos] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(p.data)-p.pos < 5 {
					return false
				}
				if _, err := strconv.ParseUint(string(p.data[p.pos+1:p.pos+5]), 16, 16); err != nil {
					return false
				}
				p.pos += 4
			default:
				return false
			}
		}
		p.pos++
	}
	return false
}

func (p *eventParser) skipContainer(open byte, depth int) bool {
	close := byte('}')
	if open == '[' {
		close = ']'
	}
	p.pos++
	p.ws()
	if p.eat(close) {
		return true
	}
	for {
		p.ws()
		if open == '{' {
			if p.pos >= len(p.data) || p.data[p.pos] != '"' || !p.skipString() {
				return false
			}
			p.ws()
			if !p.eat(':') {
				return false
			}
			p.ws()
		}
		if !p.skipValue(depth + 1) {
			return false
		}
		p.ws()
		if p.eat(',') {
			continue
		}
		return p.eat(close)
	}
}

// skipNumber passes over -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func (p *eventParser) skipNumber() bool {
	p.eat('-')
	digits := func() int {
		n := 0
		for p.pos < len(p.data) && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
			p.pos++
			n++
		}
		return n
	}
	start := p.pos
	n := digits()
	if n == 0 || n > 1 && p.data[start] == '0' {
		return false
	}
	if p.eat('.') && digits() == 0 {
		return false
	}
	if p.eat('e') || p.eat('E') {
		if !p.eat('+') {
			p.eat('-')
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}
