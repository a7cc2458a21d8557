package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
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
	key       string
	conn      net.Conn
	tcp       net.Conn // the socket under TLS, for the liveness check
	br        *bufio.Reader
	wbuf      []byte
	reused    bool
	idleFrom  time.Time
	headBytes int // of the heads read for the current response
}

// aLongTimeAgo is a deadline in the past: it fails a pending read or write at once.
var aLongTimeAgo = time.Unix(1, 0)

// maxResponseHeaderBytes bounds a response's heads, interim ones included. (net/http's
// Transport allows 10 MB; an API's heads are a few hundred bytes.)
const maxResponseHeaderBytes = 1 << 20

// h1ReadBufferSize is a connection's read buffer; a chunked body's trailer section must fit
// in it, as net/http bounds trailers by its own buffer.
const h1ReadBufferSize = 16 << 10

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
	return &h1Conn{key: key, conn: conn, tcp: tcp, br: bufio.NewReaderSize(conn, h1ReadBufferSize)}, nil
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
//
// It reads what net/http's ReadResponse reads and refuses what it refuses (FuzzH1Response
// holds it to that), except that it also refuses: heads over maxResponseHeaderBytes, HTTP
// versions other than 1.x, statuses below 100, 101 Switching Protocols (the gateway never
// asks to upgrade), and Transfer-Encoding in an HTTP/1.0 response (RFC 9112 §6.1: its
// framing is faulty; net/http ignores it). A response with both Content-Length and
// chunked coding is read as chunked, as net/http does, but its connection is not reused:
// it may be an attempt at response smuggling (RFC 9112 §6.3).
func (c *h1Conn) readResponse(req *http.Request) (*http.Response, error) {
	c.headBytes = 0 // of all heads, interim ones included: an upstream cannot feed endless headers
	for {
		line, err := c.headLine()
		if err != nil {
			if errors.Is(err, io.EOF) && c.reused {
				return nil, errNoUpstreamConn
			}
			return nil, fmt.Errorf("read response: %w", err)
		}
		resp, err := parseStatusLine(line)
		if err != nil {
			return nil, err
		}
		resp.Request = req
		fr, err := c.readHeaders(resp)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return nil, errors.New("upstream switched protocols unasked")
		}
		if resp.StatusCode < 200 {
			continue
		}
		if resp.Header == nil {
			resp.Header = http.Header{}
		}
		resp.ContentLength = fr.length
		// HTTP/1.1 keeps a connection unless told to close; HTTP/1.0 closes it unless told
		// to keep it (RFC 9112 §9.3).
		resp.Close = fr.close || resp.ProtoMinor == 0 && !fr.keepAlive
		if fr.chunked && fr.length >= 0 {
			resp.Close = true // both framings: what follows the body cannot be trusted
		}
		switch {
		case req.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified:
			resp.ContentLength = 0 // whatever the head says, there is no body (RFC 9112 §6.3)
		case fr.chunked:
			resp.ContentLength = -1
			resp.TransferEncoding = []string{"chunked"}
		case fr.length < 0:
			resp.Close = true // the body runs to the end of the connection
		}
		return resp, nil
	}
}

// framing is what a head says about its body and its connection.
type framing struct {
	length           int64 // Content-Length; -1: none
	chunked          bool
	close, keepAlive bool // the Connection field's options
}

