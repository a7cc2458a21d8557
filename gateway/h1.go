package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// h1Transport is the gateway's HTTP/1.1 client for upstream calls. net/http's Transport
// hands every request to a write goroutine and every response back from a read goroutine;
// on a proxy that is most of the latency it adds. Here the caller's goroutine writes the
// request and reads the response over a pooled keep-alive connection, so an upstream
// exchange costs one write and the reads of its answer.
//
// What it does not do, on purpose: HTTP/2, proxies (New keeps net/http's Transport when a
// proxy is configured for an upstream), compression (it sends no Accept-Encoding, so
// upstreams answer in identity), redirects. A POST is never retried: a request that may
// have reached the upstream is not sent twice (RFC 9110 §9.2.2); connections a server
// closed while idle are found before reuse instead.
type h1Transport struct {
	dialer      net.Dialer
	tls         *tls.Config            // nil: tls.Config{} with the host as ServerName
	sessions    tls.ClientSessionCache // resumes TLS sessions: a new connection skips the full handshake
	maxIdle     int                    // idle connections kept per host
	idleTimeout time.Duration
	timeout     time.Duration // the whole exchange, as a connection deadline; 0: none

	mu       sync.Mutex
	idle     map[string][]*h1Conn // by scheme://host:port, most recently used last
	sweeping bool                 // a sweep of idle connections is scheduled
}

func newH1Transport() *h1Transport {
	return &h1Transport{
		dialer:      net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second},
		maxIdle:     512,
		idleTimeout: 90 * time.Second,
		idle:        map[string][]*h1Conn{},
		sessions:    tls.NewLRUClientSessionCache(256),
	}
}

// h1Conn is one keep-alive connection.
type h1Conn struct {
	key      string
	conn     net.Conn
	tcp      net.Conn // the socket under TLS, for the liveness check
	br       *bufio.Reader
	wbuf     []byte
	reused   bool
	idleFrom time.Time
}

// aLongTimeAgo is a deadline in the past: it fails a pending read or write at once.
var aLongTimeAgo = time.Unix(1, 0)

// maxResponseHeaderBytes bounds a response head, as net/http's default does.
const maxResponseHeaderBytes = 1 << 20

var errNoUpstreamConn = errors.New("upstream connection closed before the response")

// RoundTrip sends req over a pooled connection and returns its response; the body streams
// from the connection, which goes back to the pool when the body is read to its end.
// Cancelling req's context fails a pending write or read at once and closes the
// connection, so an upstream stops generating for a client that went away.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	body, err := requestBody(req)
	if err != nil {
		return nil, err
	}
	c, err := t.conn(ctx, req.URL)
	if err != nil {
		return nil, err
	}
	// The exchange's time limit is a deadline on the connection (cheaper than a context
	// timer per request), and the context watches the connection until the body is done.
	if t.timeout > 0 {
		c.conn.SetDeadline(time.Now().Add(t.timeout))
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(aLongTimeAgo) })
	fail := func(err error) (*http.Response, error) {
		stop()
		c.conn.Close()
		return nil, t.exchangeErr(ctx, err)
	}
	head, err := appendHead(c.wbuf[:0], req, len(body))
	if err != nil {
		return fail(err)
	}
	// One write. A small body is copied behind the head; a large one goes out with it in one
	// writev, uncopied, so a pooled connection never keeps a prompt-sized buffer.
	if len(body) <= smallBody {
		c.wbuf = append(head, body...)
		_, err = c.conn.Write(c.wbuf) // a net.Conn writes all or fails
	} else {
		c.wbuf = head
		bufs := net.Buffers{head, body}
		_, err = bufs.WriteTo(c.conn)
	}
	if err != nil {
		return fail(fmt.Errorf("write request: %w", err))
	}
	resp, err := c.readResponse(req)
	if err != nil {
		return fail(err)
	}
	resp.Body = t.body(c, resp, stop)
	return resp, nil
}

// smallBody is the largest body copied into a connection's write buffer.
const smallBody = 32 << 10

// exchangeErr is the error of a failed exchange: the context's if it ended, one that
// wraps context.DeadlineExceeded if the exchange ran out of time, else err.
func (t *h1Transport) exchangeErr(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	if t.timeout > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("upstream exchange took longer than %v: %w", t.timeout, context.DeadlineExceeded)
	}
	return err
}

