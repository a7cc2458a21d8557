// Package api is the read side of Venna metering: a workspace's usage and invoices over
// REST, authenticated by the workspace's own API key. A key never sees another workspace.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/invoice"
)

// Authenticator resolves a bearer token to its workspace.
type Authenticator interface {
	Authenticate(token string) (apikey.Principal, error)
}

// Invoices reads a workspace's invoices.
type Invoices interface {
	List(ctx context.Context, workspaceID string) ([]*invoice.Invoice, error)
	Get(ctx context.Context, workspaceID, id string) (*invoice.Invoice, error)
}

// Config configures the API.
type Config struct {
	Database string
}

// Validate names the first bad field.
func (c Config) Validate() error {
	if c.Database == "" {
		return errors.New("api: Database (VENNA_CLICKHOUSE_DATABASE) is empty")
	}
	return nil
}

// Server serves the REST API.
type Server struct {
	cfg      Config
	conn     driver.Conn
	auth     Authenticator
	invoices Invoices
	log      *slog.Logger
}

// New returns a Server; it refuses an invalid Config.
func New(cfg Config, conn driver.Conn, auth Authenticator, invoices Invoices, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, conn: conn, auth: auth, invoices: invoices, log: log}, nil
}

type ctxKey struct{}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.Use(middleware.Timeout(30 * time.Second))
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	r.Group(func(r chi.Router) {
		r.Use(s.authenticate)
		r.Get("/v1/usage", s.usage)
		r.Get("/v1/invoices", s.listInvoices)
		r.Get("/v1/invoices/{id}", s.getInvoice)
	})
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		apierr.Write(w, http.StatusNotFound, "invalid_request_error", "unknown_url", fmt.Sprintf("Unknown request URL: %s %s", r.Method, r.URL.Path), "")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		apierr.Write(w, http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", fmt.Sprintf("Method %s is not allowed on %s.", r.Method, r.URL.Path), "")
	})
	return r
}

func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || strings.TrimSpace(token) == "" {
			apierr.Write(w, http.StatusUnauthorized, "invalid_request_error", "missing_api_key", "You didn't provide an API key. Provide it in the Authorization header as 'Bearer vk_...'.", "")
			return
		}
		p, err := s.auth.Authenticate(strings.TrimSpace(token))
		if err != nil {
			apierr.Write(w, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "Incorrect API key provided.", "")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, p)))
	})
}

func principal(r *http.Request) apikey.Principal {
	return r.Context().Value(ctxKey{}).(apikey.Principal)
}

func badParam(w http.ResponseWriter, param, msg string) {
	apierr.Write(w, http.StatusBadRequest, "invalid_request_error", "invalid_parameter", msg, param)
}

func (s *Server) internalError(w http.ResponseWriter, what string, err error) {
	s.log.Error(what, "err", err)
	apierr.Write(w, http.StatusInternalServerError, "server_error", "internal_error", "The request could not be served; try again.", "")
}

func (s *Server) listInvoices(w http.ResponseWriter, r *http.Request) {
	list, err := s.invoices.List(r.Context(), principal(r).WorkspaceID)
	if err != nil {
		s.internalError(w, "list invoices", err)
		return
	}
	if list == nil {
		list = []*invoice.Invoice{}
	}
	apierr.JSON(w, http.StatusOK, map[string]any{"object": "list", "data": list})
}

func (s *Server) getInvoice(w http.ResponseWriter, r *http.Request) {
	inv, err := s.invoices.Get(r.Context(), principal(r).WorkspaceID, chi.URLParam(r, "id"))
	if errors.Is(err, invoice.ErrNotFound) {
		apierr.Write(w, http.StatusNotFound, "invalid_request_error", "invoice_not_found", "No such invoice.", "id")
		return
	}
	if err != nil {
		s.internalError(w, "get invoice", err)
		return
	}
	apierr.JSON(w, http.StatusOK, inv)
}

func parseUnix(w http.ResponseWriter, r *http.Request, name string, required bool) (time.Time, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		if required {
			badParam(w, name, fmt.Sprintf("Missing required parameter: '%s' (Unix seconds).", name))
			return time.Time{}, false
		}
		return time.Time{}, true
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > 1<<33 {
		badParam(w, name, fmt.Sprintf("Invalid '%s': %q is not a Unix time in seconds.", name, v))
		return time.Time{}, false
	}
	return time.Unix(n, 0).UTC(), true
}
