package e2e

// The cluster tests: the real roles as processes on the clusters of scripts/cluster.sh
// (ZooKeeper, ClickHouse 2 shards x 2 replicas, three Kafka brokers), under load from
// clients that count every completion they got a 200 for, through one fault each. Run them
// with `scripts/cluster.sh test`; without that script's environment they skip.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/venna/metering/apikey"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/schema"
	"github.com/venna/metering/simupstream"
)

// clusterNodes are the ClickHouse servers by shard and replica, as scripts/cluster.sh names them.
var clusterNodes = []string{"ch-1-1", "ch-1-2", "ch-2-1", "ch-2-2"}

var clusterModels = []string{"venna-1", "venna-1-mini", "venna-1-reasoning"}

// clusterEnv is the running cluster: its script and the addresses it printed.
type clusterEnv struct {
	script  string
	cluster string
	nodes   map[string]string // node → host:port
	brokers []string
}

func newClusterEnv(t testing.TB) *clusterEnv {
	t.Helper()
	script := os.Getenv("VENNA_CLUSTER_SCRIPT")
	if script == "" {
		t.Skip("no cluster: run with scripts/cluster.sh test")
	}
	c := &clusterEnv{script: script, cluster: os.Getenv("VENNA_CLICKHOUSE_CLUSTER"), nodes: map[string]string{},
		brokers: strings.Split(os.Getenv("VENNA_KAFKA_BROKERS"), ",")}
	for _, n := range clusterNodes {
		c.nodes[n] = os.Getenv("VENNA_CLUSTER_" + strings.ToUpper(strings.ReplaceAll(n, "-", "_")))
		if c.nodes[n] == "" {
			t.Fatalf("%s env names no address for %s", script, n)
		}
	}
	return c
}

// do runs the cluster script: kill, stop-node or restart a node.
func (c *clusterEnv) do(t *testing.T, cmd, node string) {
	t.Helper()
	start := time.Now()
	out, err := exec.Command("bash", c.script, cmd, node).CombinedOutput()
	if err != nil {
		t.Fatalf("cluster.sh %s %s: %v\n%s", cmd, node, err, out)
	}
	t.Logf("%s %s (%s)", cmd, node, time.Since(start).Round(time.Millisecond))
}

// addrs lists every ClickHouse server, starting at the i-th: roles are given the cluster
// in different orders, so they do not all talk to one server, and each fails over to the
// next when its first is down.
func (c *clusterEnv) addrs(i int) string {
	var out []string
	for k := range clusterNodes {
		out = append(out, c.nodes[clusterNodes[(i+k)%len(clusterNodes)]])
	}
	return strings.Join(out, ",")
}

// clusterRun is one test's Venna on the cluster: its own database and topic, the roles as
// processes, the clients' ground truth.
type clusterRun struct {
	t      *testing.T
	c      *clusterEnv
	bin    string
	db     string
	env    []string
	conn   driver.Conn
	tokens map[string]string // workspace → key
	roles  map[string]*roleProc
	gwURLs []string

	mu    sync.Mutex
	ok    map[string]string            // completion ID → workspace, for every 200
	truth map[string]map[string]*tally // workspace → model → what the clients were told
	fails map[string]int               // non-200 outcomes by kind

	killed map[string]bool // roles a test killed on purpose
	spread bool            // the workspaces are on both shards: the test checks it
}

type roleProc struct {
	name, addr, logPath string
	cmd                 *exec.Cmd
	done                chan struct{}
}

