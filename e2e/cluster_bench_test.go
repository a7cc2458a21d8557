package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/schema"
)

// BenchmarkClusterIngest measures ingest members draining one backlog of usage events into
// ClickHouse: 1, 2 and 4 `venna ingest` processes on the three-broker topic (12 partitions,
// replication 3) into the 2 x 2 cluster (through its Distributed table, insert_distributed_sync),
// beside one member on a single broker and server, in one run. It runs once whatever b.N
// is, from `scripts/cluster.sh bench`, which also starts the single-node stack and names it
// (VENNA_BENCH_SINGLE_*). For each case it reports events/s from the members' start until every
// row is queryable, and the CPU each kind of process spent meanwhile (from /proc): what
// limits the figure on a machine of few cores. Sustained rate: rows after the first insert
// landed ÷ time from then to the last. VENNA_BENCH_EVENTS: events (default 1000000).
func BenchmarkClusterIngest(b *testing.B) {
	c := newClusterEnv(b)
	n := 1000000
	if v := os.Getenv("VENNA_BENCH_EVENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatalf("VENNA_BENCH_EVENTS: %v", err)
		}
	}
	single := benchStack{name: "single node",
		chAddr: os.Getenv("VENNA_BENCH_SINGLE_CLICKHOUSE"), brokers: os.Getenv("VENNA_BENCH_SINGLE_KAFKA"),
		pids: pidFiles(os.Getenv("VENNA_BENCH_SINGLE_STATE_DIR"), "clickhouse", "kafka")}
	if single.chAddr == "" || single.brokers == "" {
		b.Fatal("VENNA_BENCH_SINGLE_CLICKHOUSE and _KAFKA are not set: run scripts/cluster.sh bench")
	}
	state := os.Getenv("VENNA_CLUSTER_STATE_DIR")
	cluster := benchStack{name: "cluster", chAddr: c.addrs(0), brokers: strings.Join(c.brokers, ","), cluster: c.cluster,
		replication: 3, pids: pidFiles(state, append(clusterNodes, "kafka-1", "kafka-2", "kafka-3")...)}
	bin := buildVenna(b)
	events := benchEvents(n)
	b.ResetTimer()
	type result struct {
		name    string
		members int
		rate    float64
		cpu     map[string]time.Duration
		elapsed time.Duration
	}
	var results []result
	for _, run := range []struct {
		stack   benchStack
		members int
	}{{single, 1}, {cluster, 1}, {cluster, 2}, {cluster, 4}} {
		rate, elapsed, cpu := run.stack.drain(b, bin, events, run.members)
		results = append(results, result{run.stack.name, run.members, rate, cpu, elapsed})
	}
	b.StopTimer()
	base := results[0].rate
	for _, r := range results {
		var parts []string
		for _, k := range []string{"ingest", "clickhouse", "kafka"} {
			parts = append(parts, fmt.Sprintf("%s %.1f s", k, r.cpu[k].Seconds()))
		}
		b.Logf("%-11s %d member(s): %7.0f events/s sustained (%.2f x single node, 1 member), drained in %s; CPU %s in %.1f s wall",
			r.name, r.members, r.rate, r.rate/base, r.elapsed.Round(time.Millisecond), strings.Join(parts, ", "), r.elapsed.Seconds())
		b.ReportMetric(r.rate, fmt.Sprintf("events/s-%s-%d", strings.ReplaceAll(r.name, " ", "-"), r.members))
	}
}

type benchStack struct {
	name, chAddr, brokers, cluster string
	replication                    int
	pids                           map[string][]string // process kind → pid files
}

func pidFiles(state string, nodes ...string) map[string][]string {
	m := map[string][]string{}
	for _, n := range nodes {
		kind := "clickhouse"
		if strings.HasPrefix(n, "kafka") {
			kind = "kafka"
		}
		m[kind] = append(m[kind], filepath.Join(state, n, "pid"))
	}
	return m
}

