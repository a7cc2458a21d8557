package api

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/stripesync"
)

// StripeStatus is where the pushes of invoices to Stripe stand (stripesync.Store).
type StripeStatus interface {
	Status(ctx context.Context, workspaceID, id string) (stripesync.Status, bool, error)
	Statuses(ctx context.Context, workspaceID string) ([]stripesync.Status, error)
}

// WithStripe lets the admin read where each invoice's push to Stripe stands. It reads
// ClickHouse only: it answers whether or not this process has a Stripe key.
func WithStripe(st StripeStatus) Option { return func(s *Server) { s.stripe = st } }

func (s *Server) stripeStatuses(w http.ResponseWriter, r *http.Request) {
	list, err := s.stripe.Statuses(r.Context(), workspace(r))
	if err != nil {
		s.serverError(w, "read stripe sync states", err)
		return
	}
	apierr.JSON(w, http.StatusOK, map[string]any{"object": "list", "data": list})
}

func (s *Server) stripeStatus(w http.ResponseWriter, r *http.Request) {
	inv, ok := s.loadInvoice(w, r)
	if !ok {
		return
	}
	st, ok, err := s.stripe.Status(r.Context(), inv.WorkspaceID, chi.URLParam(r, "id"))
	if err != nil {
		s.serverError(w, "read stripe sync state", err)
		return
	}
	if !ok {
		// A draft, or a finalized invoice the push has not reached (or Stripe is off).
		st = stripesync.Status{Object: "stripe_invoice_sync", InvoiceID: inv.ID, WorkspaceID: inv.WorkspaceID,
			PeriodStart: inv.PeriodStart, State: stripesync.StateNotPushed}
	}
	apierr.JSON(w, http.StatusOK, st)
}
