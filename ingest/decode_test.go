package ingest

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/venna/metering/schema"
)

var decodeCases = []struct{ name, in string }{
	{"gateway event", `{"schema_version":1,"event_id":"019ab8a4-5f3e-7c1d-9a0b-3c4d5e6f7a8b","occurred_at":"2026-11-25T12:45:54.1Z","workspace_id":"ws_acme","api_key_id":"key_52yhz6ktart","model":"venna-1-reasoning","upstream":"sim","upstream_model":"sim-reasoner","request_id":"chatcmpl-sim-17","status":"ok","http_status":200,"stream":false,"estimated":false,"latency_ms":3,"prompt_tokens":41,"cached_tokens":16,"completion_tokens":64,"reasoning_tokens":48,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0,"total_tokens":105}`},
	{"whitespace", " \n{ \"event_id\" : \"a\" ,\t\"prompt_tokens\" : -0 , \"stream\":true }\r\n"},
	{"empty object", `{}`},
	{"unknown fields of every kind", `{"event_id":"a","x":{"y":[1,2.5e-3,{"z":null}],"w":"q\"\\\/\u00e9"},"n":-1.5E+10,"b":true,"model":"m"}`},
	{"nulls", `{"event_id":null,"prompt_tokens":null,"stream":null,"occurred_at":null,"schema_version":null}`},
	{"duplicate key: last wins", `{"model":"a","model":"b"}`},
	{"key in another case", `{"Model":"a","EVENT_ID":"b"}`},
	{"kelvin sign key", "{\"\u212aey\":1,\"model\":\"m\"}"},
	{"escaped string", `{"model":"a\nb\u0041\ud83d\ude00"}`},
	{"non-ascii string", `{"model":"héllo"}`},
	{"invalid utf-8", "{\"model\":\"\xff\xfe\"}"},
	{"lone surrogate", `{"model":"\ud800"}`},
	{"escaped key", `{"mod\u0065l":"x"}`},
	{"time with offset", `{"occurred_at":"2026-11-25T13:45:54+01:00"}`},
	{"bad time", `{"occurred_at":"yesterday"}`},
	{"time as number", `{"occurred_at":12345}`},
	{"fraction in int", `{"prompt_tokens":1.5}`},
	{"exponent in int", `{"prompt_tokens":1e3}`},
	{"huge int", `{"prompt_tokens":123456789012345678901234}`},
	{"19 digits", `{"prompt_tokens":9223372036854775807}`},
	{"int overflow", `{"prompt_tokens":9223372036854775808}`},
	{"min int", `{"prompt_tokens":-9223372036854775808}`},
	{"leading zero", `{"prompt_tokens":01}`},
	{"plus sign", `{"prompt_tokens":+1}`},
	{"string for int", `{"prompt_tokens":"1"}`},
	{"int for string", `{"model":1}`},
	{"object for string", `{"model":{}}`},
	{"string for bool", `{"stream":"true"}`},
	{"trailing comma", `{"model":"a",}`},
	{"missing colon", `{"model" "a"}`},
	{"unterminated", `{"model":"a"`},
	{"trailing garbage", `{"model":"a"} x`},
	{"two objects", `{}{}`},
	{"array", `[1,2]`},
	{"not json", `not json`},
	{"empty", ``},
	{"control character in string", "{\"model\":\"a\tb\"}"},
	{"bad escape", `{"x":"\q"}`},
	{"bad unicode escape", `{"x":"\u12g4"}`},
	{"truncated literal", `{"stream":tru}`},
	{"escape after eight bytes", `{"model":"abcdefghij\nklmnopqrstuvwxyz"}`},
	{"quote escaped late", `{"model":"abcdefghijklmnop\"qrs","x":1}`},
	{"control byte in the second word", "{\"model\":\"abcdefghij\x1fklmnop\"}"},
	{"non-ascii in the second word", "{\"model\":\"abcdefghijklm\xc3\xa9nop\"}"},
	{"delete byte", "{\"model\":\"abcdefghijk\x7flmnop\"}"},
	{"long plain strings", `{"event_id":"019ab8a4-5f3e-7c1d-9a0b-3c4d5e6f7a8b","request_id":"chatcmpl-0123456789abcdefghijklmnopqrstuvwxyz"}`},
	{"deep nesting", `{"x":` + string(make([]byte, 0)) + `[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}`},
}

// The fast decoder must give exactly encoding/json's result: the same event when it
// succeeds, an error when it fails.
func TestDecodeMatchesEncodingJSON(t *testing.T) {
	for _, tc := range decodeCases {
		t.Run(tc.name, func(t *testing.T) { checkDecode(t, []byte(tc.in)) })
	}
}

func FuzzDecodeMatchesEncodingJSON(f *testing.F) {
	for _, tc := range decodeCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) { checkDecode(t, in) })
}

func checkDecode(t *testing.T, in []byte) {
	t.Helper()
	var want, got schema.UsageEvent
	wantErr := json.Unmarshal(in, &want)
	gotErr := decodeEvent(in, &got, &interner{})
	if (wantErr == nil) != (gotErr == nil) {
		t.Fatalf("%q: encoding/json error %v, decodeEvent error %v", in, wantErr, gotErr)
	}
	if wantErr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n got %+v\nwant %+v", in, got, want)
	}
	// The fast path alone must never accept what encoding/json refuses.
	var fast schema.UsageEvent
	if (&eventParser{data: in}).parse(&fast) {
		if wantErr != nil {
			t.Fatalf("%q: fast path accepted input encoding/json refuses (%v)", in, wantErr)
		}
		if !reflect.DeepEqual(fast, want) {
			t.Fatalf("%q: fast path:\n got %+v\nwant %+v", in, fast, want)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	in := []byte(decodeCases[0].in)
	b.Run("fast", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		var ev schema.UsageEvent
		strs := interner{}
		for b.Loop() {
			if err := decodeEvent(in, &ev, &strs); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		for b.Loop() {
			var ev schema.UsageEvent
			if err := json.Unmarshal(in, &ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}
