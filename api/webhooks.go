package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/webhook"
)

// Webhooks are the webhook endpoints, events and deliveries the admin API manages
// (webhook.Store). Sending is the aggregate role's: a replay here schedules a delivery.
type Webhooks interface {
	CreateEndpoint(ctx context.Context, spec webhook.EndpointSpec) (webhook.Endpoint, string, error)
	Endpoints(ctx context.Context, workspaceID string) ([]webhook.Endpoint, error)
	Endpoint(ctx context.Context, id string) (webhook.Endpoint, error)
	SetEnabled(ctx context.Context, id string, enabled bool) (webhook.Endpoint, error)
	RotateSecret(ctx context.Context, id string, overlap time.Duration) (webhook.Endpoint, string, error)
	Events(ctx context.Context, f webhook.EventFilter) ([]json.RawMessage, error)
	Event(ctx context.Context, id string) (json.RawMessage, error)
	Deliveries(ctx context.Context, f webhook.DeliveryFilter) ([]webhook.Delivery, error)
	Replay(ctx context.Context, eventID, endpointID string) (webhook.Delivery, error)
}

// WithWebhooks serves the admin's webhook routes: endpoints, events, the delivery log and
// replays.
func WithWebhooks(w Webhooks) Option { return func(s *Server) { s.webhooks = w } }

func (s *Server) webhookRoutes(r chi.Router) {
	r.Get("/webhook_endpoints", s.listEndpoints)
	r.Post("/webhook_endpoints", s.createEndpoint)
	r.Get("/webhook_endpoints/{endpoint_id}", s.getEndpoint)
	r.Post("/webhook_endpoints/{endpoint_id}/enable", s.enableEndpoint)
	r.Post("/webhook_endpoints/{endpoint_id}/disable", s.disableEndpoint)
	r.Post("/webhook_endpoints/{endpoint_id}/rotate_secret", s.rotateSecret)
	r.Get("/webhook_events", s.listEvents)
	r.Get("/webhook_events/{event_id}", s.getEvent)
	r.Post("/webhook_events/{event_id}/replay", s.replayEvent)
	r.Get("/webhook_deliveries", s.listDeliveries)
}

// NewEndpointSecret is an endpoint with its signing secret: the answer to its creation
// and to a rotation, the only times the secret is shown.
type NewEndpointSecret struct {
	webhook.Endpoint
	Secret string `json:"secret"`
}

// workspaceIDOK reports whether id can be a workspace's: 1 to 64 characters without
// spaces, as createWorkspace takes them and openapi.json states it.
func workspaceIDOK(id string) bool {
	n := utf8.RuneCountInString(id)
	return n >= 1 && n <= 64 && strings.IndexFunc(id, unicode.IsSpace) < 0
}

// maxEnabledEvents bounds an endpoint's list of event types.
const maxEnabledEvents = 20

