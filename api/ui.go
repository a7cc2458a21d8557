package api

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/venna/metering/internal/apierr"
)

// uiFiles is the usage page (api/ui): plain HTML, CSS and ES modules, no build step, and
// the libraries it uses vendored under ui/vendor/<name>-<version>/.
//
//go:embed ui
var uiFiles embed.FS

// uiCSP lets the page load its own files and call its own API, nothing else: no inline
// script or style, no third-party origin, no form submission (the key field can never
// end up in a URL), no framing.
const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// uiTypes are the content types of the files the page is made of; a file of any other
// kind in ui/ (a README) is not served.
var uiTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

// uiAsset is one file as served.
type uiAsset struct {
	body        []byte
	contentType string
	etag        string
	// immutable: a vendored file, whose URL names its library's version.
	immutable bool
}

// uiAssets are the served files by their path under ui/, read once.
var uiAssets = loadUI(uiFiles)

func loadUI(fsys fs.FS) map[string]uiAsset {
	out := map[string]uiAsset{}
	err := fs.WalkDir(fsys, "ui", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel := strings.TrimPrefix(p, "ui/")
		ct, ok := uiTypes[path.Ext(p)]
		if path.Base(p) == "LICENSE" {
			ct, ok = "text/plain; charset=utf-8", true // a vendored library's licence ships with it
		}
		if !ok {
			return nil
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[rel] = uiAsset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`,
			immutable: strings.HasPrefix(rel, "vendor/")}
		return nil
	})
	if err != nil {
		panic(fmt.Sprintf("api: read embedded ui: %v", err))
	}
	return out
}

// uiRoutes serves the usage page without authentication: the page holds no data, it signs
// in with a workspace key and reads the API like any client.
func uiRoutes(r chi.Router) {
	r.Get("/", func(w http.ResponseWriter, r *http.Request) { serveAsset(w, r, "index.html") })
	r.Get("/ui/{file}", func(w http.ResponseWriter, r *http.Request) {
		serveAsset(w, r, chi.URLParam(r, "file"))
	})
	r.Get("/ui/vendor/{lib}/{file}", func(w http.ResponseWriter, r *http.Request) {
		serveAsset(w, r, "vendor/"+chi.URLParam(r, "lib")+"/"+chi.URLParam(r, "file"))
	})
}

func serveAsset(w http.ResponseWriter, r *http.Request, rel string) {
	a, ok := uiAssets[rel]
	if !ok || (rel == "index.html" && r.URL.Path != "/") {
		apierr.Write(w, http.StatusNotFound, "invalid_request_error", "unknown_url", fmt.Sprintf("Unknown request URL: %s %s", r.Method, r.URL.Path), "")
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("Content-Security-Policy", uiCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("ETag", a.etag)
	if a.immutable {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		// The page's own files change with the binary under the same URL: the browser
		// keeps them but asks each time (a 304 when the ETag still matches).
		h.Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, r, rel, time.Time{}, bytes.NewReader(a.body))
}
