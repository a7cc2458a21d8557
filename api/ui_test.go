package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/venna/metering/api"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/invoice"
)

// The usage page is served without a key, as the files it is made of, each with its
// content type, a CSP that allows nothing but its own files and API, and a cache policy
// that revalidates.
func TestUsagePageFiles(t *testing.T) {
	h := adminServer(t)
	get := func(t *testing.T, target string, header http.Header) *httptest.ResponseRecorder {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, target, nil)
		for k, v := range header {
			req.Header[k] = v
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	files := api.UIFiles()
	if !slices.Contains(files, "/") || len(files) < 5 {
		t.Fatalf("served files: %v", files)
	}
	wantType := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
		"": "text/plain; charset=utf-8", "/": "text/html; charset=utf-8"}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			rec := get(t, f, nil)
			if rec.Code != http.StatusOK || rec.Body.Len() == 0 {
				t.Fatalf("GET %s: %d, %d bytes", f, rec.Code, rec.Body.Len())
			}
			ext := path.Ext(f)
			if f == "/" {
				ext = "/"
			}
			hd := rec.Header()
			if got := hd.Get("Content-Type"); got != wantType[ext] {
				t.Errorf("Content-Type %q, want %q", got, wantType[ext])
			}
			csp := hd.Get("Content-Security-Policy")
			for _, want := range []string{"default-src 'none'", "script-src 'self';", "style-src 'self';", "connect-src 'self';", "form-action 'none'", "frame-ancestors 'none'"} {
				if !strings.Contains(csp, want) {
					t.Errorf("CSP %q lacks %q", csp, want)
				}
			}
			if strings.Contains(csp, "unsafe") || strings.Contains(csp, "http") || strings.Contains(csp, "*") {
				t.Errorf("CSP %q allows inline code or another origin", csp)
			}
			if hd.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("no nosniff")
			}
			wantCache := "no-cache"
			if strings.HasPrefix(f, "/ui/vendor/") {
				wantCache = "public, max-age=31536000, immutable"
			}
			if got := hd.Get("Cache-Control"); got != wantCache {
				t.Errorf("Cache-Control %q, want %q", got, wantCache)
			}
			etag := hd.Get("ETag")
			if etag == "" {
				t.Fatal("no ETag")
			}
			if rec := get(t, f, http.Header{"If-None-Match": {etag}}); rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
				t.Errorf("GET %s with its ETag: %d, %d bytes; want 304", f, rec.Code, rec.Body.Len())
			}
		})
	}
	// Not page files: a maintainers' README, the index under another name, unknown names.
	for _, p := range []string{"/ui/index.html", "/ui/vendor/README.md", "/ui/nope.js", "/ui/vendor/uplot-1.6.32/nope.js",
		"/ui/vendor/nope/uPlot.min.css", "/ui/vendor/uplot-1.6.32/..%2f..%2fapp.js", "/dashboard/../ui/vendor/README.md"} {
		if rec := get(t, p, nil); rec.Code != http.StatusNotFound || rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("GET %s: %d %s, want a 404 envelope", p, rec.Code, rec.Header().Get("Content-Type"))
		}
	}

	// Every file the page refers to is served: the index's scripts and style sheets and
	// the modules' imports.
	index := get(t, "/", nil).Body.String()
	refs := regexp.MustCompile(`(?:src|href)="(ui/[^"]+)"`).FindAllStringSubmatch(index, -1)
	for _, f := range files {
		if path.Ext(f) == ".js" {
			for _, m := range regexp.MustCompile(`from '\./([^']+)'`).FindAllStringSubmatch(get(t, f, nil).Body.String(), -1) {
				refs = append(refs, []string{"", path.Join(path.Dir(f[1:]), m[1])})
			}
		}
	}
	if len(refs) < 5 {
		t.Fatalf("found only %d references: %v", len(refs), refs)
	}
	for _, m := range refs {
		if !slices.Contains(files, "/"+m[1]) {
			t.Errorf("the page refers to %s, which is not served", m[1])
		}
	}
}

// openapi.json names exactly the files served: its enums of page files and vendored
// libraries are what api/ui holds.
func TestUsagePageFilesDocumented(t *testing.T) {
	doc, _ := readOpenAPI(t, adminServer(t))
	enum := func(name string) []string {
		var p struct {
			Schema struct {
				Enum []string `json:"enum"`
			} `json:"schema"`
		}
		if err := json.Unmarshal(doc.Components["parameters"][name], &p); err != nil || len(p.Schema.Enum) == 0 {
			t.Fatalf("parameter %s: %v %s", name, err, doc.Components["parameters"][name])
		}
		return p.Schema.Enum
	}
	var own, libs, libFiles []string
	for _, f := range api.UIFiles() {
		parts := strings.Split(strings.TrimPrefix(f, "/ui/"), "/")
		switch {
		case f == "/":
		case len(parts) == 1:
			own = append(own, parts[0])
		case len(parts) == 3 && parts[0] == "vendor":
			libs, libFiles = append(libs, parts[1]), append(libFiles, parts[2])
		default:
			t.Errorf("served file %s has no route", f)
		}
	}
	for name, served := range map[string][]string{"ui_file": own, "ui_lib": libs, "ui_lib_file": libFiles} {
		slices.Sort(served)
		served = slices.Compact(served)
		if documented := enum(name); !slices.Equal(documented, served) {
			t.Errorf("openapi.json parameter %s: %v; served: %v", name, documented, served)
		}
	}
}

