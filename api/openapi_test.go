package api_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/venna/metering/api"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/spend"
	"github.com/venna/metering/stripesync"
	"github.com/venna/metering/webhook"
)

type openAPIDoc struct {
	OpenAPI    string                                `json:"openapi"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components map[string]map[string]json.RawMessage `json:"components"`
}

// readOpenAPI fetches the document the server serves.
func readOpenAPI(t *testing.T, h http.Handler) (openAPIDoc, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/openapi.json", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	var doc openAPIDoc
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return doc, rec.Body.Bytes()
}

// adminServer is a Server with every route mounted; the routes are only walked, never
// served, so it needs no database.
func adminServer(t *testing.T) http.Handler {
	t.Helper()
	srv, err := api.New(api.Config{Database: "unused", AdminToken: adminToken}, nil, nil, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)), api.WithAdmin(&apikey.Store{}, fakeBilling{}), api.WithSpend(spend.NewStore(nil, "unused")), api.WithCredits(&invoice.Invoicer{}), api.WithPlans(&invoice.Invoicer{}), api.WithStripe(stripesync.NewStore(nil, "unused")),
		api.WithWebhooks(webhook.NewStore(nil, "unused")))
	if err != nil {
		t.Fatal(err)
	}
	return srv.Handler()
}

// Every route is documented, and every documented route exists.
func TestOpenAPIMatchesRouter(t *testing.T) {
	h := adminServer(t)
	doc, _ := readOpenAPI(t, h)
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi %q, want 3.x", doc.OpenAPI)
	}
	routed := map[string]bool{}
	err := chi.Walk(h.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routed[method+" "+route] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" {
				continue
			}
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	for _, r := range sortedKeys(routed) {
		if !documented[r] {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for _, d := range sortedKeys(documented) {
		if !routed[d] {
			t.Errorf("openapi.json documents %s, which the router does not serve", d)
		}
	}
	if len(routed) < 20 {
		t.Errorf("walked only %d routes: %v", len(routed), sortedKeys(routed))
	}
}

var pathParam = regexp.MustCompile(`\{([a-z_]+)\}`)

// The document is self-consistent: every $ref resolves, every path parameter is declared,
// every operation has an ID of its own and answers.
func TestOpenAPIIsConsistent(t *testing.T) {
	doc, raw := readOpenAPI(t, adminServer(t))
	var refs []string
	for _, m := range regexp.MustCompile(`"\$ref":\s*"#/components/([a-zA-Z]+)/([a-zA-Z_]+)"`).FindAllStringSubmatch(string(raw), -1) {
		if _, ok := doc.Components[m[1]][m[2]]; !ok {
			refs = append(refs, m[1]+"/"+m[2])
		}
	}
	if len(refs) > 0 {
		t.Errorf("unresolved $refs: %v", refs)
	}
	ids := map[string]string{}
	for path, ops := range doc.Paths {
		for method, rawOp := range ops {
			var op struct {
				OperationID string                     `json:"operationId"`
				Parameters  []map[string]any           `json:"parameters"`
				Responses   map[string]json.RawMessage `json:"responses"`
			}
			if err := json.Unmarshal(rawOp, &op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			where := strings.ToUpper(method) + " " + path
			if prev, dup := ids[op.OperationID]; dup || op.OperationID == "" {
				t.Errorf("%s: operationId %q empty or also used by %s", where, op.OperationID, prev)
			}
			ids[op.OperationID] = where
			if len(op.Responses) == 0 {
				t.Errorf("%s: no responses", where)
			}
			declared := map[string]bool{}
			for _, p := range op.Parameters {
				if ref, ok := p["$ref"].(string); ok {
					var param struct{ Name, In string }
					json.Unmarshal(doc.Components["parameters"][strings.TrimPrefix(ref, "#/components/parameters/")], &param)
					if param.In == "path" {
						declared[param.Name] = true
					}
				}
			}
			for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
				if !declared[m[1]] {
					t.Errorf("%s: path parameter %s is not declared", where, m[1])
				}
			}
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
