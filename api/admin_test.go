package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/venna/metering/api"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/invoice"
)

func TestAdminAPIIsOffWithoutToken(t *testing.T) {
	f := newFixture(t, func(_ *fixture, c *api.Config, _ *[]api.Option) { c.AdminToken = "" })
	for _, path := range []string{"/v1/admin/workspaces", "/v1/admin/workspaces/ws_a/usage?start_time=1"} {
		f.get(path, adminToken, http.StatusNotFound, nil)
		f.get(path, "", http.StatusNotFound, nil)
	}
	f.do(http.MethodPost, "/v1/admin/invoices/run", adminToken, map[string]string{"period": "2026-01"}, http.StatusNotFound, nil)
}

func TestAdminTokenIsRequired(t *testing.T) {
	f := newFixture(t)
	for name, token := range map[string]string{
		"none":            "",
		"wrong":           "test-admin-token-0123456780",
		"prefix":          adminToken[:len(adminToken)-1],
		"longer":          adminToken + "x",
		"a workspace key": f.tokens["ws_a"],
	} {
		t.Run(name, func(t *testing.T) {
			var body apierr.Body
			f.get("/v1/admin/workspaces", token, http.StatusUnauthorized, &body)
			f.get("/v1/admin/workspaces/ws_a/invoices", token, http.StatusUnauthorized, nil)
			f.do(http.MethodPost, "/v1/admin/invoices/run", token, map[string]string{"period": "2026-01"}, http.StatusUnauthorized, nil)
		})
	}
}

func TestAdminWorkspacesAndKeys(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()

	var ws apikey.Workspace
	f.do(http.MethodPost, "/v1/admin/workspaces", adminToken, map[string]string{"name": "Initech"}, http.StatusCreated, &ws)
	if !strings.HasPrefix(ws.ID, "ws_") || ws.Name != "Initech" {
		t.Fatalf("created workspace %+v", ws)
	}
	var named apikey.Workspace
	f.do(http.MethodPost, "/v1/admin/workspaces", adminToken, map[string]string{"id": "ws_named", "name": "Named"}, http.StatusCreated, &named)
	for _, c := range []struct {
		name   string
		body   any
		status int
		param  string
	}{
		{"existing id", map[string]string{"id": "ws_named", "name": "Again"}, http.StatusConflict, "id"},
		{"no name", map[string]string{"id": "ws_x"}, http.StatusBadRequest, "name"},
		{"id with a space", map[string]string{"id": "ws x", "name": "X"}, http.StatusBadRequest, "id"},
		{"unknown field", map[string]string{"name": "X", "plan": "gold"}, http.StatusBadRequest, ""},
		{"not JSON", "just a string", http.StatusBadRequest, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var body apierr.Body
			f.do(http.MethodPost, "/v1/admin/workspaces", adminToken, c.body, c.status, &body)
			if c.param != "" && (body.Error.Param == nil || *body.Error.Param != c.param) {
				t.Errorf("error %+v, want one naming %q", body.Error, c.param)
			}
		})
	}
	var list struct{ Data []apikey.Workspace }
	f.get("/v1/admin/workspaces", adminToken, http.StatusOK, &list)
	ids := map[string]bool{}
	for _, w := range list.Data {
		ids[w.ID] = true
	}
	if !ids[ws.ID] || !ids["ws_named"] || !ids["ws_a"] || len(list.Data) != 4 {
		t.Errorf("workspaces %+v, want ws_a, ws_b, %s and ws_named", list.Data, ws.ID)
	}

	// A key: its secret is shown once, works at once after the key refresh, and stops
	// working after revocation.
	var key api.NewKey
	f.do(http.MethodPost, "/v1/admin/workspaces/"+ws.ID+"/keys", adminToken, map[string]string{"name": "ci"}, http.StatusCreated, &key)
	if key.WorkspaceID != ws.ID || !strings.HasPrefix(key.Secret, apikey.Prefix) {
		t.Fatalf("created key %+v", key)
	}
	if err := f.auth.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	f.get("/v1/invoices", key.Secret, http.StatusOK, nil)
	var keys struct{ Data []map[string]any }
	f.get("/v1/admin/workspaces/"+ws.ID+"/keys", adminToken, http.StatusOK, &keys)
	if len(keys.Data) != 1 || keys.Data[0]["id"] != key.ID || keys.Data[0]["secret"] != nil {
		t.Errorf("keys of %s: %+v, want the one key without its secret", ws.ID, keys.Data)
	}
	f.do(http.MethodPost, "/v1/admin/keys/"+key.ID+"/revoke", adminToken, nil, http.StatusOK, nil)
	if err := f.auth.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	f.get("/v1/invoices", key.Secret, http.StatusUnauthorized, nil)
	f.get("/v1/admin/workspaces/"+ws.ID+"/keys", adminToken, http.StatusOK, &keys)
	if len(keys.Data) != 1 || keys.Data[0]["revoked_at"] == nil {
		t.Errorf("revoked key listed as %+v, want a revoked_at", keys.Data)
	}
	f.do(http.MethodPost, "/v1/admin/keys/key_nope/revoke", adminToken, nil, http.StatusNotFound, nil)
	f.do(http.MethodPost, "/v1/admin/workspaces/ws_nope/keys", adminToken, map[string]string{"name": "x"}, http.StatusNotFound, nil)
	f.get("/v1/admin/workspaces/ws_nope/usage?start_time=1", adminToken, http.StatusNotFound, nil)
}

