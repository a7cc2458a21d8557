package gateway

import (
	"encoding/json"
	"reflect"
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
