package gateway

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// The hand-written usage parser reads what encoding/json reads.
func TestUsageParseMatchesEncodingJSON(t *testing.T) {
	for name, in := range map[string]string{
		"full":          `{"prompt_tokens":120,"completion_tokens":50,"total_tokens":170,"prompt_tokens_details":{"cached_tokens":64,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":30,"accepted_prediction_tokens":5,"rejected_prediction_tokens":3,"audio_tokens":0}}`,
		"no details":    `{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}`,
		"null details":  `{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,"prompt_tokens_details":null,"completion_tokens_details":null}`,
		"spaces, order": ` { "total_tokens" : 9 , "completion_tokens_details" : { "reasoning_tokens" : 4 } , "prompt_tokens" : 5 , "completion_tokens" : 4 } `,
		"extra members": `{"prompt_tokens":7,"x":{"prompt_tokens":99},"completion_tokens":1,"total_tokens":8,"cost":[1,2,{"a":"}"}]}`,
		"other case":    `{"Prompt_Tokens":7,"completion_tokens":1}`,
	} {
		t.Run(name, func(t *testing.T) {
			var want, got usage
			if err := json.Unmarshal([]byte(in), &want); err != nil {
				t.Fatal(err)
			}
			if err := got.parse([]byte(in)); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("parse = %+v, encoding/json = %+v", got, want)
			}
		})
	}
	var u usage
	if err := u.parse([]byte(`{"prompt_tokens":1.5}`)); err == nil {
		t.Error("a fractional token count was accepted")
	}
}

// members accepts exactly the objects json.Valid accepts and says why it refuses the rest.
func FuzzMembersValidatesLikeEncodingJSON(f *testing.F) {
	for _, s := range []string{
		`{}`, ` { } `, `{"a":1}`, `{"a":[1,2,{"b":null}],"c":"\u00e9\n","d":-0.5e+10}`, `[]`, `1`, `"s"`,
		`{"a":1,}`, `{"a" 1}`, `{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":1e}`, `{"a":-}`, `{"a":tru}`,
		`{"a":"\x"}`, `{"a":"\u12"}`, "{\"a\":\"\x01\"}", `{"a":"\ud800"}`, "{\"a\":\"\xff\"}", `{"a":1}x`,
		`{"a":[}`, `{"a":{"b":1]}`, `{"a":[1 2]}`, `{a:1}`, `{"a":1`, `{"a":"x`, `{"a":nulll}`, `{"a":[,]}`,
		`{"model":"gpt","messages":[{"role":"user","content":"hi"}],"stream":true}`, "{\"a\":\t1\r\n}", `{"\"k":1}`,
	} {
		f.Add([]byte(s))
	}
	for _, depth := range []int{9999, 10000} { // encoding/json's nesting limit, either side
		f.Add([]byte(`{"a":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := members(b, func(member) {})
		valid := json.Valid(b)
		var v any
		isObject := valid && json.Unmarshal(b, &v) == nil && reflect.TypeOf(v) == reflect.TypeOf(map[string]any{})
		switch {
		case isObject && err != nil:
			t.Fatalf("%q: json.Valid accepts an object, members says %v", b, err)
		case !isObject && valid && err != errNotObject:
			t.Fatalf("%q: valid JSON, not an object: members says %v", b, err)
		case !valid && err != errSyntax:
			t.Fatalf("%q: json.Valid refuses it, members says %v", b, err)
		}
	})
}
