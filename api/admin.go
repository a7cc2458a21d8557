package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/invoice"
)

// maxNameLen bounds workspace and key names, in characters.
const maxNameLen = 200

// periodPattern is an invoice run's month, as openapi.json states it.
var periodPattern = regexp.MustCompile(`^(19[7-9][0-9]|20[0-9]{2}|210[0-5])-(0[1-9]|1[0-2])$`)

// blank reports whether a name has nothing to show: only spaces and control characters.
func blank(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return !unicode.IsSpace(r) && !unicode.IsControl(r) }) < 0
}

// decodeBody reads the JSON request body into v, refusing anything but an object, unknown
// fields, trailing data, null values and bodies over the size limit. It answers the error
// itself and reports false.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	raw, err := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		apierr.Write(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large", fmt.Sprintf("The request body is larger than %d bytes.", tooBig.Limit), "")
		return false
	}
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
		apierr.Write(w, http.StatusBadRequest, "invalid_request_error", "invalid_json", "The request body must be a JSON object.", "")
		return false
	}
	if name := nullField(raw, v); name != "" {
		// encoding/json would quietly take null as the zero value, or as "not given".
		badParam(w, name, fmt.Sprintf("'%s' cannot be null; leave it out instead.", name))
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("trailing data after the JSON object")
	}
	switch {
	case err == nil:
		return true
	case errors.Is(err, io.EOF):
		apierr.Write(w, http.StatusBadRequest, "invalid_request_error", "invalid_json", "The request body must be a JSON object.", "")
	default:
		apierr.Write(w, http.StatusBadRequest, "invalid_request_error", "invalid_json", "The request body is not valid JSON for this route: "+err.Error(), "")
	}
	return false
}

// nullField is the JSON name of a field of struct *v that body sets to null (no field of
// the API's bodies is nullable), or "".
func nullField(body []byte, v any) string {
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil {
		return "" // not an object: the decoder says what is wrong
	}
	t := reflect.TypeOf(v).Elem()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if raw, ok := top[name]; ok && string(bytes.TrimSpace(raw)) == "null" {
			return name
		}
	}
	return ""
}

func (s *Server) listWorkspaces(w http.ResponseWriter, r *http.Request) {
	list, err := s.accounts.Workspaces(r.Context())
	if err != nil {
		s.serverError(w, "list workspaces", err)
		return
	}
	if list == nil {
		list = []apikey.Workspace{}
	}
	apierr.JSON(w, http.StatusOK, map[string]any{"object": "list", "data": list})
}

func (s *Server) createWorkspace(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	switch {
	case blank(body.Name) || utf8.RuneCountInString(body.Name) > maxNameLen:
		badParam(w, "name", fmt.Sprintf("'name' is required: at most %d characters, not only spaces.", maxNameLen))
		return
	case utf8.RuneCountInString(body.ID) > 64 || strings.IndexFunc(body.ID, unicode.IsSpace) >= 0:
		badParam(w, "id", "'id' is at most 64 characters without spaces; omit it for a random ws_ ID.")
		return
	}
	if body.ID != "" {
		exists, err := s.accounts.WorkspaceExists(r.Context(), body.ID)
		if err != nil {
			s.serverError(w, "look up workspace", err)
			return
		}
		if exists {
			apierr.Write(w, http.StatusConflict, "invalid_request_error", "workspace_exists", fmt.Sprintf("Workspace %q exists already.", body.ID), "id")
			return
		}
	}
	ws, err := s.accounts.CreateWorkspace(r.Context(), body.ID, body.Name)
	if err != nil {
		s.serverError(w, "create workspace", err)
		return
	}
	apierr.JSON(w, http.StatusCreated, ws)
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	keys, err := s.accounts.Keys(r.Context(), workspace(r))
	if err != nil {
		s.serverError(w, "list keys", err)
		return
	}
	if keys == nil {
		keys = []apikey.Key{}
	}
	apierr.JSON(w, http.StatusOK, map[string]any{"object": "list", "data": keys})
}

