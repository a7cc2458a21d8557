package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"testing"
	"time"
)

// The upstream transport reads responses with its own parser; FuzzH1Response holds it to
// net/http's on the same bytes. Both must accept or both refuse a response, and where they
// accept they must agree on what the gateway uses of it: the status, Content-Type, the
// announced length, the body, whether the connection may carry the next exchange and, if
// so, where the next response starts (a disagreement there is a desynchronised connection:
// the next request would read this response's leftovers as its answer).
//
// h1 is stricter than net/http on purpose in the cases h1MustRefuse lists, and does not
// reuse a connection whose response had both Content-Length and Transfer-Encoding.
func FuzzH1Response(f *testing.F) {
	for _, s := range h1Seeds {
		f.Add([]byte(s), uint8(0))
	}
	// Delivered in small pieces: heads, chunk lines and CRLFs split across reads.
	for _, s := range h1Seeds[:12] {
		f.Add([]byte(s), uint8(1))
		f.Add([]byte(s), uint8(7))
	}
	f.Fuzz(func(t *testing.T, raw []byte, step uint8) {
		checkH1AgainstNetHTTP(t, raw, int(step))
	})
}

var h1Seeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"id\":\"x\"}\n",
	"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nb\r\ndata: one\n\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nhel\r\n2;a;b=\"c\"\r\nlo\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n",
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
	"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Type: text/plain;\r\n charset=utf-8\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc",
	"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi!",
	"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\u00a0\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\n\r\nto the end",
	"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.0 200 OK\r\nConnection: x\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 ;x\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbroken trailer\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX: a\r\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 0\r\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-\x01: 1\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\n: empty name\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\n Folded: first\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n 0\r\n\r\n0123456789",
	"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1  200  OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nframes",
	"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.x 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.9 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Type: a\r\nContent-Type: b\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\nContent-Length: 13\r\n\r\n{\"error\":{}}\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
	"",
	"HTTP/1.1 200 OK\r\n",
}

// Responses too large to be good fuzzing seeds (mutating and minimising them is slow), read
// by both parsers here, each delivered whole and in pieces.
func TestH1ReadsLargeResponsesLikeNetHTTP(t *testing.T) {
	const ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
	// A filler field that makes the head exactly n bytes long.
	head := func(n int) string {
		filler := n - len(ok) - len("X: \r\n") - len("\r\n")
		return ok + "X: " + strings.Repeat("x", filler) + "\r\n\r\n"
	}
	for name, raw := range map[string]string{
		"head of exactly the bound": head(maxResponseHeaderBytes),
		"head one byte over":        head(maxResponseHeaderBytes + 1),
		"interim heads over the bound": strings.Repeat("HTTP/1.1 100 Continue\r\nX: "+strings.Repeat("x", 1000)+"\r\n\r\n", 1100) +
			ok + "\r\n",
		"field line longer than the buffer":  "HTTP/1.1 200 OK\r\nX-Long: " + strings.Repeat("x", 3*h1ReadBufferSize) + "\r\nContent-Length: 2\r\n\r\nhi",
		"folded line longer than the buffer": "HTTP/1.1 200 OK\r\nContent-Type: a\r\n " + strings.Repeat("x", 3*h1ReadBufferSize) + "\r\nContent-Length: 2\r\n\r\nhi",
		"chunk extensions far beyond the data": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
			strings.Repeat("1;"+strings.Repeat("e", 100)+"\r\nx\r\n", 200) + "0\r\n\r\n",
		"chunk extensions within the allowance": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
			strings.Repeat("40;"+strings.Repeat("e", 100)+"\r\n"+strings.Repeat("x", 64)+"\r\n", 200) + "0\r\n\r\n",
		"chunk size line of 4095 bytes": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;" + strings.Repeat("e", 4093) + "\r\nx\r\n0\r\n\r\n",
		"chunk size line of 4096 bytes": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;" + strings.Repeat("e", 4094) + "\r\nx\r\n0\r\n\r\n",
		"trailers filling the buffer": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" +
			strings.Repeat("X: "+strings.Repeat("t", 95)+"\r\n", h1ReadBufferSize/100-1) + "\r\n",
		"trailers beyond the buffer": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" +
			strings.Repeat("X: "+strings.Repeat("t", 95)+"\r\n", h1ReadBufferSize/100+1) + "\r\n",
		"long body": "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("b", 100000),
	} {
		t.Run(name, func(t *testing.T) {
			for _, step := range []int{0, 1, 4093} {
				checkH1AgainstNetHTTP(t, []byte(raw), step)
			}
		})
	}
}

