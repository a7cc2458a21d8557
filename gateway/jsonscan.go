package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"unicode/utf8"
)

// The request path reads and rewrites a few top-level members of JSON objects without
// decoding them into maps: members validates an object as strictly as json.Valid and hands
// out byte spans of its members in the same pass, so a body is read once, copied once,
// and nothing else is allocated. (encoding/json's validator alone cost more than the rest
// of the request path, and grows with every prompt.)

var errNotObject = errors.New("not a JSON object")

// errSyntax is any JSON syntax error; callers that must say which ask encoding/json.
var errSyntax = errors.New("invalid JSON")

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

// member is one top-level member: the key and the value as spans of the object's bytes.
type member struct {
	keyStart, keyEnd     int // the key without its quotes
	valueStart, valueEnd int
	escaped              bool // the key has escapes: compare it through memberKey
}

// members calls fn for each top-level member of the JSON object b, in order. It returns
// errNotObject if b is valid JSON but not an object, errSyntax if b is not valid JSON;
// then fn may have seen some members already.
func members(b []byte, fn func(m member)) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		if end, ok := validValue(b, i, 0); ok && skipSpace(b, end) == len(b) {
			return errNotObject
		}
		return errSyntax
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return trailing(b, i+1)
	}
	for i < len(b) {
		if b[i] != '"' {
			return errSyntax
		}
		var m member
		var ok bool
		m.keyStart = i + 1
		if i, m.escaped, ok = validString(b, i); !ok {
			return errSyntax
		}
		m.keyEnd = i - 1
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != ':' {
			return errSyntax
		}
		i = skipSpace(b, i+1)
		m.valueStart = i
		if i, ok = validValue(b, i, 1); !ok {
			return errSyntax
		}
		m.valueEnd = i
		fn(m)
		i = skipSpace(b, i)
		if i >= len(b) {
			break
		}
		if b[i] == '}' {
			return trailing(b, i+1)
		}
		if b[i] != ',' {
			return errSyntax
		}
		i = skipSpace(b, i+1)
	}
	return errSyntax
}

// trailing accepts only whitespace after the top-level value ending at i.
func trailing(b []byte, i int) error {
	if skipSpace(b, i) != len(b) {
		return errSyntax
	}
	return nil
}

// validValue returns the index after the valid JSON value starting at b[i].
func validValue(b []byte, i, depth int) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	switch c := b[i]; {
	case c == '"':
		end, _, ok := validString(b, i)
		return end, ok
	case c == '{' || c == '[':
		if depth >= maxDepth {
			return i, false
		}
		isObject := c == '{'
		closing := byte(']')
		if isObject {
			closing = '}'
		}
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == closing {
			return i + 1, true
		}
		for {
			var ok bool
			if isObject {
				if i >= len(b) || b[i] != '"' {
					return i, false
				}
				if i, _, ok = validString(b, i); !ok {
					return i, false
				}
				i = skipSpace(b, i)
				if i >= len(b) || b[i] != ':' {
					return i, false
				}
				i = skipSpace(b, i+1)
			}
			if i, ok = validValue(b, i, depth+1); !ok {
				return i, false
			}
			i = skipSpace(b, i)
			switch {
			case i >= len(b):
				return i, false
			case b[i] == closing:
				return i + 1, true
			case b[i] != ',':
				return i, false
			}
			i = skipSpace(b, i+1)
		}
	case c == 't':
		return literal(b, i, "true")
	case c == 'f':
		return literal(b, i, "false")
	case c == 'n':
		return literal(b, i, "null")
	default:
		return validNumber(b, i)
	}
}

func literal(b []byte, i int, lit string) (int, bool) {
	if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
		return i + len(lit), true
	}
	return i, false
}

// validNumber returns the index after the number at b[i]: -?(0|[1-9]d*)(.d+)?([eE][+-]?d+)?
func validNumber(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i+1)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// plainInString marks the bytes a string scan passes over: all but '"', '\\' and controls.
var plainInString = func() (t [256]bool) {
	for c := range t {
		t[c] = c >= 0x20 && c != '"' && c != '\\'
	}
	return t
}()

// validString returns the index after the string starting at b[i] == '"' and whether it
// has escapes. Like json.Valid it rejects control characters and bad escapes and lets
// invalid UTF-8 through.
func validString(b []byte, i int) (end int, escaped, ok bool) {
	for i++; i < len(b); i++ {
		if plainInString[b[i]] {
			continue
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, escaped, true
		case c == '\\':
			escaped = true
			i++
			if i >= len(b) {
				return i, escaped, false
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(b)-i <= 4 {
					return i, escaped, false
				}
				for _, h := range b[i+1 : i+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return i, escaped, false
					}
				}
				i += 4
			default:
				return i, escaped, false
			}
		case c < 0x20:
			return i, escaped, false
		}
	}
	return i, escaped, false
}

// pick stores in out[i] the value of the top-level member of the JSON object b named
// names[i], matched as encoding/json matches (ignoring case, the last of duplicates wins);
// nil where there is none. It returns members' error.
func pick(b []byte, names []string, out [][]byte) error {
	return members(b, func(m member) {
		for i, name := range names {
			if keyIs(b, m, name) {
				out[i] = b[m.valueStart:m.valueEnd]
				return
			}
		}
	})
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

// keyIs reports whether m's key equals name, ignoring case as encoding/json does: with
// Unicode's simple folds, so "ſ" (U+017F, two bytes) is an s and "K" (U+212A, three bytes)
// a k. name is ASCII: a key that matches it is never shorter.
func keyIs(b []byte, m member, name string) bool {
	if !m.escaped {
		k := b[m.keyStart:m.keyEnd]
		if len(k) < len(name) {
			return false
		}
		return string(k) == name || strings.EqualFold(string(k), name)
	}
	return strings.EqualFold(memberKey(b, m), name)
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// jsonString returns the valid JSON value v as a string if it is one, else "". Like
// encoding/json it turns invalid UTF-8 into U+FFFD.
func jsonString(v []byte) string {
	if len(v) < 2 || v[0] != '"' {
		return ""
	}
	if s := v[1 : len(v)-1]; bytes.IndexByte(s, '\\') < 0 && utf8.Valid(s) {
		return string(s)
	}
	var s string
	json.Unmarshal(v, &s)
	return s
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