// NewKey is a key as created: the only time its secret is shown.
type NewKey struct {
	apikey.Key
	Secret string `json:"secret"`
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Name string `json:"name"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	if utf8.RuneCountInString(body.Name) > maxNameLen {
		badParam(w, "name", fmt.Sprintf("'name' is at most %d characters.", maxNameLen))
		return
	}
	k, secret, err := s.accounts.IssueKey(r.Context(), workspace(r), body.Name)
	if err != nil {
		s.serverError(w, "issue key", err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	apierr.JSON(w, http.StatusCreated, NewKey{Key: k, Secret: secret})
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "key_id")
	err := s.accounts.Revoke(r.Context(), id)
	if errors.Is(err, apikey.ErrNotFound) {
		apierr.Write(w, http.StatusNotFound, "invalid_request_error", "key_not_found", fmt.Sprintf("No key %q.", id), "key_id")
		return
	}
	if err != nil {
		s.serverError(w, "revoke key", err)
		return
	}
	apierr.JSON(w, http.StatusOK, map[string]any{"object": "api_key", "id": id, "revoked": true})
}

// InvoiceRun is the answer to an invoice run.
type InvoiceRun struct {
	Object  string            `json:"object"`
	Period  string            `json:"period"`
	Written []InvoiceSummary  `json:"written"`
	Frozen  []string          `json:"frozen"`
	Failed  map[string]string `json:"failed"`
}

// InvoiceSummary is an invoice's header without its lines.
type InvoiceSummary struct {
	ID          string `json:"id"`
	WorkspaceID string `json:"workspace_id"`
	Status      string `json:"status"`
	Total       string `json:"total"`
}

func (s *Server) runInvoices(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Period string `json:"period"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	// A month ClickHouse's DateTime holds (1970 to 2105); a month that has not started
	// is computed too: it bills nothing yet.
	start, err := time.Parse("2006-01", body.Period)
	if err != nil || !periodPattern.MatchString(body.Period) {
		badParam(w, "period", fmt.Sprintf("Invalid 'period': %q; use a month from 1970-01 to 2105-12 as YYYY-MM.", body.Period))
		return
	}
	res, err := s.billing.Run(r.Context(), start, start.AddDate(0, 1, 0))
	if err != nil {
		s.serverError(w, "invoice run", err)
		return
	}
	out := InvoiceRun{Object: "invoice_run", Period: body.Period, Written: []InvoiceSummary{}, Frozen: res.Frozen, Failed: map[string]string{}}
	if out.Frozen == nil {
		out.Frozen = []string{}
	}
	for _, inv := range res.Written {
		out.Written = append(out.Written, InvoiceSummary{ID: inv.ID, WorkspaceID: inv.WorkspaceID, Status: inv.Status, Total: inv.Total.String()})
	}
	sort.Slice(out.Written, func(i, j int) bool { return out.Written[i].WorkspaceID < out.Written[j].WorkspaceID })
	for ws, err := range res.Failed {
		out.Failed[ws] = err.Error()
	}
	apierr.JSON(w, http.StatusOK, out)
}

func (s *Server) finalizeInvoice(w http.ResponseWriter, r *http.Request) {
	s.transition(w, r, "finalize", s.billing.Finalize)
}

func (s *Server) voidInvoice(w http.ResponseWriter, r *http.Request) {
	s.transition(w, r, "void", s.billing.Void)
}

func (s *Server) transition(w http.ResponseWriter, r *http.Request, what string, do func(ctx context.Context, workspaceID, id string) (*invoice.Invoice, error)) {
	inv, err := do(r.Context(), workspace(r), chi.URLParam(r, "id"))
	switch {
	case errors.Is(err, invoice.ErrNotFound):
		invoiceNotFound(w)
	case errors.Is(err, invoice.ErrInvalidTransition):
		apierr.Write(w, http.StatusConflict, "invalid_request_error", "invalid_transition", fmt.Sprintf("Cannot %s this invoice: %v.", what, err), "id")
	case err != nil:
		s.serverError(w, what+" invoice", err)
	default:
		apierr.JSON(w, http.StatusOK, inv)
	}
}
