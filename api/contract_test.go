package api_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/venna/metering/internal/apierr"
)

// What Schemathesis checks in CI (scripts/contract.sh), held here too so the suite
// catches a regression without it: a 405 names the methods allowed (RFC 9110), and a body
// must be a JSON object without nulls (the spec declares no field nullable).
func TestContractBasics(t *testing.T) {
	f := newFixture(t)
	for path, allow := range map[string]string{
		"/v1/usage":                         "GET",
		"/v1/admin/workspaces":              "GET, POST",
		"/v1/admin/workspaces/ws_a/keys":    "GET, POST",
		"/v1/admin/workspaces/ws_a/budget":  "PUT, DELETE",
		"/v1/admin/keys/key_x/revoke":       "POST",
		"/v1/admin/workspaces/ws_a/credits": "GET, POST",
	} {
		token := adminToken
		if path == "/v1/usage" {
			token = f.tokens["ws_a"]
		}
		resp := f.do("TRACE", path, token, nil, http.StatusMethodNotAllowed, nil)
		if got := resp.Header.Get("Allow"); got != allow {
			t.Errorf("TRACE %s: Allow %q, want %q", path, got, allow)
		}
	}
	for name, body := range map[string]json.RawMessage{
		"null body":       json.RawMessage(`null`),
		"array body":      json.RawMessage(`[{"name":"x"}]`),
		"null field":      json.RawMessage(`{"name":null}`),
		"string body":     json.RawMessage(`"laptop"`),
		"null in a later": json.RawMessage(`{"name":"ok","id":null}`),
	} {
		path := "/v1/admin/workspaces/ws_a/keys"
		if name == "null in a later" {
			path = "/v1/admin/workspaces"
		}
		var e apierr.Body
		f.do(http.MethodPost, path, adminToken, body, http.StatusBadRequest, &e)
		if e.Error.Type != "invalid_request_error" {
			t.Errorf("%s: %+v", name, e.Error)
		}
	}
}
