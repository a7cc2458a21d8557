package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
	"github.com/venna/metering/aggregate"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/schema"
	"github.com/venna/metering/spend"
)

const testPrices = `currency: USD
prices:
  - {model: m, effective_from: "2020-01-01T00:00:00Z", input: "2.50", cached_input: "1.25", output: "10.00"}
`

// env is one test's database with the jobs webhooks read from, and a dispatcher whose
// clock the test moves.
type env struct {
	t      *testing.T
	db     string
	conn   driver.Conn
	prices *invoice.PriceBook
	iv     *invoice.Invoicer
	agg    *aggregate.Aggregator
	spend  *spend.Store
	store  *Store
	d      *Dispatcher
	logs   *testenv.SyncBuffer
	clock  *clock
}

// clock is a dispatcher's clock, moved by the test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	ccfg, conn := testenv.ClickHouse(t)
	pb, err := invoice.ParsePriceBook([]byte(testPrices))
	if err != nil {
		t.Fatal(err)
	}
	// A long grace keeps last month's invoice a draft until the test finalizes it.
	iv, err := invoice.New(invoice.Config{Database: ccfg.Database, Grace: 24 * 365 * time.Hour}, conn, pb)
	if err != nil {
		t.Fatal(err)
	}
	agg, err := aggregate.New(aggregate.Config{Database: ccfg.Database}, conn)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: ccfg.Database, conn: conn, prices: pb, iv: iv, agg: agg, spend: spend.NewStore(conn, ccfg.Database),
		store: NewStore(conn, ccfg.Database), logs: &testenv.SyncBuffer{}, clock: &clock{t: time.Now().UTC()}}
	e.store.now = e.clock.now // replays and rotations on the dispatcher's clock
	e.d = e.dispatcher(cfg, "dispatcher-1")
	return e
}

// dispatcher is a Dispatcher on the test's database and clock.
func (e *env) dispatcher(cfg Config, name string) *Dispatcher {
	e.t.Helper()
	cfg.Database, cfg.Name = e.db, name
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := New(cfg, e.conn, Sources{Invoices: e.iv, Credits: e.iv, Spend: e.spend, Prices: e.prices}, log)
	if err != nil {
		e.t.Fatal(err)
	}
	d.now = e.clock.now
	return d
}

// contextWithCancel is a context the test cancels, cancelled at its end in any case.
func contextWithCancel(t testing.TB) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return c, cancel
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

var eventSeq atomic.Int64

// usage inserts completions of model m into usage_events (ingested now) and rolls up.
func (e *env) usage(ws string, at time.Time, n int, prompt, completion int64) {
	e.t.Helper()
	evs := make([]schema.UsageEvent, n)
	for i := range evs {
		id := fmt.Sprintf("ev-%d", eventSeq.Add(1))
		evs[i] = schema.UsageEvent{SchemaVersion: 1, EventID: id, OccurredAt: at, WorkspaceID: ws, APIKeyID: "key_" + ws, Model: "m",
			Upstream: "up", UpstreamModel: "up-m", RequestID: "req-" + id, Status: "ok", HTTPStatus: 200, LatencyMS: 5,
			PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
	}
	testenv.InsertEvents(e.t, e.conn, e.db, evs)
	if _, err := e.agg.Run(ctx(e.t)); err != nil {
		e.t.Fatal(err)
	}
}

// lastMonth is the month before the current one (UTC).
func lastMonth() (start, end time.Time) {
	cur, _ := invoice.Month(time.Now())
	return invoice.Month(cur.Add(-time.Hour))
}

// endpoint registers an endpoint and returns it with its secret.
func (e *env) endpoint(spec EndpointSpec) (Endpoint, string) {
	e.t.Helper()
	ep, secret, err := e.store.CreateEndpoint(ctx(e.t), spec)
	if err != nil {
		e.t.Fatal(err)
	}
	return ep, secret
}

func (e *env) detect() DetectResult {
	e.t.Helper()
	res, err := e.d.Detect(ctx(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

// dispatch runs one round of d and waits for its attempts; it returns how many it sent.
func (e *env) dispatch(d *Dispatcher) int {
	e.t.Helper()
	n, err := d.Dispatch(ctx(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	d.Wait()
	return n
}

func (e *env) deliveries(f DeliveryFilter) []Delivery {
	e.t.Helper()
	ds, err := e.store.Deliveries(ctx(e.t), f)
	if err != nil {
		e.t.Fatal(err)
	}
	return ds
}

func (e *env) grant(ws, amount string) invoice.Grant {
	e.t.Helper()
	g, err := e.iv.AddGrant(ctx(e.t), invoice.Grant{WorkspaceID: ws, AmountUSD: decimal.RequireFromString(amount),
		EffectiveFrom: time.Now().UTC().Truncate(time.Hour).Add(-24 * time.Hour)})
	if err != nil {
		e.t.Fatal(err)
	}
	return g
}

// received is one request a receiver got.
type received struct {
	body    []byte
	header  http.Header
	event   Event
	status  int // what the receiver answered
	timeout bool
}

// receiver is a real HTTP endpoint whose answers the test scripts: answer returns the
// status to answer the nth request (from 1) with, or 0 to hang until the request is
// given up by its sender.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	got    []received
	answer func(n int, ev Event) int
	// hold, when set, is waited on before answering (a receiver that hangs until released).
	hold    chan struct{}
	waiting atomic.Int32 // requests held right now
	maxHeld atomic.Int32 // the most held at once
}

func newReceiver(t *testing.T, answer func(n int, ev Event) int) *receiver {
	t.Helper()
	r := &receiver{t: t, answer: answer}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	var ev Event
	json.Unmarshal(body, &ev)
	r.mu.Lock()
	n := len(r.got) + 1
	status := 200
	if r.answer != nil {
		status = r.answer(n, ev)
	}
	r.got = append(r.got, received{body: body, header: req.Header.Clone(), event: ev, status: status, timeout: status == 0})
	hold := r.hold
	r.mu.Unlock()
	if hold != nil {
		held := r.waiting.Add(1)
		for {
			m := r.maxHeld.Load()
			if held <= m || r.maxHeld.CompareAndSwap(m, held) {
				break
			}
		}
		select {
		case <-hold:
		case <-req.Context().Done():
		}
		r.waiting.Add(-1)
	}
	if status == 0 {
		<-req.Context().Done() // the sender's timeout ends it
		return
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"received":%q}`, ev.ID)
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

func (r *receiver) url() string { return r.srv.URL + "/hooks/venna?source=test" }
