package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/venna/metering/simupstream"
)

// BenchmarkGatewayOverhead measures, in one run, what the gateway adds on loopback, beside
// three baselines: the upstream called directly; net/http/httputil.ReverseProxy (Go's
// standard reverse proxy, which meters nothing) in front of it; and a TCP splice that relays
// bytes without reading HTTP at all, the floor for any proxy on this machine.
//
//   - latency: 3,000 rounds of sequential requests, each round direct, through the gateway,
//     the reverse proxy and the splice, so all see the same machine state; "added" is the
//     p50/p99 difference to direct. "internal" is the gateway's own time per request (its
//     handler's time minus the upstream exchange: authentication, parsing, rewriting, the
//     durable spool write of the usage event), the figure other gateways publish as overhead.
//   - throughput: 64 concurrent clients against each target, 4 interleaved rounds of 1 s.
//
// The gateway path includes the real spool write of every usage event (Kafka unreachable,
// so nothing ships: shipping is off the request path anyway). Load generator, upstream and
// proxies share the machine's cores.
//
//	go test -run '^$' -bench GatewayOverhead -benchtime 1x ./gateway/
func BenchmarkGatewayOverhead(b *testing.B) {
	for _, tc := range []struct {
		name   string
		stream bool
		delay  time.Duration // upstream think time: 0 is CPU-bound, the worst case for a proxy
	}{{"plain", false, 0}, {"stream", true, 0}, {"plain-upstream-20ms", false, 20 * time.Millisecond}} {
		stream := tc.stream
		b.Run(tc.name, func(b *testing.B) {
			sim := (&simupstream.Server{}).Handler()
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(tc.delay)
				sim.ServeHTTP(w, r)
			}))
			defer up.Close()
			prod, err := NewProducer(ProducerConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "bench", MaxBackoff: time.Second,
				Spool: SpoolConfig{Dir: b.TempDir(), MaxBytes: 8 << 30}}, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer closeSoon(prod)
			routes := Routes{"venna-1": {Model: "venna-1", Upstream: "sim", BaseURL: up.URL + "/v1", UpstreamModel: "sim-large"}}
			g, err := New(Config{Routes: routes}, fakeAuth{testToken: testPrincipal}, prod, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			var internal []time.Duration
			recording := false
			g.onServed = func(total, upstream time.Duration) {
				if recording { // sequential rounds only: no concurrent appends
					internal = append(internal, total-upstream)
				}
			}
			gw := httptest.NewServer(g.Handler())
			defer gw.Close()
			upURL, _ := url.Parse(up.URL)
			rp := httptest.NewServer(&httputil.ReverseProxy{
				Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(upURL) },
				FlushInterval: -1, // relay stream chunks at once, as the gateway does
				Transport:     &http.Transport{MaxIdleConnsPerHost: 256, MaxIdleConns: 512},
			})
			defer rp.Close()
			splice := spliceProxy(b, up.Listener.Addr().String())

			body, direct := benchBodies(stream)
			call := benchCaller(b)
			for range 200 { // warm connections and caches
				call(up.URL, direct)
				call(gw.URL, body)
				call(rp.URL, direct)
				call(splice, direct)
			}
			b.ResetTimer()
			for range b.N {
				n := 3000
				if tc.delay > 0 {
					n = 100
				}
				dLat, gLat, rLat, sLat := make([]time.Duration, 0, n), make([]time.Duration, 0, n), make([]time.Duration, 0, n), make([]time.Duration, 0, n)
				internal, recording = internal[:0], true
				for range n {
					t0 := time.Now()
					call(up.URL, direct)
					t1 := time.Now()
					call(gw.URL, body)
					t2 := time.Now()
					call(rp.URL, direct)
					t3 := time.Now()
					call(splice, direct)
					dLat, gLat, rLat, sLat = append(dLat, t1.Sub(t0)), append(gLat, t2.Sub(t1)), append(rLat, t3.Sub(t2)), append(sLat, time.Since(t3))
				}
				recording = false
				// Allocations per request in the gateway process's share of the path (its HTTP
				// server, handler, upstream client, spool): a gateway call allocates for the
				// load generator, the gateway and the upstream; a direct call for the first
				// and the last.
				var gAllocs float64
				if tc.delay == 0 { // the same path as plain, only slower to count
					gAllocs = allocsPerCall(func() { call(gw.URL, body) }) - allocsPerCall(func() { call(up.URL, direct) })
				}
				// Throughput in 4 interleaved rounds of 1 s per target, so that a slow spell of
				// the machine falls on all of them alike.
				var dThru, gThru, rThru, sThru float64
				for range 4 {
					dThru += saturate(call, up.URL, direct) / 4
					gThru += saturate(call, gw.URL, body) / 4
					rThru += saturate(call, rp.URL, direct) / 4
					sThru += saturate(call, splice, direct) / 4
				}
				us := func(d time.Duration) float64 { return float64(d.Microseconds()) }
				b.ReportMetric(us(quantile(dLat, 0.5)), "direct-p50-µs")
				b.ReportMetric(us(quantile(gLat, 0.5)-quantile(dLat, 0.5)), "added-p50-µs")
				b.ReportMetric(us(quantile(gLat, 0.99)-quantile(dLat, 0.99)), "added-p99-µs")
				b.ReportMetric(us(quantile(rLat, 0.5)-quantile(dLat, 0.5)), "revproxy-added-p50-µs")
				b.ReportMetric(us(quantile(rLat, 0.99)-quantile(dLat, 0.99)), "revproxy-added-p99-µs")
				b.ReportMetric(us(quantile(sLat, 0.5)-quantile(dLat, 0.5)), "splice-added-p50-µs")
				if !stream { // a stream's handler time is the whole generation
					b.ReportMetric(us(quantile(internal, 0.5)), "internal-p50-µs")
					b.ReportMetric(us(quantile(internal, 0.99)), "internal-p99-µs")
				}
				if tc.delay == 0 {
					b.ReportMetric(gAllocs, "gateway-allocs/req")
				}
				b.ReportMetric(dThru, "direct-req/s")
				b.ReportMetric(gThru, "gateway-req/s")
				b.ReportMetric(gThru/dThru, "throughput-ratio")
				b.ReportMetric(rThru/dThru, "revproxy-throughput-ratio")
				b.ReportMetric(sThru/dThru, "splice-throughput-ratio")
			}
		})
	}
}