func (s *Server) createEndpoint(w http.ResponseWriter, r *http.Request) {
	var body struct {
		URL           string    `json:"url"`
		WorkspaceID   *string   `json:"workspace_id"`
		EnabledEvents *[]string `json:"enabled_events"`
		Description   string    `json:"description"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	spec := webhook.EndpointSpec{URL: body.URL, Description: body.Description}
	if err := webhook.ValidateURL(body.URL); err != nil {
		badParam(w, "url", fmt.Sprintf("'url' is required: http:// or https://, a host, an optional port and path, at most %d characters, nothing escaped (%%) and no fragment (#).", webhook.MaxURLLen))
		return
	}
	if utf8.RuneCountInString(body.Description) > webhook.MaxDescriptionLen {
		badParam(w, "description", fmt.Sprintf("'description' is at most %d characters.", webhook.MaxDescriptionLen))
		return
	}
	if body.EnabledEvents != nil {
		evs := *body.EnabledEvents
		if len(evs) == 0 || len(evs) > maxEnabledEvents || slices.ContainsFunc(evs, func(e string) bool {
			return e != webhook.AllEvents && !slices.Contains(webhook.EventTypes, e)
		}) {
			badParam(w, "enabled_events", fmt.Sprintf("'enabled_events' is 1 to %d of %s, or [\"*\"] for every type; omit it for every type.",
				maxEnabledEvents, strings.Join(webhook.EventTypes, ", ")))
			return
		}
		spec.EnabledEvents = evs
	}
	if body.WorkspaceID != nil {
		if !workspaceIDOK(*body.WorkspaceID) {
			badParam(w, "workspace_id", "'workspace_id' is a workspace's ID (1 to 64 characters without spaces); omit it for an endpoint that receives every workspace's events.")
			return
		}
		ok, err := s.accounts.WorkspaceExists(r.Context(), *body.WorkspaceID)
		if err != nil {
			s.serverError(w, "look up workspace", err)
			return
		}
		if !ok {
			apierr.Write(w, http.StatusNotFound, "invalid_request_error", "workspace_not_found", fmt.Sprintf("No workspace %q.", *body.WorkspaceID), "workspace_id")
			return
		}
		spec.WorkspaceID = *body.WorkspaceID
	}
	e, secret, err := s.webhooks.CreateEndpoint(r.Context(), spec)
	if err != nil {
		s.serverError(w, "create webhook endpoint", err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	apierr.JSON(w, http.StatusCreated, NewEndpointSecret{Endpoint: e, Secret: secret})
}

func (s *Server) listEndpoints(w http.ResponseWriter, r *http.Request) {
	list, err := s.webhooks.Endpoints(r.Context(), r.URL.Query().Get("workspace_id"))
	if err != nil {
		s.serverError(w, "list webhook endpoints", err)
		return
	}
	apierr.JSON(w, http.StatusOK, map[string]any{"object": "list", "data": list})
}

// webhookError answers a failure of a webhook route: a missing endpoint or event is a
// 404 naming param, a refused replay a 409.
func (s *Server) webhookError(w http.ResponseWriter, what, param string, err error) {
	switch {
	case errors.Is(err, webhook.ErrNotFound):
		code := strings.TrimSuffix(param, "_id") + "_not_found"
		apierr.Write(w, http.StatusNotFound, "invalid_request_error", code, fmt.Sprintf("No such webhook %s.", strings.TrimSuffix(param, "_id")), param)
	case errors.Is(err, webhook.ErrConflict):
		apierr.Write(w, http.StatusConflict, "invalid_request_error", "endpoint_unavailable", err.Error(), param)
	default:
		s.serverError(w, what, err)
	}
}

func (s *Server) getEndpoint(w http.ResponseWriter, r *http.Request) {
	e, err := s.webhooks.Endpoint(r.Context(), chi.URLParam(r, "endpoint_id"))
	if err != nil {
		s.webhookError(w, "get webhook endpoint", "endpoint_id", err)
		return
	}
	apierr.JSON(w, http.StatusOK, e)
}

func (s *Server) enableEndpoint(w http.ResponseWriter, r *http.Request) { s.setEnabled(w, r, true) }

func (s *Server) disableEndpoint(w http.ResponseWriter, r *http.Request) { s.setEnabled(w, r, false) }

func (s *Server) setEnabled(w http.ResponseWriter, r *http.Request, enabled bool) {
	e, err := s.webhooks.SetEnabled(r.Context(), chi.URLParam(r, "endpoint_id"), enabled)
	if err != nil {
		s.webhookError(w, "enable or disable webhook endpoint", "endpoint_id", err)
		return
	}
	apierr.JSON(w, http.StatusOK, e)
}

// defaultOverlap is how long a rotated secret keeps signing when the rotation names no
// overlap.
const defaultOverlap = 24 * time.Hour

func (s *Server) rotateSecret(w http.ResponseWriter, r *http.Request) {
	var body struct {
		OverlapSeconds *int64 `json:"overlap_seconds"`
	}
	// The body is optional: none rotates with the default overlap.
	raw, err := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		apierr.Write(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large", fmt.Sprintf("The request body is larger than %d bytes.", tooBig.Limit), "")
		return
	}
	if len(bytes.TrimSpace(raw)) > 0 {
		r.Body = io.NopCloser(bytes.NewReader(raw))
		if !decodeBody(w, r, &body) {
			return
		}
	}
	overlap := defaultOverlap
	if body.OverlapSeconds != nil {
		if *body.OverlapSeconds < 0 || *body.OverlapSeconds > int64(webhook.MaxOverlap/time.Second) {
			badParam(w, "overlap_seconds", fmt.Sprintf("'overlap_seconds' is 0 to %d.", int64(webhook.MaxOverlap/time.Second)))
			return
		}
		overlap = time.Duration(*body.OverlapSeconds) * time.Second
	}
	e, secret, err := s.webhooks.RotateSecret(r.Context(), chi.URLParam(r, "endpoint_id"), overlap)
	if err != nil {
		s.webhookError(w, "rotate webhook secret", "endpoint_id", err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	apierr.JSON(w, http.StatusOK, NewEndpointSecret{Endpoint: e, Secret: secret})
}

// listLimit reads the limit query parameter: 1 to webhook.MaxList, default the most. It
// answers the error itself and reports false.
func listLimit(w http.ResponseWriter, r *http.Request) (int, bool) {
	raw, ok := r.URL.Query()["limit"]
	if !ok {
		return webhook.MaxList, true
	}
	n, err := strconv.Atoi(raw[0])
	if err != nil || n < 1 || n > webhook.MaxList || len(raw) > 1 {
		badParam(w, "limit", fmt.Sprintf("'limit' is a whole number from 1 to %d.", webhook.MaxList))
		return 0, false
	}
	return n, true
}

// oneOf reads an optional query parameter that takes one of values; it answers the error
// itself and reports false.
func oneOf(w http.ResponseWriter, r *http.Request, param string, values []string) (string, bool) {
	raw, ok := r.URL.Query()[param]
	if !ok {
		return "", true
	}
	if len(raw) > 1 || !slices.Contains(values, raw[0]) {
		badParam(w, param, fmt.Sprintf("'%s' is one of %s.", param, strings.Join(values, ", ")))
		return "", false
	}
	return raw[0], true
}

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	limit, ok := listLimit(w, r)
	if !ok {
		return
	}
	typ, ok := oneOf(w, r, "type", webhook.EventTypes)
	if !ok {
		return
	}
	evs, err := s.webhooks.Events(r.Context(), webhook.EventFilter{WorkspaceID: r.URL.Query().Get("workspace_id"), Type: typ, Limit: limit})
	if err != nil {
		s.serverError(w, "list webhook events", err)
		return
	}
	apierr.JSON(w, http.StatusOK, map[string]any{"object": "list", "data": evs})
}

func (s *Server) getEvent(w http.ResponseWriter, r *http.Request) {
	ev, err := s.webhooks.Event(r.Context(), chi.URLParam(r, "event_id"))
	if err != nil {
		s.webhookError(w, "get webhook event", "event_id", err)
		return
	}
	apierr.JSON(w, http.StatusOK, ev)
}

func (s *Server) replayEvent(w http.ResponseWriter, r *http.Request) {
	var body struct {
		EndpointID string `json:"endpoint_id"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	if body.EndpointID == "" {
		badParam(w, "endpoint_id", "'endpoint_id' is required: the endpoint to send the event to.")
		return
	}
	id := chi.URLParam(r, "event_id")
	if _, err := s.webhooks.Event(r.Context(), id); err != nil {
		s.webhookError(w, "get webhook event", "event_id", err)
		return
	}
	d, err := s.webhooks.Replay(r.Context(), id, body.EndpointID)
	if err != nil {
		s.webhookError(w, "replay webhook event", "endpoint_id", err)
		return
	}
	apierr.JSON(w, http.StatusAccepted, d)
}

func (s *Server) listDeliveries(w http.ResponseWriter, r *http.Request) {
	limit, ok := listLimit(w, r)
	if !ok {
		return
	}
	status, ok := oneOf(w, r, "status", []string{webhook.StatusPending, webhook.StatusSucceeded, webhook.StatusFailed})
	if !ok {
		return
	}
	q := r.URL.Query()
	ds, err := s.webhooks.Deliveries(r.Context(), webhook.DeliveryFilter{EndpointID: q.Get("endpoint_id"), EventID: q.Get("event_id"),
		WorkspaceID: q.Get("workspace_id"), Status: status, Limit: limit})
	if err != nil {
		s.serverError(w, "list webhook deliveries", err)
		return
	}
	apierr.JSON(w, http.StatusOK, map[string]any{"object": "list", "data": ds})
}
