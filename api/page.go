package api

import (
	"fmt"
	"net/http"

	"github.com/venna/metering/internal/apierr"
)

// ownKeys lists the caller's workspace's keys (GET /v1/keys): names, creation and
// revocation, never a secret; the admin's list of the same workspace, for its own key.
func (s *Server) ownKeys(w http.ResponseWriter, r *http.Request) {
	if s.accounts == nil {
		apierr.Write(w, http.StatusNotFound, "invalid_request_error", "unknown_url", "Keys are not served by this API.", "")
		return
	}
	s.listKeys(w, r)
}

// invoiceHTMLCSP keeps a downloaded invoice inert even if it is opened from the API's
// origin: its own inline style, nothing else, and sandboxed.
const invoiceHTMLCSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"

// getInvoiceHTML is the printable invoice (invoice.HTML), as `venna invoice export` writes it.
func (s *Server) getInvoiceHTML(w http.ResponseWriter, r *http.Request) {
	inv, ok := s.loadInvoice(w, r)
	if !ok {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", inv.ID+".html"))
	h.Set("Content-Security-Policy", invoiceHTMLCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	if err := inv.HTML(w); err != nil {
		// The status line is out already; a truncated body is all the client can learn.
		s.log.Error("write invoice html", "invoice", inv.ID, "err", err)
	}
}