// spliceProxy relays TCP connections to addr byte for byte: no HTTP, no parsing, one
// upstream connection per client connection. What it adds is the floor for any proxy on
// this machine: a second socket hop through the kernel and the scheduler.
func spliceProxy(b *testing.B, addr string) (url string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go serveSplice(ln, addr)
	return "http://" + ln.Addr().String()
}

func serveSplice(ln net.Listener, addr string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer u.Close()
			go io.Copy(u, c)
			io.Copy(c, u)
		}()
	}
}

// allocsPerCall is the heap allocations of the whole process per call of f (sequential).
func allocsPerCall(f func()) float64 {
	const n = 2000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		f()
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / n
}

// benchBodies returns a request for the gateway and the same request for the upstream
// called directly (its model name, and for a stream the usage the gateway asks for).
func benchBodies(stream bool) (body, direct []byte) {
	body = []byte(`{"model":"venna-1","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"How many tokens is this?"}]}`)
	direct = []byte(`{"model":"sim-large","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"How many tokens is this?"}]}`)
	if stream {
		body = bytes.Replace(body, []byte(`{"model"`), []byte(`{"stream":true,"model"`), 1)
		direct = bytes.Replace(direct, []byte(`{"model"`), []byte(`{"stream":true,"stream_options":{"include_usage":true},"model"`), 1)
	}
	return body, direct
}

// benchCaller returns the load generator's call: one chat completion, read to its end.
func benchCaller(b *testing.B) func(url string, payload []byte) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxIdleConns: 512}}
	return func(url string, payload []byte) {
		req, _ := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", bytes.NewReader(payload))
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

// quantile returns the q-quantile of l, sorting l.
func quantile(l []time.Duration, q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	return l[int(q*float64(len(l)-1))]
}

// saturate runs 64 concurrent clients for 1 s and returns requests per second.
func saturate(call func(string, []byte), url string, body []byte) float64 {
	var n atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(time.Second)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				call(url, body)
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(n.Load())
}

// BenchmarkHandlerAllocs reports the allocations of the gateway's own request path
// (handler, body rewrite, usage parse, spool write), the upstream answered in memory.
func BenchmarkHandlerAllocs(b *testing.B) {
	answer := []byte(`{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"Hi!"}}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}`)
	prod, err := NewProducer(ProducerConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "bench", MaxBackoff: time.Second,
		Spool: SpoolConfig{Dir: b.TempDir(), MaxBytes: 8 << 30}}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer closeSoon(prod)
	routes := Routes{"venna-1": {Model: "venna-1", Upstream: "mem", BaseURL: "http://upstream.invalid/v1", UpstreamModel: "up"}}
	g, err := New(Config{Routes: routes}, fakeAuth{testToken: testPrincipal}, prod, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	g.client = &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			ContentLength: int64(len(answer)), Body: io.NopCloser(bytes.NewReader(answer))}, nil
	})}
	h := g.Handler()
	body := []byte(`{"model":"venna-1","messages":[{"role":"user","content":"How many tokens is this?"}]}`)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code, w.Body.String())
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// closeSoon closes a producer whose Kafka is unreachable: nothing will drain.
func closeSoon(p *Producer) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	p.Close(ctx)
}

// BenchmarkValidate compares the request path's one-pass validate-and-scan of a body
// (members) with encoding/json's validator alone, on a short request and a 64 KiB prompt.
func BenchmarkValidate(b *testing.B) {
	long := `{"model":"venna-1","messages":[{"role":"user","content":"` + strings.Repeat(`Words, \"quoted\" words and numbers 12345. `, 1500) + `"}],"temperature":0.2}`
	for _, tc := range []struct{ name, body string }{
		{"short", `{"model":"venna-1","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"How many tokens is this?"}]}`},
		{"64KiB", long},
	} {
		body := []byte(tc.body)
		b.Run(tc.name+"/members", func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if err := members(body, func(member) {}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/json.Valid", func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if !json.Valid(body) {
					b.Fatal("invalid")
				}
			}
		})
	}
}