// requestBody reads req's body: the gateway's bodies are in memory already.
func requestBody(req *http.Request) ([]byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	defer req.Body.Close()
	if br, ok := req.Body.(interface{ Bytes() []byte }); ok {
		return br.Bytes(), nil
	}
	b, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	return b, nil
}

// appendHead writes the request head: the request line, Host, the caller's headers and a
// Content-Length of n. A CR or LF in any of them would smuggle a second request upstream:
// refused.
func appendHead(b []byte, req *http.Request, n int) ([]byte, error) {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	uri := req.URL.RequestURI()
	if lineBreak(req.Method) || lineBreak(host) || lineBreak(uri) {
		return nil, errHeaderLineBreak
	}
	b = append(b, req.Method...)
	b = append(b, ' ')
	b = append(b, uri...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)
	if _, ok := req.Header["User-Agent"]; !ok {
		b = append(b, "User-Agent: venna-gateway\r\n"...)
	}
	for k, vs := range req.Header {
		if k == "Content-Length" || k == "Host" || k == "Connection" || k == "Transfer-Encoding" {
			continue
		}
		for _, v := range vs {
			if lineBreak(k) || lineBreak(v) {
				return nil, errHeaderLineBreak
			}
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, "\r\n\r\n"...), nil
}

var errHeaderLineBreak = errors.New("upstream request head contains a line break")

func lineBreak(s string) bool { return strings.ContainsAny(s, "\r\n") }

// conn returns an idle connection to scheme://host that is still open, or dials one.
func (t *h1Transport) conn(ctx context.Context, u *url.URL) (*h1Conn, error) {
	scheme, host, port := u.Scheme, u.Hostname(), u.Port()
	if scheme != "http" && scheme != "https" {
		return nil, fmt.Errorf("unsupported upstream scheme %q", scheme)
	}
	if port == "" {
		port = "80"
		if scheme == "https" {
			port = "443"
		}
	}
	addr := net.JoinHostPort(host, port) // brackets an IPv6 literal
	key := scheme + "://" + addr
	now := time.Now()
	for {
		t.mu.Lock()
		conns := t.idle[key]
		if len(conns) == 0 {
			t.mu.Unlock()
			break
		}
		c := conns[len(conns)-1]
		conns[len(conns)-1] = nil
		t.idle[key] = conns[:len(conns)-1]
		t.mu.Unlock()
		if t.reusable(c, now) {
			c.reused = true
			return c, nil
		}
		c.conn.Close()
	}
	tcp, err := t.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conn := tcp
	if scheme == "https" {
		cfg := &tls.Config{}
		if t.tls != nil {
			cfg = t.tls.Clone()
		}
		cfg.ClientSessionCache = t.sessions
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(tcp, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			tcp.Close()
			return nil, err
		}
		conn = tc
	}
	return &h1Conn{key: key, conn: conn, tcp: tcp, br: bufio.NewReaderSize(conn, 16<<10)}, nil
}

// reusable reports whether an idle connection may carry another exchange: idle for less
// than idleTimeout, and not closed by the upstream meanwhile.
func (t *h1Transport) reusable(c *h1Conn, now time.Time) bool {
	return now.Sub(c.idleFrom) < t.idleTimeout && alive(c.tcp)
}

// put returns a connection whose exchange is complete to the pool.
func (t *h1Transport) put(c *h1Conn) {
	if t.timeout > 0 && c.conn.SetDeadline(time.Time{}) != nil {
		c.conn.Close()
		return
	}
	c.idleFrom = time.Now()
	t.mu.Lock()
	if conns := t.idle[c.key]; len(conns) < t.maxIdle {
		t.idle[c.key] = append(conns, c)
		if !t.sweeping {
			t.sweeping = true
			time.AfterFunc(t.idleTimeout, t.sweep)
		}
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	c.conn.Close()
}

// sweep closes the connections idle for idleTimeout, and those the upstream closed
// meanwhile, so that a burst does not leave hundreds of sockets open (or half-closed by
// the upstream) after it; it runs again while any connection stays idle.
func (t *h1Transport) sweep() {
	now := time.Now()
	var drop []*h1Conn
	t.mu.Lock()
	for key, conns := range t.idle {
		keep := conns[:0]
		for _, c := range conns {
			if t.reusable(c, now) {
				keep = append(keep, c)
			} else {
				drop = append(drop, c)
			}
		}
		clear(conns[len(keep):])
		if len(keep) == 0 {
			delete(t.idle, key)
		} else {
			t.idle[key] = keep
		}
	}
	t.sweeping = len(t.idle) > 0
	if t.sweeping {
		time.AfterFunc(t.idleTimeout/2, t.sweep)
	}
	t.mu.Unlock()
	for _, c := range drop {
		c.conn.Close()
	}
}

// CloseIdleConnections closes every idle connection.
func (t *h1Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*h1Conn{}
	t.mu.Unlock()
	for _, conns := range idle {
		for _, c := range conns {
			c.conn.Close()
		}
	}
}

// readResponse reads a response head: the status, the headers the gateway uses
// (Content-Type) and the body's framing. 1xx interim responses are skipped.
func (c *h1Conn) readResponse(req *http.Request) (*http.Response, error) {
	headerBytes := 0 // of all heads, interim ones included: an upstream cannot feed endless headers
	for {
		line, err := c.line()
		if err != nil {
			if errors.Is(err, io.EOF) && c.reused {
				return nil, errNoUpstreamConn
			}
			return nil, fmt.Errorf("read response: %w", err)
		}
		headerBytes += len(line)
		resp, err := parseStatusLine(line)
		if err != nil {
			return nil, err
		}
		resp.Request = req
		resp.ContentLength = -1
		chunked := false
		for {
			line, err := c.line()
			if err != nil {
				return nil, fmt.Errorf("read response headers: %w", err)
			}
			if len(line) == 0 {
				break
			}
			if headerBytes += len(line); headerBytes > maxResponseHeaderBytes {
				return nil, fmt.Errorf("response headers exceed %d bytes", maxResponseHeaderBytes)
			}
			name, value, ok := bytes.Cut(line, []byte{':'})
			if !ok {
				return nil, fmt.Errorf("malformed response header %q", line)
			}
			value = bytes.TrimSpace(value)
			switch {
			case asciiEqualFold(name, "Content-Length"):
				n, err := strconv.ParseInt(string(value), 10, 64)
				if err != nil || n < 0 {
					return nil, fmt.Errorf("bad Content-Length %q", value)
				}
				resp.ContentLength = n
			case asciiEqualFold(name, "Transfer-Encoding"):
				chunked = asciiEqualFold(value, "chunked")
				if !chunked {
					return nil, fmt.Errorf("unsupported Transfer-Encoding %q", value)
				}
			case asciiEqualFold(name, "Connection"):
				resp.Close = asciiEqualFold(value, "close")
			case asciiEqualFold(name, "Content-Type"):
				resp.Header = http.Header{"Content-Type": {string(value)}}
			}
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		if resp.Header == nil {
			resp.Header = http.Header{}
		}
		if chunked {
			resp.ContentLength = -1
			resp.TransferEncoding = []string{"chunked"}
		}
		noBody := req.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified
		switch {
		case noBody:
			resp.ContentLength = 0
		case !chunked && resp.ContentLength < 0:
			resp.Close = true // the body runs to the end of the connection
		}
		return resp, nil
	}
}

// line reads one header line without its line ending.
func (c *h1Conn) line() ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, errors.New("response header line too long")
	}
	if err != nil {
		if len(line) > 0 && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

func parseStatusLine(line []byte) (*http.Response, error) {
	proto, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok || !bytes.HasPrefix(proto, []byte("HTTP/1.")) || len(rest) < 3 {
		return nil, fmt.Errorf("malformed response status line %q", line)
	}
	code, err := strconv.Atoi(string(rest[:3]))
	if err != nil || code < 100 || code > 999 {
		return nil, fmt.Errorf("malformed response status line %q", line)
	}
	resp := &http.Response{StatusCode: code, Status: string(rest), ProtoMajor: 1, ProtoMinor: 1, Proto: "HTTP/1.1"}
	if proto[len(proto)-1] == '0' {
		resp.ProtoMinor, resp.Proto = 0, "HTTP/1.0"
		resp.Close = true
	}
	return resp, nil
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// body returns the response body reader; the connection goes back to the pool once the
// body has been read to its end, and is closed if the body is closed before that.
func (t *h1Transport) body(c *h1Conn, resp *http.Response, stop func() bool) io.ReadCloser {
	b := &h1Body{t: t, c: c, ctx: resp.Request.Context(), stop: stop, keep: !resp.Close, left: resp.ContentLength}
	switch {
	case resp.TransferEncoding != nil:
		b.chunked = true
	case resp.ContentLength == 0:
		b.finish(io.EOF)
	}
	return b
}

// h1Body reads a response body framed by Content-Length, chunked encoding or the end of
// the connection.
type h1Body struct {
	t       *h1Transport
	c       *h1Conn
	ctx     context.Context
	stop    func() bool
	keep    bool  // the connection may be reused after the body
	left    int64 // bytes left: of the body (Content-Length), of the chunk (chunked), -1 to EOF
	chunked bool
	inChunk bool  // reading a chunk's data
	crlfDue bool  // a chunk's data was read, its CRLF not yet
	err     error // sticky: io.EOF once the body is complete
	done    bool  // the connection was released or closed
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if b.chunked {
		return b.readChunked(p)
	}
	if b.left >= 0 && int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.c.br.Read(p)
	if b.left >= 0 {
		b.left -= int64(n)
	}
	switch {
	case err == io.EOF && b.left < 0:
		b.finish(io.EOF) // read-to-close body: EOF is its end
		return n, b.err
	case err != nil:
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		b.finish(err)
		return n, b.err
	case b.left == 0:
		b.finish(io.EOF)
		return n, b.err
	}
	return n, nil
}

// readChunked reads chunk data into p. Only its first step may wait for the network; then
// it goes on through every chunk already buffered, so a stream that arrives faster than it
// is relayed goes out in fewer, larger writes (as net/http's chunked reader does).
func (b *h1Body) readChunked(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		wait := n == 0
		switch {
		case b.crlfDue: // after a chunk's data
			if !wait && b.c.br.Buffered() < 2 {
				return n, nil
			}
			if line, err := b.c.line(); err != nil || len(line) != 0 {
				b.finish(errors.New("malformed chunked response body"))
				return n, b.err
			}
			b.crlfDue = false
		case !b.inChunk:
			if !wait && !b.lineBuffered() {
				return n, nil
			}
			if err := b.nextChunk(); err != nil {
				b.finish(err)
				return n, b.err
			}
			if b.err != nil { // the last chunk
				return n, b.err
			}
		default:
			q := p[n:]
			if int64(len(q)) > b.left {
				q = q[:b.left]
			}
			if !wait {
				buffered := b.c.br.Buffered()
				if buffered == 0 {
					return n, nil
				}
				q = q[:min(len(q), buffered)]
			}
			k, err := b.c.br.Read(q)
			n += k
			b.left -= int64(k)
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				b.finish(err)
				return n, b.err
			}
			if b.left == 0 {
				b.inChunk, b.crlfDue = false, true
			}
		}
	}
	return n, nil
}

// lineBuffered reports whether a whole line waits in the connection's buffer.
func (b *h1Body) lineBuffered() bool {
	buf, _ := b.c.br.Peek(b.c.br.Buffered())
	return bytes.IndexByte(buf, '\n') >= 0
}

// nextChunk reads a chunk size line; a zero-size chunk ends the body (after its trailers).
func (b *h1Body) nextChunk() error {
	line, err := b.c.line()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	size, _, _ := bytes.Cut(line, []byte{';'})
	n, err := strconv.ParseInt(string(bytes.TrimSpace(size)), 16, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("malformed chunk size %q", line)
	}
	if n == 0 {
		for { // trailers, up to the blank line
			line, err := b.c.line()
			if err != nil {
				return err
			}
			if len(line) == 0 {
				break
			}
		}
		b.finish(io.EOF)
		return nil
	}
	b.left, b.inChunk = n, true
	return nil
}

// finish ends the body with err (io.EOF: complete) and releases the connection: back to
// the pool after a complete body on a reusable connection, closed otherwise.
func (b *h1Body) finish(err error) {
	b.err = err
	if b.done {
		return
	}
	b.done = true
	// stop reports false if the context already fired: its deadline poisons the connection.
	if b.stop() && err == io.EOF && b.keep {
		b.t.put(b.c)
		return
	}
	b.c.conn.Close()
	if err != io.EOF {
		b.err = b.t.exchangeErr(b.ctx, err) // cancelled, or out of time, says so
	}
}

// Close releases the connection; a body closed before its end closes the connection.
func (b *h1Body) Close() error {
	if !b.done {
		b.finish(errors.New("read on closed body"))
	}
	return nil
}
