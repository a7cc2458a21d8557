package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Route sends one public model to one OpenAI-compatible upstream.
type Route struct {
	Model         string // the name clients send
	Upstream      string // the upstream's name, recorded on usage events
	BaseURL       string // e.g. https://api.openai.com/v1; /chat/completions is appended
	APIKey        string // sent as Bearer to the upstream; may be empty
	UpstreamModel string // the model name the upstream expects

	// Built once by New: the request path parses and allocates none of this.
	url                  *url.URL    // BaseURL + /chat/completions
	header, streamHeader http.Header // shared and never mutated: Content-Type, Accept, Authorization
}

// Routes maps public model names to routes.
type Routes map[string]Route

// Models lists the public model names in order.
func (r Routes) Models() []string {
	out := make([]string, 0, len(r))
	for m := range r {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

type routesFile struct {
	Upstreams []struct {
		Name      string `yaml:"name"`
		BaseURL   string `yaml:"base_url"`
		APIKeyEnv string `yaml:"api_key_env"`
	} `yaml:"upstreams"`
	Models []struct {
		Model         string `yaml:"model"`
		Upstream      string `yaml:"upstream"`
		UpstreamModel string `yaml:"upstream_model"`
	} `yaml:"models"`
}

// LoadRoutes reads a routes file (see deploy/routes.yaml). Upstream keys come from the
// environment variables the file names, never from the file itself.
func LoadRoutes(path string) (Routes, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read routes: %w", err)
	}
	return ParseRoutes(b, os.Getenv)
}

// ParseRoutes parses a routes file, reading upstream keys through getenv.
func ParseRoutes(b []byte, getenv func(string) string) (Routes, error) {
	var f routesFile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse routes: %w", err)
	}
	ups := map[string]Route{}
	for i, u := range f.Upstreams {
		if u.Name == "" {
			return nil, fmt.Errorf("routes: upstreams[%d].name is empty", i)
		}
		if _, dup := ups[u.Name]; dup {
			// Otherwise the later entry silently takes the earlier one's models.
			return nil, fmt.Errorf("routes: upstream %s is listed twice", u.Name)
		}
		p, err := url.Parse(u.BaseURL)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return nil, fmt.Errorf("routes: upstream %s: base_url %q is not an http(s) URL", u.Name, u.BaseURL)
		}
		r := Route{Upstream: u.Name, BaseURL: strings.TrimRight(u.BaseURL, "/")}
		if u.APIKeyEnv != "" {
			r.APIKey = getenv(u.APIKeyEnv)
		}
		ups[u.Name] = r
	}
	routes := Routes{}
	for i, m := range f.Models {
		up, ok := ups[m.Upstream]
		switch {
		case m.Model == "":
			return nil, fmt.Errorf("routes: models[%d].model is empty", i)
		case !ok:
			return nil, fmt.Errorf("routes: model %s: upstream %q is not defined", m.Model, m.Upstream)
		case routes[m.Model].Model != "":
			return nil, fmt.Errorf("routes: model %s is listed twice", m.Model)
		}
		up.Model = m.Model
		up.UpstreamModel = m.UpstreamModel
		if up.UpstreamModel == "" {
			up.UpstreamModel = m.Model
		}
		routes[m.Model] = up
	}
	if len(routes) == 0 {
		return nil, errors.New("routes: no models")
	}
	return routes, nil
}