// benchChildEnv makes the test binary a proxy process for BenchmarkGatewayOwnCore:
// "gateway <upstream URL>" or "splice <upstream host:port>".
const benchChildEnv = "VENNA_BENCH_PROXY_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(benchChildEnv); spec != "" {
		os.Exit(runBenchChild(spec))
	}
	os.Exit(m.Run())
}

// runBenchChild serves one proxy on loopback, prints its URL, and exits when stdin closes.
func runBenchChild(spec string) int {
	kind, target, _ := strings.Cut(spec, " ")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	switch kind {
	case "gateway":
		dir, err := os.MkdirTemp("", "venna-bench-spool")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		prod, err := NewProducer(ProducerConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "bench", MaxBackoff: time.Second,
			Spool: SpoolConfig{Dir: dir, MaxBytes: 8 << 30}}, slog.New(slog.DiscardHandler))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer closeSoon(prod)
		routes := Routes{"venna-1": {Model: "venna-1", Upstream: "sim", BaseURL: target + "/v1", UpstreamModel: "sim-large"}}
		g, err := New(Config{Routes: routes}, fakeAuth{testToken: testPrincipal}, prod, slog.New(slog.DiscardHandler))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go http.Serve(ln, g.Handler())
	case "splice":
		go serveSplice(ln, target)
	default:
		fmt.Fprintln(os.Stderr, "unknown proxy kind", kind)
		return 1
	}
	fmt.Println("http://" + ln.Addr().String())
	io.Copy(io.Discard, os.Stdin) // until the benchmark ends
	return 0
}

// BenchmarkGatewayOwnCore is the plain case of BenchmarkGatewayOverhead with the proxy
// in its own process pinned to CPU 1, and the load generator and the upstream pinned to
// CPU 0, as a gateway runs in production: on cores of its own. Direct, gateway and splice
// runs all give the load generator and the upstream the same one core. Needs taskset and
// two CPUs.
//
//	go test -run '^$' -bench GatewayOwnCore -benchtime 1x ./gateway/
func BenchmarkGatewayOwnCore(b *testing.B) {
	if runtime.NumCPU() < 2 {
		b.Skip("needs two CPUs")
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		b.Skip("needs taskset (util-linux)")
	}
	pin := func(cpus string) {
		if out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(os.Getpid())).CombinedOutput(); err != nil {
			b.Fatalf("taskset: %v: %s", err, out)
		}
	}
	pin("0")
	defer pin(fmt.Sprintf("0-%d", runtime.NumCPU()-1))

	up := httptest.NewServer((&simupstream.Server{}).Handler())
	defer up.Close()
	child := func(spec string) string {
		cmd := exec.Command("taskset", "-c", "1", os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), benchChildEnv+"="+spec)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { stdin.Close(); cmd.Wait() })
		url, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil {
			b.Fatalf("proxy child: %v", err)
		}
		return strings.TrimSpace(url)
	}
	gw := child("gateway " + up.URL)
	splice := child("splice " + up.Listener.Addr().String())

	body, direct := benchBodies(false)
	call := benchCaller(b)
	for range 200 {
		call(up.URL, direct)
		call(gw, body)
		call(splice, direct)
	}
	b.ResetTimer()
	for range b.N {
		const n = 3000
		dLat, gLat, sLat := make([]time.Duration, 0, n), make([]time.Duration, 0, n), make([]time.Duration, 0, n)
		for range n {
			t0 := time.Now()
			call(up.URL, direct)
			t1 := time.Now()
			call(gw, body)
			t2 := time.Now()
			call(splice, direct)
			dLat, gLat, sLat = append(dLat, t1.Sub(t0)), append(gLat, t2.Sub(t1)), append(sLat, time.Since(t2))
		}
		var dThru, gThru, sThru float64
		for range 4 {
			dThru += saturate(call, up.URL, direct) / 4
			gThru += saturate(call, gw, body) / 4
			sThru += saturate(call, splice, direct) / 4
		}
		us := func(d time.Duration) float64 { return float64(d.Microseconds()) }
		b.ReportMetric(us(quantile(dLat, 0.5)), "direct-p50-µs")
		b.ReportMetric(us(quantile(gLat, 0.5)-quantile(dLat, 0.5)), "added-p50-µs")
		b.ReportMetric(us(quantile(gLat, 0.99)-quantile(dLat, 0.99)), "added-p99-µs")
		b.ReportMetric(us(quantile(sLat, 0.5)-quantile(dLat, 0.5)), "splice-added-p50-µs")
		b.ReportMetric(dThru, "direct-req/s")
		b.ReportMetric(gThru, "gateway-req/s")
		b.ReportMetric(gThru/dThru, "throughput-ratio")
		b.ReportMetric(sThru/dThru, "splice-throughput-ratio")
	}
}