// readHeaders reads the header section of resp's head: Content-Type into resp.Header, the
// framing fields checked as net/http checks them.
func (c *h1Conn) readHeaders(resp *http.Response) (framing, error) {
	fr := framing{length: -1}
	var clBuf [24]byte
	var cl []byte // the first Content-Length: a copy, the buffer moves on
	badTrailer := false
	for first := true; ; first = false {
		name, value, err := c.field(first)
		if err != nil {
			return fr, fmt.Errorf("read response headers: %w", err)
		}
		if name == nil {
			break
		}
		switch {
		case asciiEqualFold(name, "Content-Length"):
			v := trimOWS(value)
			if fr.length >= 0 {
				// Duplicates must agree (RFC 9110 §8.6), as exactly the same text in net/http.
				if !bytes.Equal(v, cl) {
					return fr, fmt.Errorf("response has Content-Length %q and %q", string(cl), v)
				}
				continue
			}
			n, ok := parseContentLength(v)
			if !ok {
				return fr, fmt.Errorf("bad Content-Length %q", v)
			}
			fr.length, cl = n, append(clBuf[:0], v...)
		case asciiEqualFold(name, "Transfer-Encoding"):
			switch {
			case resp.ProtoMinor == 0:
				return fr, errors.New("HTTP/1.0 response with a Transfer-Encoding")
			case fr.chunked:
				return fr, errors.New("response has more than one Transfer-Encoding")
			case !asciiEqualFold(value, "chunked"):
				return fr, fmt.Errorf("unsupported Transfer-Encoding %q", value)
			}
			fr.chunked = true
		case asciiEqualFold(name, "Connection"):
			forEachElement(value, func(opt []byte) {
				fr.close = fr.close || asciiEqualFold(opt, "close")
				fr.keepAlive = fr.keepAlive || asciiEqualFold(opt, "keep-alive")
			})
		case asciiEqualFold(name, "Content-Type"):
			if resp.Header == nil {
				resp.Header = http.Header{}
			}
			resp.Header["Content-Type"] = append(resp.Header["Content-Type"], string(value))
		case asciiEqualFold(name, "Trailer"):
			forEachElement(value, func(f []byte) {
				badTrailer = badTrailer || asciiEqualFold(f, "Content-Length") || asciiEqualFold(f, "Transfer-Encoding") || asciiEqualFold(f, "Trailer")
			})
		}
	}
	if badTrailer && fr.chunked {
		// A trailer may not reframe the message (RFC 9110 §6.5.1); net/http refuses it here.
		return fr, errors.New("response announces a framing field as a trailer")
	}
	return fr, nil
}

// headLine reads one line of a head or a trailer section without the CRLF or bare LF that
// ends it (RFC 9112 §2.2 lets a recipient take a bare LF, as net/http does), counting its
// bytes against maxResponseHeaderBytes. The line is valid until the next read.
func (c *h1Conn) headLine() ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		// Longer than the buffer (rare): gathered in a copy, as far as the bound allows.
		long := append([]byte(nil), line...)
		for errors.Is(err, bufio.ErrBufferFull) && c.headBytes+len(long) <= maxResponseHeaderBytes {
			line, err = c.br.ReadSlice('\n')
			long = append(long, line...)
		}
		line = long
	}
	if c.headBytes += len(line); c.headBytes > maxResponseHeaderBytes {
		return nil, fmt.Errorf("response headers exceed %d bytes", maxResponseHeaderBytes)
	}
	if err != nil {
		if len(line) > 0 && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// field reads one field line of a head or a trailer section as net/http reads it: obs-fold
// continuation lines joined to it by a space (RFC 9112 §5.2), the name a token (a space
// before the colon is let through: such a name matches no field the gateway reads), the
// value visible characters, spaces and tabs. A nil name is the blank line ending the
// section. name and value are valid until the next read.
func (c *h1Conn) field(first bool) (name, value []byte, err error) {
	if first {
		if b, err := c.br.Peek(1); err == nil && isOWS(b[0]) {
			return nil, nil, errors.New("response header section starts with a continuation line")
		}
	}
	line, err := c.headLine()
	if err != nil || len(line) == 0 {
		return nil, nil, err
	}
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return nil, nil, fmt.Errorf("malformed response header %q", line)
	}
	line = trimOWS(line) // the line starts with no OWS: colon still indexes the colon
	// Unless the next line is buffered and starts otherwise, it may continue this one.
	if c.br.Buffered() == 0 || isOWS(c.peekByte()) {
		if line, err = c.unfold(line); err != nil {
			return nil, nil, err
		}
	}
	name, value = line[:colon], line[colon+1:]
	if !validFieldName(name) || !validFieldValue(value) {
		return nil, nil, fmt.Errorf("malformed response header %q", line)
	}
	for len(value) > 0 && isOWS(value[0]) {
		value = value[1:]
	}
	return name, value, nil
}

