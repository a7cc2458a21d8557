// Package api is the read side of Venna metering: a workspace's usage and invoices over
// REST, authenticated by the workspace's own API key, plus an admin API (workspaces, keys,
// invoice runs, spend control, credits, webhooks) behind an admin token. A workspace key
// never sees another workspace.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/internal/sqlset"
	"github.com/venna/metering/invoice"
)

//go:embed queries.sql
var queriesFile string

// Queries is every statement this package sends to ClickHouse (queries.sql).
var Queries = sqlset.MustParse("api", queriesFile)

// Authenticator resolves a bearer token to its workspace.
type Authenticator interface {
	Authenticate(token string) (apikey.Principal, error)
}

// Invoices reads a workspace's invoices and prices a month live for the upcoming invoice
// (invoice.Invoicer).
type Invoices interface {
	List(ctx context.Context, workspaceID string) ([]*invoice.Invoice, error)
	Get(ctx context.Context, workspaceID, id string) (*invoice.Invoice, error)
	ComputeWorkspace(ctx context.Context, workspaceID string, start, end time.Time) (*invoice.Invoice, error)
}

// Accounts is the workspace and key store the admin API manages (apikey.Store).
type Accounts interface {
	CreateWorkspace(ctx context.Context, id, name string) (apikey.Workspace, error)
	Workspaces(ctx context.Context) ([]apikey.Workspace, error)
	WorkspaceExists(ctx context.Context, id string) (bool, error)
	IssueKey(ctx context.Context, workspaceID, name string) (apikey.Key, string, error)
	Keys(ctx context.Context, workspaceID string) ([]apikey.Key, error)
	Revoke(ctx context.Context, keyID string) error
}

// Billing is the invoice lifecycle the admin API drives (invoice.Invoicer).
type Billing interface {
	Run(ctx context.Context, start, end time.Time) (invoice.RunResult, error)
	Finalize(ctx context.Context, workspaceID, id string) (*invoice.Invoice, error)
	Void(ctx context.Context, workspaceID, id string) (*invoice.Invoice, error)
}

// Config configures the API.
type Config struct {
	Database string
	// AdminToken enables the admin API under /v1/admin/ for bearers of this token
	// (VENNA_ADMIN_TOKEN). Empty disables it: every admin route answers 404.
	AdminToken string
	// RequestTimeout bounds each request, ClickHouse queries included. Default 30s.
	RequestTimeout time.Duration
	// MaxBodyBytes bounds a request body. Default 64 KiB.
	MaxBodyBytes int64
}

// minAdminToken is the shortest admin token accepted: a short one is guessable.
const minAdminToken = 16

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Database == "":
		return errors.New("api: Database (VENNA_CLICKHOUSE_DATABASE) is empty")
	case c.AdminToken != "" && len(c.AdminToken) < minAdminToken:
		return fmt.Errorf("api: AdminToken (VENNA_ADMIN_TOKEN) is %d characters; use at least %d random ones, or none to disable the admin API", len(c.AdminToken), minAdminToken)
	case c.RequestTimeout < 0:
		return errors.New("api: RequestTimeout is negative")
	case c.MaxBodyBytes < 0:
		return errors.New("api: MaxBodyBytes is negative")
	}
	return nil
}

// Option adds an optional capability to the Server.
type Option func(*Server)

// WithPrices prices usage: /v1/usage results carry a cost. Without it every cost is null.
func WithPrices(pb *invoice.PriceBook) Option { return func(s *Server) { s.prices = pb } }

// WithAdmin gives the admin API its stores; it is served only when Config.AdminToken is set.
func WithAdmin(accounts Accounts, billing Billing) Option {
	return func(s *Server) { s.accounts, s.billing = accounts, billing }
}

// Server serves the REST API.
type Server struct {
	cfg      Config
	conn     driver.Conn
	auth     Authenticator
	invoices Invoices
	prices   *invoice.PriceBook
	accounts Accounts
	billing  Billing
	spend    Spend
	credits  Credits
	plans    Plans
	stripe   StripeStatus
	webhooks Webhooks
	log      *slog.Logger
	metrics  *metrics
	now      func() time.Time
}

