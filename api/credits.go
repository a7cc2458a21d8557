package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/shopspring/decimal"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/invoice"
)

// Credits are a workspace's prepaid credit grants and billing mode (invoice.Invoicer).
type Credits interface {
	Balance(ctx context.Context, workspaceID string, t time.Time) (invoice.Balance, error)
	AddGrant(ctx context.Context, g invoice.Grant) (invoice.Grant, error)
	VoidGrant(ctx context.Context, workspaceID, id string) (invoice.Grant, error)
	SetPrepaid(ctx context.Context, workspaceID string, prepaid bool) error
}

// WithCredits serves a workspace's credit balance (GET /v1/credits) and lets the admin
// grant credit, void a grant and switch prepaid mode.
func WithCredits(c Credits) Option { return func(s *Server) { s.credits = c } }

func (s *Server) creditBalance(w http.ResponseWriter, r *http.Request) {
	if s.credits == nil {
		apierr.Write(w, http.StatusNotFound, "invalid_request_error", "unknown_url", "Credits are not configured on this API.", "")
		return
	}
	b, err := s.credits.Balance(r.Context(), workspace(r), s.now())
	if err != nil {
		s.serverError(w, "read credit balance", err)
		return
	}
	apierr.JSON(w, http.StatusOK, b)
}

func (s *Server) addGrant(w http.ResponseWriter, r *http.Request) {
	var body struct {
		AmountUSD     string     `json:"amount_usd"`
		EffectiveFrom *time.Time `json:"effective_from"`
		ExpiresAt     *time.Time `json:"expires_at"`
		Priority      int        `json:"priority"`
		Reason        string     `json:"reason"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	amount, err := decimal.NewFromString(body.AmountUSD)
	if err != nil {
		badParam(w, "amount_usd", "'amount_usd' is required: a decimal string of USD, e.g. \"50.00\".")
		return
	}
	g := invoice.Grant{WorkspaceID: workspace(r), AmountUSD: amount, EffectiveFrom: s.now().UTC().Truncate(time.Hour),
		Priority: body.Priority, Reason: body.Reason}
	if body.EffectiveFrom != nil {
		g.EffectiveFrom = body.EffectiveFrom.UTC()
	}
	if body.ExpiresAt != nil {
		g.ExpiresAt = body.ExpiresAt.UTC()
	}
	if err := g.Validate(); err != nil {
		badParam(w, "amount_usd", err.Error())
		return
	}
	g, err = s.credits.AddGrant(r.Context(), g)
	if err != nil {
		s.serverError(w, "add grant", err)
		return
	}
	apierr.JSON(w, http.StatusCreated, g)
}

func (s *Server) voidGrant(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "grant_id")
	g, err := s.credits.VoidGrant(r.Context(), workspace(r), id)
	if errors.Is(err, invoice.ErrNotFound) {
		apierr.Write(w, http.StatusNotFound, "invalid_request_error", "grant_not_found", fmt.Sprintf("Workspace %s has no grant %q.", workspace(r), id), "grant_id")
		return
	}
	if err != nil {
		s.serverError(w, "void grant", err)
		return
	}
	apierr.JSON(w, http.StatusOK, g)
}

func (s *Server) setBillingMode(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Prepaid *bool `json:"prepaid"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	if body.Prepaid == nil {
		badParam(w, "prepaid", "'prepaid' is required: true or false.")
		return
	}
	if err := s.credits.SetPrepaid(r.Context(), workspace(r), *body.Prepaid); err != nil {
		s.serverError(w, "set billing mode", err)
		return
	}
	apierr.JSON(w, http.StatusOK, map[string]any{"object": "billing_mode", "workspace_id": workspace(r), "prepaid": *body.Prepaid})
}
