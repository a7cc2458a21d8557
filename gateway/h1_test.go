package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingServer is an httptest server that counts the connections it accepted.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func post(t *testing.T, tr http.RoundTripper, ctx context.Context, url, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer up-key"}}
	return tr.RoundTrip(req)
}

// The request arrives as net/http reads it, the response comes back whole, and the
// connection is reused for the next request.
func TestH1RoundTripAndReuse(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"method":%q,"path":%q,"auth":%q,"ct":%q,"len":%d,"body":%q}`,
			r.Method, r.URL.RequestURI(), r.Header.Get("Authorization"), r.Header.Get("Content-Type"), r.ContentLength, b)
	})
	tr := newH1Transport()
	defer tr.CloseIdleConnections()
	for i := range 3 {
		body := fmt.Sprintf(`{"n":%d}`, i)
		resp, err := post(t, tr, context.Background(), srv.URL+"/v1/chat/completions?x=1", body)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(`{"method":"POST","path":"/v1/chat/completions?x=1","auth":"Bearer up-key","ct":"application/json","len":%d,"body":%q}`, len(body), body)
		if resp.StatusCode != 200 || string(got) != want || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("status %d, content type %q, body %s; want %s", resp.StatusCode, resp.Header.Get("Content-Type"), got, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("3 sequential requests used %d connections, want 1", n)
	}
}

// A chunked (streamed) body is readable chunk by chunk as the server flushes it: the
// first event arrives while the server still holds back the second.
func TestH1StreamsChunkedBody(t *testing.T) {
	release := make(chan struct{})
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("data: one\n\n"))
		w.(http.Flusher).Flush()
		<-release
		w.Write([]byte("data: two\n\n"))
	})
	tr := newH1Transport()
	defer tr.CloseIdleConnections()
	for range 2 {
		resp, err := post(t, tr, context.Background(), srv.URL, `{}`)
		if err != nil {
			t.Fatal(err)
		}
		if resp.TransferEncoding == nil {
			t.Fatal("response not chunked: the test would not test chunked reading")
		}
		rd := bufio.NewReader(resp.Body)
		line, err := rd.ReadString('\n')
		if err != nil || line != "data: one\n" {
			t.Fatalf("first line %q, %v", line, err)
		}
		release <- struct{}{}
		rest, err := io.ReadAll(rd)
		if err != nil || string(rest) != "\ndata: two\n\n" {
			t.Fatalf("rest %q, %v", rest, err)
		}
		resp.Body.Close()
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("2 streams read to the end used %d connections, want 1", n)
	}
}

// rawConns counts a raw server's connections: Load gives those accepted, closed those it
// has hung up.
type rawConns struct {
	atomic.Int64
	closed atomic.Int64
}

// rawServer answers each connection's requests with the canned response, perConn times,
// then closes the connection.
func rawServer(t *testing.T, response string, perConn int) (url string, conns *rawConns) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns = new(rawConns)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer func() {
					c.Close()
					conns.closed.Add(1)
				}()
				br := bufio.NewReader(c)
				for range perConn {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					if _, err := io.WriteString(c, response); err != nil {
						return
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String(), conns
}

func TestH1ResponseFraming(t *testing.T) {
	for _, tc := range []struct {
		name, response, body string
		status               int
		reused               bool // the connection goes back to the pool
	}{
		{"content length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "hello", 200, true},
		{"lower-case headers", "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: text/plain\r\n\r\nhello", "hello", 200, true},
		{"chunked with extension and trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nhel\r\n2\r\nlo\r\n0\r\nX-Trailer: 1\r\n\r\n", "hello", 200, true},
		{"until close", "HTTP/1.1 200 OK\r\n\r\nhello", "hello", 200, false},
		{"http/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", "hello", 200, false},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello", "hello", 200, false},
		{"interim 100 skipped", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", "ok", 201, true},
		{"no content", "HTTP/1.1 204 No Content\r\n\r\n", "", 204, true},
		{"error status", "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 13\r\n\r\n{\"error\":{}}\n", "{\"error\":{}}\n", 429, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			perConn := 1
			if tc.reused {
				perConn = 2
			}
			url, conns := rawServer(t, tc.response, perConn)
			tr := newH1Transport()
			defer tr.CloseIdleConnections()
			for range 2 {
				resp, err := post(t, tr, context.Background(), url, `{}`)
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(b) != tc.body || resp.StatusCode != tc.status {
					t.Fatalf("status %d body %q err %v; want %d %q", resp.StatusCode, b, err, tc.status, tc.body)
				}
			}
			want := int64(2)
			if tc.reused {
				want = 1
			}
			if n := conns.Load(); n != want {
				t.Errorf("2 requests used %d connections, want %d", n, want)
			}
		})
	}
}

func TestH1MalformedResponsesFail(t *testing.T) {
	for name, response := range map[string]string{
		"not http":              "SSH-2.0-OpenSSH\r\n\r\n",
		"bad status":            "HTTP/1.1 2x0 OK\r\n\r\n",
		"bad content length":    "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"unknown encoding":      "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"header without colon":  "HTTP/1.1 200 OK\r\nbroken\r\n\r\n",
		"bad chunk size":        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"short body":            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
		"cut chunk":             "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
		"endless headers":       "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Filler: "+strings.Repeat("x", 1000)+"\r\n", 1100),
		"endless interim heads": strings.Repeat("HTTP/1.1 100 Continue\r\nX-Filler: "+strings.Repeat("x", 1000)+"\r\n\r\n", 1100),
	} {
		t.Run(name, func(t *testing.T) {
			url, _ := rawServer(t, response, 1)
			tr := newH1Transport()
			resp, err := post(t, tr, context.Background(), url, `{}`)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if err == nil {
				t.Fatalf("%q was read without an error", response)
			}
			if n := len(tr.idle); n != 0 {
				t.Errorf("a connection that failed went back to the pool")
			}
		})
	}
}

// A connection the server closed while it sat idle is noticed before reuse: the next
// request goes out on a new connection instead of failing.
func TestH1ServerClosedIdleConnection(t *testing.T) {
	// Each connection serves one response without announcing the close.
	url, conns := rawServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1)
	tr := newH1Transport()
	defer tr.CloseIdleConnections()
	for i := range 3 {
		resp, err := post(t, tr, context.Background(), url, `{}`)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		for deadline := time.Now().Add(5 * time.Second); conns.closed.Load() <= int64(i) && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond) // until the server has hung up
		}
		time.Sleep(5 * time.Millisecond) // and its FIN is in our socket
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
}

// Cancelling the request's context while the answer streams fails the read at once with
// the context's error and closes the connection, so the upstream sees the client leave.
func TestH1CancelClosesConnection(t *testing.T) {
	serverSawClose := make(chan struct{})
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("data: one\n\n"))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			close(serverSawClose)
		case <-time.After(10 * time.Second):
		}
	})
	tr := newH1Transport()
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := post(t, tr, ctx, srv.URL, `{}`)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = io.ReadAll(resp.Body)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: %v, want context.Canceled", err)
	}
	waitClosed(t, serverSawClose)
	if len(tr.idle) != 0 {
		t.Error("a cancelled connection went back to the pool")
	}
}

// A deadline that passes while the upstream thinks fails the request with
// context.DeadlineExceeded (the gateway answers 504 for it) and hangs up on the upstream.
func TestH1DeadlineWhileWaiting(t *testing.T) {
	serverSawClose := make(chan struct{})
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // net/http watches for the close only once the body is read
		select {
		case <-r.Context().Done():
			close(serverSawClose)
		case <-time.After(10 * time.Second):
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := post(t, newH1Transport(), ctx, srv.URL, `{}`)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want context.DeadlineExceeded", err)
	}
	waitClosed(t, serverSawClose)
}

// A body closed before its end does not leave its connection in the pool with unread
// bytes for the next request to trip over.
func TestH1EarlyCloseDropsConnection(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("x"), 100<<10))
	})
	tr := newH1Transport()
	defer tr.CloseIdleConnections()
	for range 2 {
		resp, err := post(t, tr, context.Background(), srv.URL, `{}`)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Read(make([]byte, 10))
		resp.Body.Close()
		if _, err := resp.Body.Read(make([]byte, 10)); err == nil {
			t.Error("read after Close succeeded")
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

func TestH1TLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls %s", r.Proto)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake below is expected
	srv.Config.IdleTimeout = 50 * time.Millisecond   // it hangs up on idle connections
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	tr := newH1Transport()
	tr.tls = &tls.Config{RootCAs: pool}
	defer tr.CloseIdleConnections()
	for range 2 {
		resp, err := post(t, tr, context.Background(), srv.URL, `{}`)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "tls HTTP/1.1" {
			t.Fatalf("body %q", b)
		}
	}
	// A TLS server that closes an idle connection (close_notify, then FIN): the next
	// request goes out on a new connection instead of failing.
	for i := range 2 {
		time.Sleep(200 * time.Millisecond) // past the idle timeout
		resp, err := post(t, tr, context.Background(), srv.URL, `{}`)
		if err != nil {
			t.Fatalf("request %d after the server closed the idle connection: %v", i, err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	// Without the test CA the certificate is refused.
	if _, err := post(t, newH1Transport(), context.Background(), srv.URL, `{}`); err == nil {
		t.Error("an unknown certificate authority was accepted")
	}
}

// A proxy for any upstream keeps net/http's transport, which honours it.
func TestProxyKeepsNetHTTP(t *testing.T) {
	routes := Routes{
		"a": {Model: "a", Upstream: "u", BaseURL: "http://upstream.example/v1", UpstreamModel: "a"},
		"b": {Model: "b", Upstream: "v", BaseURL: "https://other.example/v1", UpstreamModel: "b"},
	}
	noProxy := func(*http.Request) (*url.URL, error) { return nil, nil }
	if tr := upstreamTransport(routes, noProxy); reflect.TypeOf(tr) != reflect.TypeOf(&h1Transport{}) {
		t.Errorf("without a proxy the transport is %T", tr)
	}
	proxyOther := func(r *http.Request) (*url.URL, error) {
		if r.URL.Host == "other.example" {
			return url.Parse("http://proxy.example:3128")
		}
		return nil, nil
	}
	tr, ok := upstreamTransport(routes, proxyOther).(*http.Transport)
	if !ok {
		t.Fatalf("with a proxy for one upstream the transport is %T", tr)
	}
	req, _ := http.NewRequest(http.MethodPost, "https://other.example/v1/chat/completions", nil)
	if u, _ := tr.Proxy(req); u == nil || u.Host != "proxy.example:3128" {
		t.Errorf("the transport's proxy for other.example is %v", u)
	}
}

// Chunks that arrived together are read together: one Read returns all of them (fewer,
// larger writes when a stream is relayed), without waiting for chunks still to come.
func TestH1ReadsBufferedChunksAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	more := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n")
		<-more
		io.WriteString(c, "4\r\nfour\r\n0\r\n\r\n")
	}()
	resp, err := post(t, newH1Transport(), context.Background(), "http://"+ln.Addr().String(), `{}`)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	time.Sleep(100 * time.Millisecond) // the three chunks are in the socket (one loopback write)
	buf := make([]byte, 100)
	n, err := resp.Body.Read(buf)
	if err != nil || string(buf[:n]) != "onetwothree" {
		t.Fatalf("one Read of three buffered chunks returned %q, %v; want onetwothree", buf[:n], err)
	}
	close(more)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "four" {
		t.Fatalf("rest %q, %v", rest, err)
	}
}

// waitClosed waits until the upstream saw its connection close.
func waitClosed(t *testing.T, closed <-chan struct{}) {
	t.Helper()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream never saw the connection close")
	}
}

// Upstreams named by an IPv6 literal, with and without a port.
func TestH1IPv6Literal(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback here:", err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Host)
	})}}
	srv.Start()
	defer srv.Close()
	resp, err := post(t, newH1Transport(), context.Background(), srv.URL, `{}`)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := strings.TrimPrefix(srv.URL, "http://"); string(b) != want {
		t.Errorf("Host %q, want %q", b, want)
	}
	u, _ := url.Parse("http://[::1]/v1")
	if _, err := newH1Transport().conn(context.Background(), u); err != nil && strings.Contains(err.Error(), "[[") {
		t.Errorf("default port on an IPv6 literal: %v", err)
	}
}

// A line break in a header (an upstream key read from a mistyped env file, say) is refused
// rather than sent: it would smuggle a second request to the upstream.
func TestH1RefusesLineBreaksInHead(t *testing.T) {
	var requests atomic.Int64
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) { requests.Add(1) })
	for name, h := range map[string]http.Header{
		"value": {"Authorization": {"Bearer k\r\nX-Evil: 1"}},
		"key":   {"X-A\nB": {"v"}},
	} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(`{}`))
		req.Header = h
		if _, err := newH1Transport().RoundTrip(req); !errors.Is(err, errHeaderLineBreak) {
			t.Errorf("%s: err = %v, want errHeaderLineBreak", name, err)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests reached the upstream", n)
	}
}

// A large body goes out whole, and the pooled connection does not keep a buffer its size.
func TestH1LargeBody(t *testing.T) {
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	})
	tr := newH1Transport()
	defer tr.CloseIdleConnections()
	body := strings.Repeat("x", 8<<20)
	resp, err := post(t, tr, context.Background(), srv.URL, body)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != fmt.Sprint(len(body)) {
		t.Fatalf("upstream read %s bytes, want %d", b, len(body))
	}
	for _, conns := range tr.idle {
		for _, c := range conns {
			if cap(c.wbuf) > 64<<10 {
				t.Errorf("a pooled connection keeps a %d-byte write buffer", cap(c.wbuf))
			}
		}
	}
}

// The transport's own time limit: an exchange that runs out of it fails with an error that
// is context.DeadlineExceeded (the gateway's 504), and a connection that went back to the
// pool in time carries no deadline into its next exchange.
func TestH1ExchangeTimeout(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		if r.URL.Path == "/slow" {
			w.Write([]byte("partial"))
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return
		}
		w.Write([]byte("ok"))
	})
	tr := newH1Transport()
	tr.timeout = 150 * time.Millisecond
	defer tr.CloseIdleConnections()
	for i := range 2 {
		resp, err := post(t, tr, context.Background(), srv.URL+"/fast", `{}`)
		if err != nil {
			t.Fatalf("fast request %d: %v", i, err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		time.Sleep(300 * time.Millisecond) // idle in the pool for longer than the limit
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for two quick exchanges, want 1", n)
	}
	resp, err := post(t, tr, context.Background(), srv.URL+"/slow", `{}`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("reading past the limit: %v, want context.DeadlineExceeded", err)
	}
}

// Idle connections are closed after the idle timeout even if no request comes to reuse
// them: a burst leaves no sockets open behind it.
func TestH1IdleConnectionsSwept(t *testing.T) {
	closed := make(chan struct{}, 8)
	// The handler holds each answer until all three requests have arrived, so the three
	// really run at once on three connections (none can reuse another's).
	var arrived sync.WaitGroup
	arrived.Add(3)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Done()
		arrived.Wait()
		w.Write([]byte("ok"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- struct{}{}
		}
	}
	srv.Start()
	defer srv.Close()
	tr := newH1Transport()
	tr.idleTimeout = 100 * time.Millisecond
	var wg sync.WaitGroup
	for range 3 { // three at once: three connections
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := post(t, tr, context.Background(), srv.URL, `{}`)
			if err != nil {
				t.Error(err)
				return
			}
			io.ReadAll(resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()
	for i := range 3 {
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of 3 idle connections closed", i)
		}
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.idle) != 0 || tr.sweeping {
		t.Errorf("pool after the sweep: %d hosts, sweeping %v", len(tr.idle), tr.sweeping)
	}
}

// BenchmarkH1ReadResponse reads a typical upstream answer: an OpenAI-like head and a short
// JSON body, from memory.
func BenchmarkH1ReadResponse(b *testing.B) {
	raw := []byte("HTTP/1.1 200 OK\r\nDate: Tue, 02 Dec 2025 08:00:00 GMT\r\nContent-Type: application/json\r\n" +
		"Content-Length: 24\r\nConnection: keep-alive\r\naccess-control-expose-headers: X-Request-ID\r\n" +
		"openai-organization: org-x\r\nopenai-processing-ms: 321\r\nopenai-version: 2020-10-01\r\n" +
		"x-ratelimit-limit-requests: 10000\r\nx-ratelimit-remaining-requests: 9999\r\nx-request-id: req_0123456789abcdef\r\n" +
		"strict-transport-security: max-age=31536000; includeSubDomains; preload\r\ncf-cache-status: DYNAMIC\r\n" +
		"Server: cloudflare\r\nalt-svc: h3=\":443\"; ma=86400\r\n\r\n{\"id\":\"c1\",\"choices\":[]}")
	src := bytes.NewReader(raw)
	c := &h1Conn{br: bufio.NewReaderSize(src, 16<<10)}
	req, _ := http.NewRequest(http.MethodPost, "http://upstream.example/v1/chat/completions", nil)
	body := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(raw)
		c.br.Reset(src)
		resp, err := c.readResponse(req)
		if err != nil {
			b.Fatal(err)
		}
		if n, _ := io.ReadFull(c.br, body[:resp.ContentLength]); n != 24 {
			b.Fatal(n)
		}
	}
}