// The admin reads any workspace and runs the invoice job for a month.
func TestAdminUsageInvoicesAndRuns(t *testing.T) {
	f := newFixture(t)
	at := thisMonth(t)
	f.insert(event{ws: "ws_a", at: at, prompt: 5}, event{ws: "ws_b", at: at, prompt: 7})
	f.rollup()

	period := at.Format("2006-01")
	var run api.InvoiceRun
	f.do(http.MethodPost, "/v1/admin/invoices/run", adminToken, map[string]string{"period": period}, http.StatusOK, &run)
	if run.Period != period || len(run.Written) != 2 || run.Written[0].WorkspaceID != "ws_a" || run.Written[1].WorkspaceID != "ws_b" || len(run.Failed) != 0 {
		t.Fatalf("invoice run %+v, want ws_a's and ws_b's invoices written", run)
	}
	// A month that has not started is run too: it bills nothing yet.
	var future api.InvoiceRun
	f.do(http.MethodPost, "/v1/admin/invoices/run", adminToken, map[string]string{"period": time.Now().AddDate(0, 2, 0).Format("2006-01")}, http.StatusOK, &future)
	if len(future.Written) != 0 || len(future.Failed) != 0 {
		t.Errorf("a run of a month that has not started: %+v, want nothing written", future)
	}
	for _, bad := range []map[string]string{{"period": "2026-13"}, {"period": "last month"}, {}, {"period": "1969-12"}, {"period": "2106-01"}, {"period": "2026-1"}} {
		var body apierr.Body
		f.do(http.MethodPost, "/v1/admin/invoices/run", adminToken, bad, http.StatusBadRequest, &body)
		if body.Error.Param == nil || *body.Error.Param != "period" {
			t.Errorf("run with %v: %+v, want an error naming period", bad, body.Error)
		}
	}

	for ws, input := range map[string]uint64{"ws_a": 5, "ws_b": 7} {
		var page api.UsagePage
		f.get(q("/v1/admin/workspaces/%s/usage?start_time=%d", ws, at.Unix()), adminToken, http.StatusOK, &page)
		if got := sumPage(page)[""].input; got != input {
			t.Errorf("admin usage of %s: %d input tokens, want %d", ws, got, input)
		}
		var list struct{ Data []invoice.Invoice }
		f.get("/v1/admin/workspaces/"+ws+"/invoices", adminToken, http.StatusOK, &list)
		if len(list.Data) != 1 || list.Data[0].WorkspaceID != ws {
			t.Fatalf("admin invoices of %s: %+v", ws, list.Data)
		}
		var inv invoice.Invoice
		f.get("/v1/admin/workspaces/"+ws+"/invoices/"+list.Data[0].ID, adminToken, http.StatusOK, &inv)
		if inv.ID != list.Data[0].ID || len(inv.Lines) == 0 || inv.Lines[0].Kind != invoice.KindUsage || inv.Lines[0].Quantity != input {
			t.Errorf("admin invoice %s of %s: %+v", list.Data[0].ID, ws, inv)
		}
	}
	// An invoice is addressed under its own workspace only.
	var list struct{ Data []invoice.Invoice }
	f.get("/v1/admin/workspaces/ws_b/invoices", adminToken, http.StatusOK, &list)
	f.get("/v1/admin/workspaces/ws_a/invoices/"+list.Data[0].ID, adminToken, http.StatusNotFound, nil)
}

// fakeBilling answers finalize and void with the outcome a test chose.
type fakeBilling struct {
	api.Billing
	err error
}

func (b fakeBilling) Finalize(_ context.Context, ws, id string) (*invoice.Invoice, error) {
	return b.answer(ws, id, invoice.StatusFinalized)
}