func (p *roleProc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *roleProc) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// newClusterRun migrates a new database and topic on the cluster (ON CLUSTER, Replicated
// and Distributed tables, topic with replication 3 and min.insync.replicas 2) and makes
// workspaces each with a key.
func newClusterRun(t *testing.T, workspaces int) *clusterRun {
	t.Helper()
	c := newClusterEnv(t)
	r := &clusterRun{t: t, c: c, bin: buildVenna(t), db: testenv.Name(t), tokens: map[string]string{},
		roles: map[string]*roleProc{}, ok: map[string]string{}, truth: map[string]map[string]*tally{}, fails: map[string]int{},
		killed: map[string]bool{}, spread: workspaces > 1}
	sim := httptest.NewServer((&simupstream.Server{}).Handler())
	t.Cleanup(sim.Close)
	dir := t.TempDir()
	routes := filepath.Join(dir, "routes.yaml")
	var models strings.Builder
	for _, m := range clusterModels {
		fmt.Fprintf(&models, "  - {model: %s, upstream: sim, upstream_model: sim-%s}\n", m, map[string]string{
			"venna-1": "large", "venna-1-mini": "small", "venna-1-reasoning": "reasoner"}[m])
	}
	os.WriteFile(routes, []byte(fmt.Sprintf("upstreams:\n  - {name: sim, base_url: %s/v1}\nmodels:\n%s", sim.URL, models.String())), 0o644)
	r.env = append(os.Environ(),
		"VENNA_CLICKHOUSE_ADDR="+c.addrs(0), "VENNA_CLICKHOUSE_DATABASE="+r.db, "VENNA_CLICKHOUSE_CLUSTER="+c.cluster,
		"VENNA_KAFKA_BROKERS="+strings.Join(c.brokers, ","), "VENNA_KAFKA_TOPIC="+r.db, "VENNA_KAFKA_PARTITIONS=6",
		"VENNA_KAFKA_REPLICATION=3", "VENNA_KAFKA_MIN_INSYNC_REPLICAS=2",
		"VENNA_ROUTES_FILE="+routes, "VENNA_PRICES_FILE=../deploy/prices.yaml", "VENNA_REDIS_ADDR=",
		"VENNA_KEY_REFRESH=500ms", "VENNA_SPEND_REFRESH=1s", "VENNA_INGEST_GROUP="+r.db,
		"VENNA_INGEST_BATCH_SIZE=2000", "VENNA_INGEST_FLUSH_INTERVAL=200ms", "VENNA_INGEST_METRICS_ADDR=",
		"VENNA_AGGREGATE_SCHEDULE=@every 1s", "VENNA_INVOICE_SCHEDULE=@every 2s", "VENNA_ALERT_SCHEDULE=@every 5s",
		"VENNA_LOG_LEVEL=warn")
	if out, err := r.venna("migrate"); err != nil {
		t.Fatalf("migrate on the cluster: %v\n%s", err, out)
	}
	t.Cleanup(r.dropDatabase)
	ctx := t.Context()
	conn, err := chdb.Open(ctx, testenv.ClickHouseConfig(c.addrs(1), r.db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r.conn = conn
	store := apikey.NewStore(conn, r.db)
	for i := range workspaces {
		ws := fmt.Sprintf("ws_cluster_%d", i)
		if _, err := store.CreateWorkspace(ctx, ws, ws); err != nil {
			t.Fatal(err)
		}
		_, token, err := store.IssueKey(ctx, ws, "load")
		if err != nil {
			t.Fatal(err)
		}
		r.tokens[ws] = token
		r.truth[ws] = map[string]*tally{}
	}
	return r
}

// dropDatabase removes the test's database from every server, when they all answer.
func (r *clusterRun) dropDatabase() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := chdb.Open(ctx, testenv.ClickHouseConfig(r.c.addrs(0), "default"))
	if err != nil {
		return
	}
	defer conn.Close()
	conn.Exec(ctx, "DROP DATABASE IF EXISTS "+r.db+" ON CLUSTER "+r.c.cluster)
}

// venna runs a venna command to its end with the run's environment.
func (r *clusterRun) venna(args ...string) (string, error) {
	cmd := exec.Command(r.bin, args...)
	cmd.Env = r.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// start runs a role as a process; extra settings override the run's.
func (r *clusterRun) start(name, role string, extra ...string) *roleProc {
	r.t.Helper()
	p := &roleProc{name: name, logPath: filepath.Join(r.t.TempDir(), name+".log"), done: make(chan struct{})}
	logf, err := os.Create(p.logPath)
	if err != nil {
		r.t.Fatal(err)
	}
	p.cmd = exec.Command(r.bin, role)
	p.cmd.Env = append(slices.Clone(r.env), extra...)
	if role == "gateway" {
		p.addr = freeAddr(r.t)
		p.cmd.Env = append(p.cmd.Env, "VENNA_GATEWAY_ADDR="+p.addr, "VENNA_SPOOL_DIR="+filepath.Join(r.t.TempDir(), "spool"))
	}
	if role == "aggregate" {
		p.cmd.Env = append(p.cmd.Env, "VENNA_AGGREGATE_METRICS_ADDR="+freeAddr(r.t))
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	go func() { p.cmd.Wait(); logf.Close(); close(p.done) }()
	r.t.Cleanup(func() {
		if p.alive() {
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(20 * time.Second):
				p.cmd.Process.Kill()
				<-p.done
			}
		}
		if r.t.Failed() {
			r.t.Logf("--- log of %s:\n%s", name, p.logTail())
		}
	})
	r.roles[name] = p
	if p.addr != "" {
		waitFor(r.t, 30*time.Second, func() (bool, string) {
			resp, err := http.Get("http://" + p.addr + "/healthz")
			if err == nil {
				resp.Body.Close()
			}
			return err == nil, fmt.Sprintf("%s does not answer: %v\n%s", name, err, p.logTail())
		})
		r.gwURLs = append(r.gwURLs, "http://"+p.addr)
	}
	return p
}

// kill sends SIGKILL to a role and waits for it to be gone.
func (r *clusterRun) kill(name string) {
	p := r.roles[name]
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	r.killed[name] = true
	r.t.Logf("kill -9 %s", name)
}

// startRoles starts the layout deploy/README.md recommends at its smallest: two gateways,
// ingest members, two aggregate roles, each with the cluster's servers in its own order.
func (r *clusterRun) startRoles(ingestMembers int) {
	r.t.Helper()
	for i := range 2 {
		r.start(fmt.Sprintf("gateway-%d", i+1), "gateway", "VENNA_CLICKHOUSE_ADDR="+r.c.addrs(i))
	}
	for i := range ingestMembers {
		r.start(fmt.Sprintf("ingest-%d", i+1), "ingest", "VENNA_CLICKHOUSE_ADDR="+r.c.addrs(i))
	}
	for i := range 2 {
		r.start(fmt.Sprintf("aggregate-%d", i+1), "aggregate", "VENNA_CLICKHOUSE_ADDR="+r.c.addrs(i+2))
	}
	// Every key served by both gateways before the clients start counting.
	for _, gw := range r.gwURLs {
		for ws := range r.tokens {
			waitFor(r.t, 30*time.Second, func() (bool, string) {
				code, err := r.complete(gw, ws, 0)
				return code == http.StatusOK, fmt.Sprintf("first completion of %s at %s: %d %v", ws, gw, code, err)
			})
		}
	}
}

// complete sends one completion for workspace ws and records it when it got a 200.
func (r *clusterRun) complete(gw, ws string, n int) (int, error) {
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"cluster request %d of %s"}]}`, clusterModels[n%len(clusterModels)], n, ws)
	req, _ := http.NewRequest(http.MethodPost, gw+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+r.tokens[ws])
	req.Header.Set("Content-Type", "application/json")
	resp, err := clusterClient.Do(req)
	if err != nil {
		r.count("transport error")
		return 0, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.count(fmt.Sprintf("HTTP %d", resp.StatusCode))
		return resp.StatusCode, fmt.Errorf("%s", b)
	}
	var c struct {
		ID    string `json:"id"`
		Model string `json:"model"`
		Usage struct {
			PromptTokens        int64 `json:"prompt_tokens"`
			CompletionTokens    int64 `json:"completion_tokens"`
			PromptTokensDetails struct {
				CachedTokens int64 `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
			CompletionTokensDetails struct {
				ReasoningTokens int64 `json:"reasoning_tokens"`
			} `json:"completion_tokens_details"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(b, &c); err != nil || c.ID == "" {
		r.count("unreadable 200")
		return 0, fmt.Errorf("unreadable completion %s: %v", b, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.ok[c.ID]; dup {
		return 0, fmt.Errorf("completion ID %s returned twice", c.ID)
	}
	r.ok[c.ID] = ws
	model := clusterModels[n%len(clusterModels)]
	tl := r.truth[ws][model]
	if tl == nil {
		tl = &tally{}
		r.truth[ws][model] = tl
	}
	u := c.Usage
	tl.requests++
	tl.input += u.PromptTokens - u.PromptTokensDetails.CachedTokens
	tl.cached += u.PromptTokensDetails.CachedTokens
	tl.output += u.CompletionTokens
	tl.reasoning += u.CompletionTokensDetails.ReasoningTokens
	return http.StatusOK, nil
}

var clusterClient = &http.Client{Timeout: 60 * time.Second}

func (r *clusterRun) count(kind string) {
	r.mu.Lock()
	r.fails[kind]++
	r.mu.Unlock()
}

func (r *clusterRun) completions() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ok)
}

// load sends about rate completions a second through both gateways for every workspace
// until the returned stop is called.
func (r *clusterRun) load(rate int) (stop func()) {
	const clients = 8
	r.mu.Lock()
	clear(r.fails) // the refusals before every key was served are not the load's
	r.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wss := slices.Sorted(maps.Keys(r.tokens))
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Second * clients / time.Duration(rate))
			defer tick.Stop()
			for i := c; ; i += clients {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				r.complete(r.gwURLs[i%len(r.gwURLs)], wss[(i/len(r.gwURLs))%len(wss)], i)
			}
		}()
	}
	return func() {
		cancel()
		wg.Wait()
		r.mu.Lock()
		defer r.mu.Unlock()
		r.t.Logf("load: %d completions got a 200; other outcomes %v", len(r.ok), r.fails)
	}
}

// billed counts, per completion, the events ClickHouse bills it by: one per event ID
// across shards and replicas (LIMIT 1 BY, as the invoices read).
func (r *clusterRun) billed(ctx context.Context) (map[string]int, error) {
	rows, err := r.conn.Query(ctx, "SELECT request_id, count() FROM (SELECT event_id, request_id FROM "+r.db+
		".usage_events WHERE status = 'ok' LIMIT 1 BY event_id) GROUP BY request_id")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := map[string]int{}
	for rows.Next() {
		var id string
		var n uint64
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		m[id] = int(n)
	}
	return m, rows.Err()
}

// verify is how every cluster test ends: every completion a client got a 200 for is billed
// once and only those, each workspace's invoice equals what the price book makes of what its
// clients were told, `venna invoice reconcile` finds it equal to the raw events, the
// replicas of each shard hold the same rows, and the roles not killed are still up.
func (r *clusterRun) verify(minCompletions int) {
	t := r.t
	t.Helper()
	ctx := t.Context()
	if n := r.completions(); n < minCompletions {
		t.Fatalf("only %d completions got a 200; the test needs at least %d under load", n, minCompletions)
	}
	var got map[string]int
	waitFor(t, 3*time.Minute, func() (bool, string) {
		var err error
		if got, err = r.billed(ctx); err != nil {
			return false, err.Error()
		}
		missing := 0
		for id := range r.ok {
			if got[id] == 0 {
				missing++
			}
		}
		return missing == 0, fmt.Sprintf("%d of %d completions that got a 200 are not in ClickHouse", missing, len(r.ok))
	})
	for id, n := range got {
		if n != 1 {
			t.Errorf("completion %s billed %d times", id, n)
		}
		if _, ok := r.ok[id]; !ok {
			t.Errorf("completion %s billed, but no client got a 200 for it", id)
		}
	}

	book := readPriceBook(t, "../deploy/prices.yaml")
	period, _ := invoice.Month(time.Now().UTC())
	for ws, models := range r.truth {
		want := expectedInvoice(book, models)
		id := invoice.ID(ws, period, period.AddDate(0, 1, 0))
		var last string
		waitFor(t, 2*time.Minute, func() (bool, string) {
			// Roll up and invoice now, racing the aggregate roles' own runs.
			if out, err := r.venna("aggregate", "--once", "--aggregate-metrics-addr", ""); err != nil {
				return false, fmt.Sprintf("aggregate --once: %v %s", err, out)
			}
			out, err := r.venna("invoice", "export", "--workspace", ws, "--format", "json", id)
			if err != nil {
				return false, fmt.Sprintf("invoice export %s: %v %s", id, err, out)
			}
			var inv invoice.Invoice
			if err := json.Unmarshal([]byte(out), &inv); err != nil {
				return false, fmt.Sprintf("invoice export %s: %v in %s", id, err, out)
			}
			last = fmt.Sprintf("%s: subtotal %s total %s, want %s and %s", ws, inv.Subtotal, inv.Total, want.subtotal, want.total)
			return inv.Subtotal.Equal(want.subtotal) && inv.Total.Equal(want.total) && linesEqual(inv.Lines, want), last
		})
		if out, err := r.venna("invoice", "reconcile", "--workspace", ws, id); err != nil {
			t.Errorf("venna invoice reconcile %s: %v\n%s", ws, err, out)
		}
		t.Logf("%s", last)
	}

	// Replicas of a shard converge on the same events, so that losing either loses
	// nothing; both shards hold some. (Their row counts may differ by duplicates of an
	// event: after a Keeper outage a part ClickHouse 18.16 wrote on one replica can stay
	// unknown to Keeper until that replica restarts. Readers count each event once.)
	for _, shard := range [][2]string{{"ch-1-1", "ch-1-2"}, {"ch-2-1", "ch-2-2"}} {
		var a, b string
		waitFor(t, 2*time.Minute, func() (bool, string) {
			a, b = r.localCounts(ctx, shard[0]), r.localCounts(ctx, shard[1])
			ida, _, _ := strings.Cut(a, " ")
			idb, _, _ := strings.Cut(b, " ")
			return ida == idb && a != "" && (!r.spread || ida != "0"), fmt.Sprintf("%s has %q, %s has %q", shard[0], a, shard[1], b)
		})
		t.Logf("%s and %s: %s and %s raw events (event IDs, rows)", shard[0], shard[1], a, b)
	}
	for name, p := range r.roles {
		if !r.killed[name] && !p.alive() {
			t.Errorf("%s exited:\n%s", name, p.logTail())
		}
	}
}

// localCounts reads one server's own rows of the raw events: distinct event IDs and rows.
func (r *clusterRun) localCounts(ctx context.Context, node string) string {
	conn, err := chdb.Open(ctx, testenv.ClickHouseConfig(r.c.nodes[node], r.db))
	if err != nil {
		return ""
	}
	defer conn.Close()
	var ids, rows uint64
	if err := conn.QueryRow(ctx, "SELECT uniqExact(event_id), count() FROM "+r.db+".usage_events_local").Scan(&ids, &rows); err != nil {
		return ""
	}
	return fmt.Sprintf("%d %d", ids, rows)
}

func linesEqual(lines []invoice.Line, want wantInvoice) bool {
	n := 0
	for _, l := range lines {
		if l.Kind == invoice.KindCredit {
			continue
		}
		n++
		w, ok := want.lines[l.Model+"/"+l.TokenClass]
		if !ok || w.qty != l.Quantity || !w.amount.Equal(l.Amount) {
			return false
		}
	}
	return n == len(want.lines)
}

// partitionLeaders counts the partitions of topic each broker leads.
func (r *clusterRun) partitionLeaders(topic string) (map[int]int, []kafka.Partition) {
	r.t.Helper()
	var parts []kafka.Partition
	for _, b := range r.c.brokers {
		conn, err := kafka.Dial("tcp", b)
		if err != nil {
			continue
		}
		parts, err = conn.ReadPartitions(topic)
		conn.Close()
		if err == nil {
			break
		}
	}
	leaders := map[int]int{}
	for _, p := range parts {
		leaders[p.Leader.ID]++
	}
	return leaders, parts
}

// The broker that leads most partitions of the topic is killed with SIGKILL under load and
// restarted 15 s later: producers (acks=all, min.insync.replicas 2 of 3) and the consumer
// group move to the new leaders; the broker rejoins every ISR.
func TestClusterBrokerLeaderKilled(t *testing.T) {
	r := newClusterRun(t, 6)
	r.startRoles(2)
	leaders, _ := r.partitionLeaders(r.db)
	victim, most := 0, -1
	for id, n := range leaders {
		if n > most {
			victim, most = id, n
		}
	}
	if victim == 0 {
		t.Fatalf("no partition leaders read for topic %s", r.db)
	}
	stop := r.load(150)
	time.Sleep(5 * time.Second)
	node := fmt.Sprintf("kafka-%d", victim)
	r.c.do(t, "kill", node)
	time.Sleep(15 * time.Second)
	after, _ := r.partitionLeaders(r.db)
	if after[victim] != 0 {
		t.Errorf("%s still leads %d partitions 15 s after its death: %v", node, after[victim], after)
	}
	r.c.do(t, "restart", node)
	time.Sleep(5 * time.Second)
	stop()
	waitFor(t, 2*time.Minute, func() (bool, string) {
		_, parts := r.partitionLeaders(r.db)
		for _, p := range parts {
			if len(p.Isr) != 3 {
				return false, fmt.Sprintf("partition %d ISR %v", p.ID, p.Isr)
			}
		}
		return len(parts) > 0, "no partitions read"
	})
	t.Logf("%s led %d of 6 partitions; after its death: %v", node, most, after)
	r.verify(2000)
}

// One ClickHouse replica (ch-1-1, the first server of half the roles) is killed with
// SIGKILL for 30 s while inserts continue: its shard's inserts go to ch-1-2 and the roles
// fail over to their next server. After its restart it catches up from its peer.
func TestClusterClickHouseReplicaDown(t *testing.T) {
	r := newClusterRun(t, 6)
	r.startRoles(2)
	stop := r.load(150)
	time.Sleep(5 * time.Second)
	before := r.completions()
	r.c.do(t, "kill", "ch-1-1")
	time.Sleep(30 * time.Second)
	during := r.completions() - before
	r.c.do(t, "restart", "ch-1-1")
	time.Sleep(5 * time.Second)
	stop()
	if during < 1000 {
		t.Errorf("%d completions got a 200 while ch-1-1 was down; want load to go on", during)
	}
	r.verify(3000)
}

// ZooKeeper is killed with SIGKILL under load and restarted 15 s later: meanwhile the
// Replicated tables refuse inserts, so ingest backs off and retries its batch, the
// aggregator and invoice runs fail and run again; nothing is lost or doubled.
func TestClusterZooKeeperRestart(t *testing.T) {
	r := newClusterRun(t, 6)
	r.startRoles(2)
	stop := r.load(150)
	time.Sleep(5 * time.Second)
	r.c.do(t, "kill", "zookeeper")
	time.Sleep(15 * time.Second)
	r.c.do(t, "restart", "zookeeper")
	time.Sleep(10 * time.Second)
	stop()
	r.verify(3000)
}

// Three ingest members share the topic; one is killed with SIGKILL mid-run (the group
// rebalances its partitions to the others, which take over from its last committed offsets),
// then one of the two aggregate roles (mid-run: they roll up every second and invoice every
// two). The other aggregate role goes on alone.
func TestClusterIngestMemberAndAggregatorKilled(t *testing.T) {
	r := newClusterRun(t, 6)
	r.startRoles(3)
	stop := r.load(150)
	time.Sleep(6 * time.Second)
	r.kill("ingest-2")
	time.Sleep(4 * time.Second)
	r.kill("aggregate-1")
	time.Sleep(10 * time.Second)
	stop()
	r.verify(2000)
}

// The same batch is inserted twice into two different replicas of one shard, as ingest does
// when its first insert went through but the answer was lost and the retry (after failover)
// reaches the other replica: once as the identical block (ClickHouse's insert deduplication
// drops it), once cut differently (no block matches; the readers' deduplication by event ID
// holds). Each event is billed once and the invoice is the price book's.
func TestClusterSameBatchOnTwoReplicas(t *testing.T) {
	r := newClusterRun(t, 1)
	ctx := t.Context()
	ws := "ws_cluster_0"
	now := time.Now().UTC().Truncate(time.Second)
	var evs []schema.UsageEvent
	for i := range 300 {
		model := clusterModels[i%len(clusterModels)]
		e := schema.UsageEvent{SchemaVersion: 1, EventID: fmt.Sprintf("evt_replay_%03d", i), RequestID: fmt.Sprintf("req_replay_%03d", i),
			OccurredAt: now.Add(-time.Duration(i) * time.Second), WorkspaceID: ws, APIKeyID: "key_replay", Model: model,
			Status: schema.StatusOK, HTTPStatus: 200, PromptTokens: 1000 + int64(i), CachedTokens: int64(i % 200),
			CompletionTokens: 200 + int64(i%50)}
		e.TotalTokens = e.PromptTokens + e.CompletionTokens
		evs = append(evs, e)
		tl := r.truth[ws][model]
		if tl == nil {
			tl = &tally{}
			r.truth[ws][model] = tl
		}
		tl.requests++
		tl.input += e.PromptTokens - e.CachedTokens
		tl.cached += e.CachedTokens
		tl.output += e.CompletionTokens
		r.ok[e.RequestID] = ws
	}
	// The shard that holds the workspace, read from the Distributed table's routing.
	testenv.InsertEvents(t, r.conn, r.db, evs[:1])
	var shard string
	for _, n := range clusterNodes {
		if strings.HasPrefix(r.localCounts(ctx, n), "1 ") {
			shard = n[:4]
			break
		}
	}
	if shard == "" {
		t.Fatal("the first event is on no server's local table")
	}
	insertLocal := func(node string, evs []schema.UsageEvent) {
		t.Helper()
		conn, err := chdb.Open(ctx, testenv.ClickHouseConfig(r.c.nodes[node], r.db))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		testenv.InsertEventsInto(t, conn, r.db, "usage_events_local", evs, now)
	}
	insertLocal(shard+"-1", evs)
	insertLocal(shard+"-2", evs)       // the identical block: deduplicated by ClickHouse
	insertLocal(shard+"-2", evs[100:]) // the retry cut differently: held by event ID
	insertLocal(shard+"-1", evs[:150])
	// 1 + 300 + 200 + 150 rows: the identical block stored once, every other insert kept.
	waitFor(t, time.Minute, func() (bool, string) {
		a, b := r.localCounts(ctx, shard+"-1"), r.localCounts(ctx, shard+"-2")
		return a == "300 651" && b == a, fmt.Sprintf("%s has %q and %s %q (event IDs, rows), want 300 651 on both", shard+"-1", a, shard+"-2", b)
	})
	r.verify(300)
}
