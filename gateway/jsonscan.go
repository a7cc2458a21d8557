package gateway

import (
	"encoding/json"
	"errors"
	"strings"
)

// The request path reads and rewrites a few top-level members of JSON objects without
// decoding them into maps: members walks an object that json.Valid already accepted and
// hands out byte spans, so the body is copied once and nothing else is allocated.

var errNotObject = errors.New("not a JSON object")

// member is one top-level member: the key and the value as spans of the object's bytes.
type member struct {
	keyStart, keyEnd     int // the key without its quotes
	valueStart, valueEnd int
	escaped              bool // the key has escapes: compare it through memberKey
}

// members calls fn for each top-level member of the valid JSON object b, in order.
func members(b []byte, fn func(m member)) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errNotObject
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil
	}
	for i < len(b) {
		if b[i] != '"' {
			return errNotObject
		}
		var m member
		m.keyStart = i + 1
		i, m.escaped = skipString(b, i)
		m.keyEnd = i - 1
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != ':' {
			return errNotObject
		}
		i = skipSpace(b, i+1)
		m.valueStart = i
		i = skipValue(b, i)
		m.valueEnd = i
		fn(m)
		i = skipSpace(b, i)
		if i >= len(b) {
			break
		}
		if b[i] == '}' {
			return nil
		}
		if b[i] != ',' {
			return errNotObject
		}
		i = skipSpace(b, i+1)
	}
	return errNotObject
}

// memberKey returns m's key, unescaped.
func memberKey(b []byte, m member) string {
	if !m.escaped {
		return string(b[m.keyStart:m.keyEnd])
	}
	var k string
	json.Unmarshal(b[m.keyStart-1:m.keyEnd+1], &k)
	return k
}

// keyIs reports whether m's key equals name, ignoring case as encoding/json does.
func keyIs(b []byte, m member, name string) bool {
	if !m.escaped {
		return len(name) == m.keyEnd-m.keyStart && strings.EqualFold(string(b[m.keyStart:m.keyEnd]), name)
	}
	return strings.EqualFold(memberKey(b, m), name)
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] == '"'.
func skipString(b []byte, i int) (int, bool) {
	escaped := false
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			escaped = true
			i++
		case '"':
			return i + 1, escaped
		}
	}
	return i, escaped
}

// skipValue returns the index after the value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		i, _ = skipString(b, i)
		return i
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i, _ = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for ; i < len(b); i++ {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return i
		}
	}
	return i
}

// appendJSONString appends s as a JSON string.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			// Rare: let encoding/json do escapes and invalid UTF-8 exactly as it does.
			q, _ := json.Marshal(s)
			return append(dst, q...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