// peekByte returns the next buffered byte; there must be one.
func (c *h1Conn) peekByte() byte {
	b, _ := c.br.Peek(1)
	return b[0]
}

// unfold joins to line the obs-fold continuation lines after it, each after one space.
// line is copied first: reading on may move the buffer under it.
func (c *h1Conn) unfold(line []byte) ([]byte, error) {
	joined := append([]byte(nil), line...)
	for {
		folded := false
		for {
			b, err := c.br.Peek(1)
			if err != nil || !isOWS(b[0]) {
				break
			}
			c.br.Discard(1)
			c.headBytes++
			folded = true
		}
		if !folded {
			return joined, nil
		}
		next, err := c.headLine()
		if err != nil {
			return nil, err
		}
		joined = append(joined, ' ')
		joined = append(joined, trimOWS(next)...)
	}
}

// fieldNameByte marks the bytes of a token (RFC 9110 §5.6.2), and the space net/http lets
// into a field name; fieldValueByte those of a field value: all but controls other than
// HTAB.
var fieldNameByte, fieldValueByte = func() (name, value [256]bool) {
	for c := range 256 {
		name[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(" !#$%&'*+-.^_`|~", byte(c)) >= 0
		value[c] = c == '\t' || c >= ' ' && c != 0x7f
	}
	return name, value
}()

func validFieldName(b []byte) bool {
	for _, c := range b {
		if !fieldNameByte[c] {
			return false
		}
	}
	return len(b) > 0
}

// validFieldValue checks b eight bytes at a time where it can: a head is mostly values.
func validFieldValue(b []byte) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for ; len(b) >= 8; b = b[8:] {
		w := binary.LittleEndian.Uint64(b)
		del := w ^ 0x7f*ones
		// No byte below 0x20 and none 0x7f (the "has a byte less than n" word tricks): all
		// eight are valid. Else they are looked at one by one, as a tab is valid.
		if (w-0x20*ones)&^w&highs == 0 && (del-ones)&^del&highs == 0 {
			continue
		}
		for _, c := range b[:8] {
			if !fieldValueByte[c] {
				return false
			}
		}
	}
	for _, c := range b {
		if !fieldValueByte[c] {
			return false
		}
	}
	return true
}

func isOWS(c byte) bool { return c == ' ' || c == '\t' }

