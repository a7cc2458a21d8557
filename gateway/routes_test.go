package gateway

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseRoutesDeployFile(t *testing.T) {
	b, err := os.ReadFile("../deploy/routes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	getenv := func(name string) string {
		asked = append(asked, name)
		if name == "VENNA_SIM_API_KEY" {
			return "sk-sim-from-env"
		}
		return ""
	}
	routes, err := ParseRoutes(b, getenv)
	if err != nil {
		t.Fatalf("ParseRoutes(deploy/routes.yaml): %v", err)
	}
	sim := Route{Upstream: "sim", BaseURL: "http://127.0.0.1:18090/v1", APIKey: "sk-sim-from-env"}
	want := Routes{}
	for model, upstreamModel := range map[string]string{"venna-1": "sim-large", "venna-1-mini": "sim-small", "venna-1-reasoning": "sim-reasoner"} {
		r := sim
		r.Model, r.UpstreamModel = model, upstreamModel
		want[model] = r
	}
	if !reflect.DeepEqual(routes, want) {
		t.Errorf("routes =\n%+v\nwant\n%+v", routes, want)
	}
	if !reflect.DeepEqual(asked, []string{"VENNA_SIM_API_KEY"}) {
		t.Errorf("getenv asked for %v, want only the api_key_env the file names", asked)
	}
	if got := routes.Models(); !reflect.DeepEqual(got, []string{"venna-1", "venna-1-mini", "venna-1-reasoning"}) {
		t.Errorf("Models() = %v, want sorted public names", got)
	}
}

func TestLoadRoutesReadsKeyFromEnvironment(t *testing.T) {
	t.Setenv("VENNA_TEST_UPSTREAM_KEY", "sk-live-123")
	path := filepath.Join(t.TempDir(), "routes.yaml")
	yaml := "upstreams:\n  - name: a\n    base_url: https://api.example.com/v1/\n    api_key_env: VENNA_TEST_UPSTREAM_KEY\nmodels:\n  - model: m\n    upstream: a\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	routes, err := LoadRoutes(path)
	if err != nil {
		t.Fatalf("LoadRoutes: %v", err)
	}
	want := Routes{"m": {Model: "m", Upstream: "a", BaseURL: "https://api.example.com/v1", APIKey: "sk-live-123", UpstreamModel: "m"}}
	if !reflect.DeepEqual(routes, want) {
		t.Errorf("routes = %+v, want %+v (key from env, trailing slash trimmed, upstream_model defaults to model)", routes, want)
	}
	if _, err := LoadRoutes(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Errorf("LoadRoutes of a missing file succeeded")
	}
}

func TestParseRoutesRejects(t *testing.T) {
	const ups = "upstreams:\n  - name: a\n    base_url: http://127.0.0.1:8080/v1\n"
	tests := []struct {
		name    string
		yaml    string
		wantErr string // a part of the error that points at the mistake
	}{
		{"unknown upstream", ups + "models:\n  - model: m\n    upstream: b\n", `"b"`},
		{"duplicate upstream", ups + "  - name: a\n    base_url: https://other.example.com/v1\nmodels:\n  - model: m\n    upstream: a\n", "a is listed twice"},
		{"duplicate model", ups + "models:\n  - model: m\n    upstream: a\n  - model: m\n    upstream: a\n    upstream_model: other\n", "m is listed twice"},
		{"base_url not a URL", "upstreams:\n  - name: a\n    base_url: not a url\nmodels:\n  - model: m\n    upstream: a\n", "base_url"},
		{"base_url ftp", "upstreams:\n  - name: a\n    base_url: ftp://example.com/v1\nmodels:\n  - model: m\n    upstream: a\n", "base_url"},
		{"base_url without host", "upstreams:\n  - name: a\n    base_url: http:///v1\nmodels:\n  - model: m\n    upstream: a\n", "base_url"},
		{"base_url empty", "upstreams:\n  - name: a\nmodels:\n  - model: m\n    upstream: a\n", "base_url"},
		{"empty models", ups + "models: []\n", "no models"},
		{"no models key", ups, "no models"},
		{"empty file", "", ""},
		{"model name empty", ups + "models:\n  - upstream: a\n", "model is empty"},
		{"upstream name empty", "upstreams:\n  - base_url: http://127.0.0.1:8080/v1\nmodels:\n  - model: m\n    upstream: \"\"\n", "name is empty"},
		{"unknown top-level field", ups + "models:\n  - model: m\n    upstream: a\ndefaults: {}\n", "defaults"},
		{"key written into the file", "upstreams:\n  - name: a\n    base_url: http://127.0.0.1:8080/v1\n    api_key: sk-secret\nmodels:\n  - model: m\n    upstream: a\n", "api_key"},
		{"misspelt model field", ups + "models:\n  - model: m\n    upstream: a\n    upstream_modle: x\n", "upstream_modle"},
		{"not YAML", "upstreams: [\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			routes, err := ParseRoutes([]byte(tt.yaml), func(string) string { return "" })
			if err == nil {
				t.Fatalf("ParseRoutes accepted it: %+v", routes)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not mention %q", err, tt.wantErr)
			}
		})
	}
}
