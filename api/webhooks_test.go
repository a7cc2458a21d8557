package api_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/api"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/webhook"
)

// The admin's webhook routes: an endpoint is registered with its secret shown once (and
// never again, but on a rotation), disabled and enabled; events are listed and read as
// their deliveries carry them; a replay schedules a delivery, which the delivery log
// lists; bad input is a 400 naming the parameter.
func TestWebhookAdminRoutes(t *testing.T) {
	f := newFixture(t)
	var created api.NewEndpointSecret
	resp := f.do(http.MethodPost, "/v1/admin/webhook_endpoints", adminToken, map[string]any{
		"url": "https://billing.example.com/venna?source=prod", "workspace_id": "ws_a", "enabled_events": []string{"invoice.finalized", "credit_grant.created"},
		"description": "ledger"}, http.StatusCreated, &created)
	if resp.Header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(created.Secret, "whsec_") || created.WorkspaceID != "ws_a" ||
		!created.Enabled || !slices.Equal(created.EnabledEvents, []string{"credit_grant.created", "invoice.finalized"}) {
		t.Fatalf("created %+v (Cache-Control %q)", created, resp.Header.Get("Cache-Control"))
	}
	secrets := []string{created.Secret}
	var global api.NewEndpointSecret
	f.do(http.MethodPost, "/v1/admin/webhook_endpoints", adminToken, map[string]any{"url": "http://10.0.0.7:8080/in"}, http.StatusCreated, &global)
	var other api.NewEndpointSecret
	f.do(http.MethodPost, "/v1/admin/webhook_endpoints", adminToken, map[string]any{"url": "http://10.0.0.7:8080/b", "workspace_id": "ws_b"}, http.StatusCreated, &other)
	secrets = append(secrets, global.Secret, other.Secret)
	if global.WorkspaceID != "" || !slices.Equal(global.EnabledEvents, []string{"*"}) {
		t.Errorf("global endpoint %+v", global)
	}

	for _, c := range []struct {
		name   string
		body   any
		status int
		param  string
	}{
		{"no url", map[string]any{"workspace_id": "ws_a"}, http.StatusBadRequest, "url"},
		{"ftp", map[string]any{"url": "ftp://x/"}, http.StatusBadRequest, "url"},
		{"fragment", map[string]any{"url": "https://x/#a"}, http.StatusBadRequest, "url"},
		{"unknown workspace", map[string]any{"url": "https://x/", "workspace_id": "ws_nope"}, http.StatusNotFound, "workspace_id"},
		{"empty workspace", map[string]any{"url": "https://x/", "workspace_id": ""}, http.StatusBadRequest, "workspace_id"},
		{"no events", map[string]any{"url": "https://x/", "enabled_events": []string{}}, http.StatusBadRequest, "enabled_events"},
		{"unknown event", map[string]any{"url": "https://x/", "enabled_events": []string{"invoice.paid"}}, http.StatusBadRequest, "enabled_events"},
		{"long description", map[string]any{"url": "https://x/", "description": strings.Repeat("x", 501)}, http.StatusBadRequest, "description"},
		{"null events", map[string]any{"url": "https://x/", "enabled_events": nil}, http.StatusBadRequest, "enabled_events"},
		{"a secret given", map[string]any{"url": "https://x/", "secret": "whsec_mine"}, http.StatusBadRequest, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var body apierr.Body
			f.do(http.MethodPost, "/v1/admin/webhook_endpoints", adminToken, c.body, c.status, &body)
			if c.param != "" && (body.Error.Param == nil || *body.Error.Param != c.param) {
				t.Errorf("error %+v, want one naming %q", body.Error, c.param)
			}
		})
	}

	var list struct{ Data []webhook.Endpoint }
	f.get("/v1/admin/webhook_endpoints", adminToken, http.StatusOK, &list)
	if len(list.Data) != 3 {
		t.Errorf("%d endpoints listed, want 3", len(list.Data))
	}
	f.get("/v1/admin/webhook_endpoints?workspace_id=ws_a", adminToken, http.StatusOK, &list)
	if len(list.Data) != 1 || list.Data[0].ID != created.ID {
		t.Errorf("ws_a's endpoints: %+v", list.Data)
	}
	var ep webhook.Endpoint
	f.get("/v1/admin/webhook_endpoints/"+created.ID, adminToken, http.StatusOK, &ep)
	f.get("/v1/admin/webhook_endpoints/we_nope", adminToken, http.StatusNotFound, nil)
	f.do(http.MethodPost, "/v1/admin/webhook_endpoints/"+global.ID+"/disable", adminToken, nil, http.StatusOK, &ep)
	if ep.Enabled {
		t.Error("disable left the endpoint enabled")
	}

	var rotated api.NewEndpointSecret
	f.do(http.MethodPost, "/v1/admin/webhook_endpoints/"+created.ID+"/rotate_secret", adminToken, nil, http.StatusOK, &rotated)
	var again api.NewEndpointSecret
	f.do(http.MethodPost, "/v1/admin/webhook_endpoints/"+created.ID+"/rotate_secret", adminToken, map[string]any{"overlap_seconds": 0}, http.StatusOK, &again)
	if rotated.Secret == created.Secret || again.Secret == rotated.Secret || !strings.HasPrefix(again.Secret, "whsec_") {
		t.Errorf("rotations gave %q then %q (was %q)", rotated.Secret, again.Secret, created.Secret)
	}
	secrets = append(secrets, rotated.Secret, again.Secret)
	f.do(http.MethodPost, "/v1/admin/webhook_endpoints/"+created.ID+"/rotate_secret", adminToken, map[string]any{"overlap_seconds": -1}, http.StatusBadRequest, nil)
	f.do(http.MethodPost, "/v1/admin/webhook_endpoints/"+created.ID+"/rotate_secret", adminToken, map[string]any{"overlap_seconds": 604801}, http.StatusBadRequest, nil)
	f.do(http.MethodPost, "/v1/admin/webhook_endpoints/we_nope/rotate_secret", adminToken, nil, http.StatusNotFound, nil)

	// An event: a grant, recorded by the aggregate role's scan.
	g, err := f.inv.AddGrant(t.Context(), invoice.Grant{WorkspaceID: "ws_a", AmountUSD: decimal.RequireFromString("5"),
		EffectiveFrom: time.Now().UTC().Truncate(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	d, err := webhook.New(webhook.Config{Database: f.db}, f.conn, webhook.Sources{Invoices: f.inv}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if res, err := d.Detect(t.Context()); err != nil || len(res.Events) != 1 {
		t.Fatalf("detect: %+v %v", res, err)
	}
	evID := webhook.EventID(webhook.GrantCreated, g.ID)
	var events struct{ Data []webhook.Event }
	f.get("/v1/admin/webhook_events?workspace_id=ws_a&type=credit_grant.created&limit=5", adminToken, http.StatusOK, &events)
	if len(events.Data) != 1 || events.Data[0].ID != evID || events.Data[0].Type != webhook.GrantCreated {
		t.Fatalf("events %+v", events.Data)
	}
	var grant invoice.Grant
	if err := json.Unmarshal(events.Data[0].Data.Object, &grant); err != nil || grant.ID != g.ID || !grant.AmountUSD.Equal(g.AmountUSD) {
		t.Errorf("the event's object %s, want grant %s", events.Data[0].Data.Object, g.ID)
	}
	var ev webhook.Event
	f.get("/v1/admin/webhook_events/"+evID, adminToken, http.StatusOK, &ev)
	f.get("/v1/admin/webhook_events/evt_nope", adminToken, http.StatusNotFound, nil)
	for _, q := range []string{"limit=0", "limit=101", "limit=x", "type=invoice.paid", "limit=1&limit=2"} {
		f.get("/v1/admin/webhook_events?"+q, adminToken, http.StatusBadRequest, nil)
	}

	var dl webhook.Delivery
	f.do(http.MethodPost, "/v1/admin/webhook_events/"+evID+"/replay", adminToken, map[string]string{"endpoint_id": created.ID}, http.StatusAccepted, &dl)
	if !dl.Replay || dl.Status != webhook.StatusPending || dl.EventID != evID || dl.EndpointID != created.ID {
		t.Errorf("replay %+v", dl)
	}
	for _, c := range []struct {
		event, endpoint string
		status          int
		code            string
	}{
		{evID, other.ID, http.StatusConflict, "endpoint_unavailable"},  // ws_b's endpoint
		{evID, global.ID, http.StatusConflict, "endpoint_unavailable"}, // disabled
		{evID, "we_nope", http.StatusNotFound, "endpoint_not_found"},
		{"evt_nope", created.ID, http.StatusNotFound, "event_not_found"},
		{evID, "", http.StatusBadRequest, "invalid_parameter"},
	} {
		var body apierr.Body
		f.do(http.MethodPost, "/v1/admin/webhook_events/"+c.event+"/replay", adminToken, map[string]string{"endpoint_id": c.endpoint}, c.status, &body)
		if body.Error.Code != c.code {
			t.Errorf("replay %s to %q: %s, want %s", c.event, c.endpoint, body.Error.Code, c.code)
		}
	}

	var ds struct{ Data []webhook.Delivery }
	f.get("/v1/admin/webhook_deliveries?endpoint_id="+created.ID+"&status=pending", adminToken, http.StatusOK, &ds)
	// The scan's own delivery to the ws_a endpoint, and the replay.
	if len(ds.Data) != 2 || ds.Data[0].Attempts == nil {
		t.Errorf("deliveries %+v", ds.Data)
	}
	f.get("/v1/admin/webhook_deliveries?status=lost", adminToken, http.StatusBadRequest, nil)

	// No secret in anything listed or read.
	for _, path := range []string{"/v1/admin/webhook_endpoints", "/v1/admin/webhook_endpoints/" + created.ID, "/v1/admin/webhook_deliveries",
		"/v1/admin/webhook_events"} {
		_, b := f.raw(path, adminToken)
		raw := string(b)
		for _, s := range secrets {
			if strings.Contains(raw, s) {
				t.Errorf("GET %s shows a secret", path)
			}
		}
		if strings.Contains(raw, "whsec_") {
			t.Errorf("GET %s shows something like a secret: %s", path, raw)
		}
	}
}

// openapi.json states the constraints the server enforces: the URL pattern and the event
// types are the webhook package's.
func TestWebhookSpecMatchesPackage(t *testing.T) {
	_, raw := readOpenAPI(t, adminServer(t))
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Pattern string `json:"pattern"`
					Enum    []string
					Items   struct{ Enum []string }
				}
			}
		}
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	create := doc.Components.Schemas["CreateWebhookEndpoint"].Properties
	if create["url"].Pattern != webhook.URLPattern {
		t.Errorf("spec url pattern %q, package %q", create["url"].Pattern, webhook.URLPattern)
	}
	if want := append(slices.Clone(webhook.EventTypes), webhook.AllEvents); !slices.Equal(create["enabled_events"].Items.Enum, want) {
		t.Errorf("spec event types %v, package %v", create["enabled_events"].Items.Enum, want)
	}
	if got := doc.Components.Schemas["WebhookEvent"].Properties["type"].Enum; !slices.Equal(got, webhook.EventTypes) {
		t.Errorf("spec event types %v, package %v", got, webhook.EventTypes)
	}
}
