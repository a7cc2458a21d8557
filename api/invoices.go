package api

import (
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/shopspring/decimal"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/invoice"
)

func (s *Server) listInvoices(w http.ResponseWriter, r *http.Request) {
	list, err := s.invoices.List(r.Context(), workspace(r))
	if err != nil {
		s.serverError(w, "list invoices", err)
		return
	}
	if list == nil {
		list = []*invoice.Invoice{}
	}
	apierr.JSON(w, http.StatusOK, map[string]any{"object": "list", "data": list})
}

func invoiceNotFound(w http.ResponseWriter) {
	apierr.Write(w, http.StatusNotFound, "invalid_request_error", "invoice_not_found", "No such invoice.", "id")
}

// loadInvoice reads {id} of the request's workspace. An invoice of another workspace is
// a 404 exactly like one that does not exist: a key cannot even learn that an ID is used.
func (s *Server) loadInvoice(w http.ResponseWriter, r *http.Request) (*invoice.Invoice, bool) {
	inv, err := s.invoices.Get(r.Context(), workspace(r), chi.URLParam(r, "id"))
	if errors.Is(err, invoice.ErrNotFound) {
		invoiceNotFound(w)
		return nil, false
	}
	if err != nil {
		s.serverError(w, "get invoice", err)
		return nil, false
	}
	return inv, true
}

func (s *Server) getInvoice(w http.ResponseWriter, r *http.Request) {
	inv, ok := s.loadInvoice(w, r)
	if !ok {
		return
	}
	if wantsCSV(r) {
		s.writeCSV(w, inv)
		return
	}
	apierr.JSON(w, http.StatusOK, inv)
}

func (s *Server) getInvoiceCSV(w http.ResponseWriter, r *http.Request) {
	if inv, ok := s.loadInvoice(w, r); ok {
		s.writeCSV(w, inv)
	}
}

// wantsCSV reports whether the Accept header prefers text/csv to application/json: by
// quality, then by order; JSON is the default.
func wantsCSV(r *http.Request) bool {
	best, bestQ := "", 0.0
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil || (mt != "text/csv" && mt != "application/json") {
			continue
		}
		q := 1.0
		if v, ok := params["q"]; ok {
			if q, err = strconv.ParseFloat(v, 64); err != nil {
				continue
			}
		}
		if q > bestQ {
			best, bestQ = mt, q
		}
	}
	return best == "text/csv"
}

func (s *Server) writeCSV(w http.ResponseWriter, inv *invoice.Invoice) {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", inv.ID+".csv"))
	if err := inv.CSV(w); err != nil {
		// The status line is out already; a truncated body is all the client can learn.
		s.log.Error("write invoice csv", "invoice", inv.ID, "err", err)
	}
}

// upcomingInvoice is the running draft of the current month: the stored draft the invoice
// job keeps recomputing, or, before its first run, the same computation done now (an empty
// draft for a workspace with nothing to bill).
func (s *Server) upcomingInvoice(w http.ResponseWriter, r *http.Request) {
	ws := workspace(r)
	start, end := invoice.Month(s.now())
	inv, err := s.invoices.Get(r.Context(), ws, invoice.ID(ws, start, end))
	if errors.Is(err, invoice.ErrNotFound) {
		inv, err = s.invoices.ComputeWorkspace(r.Context(), ws, start, end)
		if err == nil {
			inv = s.draft(ws, start, end, inv)
		}
	}
	if errors.Is(err, invoice.ErrNoPrice) {
		s.log.Error("upcoming invoice", "workspace", ws, "err", err)
		apierr.Write(w, http.StatusInternalServerError, "server_error", "unpriced_usage", "This month's usage includes a model without a price; the invoice cannot be computed.", "")
		return
	}
	if err != nil {
		s.serverError(w, "upcoming invoice", err)
		return
	}
	if wantsCSV(r) {
		s.writeCSV(w, inv)
		return
	}
	apierr.JSON(w, http.StatusOK, inv)
}

// draft marks a computed invoice as the draft it would be stored as; nil is an empty one.
func (s *Server) draft(ws string, start, end time.Time, inv *invoice.Invoice) *invoice.Invoice {
	if inv == nil {
		inv = &invoice.Invoice{ID: invoice.ID(ws, start, end), WorkspaceID: ws, PeriodStart: start, PeriodEnd: end,
			Currency: "USD", Subtotal: decimal.Zero, Total: decimal.Zero, Lines: []invoice.Line{}}
		if s.prices != nil {
			inv.Currency = s.prices.Currency
		}
	}
	inv.Status, inv.ComputedAt = invoice.StatusDraft, s.now().UTC().Truncate(time.Second)
	return inv
}