// New returns a Server; it refuses an invalid Config, and an admin token without the
// admin stores.
func New(cfg Config, conn driver.Conn, auth Authenticator, invoices Invoices, log *slog.Logger, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 64 << 10
	}
	s := &Server{cfg: cfg, conn: conn, auth: auth, invoices: invoices, log: log, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	if cfg.AdminToken != "" && (s.accounts == nil || s.billing == nil) {
		return nil, errors.New("api: AdminToken is set but no admin stores were given (WithAdmin)")
	}
	s.metrics = newMetrics()
	return s, nil
}

type scopeKey struct{}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	// Outermost first: metrics see every answer, a panic included (Recoverer makes it a 500).
	r.Use(s.metrics.middleware, middleware.Recoverer, s.limits)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		apierr.Write(w, http.StatusNotFound, "invalid_request_error", "unknown_url", fmt.Sprintf("Unknown request URL: %s %s", r.Method, r.URL.Path), "")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		// RFC 9110: a 405 lists the methods the resource takes.
		var allowed []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
			if r.Match(chi.NewRouteContext(), m, req.URL.Path) {
				allowed = append(allowed, m)
			}
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		apierr.Write(w, http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", fmt.Sprintf("Method %s is not allowed on %s.", req.Method, req.URL.Path), "")
	})

	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	r.Get("/readyz", s.readyz)
	r.Get("/metrics", s.metrics.handler().ServeHTTP)
	r.Get("/openapi.json", serveOpenAPI)
	uiRoutes(r)

	r.Group(func(r chi.Router) {
		r.Use(s.authenticate)
		s.workspaceRoutes(r, "/v1")
		r.Get("/v1/keys", s.ownKeys)
	})
	if s.cfg.AdminToken != "" {
		r.Route("/v1/admin", func(r chi.Router) {
			r.Use(s.authenticateAdmin)
			r.Get("/workspaces", s.listWorkspaces)
			r.Post("/workspaces", s.createWorkspace)
			r.Post("/keys/{key_id}/revoke", s.revokeKey)
			r.Post("/invoices/run", s.runInvoices)
			if s.plans != nil {
				r.Get("/plans", s.listPlans)
			}
			if s.webhooks != nil {
				s.webhookRoutes(r)
			}
			r.Route("/workspaces/{workspace_id}", func(r chi.Router) {
				r.Use(s.adminScope)
				r.Get("/keys", s.listKeys)
				r.Post("/keys", s.createKey)
				r.Post("/invoices/{id}/finalize", s.finalizeInvoice)
				r.Post("/invoices/{id}/void", s.voidInvoice)
				if s.spend != nil {
					r.Put("/budget", s.setBudget)
					r.Delete("/budget", s.clearBudget)
					r.Put("/rate_limit", s.setRateLimit)
				}
				if s.credits != nil {
					r.Post("/credits", s.addGrant)
					r.Post("/credits/{grant_id}/void", s.voidGrant)
					r.Put("/billing_mode", s.setBillingMode)
				}
				if s.plans != nil {
					r.Put("/subscription", s.setSubscription)
					r.Delete("/subscription", s.cancelSubscription)
				}
				if s.stripe != nil {
					r.Get("/stripe", s.stripeStatuses)
					r.Get("/invoices/{id}/stripe", s.stripeStatus)
				}
				s.workspaceRoutes(r, "")
			})
		})
	}
	return r
}

// workspaceRoutes are the read routes of one workspace: its own under /v1 for a workspace
// key, any workspace's under /v1/admin/workspaces/{workspace_id} for the admin.
func (s *Server) workspaceRoutes(r chi.Router, prefix string) {
	r.Get(prefix+"/usage", s.usage)
	r.Get(prefix+"/invoices", s.listInvoices)
	r.Get(prefix+"/invoices/upcoming", s.upcomingInvoice)
	r.Get(prefix+"/invoices/{id}", s.getInvoice)
	r.Get(prefix+"/invoices/{id}.csv", s.getInvoiceCSV)
	r.Get(prefix+"/invoices/{id}.html", s.getInvoiceHTML)
	r.Get(prefix+"/spend", s.spendStatus)
	r.Get(prefix+"/credits", s.creditBalance)
	r.Get(prefix+"/subscription", s.subscription)
}

