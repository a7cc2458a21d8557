package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/invoice"
)

type subscriptionBody struct {
	Object      string                 `json:"object"`
	WorkspaceID string                 `json:"workspace_id"`
	PlanID      string                 `json:"plan_id"`
	Changes     []invoice.Subscription `json:"changes"`
}

// The admin lists plans and subscribes a workspace; the workspace's key sees its plan (and
// only its own), its upcoming invoice bills the fee; a cancellation takes effect at the
// next hour; bad changes are 400s naming the field.
func TestSubscriptions(t *testing.T) {
	f := newFixture(t)
	var plans struct {
		Data []struct {
			ID       string `json:"id"`
			Versions []struct {
				Fee   string `json:"fee"`
				Rates []struct {
					Model, Pricing string
					PerMillion     string `json:"usd_per_million"`
				} `json:"rates"`
			} `json:"versions"`
		} `json:"data"`
	}
	f.do(http.MethodGet, "/v1/admin/plans", adminToken, nil, http.StatusOK, &plans)
	if len(plans.Data) != 1 || plans.Data[0].ID != "team" || plans.Data[0].Versions[0].Fee != "30" ||
		len(plans.Data[0].Versions[0].Rates) != 1 || plans.Data[0].Versions[0].Rates[0].PerMillion != "0.5" {
		t.Fatalf("plans: %+v", plans)
	}

	var sub subscriptionBody
	f.do(http.MethodGet, "/v1/subscription", f.tokens["ws_a"], nil, http.StatusOK, &sub)
	if sub.PlanID != "" || len(sub.Changes) != 0 || sub.WorkspaceID != "ws_a" {
		t.Fatalf("before subscribing: %+v", sub)
	}
	hour := time.Now().UTC().Truncate(time.Hour)
	f.do(http.MethodPut, "/v1/admin/workspaces/ws_a/subscription", adminToken, map[string]any{"plan_id": "team"}, http.StatusOK, &sub)
	if sub.PlanID != "team" || len(sub.Changes) != 1 || !sub.Changes[0].EffectiveFrom.Equal(hour) {
		t.Fatalf("subscribed: %+v, want team from %s", sub, hour)
	}
	f.do(http.MethodGet, "/v1/subscription", f.tokens["ws_a"], nil, http.StatusOK, &sub)
	if sub.PlanID != "team" {
		t.Errorf("ws_a's key sees plan %q", sub.PlanID)
	}
	f.do(http.MethodGet, "/v1/subscription", f.tokens["ws_b"], nil, http.StatusOK, &sub)
	if sub.PlanID != "" || len(sub.Changes) != 0 {
		t.Errorf("ws_b's key sees %+v", sub)
	}

	// The upcoming invoice bills the fee for the hours from now to the month's end.
	var up invoice.Invoice
	f.do(http.MethodGet, "/v1/invoices/upcoming", f.tokens["ws_a"], nil, http.StatusOK, &up)
	start, end := invoice.Month(hour)
	hours := int64(end.Sub(hour) / time.Hour)
	want := invoice.Prorate(decimal.RequireFromString("30"), hours, invoice.MonthHours(start))
	found := false
	for _, l := range up.Lines {
		if l.Kind == invoice.KindFee && l.Model == "team" && l.Quantity == uint64(hours) && l.Amount.Equal(want) {
			found = true
		}
	}
	if !found {
		t.Errorf("upcoming invoice has no fee line of %d hours = %s: %+v", hours, want, up.Lines)
	}

	for _, c := range []struct {
		name  string
		body  any
		param string
	}{
		{"no plan", map[string]any{}, "plan_id"},
		{"unknown plan", map[string]any{"plan_id": "gold"}, "plan_id"},
		{"not on the hour", map[string]any{"plan_id": "team", "effective_from": hour.Add(90 * time.Minute)}, "effective_from"},
		{"a closed month", map[string]any{"plan_id": "team", "effective_from": start.AddDate(0, -1, 0)}, "effective_from"},
		{"unknown field", map[string]any{"plan_id": "team", "trial_days": 3}, ""},
	} {
		var e apierr.Body
		f.do(http.MethodPut, "/v1/admin/workspaces/ws_a/subscription", adminToken, c.body, http.StatusBadRequest, &e)
		if c.param != "" && (e.Error.Param == nil || *e.Error.Param != c.param) {
			t.Errorf("%s: error %+v, want one naming %q", c.name, e.Error, c.param)
		}
	}

	f.do(http.MethodDelete, "/v1/admin/workspaces/ws_a/subscription", adminToken, nil, http.StatusOK, &sub)
	if sub.PlanID != "team" || len(sub.Changes) != 2 || sub.Changes[1].PlanID != "" || !sub.Changes[1].EffectiveFrom.Equal(hour.Add(time.Hour)) {
		t.Errorf("after cancelling: %+v, want team until %s", sub, hour.Add(time.Hour))
	}
	f.do(http.MethodDelete, "/v1/admin/workspaces/ws_a/subscription?effective_from=yesterday", adminToken, nil, http.StatusBadRequest, nil)
	f.do(http.MethodDelete, "/v1/admin/workspaces/ws_a/subscription?effective_from=", adminToken, nil, http.StatusBadRequest, nil)
	f.do(http.MethodGet, "/v1/admin/workspaces/ws_a/subscription", adminToken, nil, http.StatusOK, &sub)
	if len(sub.Changes) != 2 {
		t.Errorf("admin view: %+v", sub)
	}
	if !strings.HasPrefix(sub.Object, "subscription") {
		t.Errorf("object %q", sub.Object)
	}
}