// drain produces the events into a new topic and database of the stack, then starts members
// ingest processes and waits until ClickHouse holds every event.
func (s benchStack) drain(b *testing.B, bin string, events []kafka.Message, members int) (float64, time.Duration, map[string]time.Duration) {
	b.Helper()
	db := fmt.Sprintf("bench_%s_%d_%d", strings.ReplaceAll(s.name, " ", "_"), members, time.Now().UnixNano()%1e6)
	env := append(os.Environ(), "VENNA_CLICKHOUSE_ADDR="+s.chAddr, "VENNA_CLICKHOUSE_DATABASE="+db,
		"VENNA_CLICKHOUSE_CLUSTER="+s.cluster, "VENNA_KAFKA_BROKERS="+s.brokers, "VENNA_KAFKA_TOPIC="+db,
		"VENNA_KAFKA_PARTITIONS=12", fmt.Sprintf("VENNA_KAFKA_REPLICATION=%d", max(1, s.replication)),
		fmt.Sprintf("VENNA_KAFKA_MIN_INSYNC_REPLICAS=%d", max(1, s.replication-1)),
		"VENNA_INGEST_GROUP="+db, "VENNA_INGEST_METRICS_ADDR=", "VENNA_PRICES_FILE=../deploy/prices.yaml", "VENNA_LOG_LEVEL=warn")
	migrate := exec.Command(bin, "migrate")
	migrate.Env = env
	if out, err := migrate.CombinedOutput(); err != nil {
		b.Fatalf("migrate %s: %v\n%s", s.name, err, out)
	}
	ctx := context.Background()
	conn, err := chdb.Open(ctx, testenv.ClickHouseConfig(s.chAddr, db))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	defer conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db+onCluster(s.cluster))

	w := &kafka.Writer{Addr: kafka.TCP(strings.Split(s.brokers, ",")...), Topic: db, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, Compression: kafka.Lz4, BatchSize: 1000, BatchBytes: 4 << 20, BatchTimeout: 5 * time.Millisecond}
	for i := 0; i < len(events); i += 20000 {
		// A topic just created may not be known to every broker yet: retry a while.
		for try := 0; ; try++ {
			err := w.WriteMessages(ctx, events[i:min(i+20000, len(events))]...)
			if err == nil {
				break
			}
			if try == 60 {
				b.Fatalf("produce to %s: %v", s.name, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	w.Close()

	cpu0 := s.cpu()
	start := time.Now()
	var procs []*exec.Cmd
	for i := range members {
		cmd := exec.Command(bin, "ingest")
		cmd.Env = append(env, fmt.Sprintf("VENNA_CLICKHOUSE_ADDR=%s", rotate(s.chAddr, i)))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		procs = append(procs, cmd)
	}
	var ingestCPU time.Duration
	defer func() {
		for _, p := range procs {
			p.Process.Kill()
			p.Wait()
		}
	}()
	var first time.Time
	var firstRows uint64
	for {
		var rows uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".usage_events").Scan(&rows); err != nil {
			b.Fatal(err)
		}
		if rows > 0 && first.IsZero() {
			first, firstRows = time.Now(), rows
		}
		if rows >= uint64(len(events)) {
			break
		}
		if time.Since(start) > 10*time.Minute {
			b.Fatalf("%s, %d members: %d of %d rows after 10 minutes", s.name, members, rows, len(events))
		}
		time.Sleep(50 * time.Millisecond)
	}
	end := time.Now()
	elapsed := end.Sub(start)
	for _, p := range procs {
		ingestCPU += procCPU(p.Process.Pid)
	}
	cpu := s.cpu()
	for k, v := range cpu0 {
		cpu[k] -= v
	}
	cpu["ingest"] = ingestCPU
	// Sustained: rows after the first insert landed ÷ time from then to the last (the
	// group join and first fetch before it are the same one-off on every layout).
	return float64(uint64(len(events))-firstRows) / end.Sub(first).Seconds(), elapsed, cpu
}

func onCluster(cluster string) string {
	if cluster == "" {
		return ""
	}
	return " ON CLUSTER " + cluster
}

// rotate starts a comma-separated address list at its i-th entry.
func rotate(addrs string, i int) string {
	a := strings.Split(addrs, ",")
	k := i % len(a)
	return strings.Join(append(a[k:], a[:k]...), ",")
}

// cpu is the CPU time the stack's server processes have used, by kind.
func (s benchStack) cpu() map[string]time.Duration {
	out := map[string]time.Duration{}
	for kind, files := range s.pids {
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			out[kind] += procCPU(pid)
		}
	}
	return out
}

// procCPU is a process's user and system CPU time from /proc/PID/stat (clock ticks of 10 ms).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: fields count from after it.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// benchEvents encodes n gateway-shaped events (200 workspaces, three models) as the gateway
// produces them, keyed by workspace.
func benchEvents(n int) []kafka.Message {
	rng := rand.New(rand.NewPCG(7, 7))
	models := []string{"venna-1", "venna-1-mini", "venna-1-reasoning"}
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	out := make([]kafka.Message, n)
	for i := range out {
		e := schema.UsageEvent{SchemaVersion: schema.EventVersion, EventID: fmt.Sprintf("%040d", rng.Uint64()),
			OccurredAt: base.Add(time.Duration(i) * time.Millisecond), WorkspaceID: fmt.Sprintf("ws_bench_%03d", rng.IntN(200)),
			APIKeyID: fmt.Sprintf("key_bench_%03d", rng.IntN(400)), Model: models[rng.IntN(3)], Upstream: "sim",
			UpstreamModel: "sim-large", RequestID: fmt.Sprintf("chatcmpl-bench-%d", i), Status: schema.StatusOK, HTTPStatus: 200,
			LatencyMS: 50 + rng.Int64N(5000), PromptTokens: 10 + rng.Int64N(8000), CompletionTokens: 1 + rng.Int64N(2000)}
		e.CachedTokens = rng.Int64N(e.PromptTokens/2 + 1)
		e.TotalTokens = e.PromptTokens + e.CompletionTokens
		v, _ := json.Marshal(e)
		out[i] = kafka.Message{Key: []byte(e.WorkspaceID), Value: v}
	}
	return out
}
