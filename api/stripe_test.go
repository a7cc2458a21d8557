package api_test

import (
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/venna/metering/api"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/stripesync"
)

func withStripe(f *fixture, _ *api.Config, opts *[]api.Option) {
	*opts = append(*opts, api.WithStripe(stripesync.NewStore(f.conn, f.db)))
}

// The admin sees where an invoice stands in Stripe: not pushed while a draft and until
// the push reaches it, then finalized with the total sent in cents; only in its own
// workspace.
func TestAdminStripeStatus(t *testing.T) {
	f := newFixture(t, withStripe)
	thisStart, _ := invoice.Month(time.Now())
	lastMonth, _ := invoice.Month(thisStart.Add(-time.Hour))
	f.insert(event{ws: "ws_a", at: lastMonth.Add(time.Hour), prompt: 123456, completion: 7891})
	f.rollup()
	var run api.InvoiceRun
	f.do(http.MethodPost, "/v1/admin/invoices/run", adminToken, map[string]string{"period": lastMonth.Format("2006-01")}, http.StatusOK, &run)
	id := run.Written[0].ID
	path := "/v1/admin/workspaces/ws_a/invoices/" + id + "/stripe"

	var st stripesync.Status
	f.get(path, adminToken, http.StatusOK, &st)
	if st.Object != "stripe_invoice_sync" || st.State != stripesync.StateNotPushed || st.InvoiceID != id || st.Done {
		t.Errorf("a draft: %+v", st)
	}
	f.do(http.MethodPost, "/v1/admin/workspaces/ws_a/invoices/"+id+"/finalize", adminToken, nil, http.StatusOK, nil)
	var list struct {
		Object string              `json:"object"`
		Data   []stripesync.Status `json:"data"`
	}
	f.get("/v1/admin/workspaces/ws_a/stripe", adminToken, http.StatusOK, &list)
	if list.Object != "list" || len(list.Data) != 0 {
		t.Errorf("before the push: %+v", list)
	}

	s, err := stripesync.New(stripesync.Config{Database: f.db, APIKey: "sk_test_venna", APIBase: testenv.StripeMockURL(t)}, f.conn, f.inv,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if res, err := s.Run(t.Context()); err != nil || len(res.Pushed) != 1 {
		t.Fatalf("push: %+v %v", res, err)
	}
	inv, err := f.inv.Get(t.Context(), "ws_a", id)
	if err != nil {
		t.Fatal(err)
	}
	f.get(path, adminToken, http.StatusOK, &st)
	if st.State != stripesync.StateFinalized || !st.Done || st.Amount != inv.Total.Shift(2).IntPart() || st.Currency != "usd" ||
		st.StripeInvoice == "" || st.CustomerID == "" || st.InvoiceVersion != inv.Version || st.ItemsDone != st.ItemsTotal {
		t.Errorf("after the push: %+v (invoice total %s)", st, inv.Total)
	}
	f.get("/v1/admin/workspaces/ws_a/stripe", adminToken, http.StatusOK, &list)
	if len(list.Data) != 1 || list.Data[0].InvoiceID != id {
		t.Errorf("after the push: %+v", list)
	}
	f.get("/v1/admin/workspaces/ws_b/invoices/"+id+"/stripe", adminToken, http.StatusNotFound, nil)
	f.get("/v1/admin/workspaces/ws_a/invoices/inv_nope/stripe", adminToken, http.StatusNotFound, nil)
	f.get("/v1/admin/workspaces/ws_nope/stripe", adminToken, http.StatusNotFound, nil)
	f.get(path, f.tokens["ws_a"], http.StatusUnauthorized, nil)
}