func trimOWS(b []byte) []byte {
	for len(b) > 0 && isOWS(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isOWS(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// forEachElement calls fn with each element of a comma-separated field value, trimmed.
func forEachElement(v []byte, fn func([]byte)) {
	for len(v) > 0 {
		var e []byte
		e, v, _ = bytes.Cut(v, []byte{','})
		fn(trimOWS(e))
	}
}

// parseContentLength parses a Content-Length as net/http does: decimal digits only (no
// sign), at most 2^63-1.
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' || n > (math.MaxInt64-int64(c-'0'))/10 {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseStatusLine parses "HTTP/1.x SP status SP reason" (spaces before the status are let
// through, as net/http does).
func parseStatusLine(line []byte) (*http.Response, error) {
	proto, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok || len(proto) != len("HTTP/1.1") || string(proto[:7]) != "HTTP/1." || proto[7] < '0' || proto[7] > '9' {
		return nil, fmt.Errorf("malformed response status line %q", line)
	}
	rest = bytes.TrimLeft(rest, " ")
	code, _, _ := bytes.Cut(rest, []byte{' '})
	if len(code) != 3 || code[0] < '1' || code[0] > '9' || code[1] < '0' || code[1] > '9' || code[2] < '0' || code[2] > '9' {
		return nil, fmt.Errorf("malformed response status line %q", line)
	}
	resp := &http.Response{
		StatusCode: int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0'),
		Status:     string(rest),
		Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: int(proto[7] - '0'),
	}
	switch resp.ProtoMinor {
	case 0:
		resp.Proto = "HTTP/1.0"
	case 1:
	default:
		resp.Proto = string(proto)
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
	excess  int64 // chunk framing beyond its allowance so far; see maxChunkOverhead
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
			crlf, err := b.c.br.Peek(2)
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				b.finish(err)
				return n, b.err
			}
			if string(crlf) != "\r\n" {
				b.finish(errors.New("malformed chunked response body: chunk data not followed by CRLF"))
				return n, b.err
			}
			b.c.br.Discard(2)
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

// maxChunkLine bounds a chunk size line, extensions included, as net/http does.
const maxChunkLine = 4096

// maxChunkOverhead is the chunk framing (size lines, extensions, CRLFs) a body may carry
// beyond 16 bytes a chunk and twice its data, as net/http counts it: an upstream cannot
// send megabytes of extensions for a byte of data.
const maxChunkOverhead = 16 << 10

// nextChunk reads a chunk size line as net/http does; a zero-size chunk ends the body
// (after its trailer section).
func (b *h1Body) nextChunk() error {
	line, err := b.c.br.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return errors.New("chunk size line too long")
	case err == io.EOF:
		return io.ErrUnexpectedEOF
	case err != nil:
		return err
	}
	// CRLF only, no bare LF and no CR inside (RFC 9112 §7.1, errata 7633).
	if cr := bytes.IndexByte(line, '\r'); cr < 0 || cr != len(line)-2 {
		return fmt.Errorf("malformed chunk size line %q", line)
	}
	line = line[:len(line)-2]
	if len(line) >= maxChunkLine {
		return errors.New("chunk size line too long")
	}
	b.excess += int64(len(line)) + 2
	size, _, _ := bytes.Cut(bytes.TrimRight(line, " \t"), []byte{';'})
	n, ok := parseChunkSize(size)
	if !ok {
		return fmt.Errorf("malformed chunk size %q", line)
	}
	if b.excess = max(b.excess-16-2*int64(n), 0); b.excess > maxChunkOverhead {
		return errors.New("chunked response body is mostly framing")
	}
	if n == 0 {
		if err := b.skipTrailers(); err != nil {
			return err
		}
		b.finish(io.EOF)
		return nil
	}
	b.left, b.inChunk = n, true
	return nil
}

// parseChunkSize parses 1 to 16 hex digits; a size past int64 is refused (no body is
// that long).
func parseChunkSize(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 16 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		n = n<<4 | uint64(c)
	}
	return int64(n), n <= math.MaxInt64
}

// skipTrailers reads the trailer section after the last chunk, up to its blank line; the
// gateway uses no trailer. Like net/http it wants the whole section in the read buffer
// (the bound on it) and its fields well formed.
func (b *h1Body) skipTrailers() error {
	br := b.c.br
	p, err := br.Peek(2)
	switch {
	case string(p) == "\r\n": // the common case: no trailers
		br.Discard(2)
		return nil
	case len(p) < 2:
		return io.ErrUnexpectedEOF
	case err != nil:
		return err
	}
	for n := 4; ; n++ { // the blank line that ends the section must be buffered
		p, err := br.Peek(n)
		if bytes.HasSuffix(p, []byte("\r\n\r\n")) {
			break
		}
		if err != nil {
			return errors.New("chunked response trailer section too long")
		}
	}
	b.c.headBytes = 0
	for first := true; ; first = false {
		name, _, err := b.c.field(first)
		if err != nil {
			return fmt.Errorf("read response trailers: %w", err)
		}
		if name == nil {
			return nil
		}
	}
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