// GET /v1/keys lists the caller's workspace's keys, revoked ones included, exactly as
// the admin lists them, and never a secret.
func TestOwnKeys(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	second, secret, err := f.store.IssueKey(ctx, "ws_a", "batch jobs")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.Revoke(ctx, second.ID); err != nil {
		t.Fatal(err)
	}
	for _, ws := range []string{"ws_a", "ws_b"} {
		var own, admin struct {
			Object string       `json:"object"`
			Data   []apikey.Key `json:"data"`
		}
		f.get("/v1/keys", f.tokens[ws], http.StatusOK, &own)
		f.get("/v1/admin/workspaces/"+ws+"/keys", adminToken, http.StatusOK, &admin)
		if own.Object != "list" || len(own.Data) == 0 {
			t.Fatalf("%s: %+v", ws, own)
		}
		for _, k := range own.Data {
			if k.WorkspaceID != ws {
				t.Errorf("%s's list holds %+v", ws, k)
			}
		}
		if a, b := mustJSON(t, own), mustJSON(t, admin); a != b {
			t.Errorf("%s: GET /v1/keys\n%s\nthe admin's list\n%s", ws, a, b)
		}
		for _, s := range []string{f.tokens["ws_a"], f.tokens["ws_b"], secret} {
			if strings.Contains(mustJSON(t, own), s[strings.LastIndex(s, "_")+1:]) {
				t.Errorf("%s: the list shows a secret", ws)
			}
		}
	}
	var own struct{ Data []apikey.Key }
	f.get("/v1/keys", f.tokens["ws_a"], http.StatusOK, &own)
	if len(own.Data) != 2 || !slices.ContainsFunc(own.Data, func(k apikey.Key) bool { return k.ID == second.ID && !k.RevokedAt.IsZero() }) {
		t.Errorf("ws_a's keys: %+v; want its first key and the revoked %s", own.Data, second.ID)
	}
	f.get("/v1/keys", "", http.StatusUnauthorized, nil)
	f.get("/v1/keys", "vk_nope_nope", http.StatusUnauthorized, nil)
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// GET /v1/invoices/{id}.html is the printable invoice `venna invoice export` writes, as an
// attachment that runs nothing, of the key's own workspace only.
func TestInvoiceHTML(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	start, _ := invoice.Month(time.Now().UTC())
	start = start.AddDate(0, -1, 0)
	f.insert(event{ws: "ws_a", at: start.Add(50 * time.Hour), prompt: 1200, cached: 200, completion: 300},
		event{ws: "ws_a", model: "venna-1-mini", at: start.Add(70 * time.Hour), prompt: 5000, completion: 900},
		event{ws: "ws_b", at: start.Add(50 * time.Hour), prompt: 100, completion: 10})
	f.rollup()
	f.do(http.MethodPost, "/v1/admin/invoices/run", adminToken, map[string]string{"period": start.Format("2006-01")}, http.StatusOK, nil)
	idA, idB := invoice.ID("ws_a", start, start.AddDate(0, 1, 0)), invoice.ID("ws_b", start, start.AddDate(0, 1, 0))
	inv, err := f.inv.Get(ctx, "ws_a", idA)
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	if err := inv.HTML(&want); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/invoices/" + idA + ".html", "/v1/admin/workspaces/ws_a/invoices/" + idA + ".html"} {
		token := f.tokens["ws_a"]
		if strings.HasPrefix(path, "/v1/admin/") {
			token = adminToken
		}
		resp, body := f.raw(path, token)
		h := resp.Header
		if resp.StatusCode != http.StatusOK || h.Get("Content-Type") != "text/html; charset=utf-8" ||
			h.Get("Content-Disposition") != `attachment; filename="`+idA+`.html"` || !strings.Contains(h.Get("Content-Security-Policy"), "sandbox") {
			t.Errorf("GET %s: %d %v", path, resp.StatusCode, h)
		}
		if string(body) != want.String() {
			t.Errorf("GET %s: the page differs from the invoice's export", path)
		}
		if len(inv.Lines) == 0 || !strings.Contains(string(body), inv.Lines[0].Amount.String()) {
			t.Errorf("GET %s: no line amounts in %s", path, body)
		}
	}
	f.get("/v1/invoices/"+idB+".html", f.tokens["ws_a"], http.StatusNotFound, nil)
	f.get("/v1/invoices/"+idA+".html", "", http.StatusUnauthorized, nil)
}

// raw GETs path with a bearer token and returns the answer and its body as sent.
func (f *fixture) raw(path, token string) (*http.Response, []byte) {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.hs.URL+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp, body
}
