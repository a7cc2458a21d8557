package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/venna/metering/apikey"
	"github.com/venna/metering/ingest"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/simupstream"
)

// buildVenna compiles the real binary once for the test.
func buildVenna(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "venna")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/venna").CombinedOutput()
	if err != nil {
		t.Fatalf("build venna: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type gatewayProc struct {
	cmd  *exec.Cmd
	addr string
	log  *bytes.Buffer
}

func startGateway(t *testing.T, bin string, env []string) *gatewayProc {
	t.Helper()
	g := &gatewayProc{addr: freeAddr(t), log: &bytes.Buffer{}}
	g.cmd = exec.Command(bin, "gateway")
	g.cmd.Env = append(env, "VENNA_GATEWAY_ADDR="+g.addr)
	g.cmd.Stdout, g.cmd.Stderr = g.log, g.log
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.cmd.Process.Kill(); g.cmd.Wait() })
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", g.addr); err == nil {
			c.Close()
			return g
		}
		if i > 300 {
			t.Fatalf("gateway did not listen: %s", g.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With the Kafka broker down, a gateway under load is killed with SIGKILL, then Kafka and
// a new gateway process start: every completion that got a 200 is billed exactly once.
// Then a graceful stop (SIGTERM) drains what is left.
func TestGatewayKilledWhileKafkaIsDownLosesNothing(t *testing.T) {
	svc := testenv.PrivateServices(t)
	bin := buildVenna(t)
	ctx := context.Background()
	db := testenv.Name(t)
	topic := "usage"
	sim := httptest.NewServer((&simupstream.Server{}).Handler())
	defer sim.Close()
	routes := filepath.Join(t.TempDir(), "routes.yaml")
	os.WriteFile(routes, []byte(fmt.Sprintf("upstreams:\n  - {name: sim, base_url: %s/v1}\nmodels:\n  - {model: venna-1, upstream: sim, upstream_model: sim-large}\n", sim.URL)), 0o644)
	env := append(os.Environ(),
		"VENNA_CLICKHOUSE_ADDR="+svc.CHAddr, "VENNA_CLICKHOUSE_DATABASE="+db,
		"VENNA_KAFKA_BROKERS="+svc.Brokers[0], "VENNA_KAFKA_TOPIC="+topic, "VENNA_KAFKA_PARTITIONS=2",
		"VENNA_ROUTES_FILE="+routes, "VENNA_PRICES_FILE=../deploy/prices.yaml",
		"VENNA_SPOOL_DIR="+filepath.Join(t.TempDir(), "spool"), "VENNA_LOG_LEVEL=warn")
	migrate := exec.Command(bin, "migrate")
	migrate.Env = env
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	conn, err := chdb.Open(ctx, testenv.ClickHouseConfig(svc.CHAddr, db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	store := apikey.NewStore(conn, db)
	if _, err := store.CreateWorkspace(ctx, "ws_durable", "Durable"); err != nil {
		t.Fatal(err)
	}
	_, token, err := store.IssueKey(ctx, "ws_durable", "load")
	if err != nil {
		t.Fatal(err)
	}

	svc.StopKafka()
	gw := startGateway(t, bin, env)

	// The seed's curl, with the key, gets a completion while Kafka is down.
	out, err := exec.Command("curl", "-sS", "-X", "POST", "http://"+gw.addr+"/v1/chat/completions",
		"-H", "Content-Type: application/json", "-H", "Authorization: Bearer "+token,
		"-d", `{    "messages": [      {        "content": "Hello!",        "role": "user"      }    ],    "model": "venna-1"  }`).CombinedOutput()
	var first struct {
		ID     string `json:"id"`
		Object string `json:"object"`
	}
	if err != nil || json.Unmarshal(out, &first) != nil || first.Object != "chat.completion" {
		t.Fatalf("curl as in the seed: %v %s", err, out)
	}

	// Load from 8 clients; SIGKILL the gateway while requests are in flight.
	var mu sync.Mutex
	ok := map[string]bool{first.ID: true}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				body := fmt.Sprintf(`{"model":"venna-1","messages":[{"role":"user","content":"client %d request %d"}]}`, c, i)
				req, _ := http.NewRequest(http.MethodPost, "http://"+gw.addr+"/v1/chat/completions", bytes.NewBufferString(body))
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := client.Do(req)
				if err != nil {
					continue // the gateway died under us: no 200, nothing promised
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var r struct{ ID string }
				if resp.StatusCode == http.StatusOK && json.Unmarshal(b, &r) == nil {
					mu.Lock()
					ok[r.ID] = true
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	gw.cmd.Process.Signal(syscall.SIGKILL)
	gw.cmd.Wait()
	close(stop)
	wg.Wait()
	if len(ok) < 100 {
		t.Fatalf("only %d completions got a 200 before the kill; the test needs load", len(ok))
	}

	// Kafka back, a new gateway process on the same spool: it ships what the dead one left.
	svc.StartKafka()
	gw2 := startGateway(t, bin, env)
	cons, err := ingest.New(ingest.Config{Brokers: svc.Brokers, Topic: topic, GroupID: "ingest", Database: db,
		BatchSize: 5000, FlushInterval: 200 * time.Millisecond}, conn, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cons.Run(cctx) }()
	billed := func() map[string]int {
		rows, err := conn.Query(ctx, "SELECT request_id, count() FROM (SELECT event_id, request_id FROM "+db+".usage_events WHERE status = 'ok' LIMIT 1 BY event_id) GROUP BY request_id")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		m := map[string]int{}
		for rows.Next() {
			var id string
			var n uint64
			rows.Scan(&id, &n)
			m[id] = int(n)
		}
		return m
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		got := billed()
		missing := 0
		for id := range ok {
			if got[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d completions that got a 200 were never billed\ngateway log:\n%s", missing, len(ok), gw2.log)
		}
		time.Sleep(250 * time.Millisecond)
	}
	// SIGTERM: the second gateway drains and exits cleanly.
	gw2.cmd.Process.Signal(syscall.SIGTERM)
	if err := gw2.cmd.Wait(); err != nil {
		t.Errorf("gateway exit after SIGTERM: %v\n%s", err, gw2.log)
	}
	time.Sleep(time.Second) // let the consumer take any last batch
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := billed()
	for id, n := range got {
		if n != 1 {
			t.Errorf("completion %s billed %d times", id, n)
		}
	}
	var estimated uint64
	conn.QueryRow(ctx, "SELECT count() FROM "+db+".usage_events WHERE estimated = 1").Scan(&estimated)
	if estimated != 0 {
		t.Errorf("%d events estimated; the simulated upstream reports usage for every completion", estimated)
	}
	t.Logf("%d completions got a 200 with Kafka down and a SIGKILL; %d completions billed, each once", len(ok), len(got))
}