// limits bounds every request: its duration (the context every query runs on, and the
// connection's read and write deadlines, so that a slow client cannot hold a connection),
// its body and its query string.
func (s *Server) limits(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.URL.RawQuery) > 8<<10 {
			apierr.Write(w, http.StatusRequestURITooLong, "invalid_request_error", "uri_too_long", "The query string is longer than 8 KiB.", "")
			return
		}
		start := time.Now()
		rc := http.NewResponseController(w)
		// Errors mean the writer has no connection (a test recorder): nothing to bound.
		_ = rc.SetReadDeadline(start.Add(s.cfg.RequestTimeout))
		_ = rc.SetWriteDeadline(start.Add(s.cfg.RequestTimeout + 5*time.Second)) // room for the timeout answer
		ctx, cancel := context.WithDeadline(r.Context(), start.Add(s.cfg.RequestTimeout))
		defer cancel()
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func bearer(r *http.Request) (string, bool) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	token = strings.TrimSpace(token)
	return token, ok && token != ""
}

func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearer(r)
		if !ok {
			apierr.Write(w, http.StatusUnauthorized, "invalid_request_error", "missing_api_key", "You didn't provide an API key. Provide it in the Authorization header as 'Bearer vk_...'.", "")
			return
		}
		p, err := s.auth.Authenticate(token)
		if err != nil {
			apierr.Write(w, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "Incorrect API key provided.", "")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), scopeKey{}, p.WorkspaceID)))
	})
}

// authenticateAdmin compares digests of the bearer and the admin token in constant time:
// neither the answer nor its timing tells how much of a guess was right, or its length.
func (s *Server) authenticateAdmin(next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(s.cfg.AdminToken))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearer(r)
		got := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 || !ok {
			apierr.Write(w, http.StatusUnauthorized, "invalid_request_error", "invalid_admin_token", "The admin API needs 'Authorization: Bearer <admin token>'.", "")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// adminScope makes {workspace_id} the workspace the shared read routes serve; a workspace
// that does not exist is a 404.
func (s *Server) adminScope(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := chi.URLParam(r, "workspace_id")
		ok, err := s.accounts.WorkspaceExists(r.Context(), id)
		if err != nil {
			s.serverError(w, "look up workspace", err)
			return
		}
		if !ok {
			apierr.Write(w, http.StatusNotFound, "invalid_request_error", "workspace_not_found", fmt.Sprintf("No workspace %q.", id), "workspace_id")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), scopeKey{}, id)))
	})
}

// workspace is the workspace the request reads: the key's own, or the admin's choice.
func workspace(r *http.Request) string {
	return r.Context().Value(scopeKey{}).(string)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.conn.Ping(ctx); err != nil {
		apierr.Write(w, http.StatusServiceUnavailable, "server_error", "not_ready", "ClickHouse does not answer.", "")
		return
	}
	w.Write([]byte("ok\n"))
}

func badParam(w http.ResponseWriter, param, msg string) {
	apierr.Write(w, http.StatusBadRequest, "invalid_request_error", "invalid_parameter", msg, param)
}

// serverError answers a failure that is not the caller's: a timeout is a 503 the client may
// retry, anything else a logged 500.
func (s *Server) serverError(w http.ResponseWriter, what string, err error) {
	if errors.Is(err, context.DeadlineExceeded) {
		apierr.Write(w, http.StatusServiceUnavailable, "server_error", "timeout", "The request took too long; narrow it or try again.", "")
		return
	}
	if errors.Is(err, context.Canceled) {
		return // the client left; nobody reads an answer
	}
	s.log.Error(what, "err", err)
	apierr.Write(w, http.StatusInternalServerError, "server_error", "internal_error", "The request could not be served; try again.", "")
}