// h1Outcome is what the gateway uses of a response, or the error that refused it.
type h1Outcome struct {
	err         error
	status      int
	contentType []string
	length      int64 // resp.ContentLength
	body        []byte
	keep        bool   // the connection may carry the next exchange
	rest        []byte // what follows the response on a kept connection
}

func (o h1Outcome) String() string {
	if o.err != nil {
		return o.err.Error()
	}
	return fmt.Sprintf("status %d, Content-Type %q, length %d, body %s, keep %v, then %s",
		o.status, o.contentType, o.length, short(o.body), o.keep, short(o.rest))
}

// short quotes b, cut to a readable length.
func short(b []byte) string {
	if len(b) > 200 {
		return fmt.Sprintf("%q... (%d bytes)", b[:200], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// h1Head is one head the reference read (interim ones included): its bytes and version.
type h1Head struct {
	raw                  []byte
	protoMajor, protoMin int
}

// field reports whether the head has a field named name, as net/http reads it: before
// ReadResponse drops some (Transfer-Encoding in HTTP/1.0).
func (h h1Head) field(name string) bool {
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(h.raw)))
	tp.ReadLine()
	hdr, _ := tp.ReadMIMEHeader()
	_, ok := hdr[name]
	return ok
}

// checkH1AgainstNetHTTP reads raw (step bytes a read, all at once if 0) with h1 and with
// net/http and fails t where they differ other than as h1 means to.
func checkH1AgainstNetHTTP(t *testing.T, raw []byte, step int) {
	t.Helper()
	got := readWithH1(t, raw, step)
	want, heads := readWithNetHTTP(raw, step)
	in := short(raw)
	if want.err == nil {
		if why := h1MustRefuse(want, heads); why != "" {
			if got.err == nil {
				t.Fatalf("%s: h1 read a response it must refuse (%s): %v", in, why, got)
			}
			return
		}
		// Both framings at once may be a smuggling attempt (RFC 9112 §6.3): h1 reads the
		// body as chunked, as net/http does, but does not trust what follows it.
		final := heads[len(heads)-1]
		if final.protoMin > 0 && final.field("Transfer-Encoding") && final.field("Content-Length") {
			want.keep, want.rest = false, nil
		}
	}
	switch {
	case got.err != nil && want.err != nil:
		return
	case got.err != nil:
		t.Fatalf("%s: net/http reads it (%v), h1 refuses it: %v", in, want, got.err)
	case want.err != nil:
		t.Fatalf("%s: net/http refuses it (%v), h1 reads it: %v", in, want.err, got)
	}
	if got.status != want.status || !slices.Equal(got.contentType, want.contentType) || got.length != want.length {
		t.Errorf("%s: h1 read status %d, Content-Type %q, length %d; net/http %d, %q, %d",
			in, got.status, got.contentType, got.length, want.status, want.contentType, want.length)
	}
	if !bytes.Equal(got.body, want.body) {
		t.Errorf("%s: h1 read the body %s, net/http %s", in, short(got.body), short(want.body))
	}
	if got.keep != want.keep || !bytes.Equal(got.rest, want.rest) {
		t.Errorf("%s: h1 keeps the connection %v with %s after the response; net/http %v with %s",
			in, got.keep, short(got.rest), want.keep, short(want.rest))
	}
}

// h1MustRefuse says why h1 refuses a response net/http reads, or "" if it must not.
func h1MustRefuse(want h1Outcome, heads []h1Head) string {
	n := 0
	for _, h := range heads {
		n += len(h.raw)
	}
	switch {
	case n > maxResponseHeaderBytes:
		return "heads over its bound, which net/http's Transport sets at 10 MB"
	case want.status < 100:
		// Status codes are 100-599 (RFC 9110 §15); net/http takes any three characters
		// Atoi reads as a non-negative number, "012" and "+99" included.
		return "status below 100"
	case want.status == http.StatusSwitchingProtocols:
		// The gateway never asks to upgrade: a 101 is not an answer to its request, and
		// what follows it is no HTTP body.
		return "101 Switching Protocols"
	}
	for _, h := range heads {
		switch {
		case h.protoMajor != 1:
			// net/http parses any HTTP/x.y status line; over an HTTP/1.1 connection only
			// HTTP/1.x answers have a framing h1 knows.
			return "HTTP version other than 1.x"
		case h.protoMin == 0 && h.field("Transfer-Encoding"):
			// net/http ignores it and frames the body by Content-Length or the close;
			// RFC 9112 §6.1 says to treat the framing as faulty.
			return "Transfer-Encoding in an HTTP/1.0 response"
		}
	}
	return ""
}

// stepReader hands out b at most step bytes a read (all it can if step is 0), as a network
// delivers a response in pieces.
type stepReader struct {
	b    []byte
	step int
	n    int // bytes read so far
}

func (r *stepReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	if r.step > 0 && len(p) > r.step {
		p = p[:r.step]
	}
	n := copy(p, r.b)
	r.b, r.n = r.b[n:], r.n+n
	return n, nil
}

// readConn is a net.Conn that reads from a stepReader: all an h1Conn needs to read a
// response and then be pooled or closed.
type readConn struct {
	*stepReader
	closed bool
}

func (c *readConn) Write(p []byte) (int, error)    { return len(p), nil }
func (c *readConn) Close() error                   { c.closed = true; return nil }
func (*readConn) LocalAddr() net.Addr              { return nil }
func (*readConn) RemoteAddr() net.Addr             { return nil }
func (*readConn) SetDeadline(time.Time) error      { return nil }
func (*readConn) SetReadDeadline(time.Time) error  { return nil }
func (*readConn) SetWriteDeadline(time.Time) error { return nil }

// fuzzRequest is the request both readers answer: a POST, as the gateway's always are.
func fuzzRequest() *http.Request {
	r, _ := http.NewRequest(http.MethodPost, "http://upstream.example/v1/chat/completions", nil)
	return r
}

// readWithH1 reads raw as the transport reads an upstream's answer: the head, then the
// body to its end, after which the connection is pooled or closed.
func readWithH1(t *testing.T, raw []byte, step int) h1Outcome {
	t.Helper()
	conn := &readConn{stepReader: &stepReader{b: raw, step: step}}
	// sweeping: a connection put in the pool schedules no sweep.
	tr := &h1Transport{maxIdle: 1, idleTimeout: time.Hour, idle: map[string][]*h1Conn{}, sweeping: true}
	c := &h1Conn{key: "upstream", conn: conn, tcp: conn, br: bufio.NewReaderSize(conn, h1ReadBufferSize)}
	resp, err := c.readResponse(fuzzRequest())
	if err != nil {
		return h1Outcome{err: err}
	}
	resp.Body = tr.body(c, resp, func() bool { return true })
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	kept := len(tr.idle["upstream"]) == 1
	if kept == conn.closed {
		t.Fatalf("%s: connection pooled %v and closed %v", short(raw), kept, conn.closed)
	}
	if err != nil {
		if kept {
			t.Fatalf("%s: a connection whose body failed (%v) went back to the pool", short(raw), err)
		}
		return h1Outcome{err: err}
	}
	o := h1Outcome{status: resp.StatusCode, contentType: resp.Header["Content-Type"], length: resp.ContentLength, body: body, keep: kept}
	if kept {
		o.rest, _ = io.ReadAll(c.br)
	}
	return o
}

// readWithNetHTTP reads raw as net/http's Transport does, through a buffer the size of
// h1's: ReadResponse until a response that is not 1xx (101 ends it too), then its body.
func readWithNetHTTP(raw []byte, step int) (h1Outcome, []h1Head) {
	src := &stepReader{b: raw, step: step}
	br := bufio.NewReaderSize(src, h1ReadBufferSize)
	var heads []h1Head
	var resp *http.Response
	for start := 0; ; {
		var err error
		if resp, err = http.ReadResponse(br, fuzzRequest()); err != nil {
			return h1Outcome{err: err}, heads
		}
		end := src.n - br.Buffered()
		heads = append(heads, h1Head{raw: raw[start:end], protoMajor: resp.ProtoMajor, protoMin: resp.ProtoMinor})
		start = end
		if resp.StatusCode < 100 || resp.StatusCode > 199 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return h1Outcome{err: err}, heads
	}
	o := h1Outcome{status: resp.StatusCode, contentType: resp.Header["Content-Type"], length: resp.ContentLength, body: body, keep: !resp.Close}
	if o.keep {
		o.rest, _ = io.ReadAll(br)
	}
	return o, heads
}