func (b fakeBilling) Void(_ context.Context, ws, id string) (*invoice.Invoice, error) {
	return b.answer(ws, id, invoice.StatusVoid)
}

func (b fakeBilling) answer(ws, id, status string) (*invoice.Invoice, error) {
	if b.err != nil {
		return nil, b.err
	}
	return &invoice.Invoice{ID: id, WorkspaceID: ws, Status: status}, nil
}

// Finalize and void map the invoice lifecycle's answers onto HTTP.
func TestAdminInvoiceTransitionStatuses(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		status int
	}{
		{"done", nil, http.StatusOK},
		{"missing invoice", invoice.ErrNotFound, http.StatusNotFound},
		{"invalid transition", invoice.ErrInvalidTransition, http.StatusConflict},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, func(f *fixture, _ *api.Config, opts *[]api.Option) {
				*opts = append(*opts, api.WithAdmin(f.store, fakeBilling{err: c.err}))
			})
			for _, action := range []string{"finalize", "void"} {
				var inv invoice.Invoice
				var out any
				if c.status == http.StatusOK {
					out = &inv
				}
				f.do(http.MethodPost, "/v1/admin/workspaces/ws_a/invoices/inv_1/"+action, adminToken, nil, c.status, out)
				if c.status == http.StatusOK && (inv.ID != "inv_1" || inv.WorkspaceID != "ws_a") {
					t.Errorf("%s answered %+v", action, inv)
				}
			}
		})
	}
}

// The invoice lifecycle through the admin API: a draft of an ended month is finalized, a
// finalized invoice voided; every other transition is a 409 and leaves the invoice alone.
func TestAdminInvoiceLifecycle(t *testing.T) {
	f := newFixture(t)
	thisStart, _ := invoice.Month(time.Now())
	lastMonth, _ := invoice.Month(thisStart.Add(-time.Hour))
	f.insert(event{ws: "ws_a", at: lastMonth.Add(time.Hour), prompt: 1000, completion: 100})
	f.rollup()
	period := lastMonth.Format("2006-01")
	var run api.InvoiceRun
	f.do(http.MethodPost, "/v1/admin/invoices/run", adminToken, map[string]string{"period": period}, http.StatusOK, &run)
	if len(run.Written) != 1 || run.Written[0].Status != invoice.StatusDraft {
		t.Fatalf("run of %s: %+v, want ws_a's draft", period, run)
	}
	id := run.Written[0].ID
	base := "/v1/admin/workspaces/ws_a/invoices/" + id
	steps := []struct {
		action     string
		status     int
		wantStatus string // the invoice's status afterwards
	}{
		{"void", http.StatusConflict, invoice.StatusDraft},
		{"finalize", http.StatusOK, invoice.StatusFinalized},
		{"finalize", http.StatusConflict, invoice.StatusFinalized},
		{"void", http.StatusOK, invoice.StatusVoid},
		{"void", http.StatusConflict, invoice.StatusVoid},
		{"finalize", http.StatusConflict, invoice.StatusVoid},
	}
	for i, st := range steps {
		var body apierr.Body
		f.do(http.MethodPost, base+"/"+st.action, adminToken, nil, st.status, &body)
		if st.status == http.StatusConflict && body.Error.Code != "invalid_transition" {
			t.Errorf("step %d %s: %+v, want invalid_transition", i, st.action, body.Error)
		}
		var got invoice.Invoice
		f.get("/v1/invoices/"+id, f.tokens["ws_a"], http.StatusOK, &got)
		if got.Status != st.wantStatus {
			t.Errorf("step %d %s: the workspace sees status %s, want %s", i, st.action, got.Status, st.wantStatus)
		}
	}
	// This month's draft cannot be finalized before the month ends.
	start, end := invoice.Month(time.Now())
	thisMonthID := invoice.ID("ws_a", start, end)
	f.insert(event{ws: "ws_a", at: thisMonth(t), prompt: 1})
	f.rollup()
	f.runInvoices()
	f.do(http.MethodPost, "/v1/admin/workspaces/ws_a/invoices/"+thisMonthID+"/finalize", adminToken, nil, http.StatusConflict, nil)
	// Another workspace's invoice, or none, is a 404.
	f.do(http.MethodPost, "/v1/admin/workspaces/ws_b/invoices/"+id+"/void", adminToken, nil, http.StatusNotFound, nil)
	f.do(http.MethodPost, "/v1/admin/workspaces/ws_a/invoices/inv_nope/finalize", adminToken, nil, http.StatusNotFound, nil)
}
