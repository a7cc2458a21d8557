package gateway

import (
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/venna/metering/simupstream"
)

func TestMetricsCountRequestsByModelAndStatus(t *testing.T) {
	up := httptest.NewServer((&simupstream.Server{}).Handler())
	defer up.Close()
	routes := Routes{"venna-1": {Model: "venna-1", Upstream: "sim", BaseURL: up.URL + "/v1", UpstreamModel: "sim-large"}}
	g, err := New(Config{Routes: routes}, fakeAuth{testToken: testPrincipal}, &recordingPublisher{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if err := g.Instrument(reg); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	defer srv.Close()
	for range 3 {
		do(t, "POST", srv.URL+"/v1/chat/completions", "Bearer "+testToken, chatBody("venna-1"))
	}
	do(t, "POST", srv.URL+"/v1/chat/completions", "Bearer vk_wrong_key", chatBody("venna-1"))
	do(t, "POST", srv.URL+"/v1/chat/completions", "Bearer "+testToken, chatBody("no-such-model"))

	want := `
# HELP venna_gateway_requests_total Chat completion requests by public model and HTTP status returned.
# TYPE venna_gateway_requests_total counter
venna_gateway_requests_total{model="-",status="401"} 1
venna_gateway_requests_total{model="-",status="404"} 1
venna_gateway_requests_total{model="venna-1",status="200"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "venna_gateway_requests_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "venna_gateway_added_seconds", "venna_gateway_upstream_seconds"); n != 2 {
		t.Errorf("%d latency series, want the overhead and one upstream histogram", n)
	}
}
