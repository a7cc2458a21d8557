package webhook

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/sqlset"
)

// Config configures a Dispatcher.
type Config struct {
	Database string
	// Timeout bounds one attempt: connecting, sending the event and reading the answer
	// (VENNA_WEBHOOK_TIMEOUT). Default 10s.
	Timeout time.Duration
	// Concurrency bounds the attempts in flight in this process (VENNA_WEBHOOK_CONCURRENCY).
	// Default 16.
	Concurrency int
	// PerEndpoint bounds the attempts in flight to one endpoint, so that a slow or dead
	// receiver holds at most that many of Concurrency and never stalls the others.
	// Default Concurrency/4, at least 1.
	PerEndpoint int
	// RetryBase is the delay before the first retry; each next one doubles, up to RetryMax
	// (Backoff). Defaults 30s and 6h.
	RetryBase, RetryMax time.Duration
	// RetryFor is how long after its creation a delivery is retried; the first attempt
	// that fails with its next retry past it gives the delivery up (VENNA_WEBHOOK_RETRY_FOR).
	// Default 72h.
	RetryFor time.Duration
	// Overlap is how far before the start of the previous scan a scan for new facts looks
	// again: facts are found by the time their writer stamped on them, taken before its
	// write lands (an invoice run stamps its invoices when it starts). Default 1h.
	Overlap time.Duration
	// Settle is how long a dispatcher waits after writing its claims before it reads
	// them back: a rival's claim stamped earlier has landed by then unless its insert
	// took longer. Default 100ms.
	Settle time.Duration
	// Name identifies this process in claims and in the delivery log. Default
	// host-pid-random.
	Name string
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Database == "":
		return errors.New("webhook: Database (VENNA_CLICKHOUSE_DATABASE) is empty")
	case c.Timeout < 0:
		return errors.New("webhook: Timeout (VENNA_WEBHOOK_TIMEOUT) is negative")
	case c.Concurrency < 0:
		return errors.New("webhook: Concurrency (VENNA_WEBHOOK_CONCURRENCY) is negative")
	case c.PerEndpoint < 0:
		return errors.New("webhook: PerEndpoint is negative")
	case c.RetryBase < 0 || c.RetryMax < 0:
		return errors.New("webhook: RetryBase or RetryMax is negative")
	case c.RetryMax > 0 && c.RetryMax < c.RetryBase:
		return errors.New("webhook: RetryMax is below RetryBase")
	case c.RetryFor < 0:
		return errors.New("webhook: RetryFor (VENNA_WEBHOOK_RETRY_FOR) is negative")
	case c.Overlap < 0:
		return errors.New("webhook: Overlap is negative")
	case c.Settle < 0:
		return errors.New("webhook: Settle is negative")
	}
	return nil
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Timeout, 10*time.Second)
	def(&c.RetryBase, 30*time.Second)
	def(&c.RetryMax, 6*time.Hour)
	def(&c.RetryFor, 72*time.Hour)
	def(&c.Overlap, time.Hour)
	def(&c.Settle, 100*time.Millisecond)
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.PerEndpoint == 0 {
		c.PerEndpoint = max(1, c.Concurrency/4)
	}
	c.PerEndpoint = min(c.PerEndpoint, c.Concurrency)
	if c.Name == "" {
		host, _ := os.Hostname()
		c.Name = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), randomHex(3))
	}
	return c
}

// Backoff is the delay after a delivery's nth failed attempt: RetryBase doubled n-1
// times, at most RetryMax, plus up to 10 % of it fixed by the delivery and n, which spreads
// the retries of deliveries that failed together without making the schedule random.
func (c Config) Backoff(n int, deliveryID string) time.Duration {
	c = c.withDefaults()
	d := c.RetryBase
	for i := 1; i < n && d < c.RetryMax; i++ {
		d *= 2
	}
	d = min(d, c.RetryMax)
	h := sha256.Sum256([]byte(deliveryID + "|" + strconv.Itoa(n)))
	return d + d/1000*time.Duration(binary.BigEndian.Uint64(h[:8])%101)
}

// lease is how long a claim keeps other dispatchers off a delivery: longer than an
// attempt and the writes after it, so only a process that stalls or dies loses it.
func (c Config) lease() time.Duration { return c.Timeout + time.Minute }

// Dispatcher detects new events (Detect) and delivers them (Dispatch, Run). Any number may
// run at once, one per aggregate replica: they record the same events, and each delivery
// is claimed before it is sent (see Dispatch).
type Dispatcher struct {
	cfg     Config
	conn    driver.Conn
	store   *Store
	src     Sources
	log     *slog.Logger
	client  *http.Client
	now     func() time.Time
	metrics *metrics

	mu        sync.Mutex
	busy      int            // attempts in flight
	inflight  map[string]int // attempts in flight by endpoint
	sending   map[string]bool
	wg        sync.WaitGroup
	wake      chan struct{}
	depletion time.Time // when depletion was last checked
	// replicated: the deliveries table is replicated, so claims are synced before they
	// are read back (syncClaims); nil until the table's engine is read.
	replicated *bool
}

// New returns a Dispatcher; it refuses an invalid Config.
func New(cfg Config, conn driver.Conn, src Sources, log *slog.Logger) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if src.Invoices == nil {
		return nil, errors.New("webhook: Sources.Invoices is nil")
	}
	cfg = cfg.withDefaults()
	dialer := &net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}
	transport := &http.Transport{Proxy: http.ProxyFromEnvironment, DialContext: dialer.DialContext, ForceAttemptHTTP2: true,
		TLSHandshakeTimeout: cfg.Timeout, MaxIdleConnsPerHost: cfg.PerEndpoint, IdleConnTimeout: 90 * time.Second}
	return &Dispatcher{cfg: cfg, conn: conn, store: NewStore(conn, cfg.Database), src: src, log: log, now: time.Now,
		// A redirect is not a delivery: the receiver must answer 2xx itself.
		client:   &http.Client{Transport: transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		inflight: map[string]int{}, sending: map[string]bool{}, wake: make(chan struct{}, 1), metrics: newMetrics()}, nil
}

// Poke makes Run dispatch now rather than on its next wake-up (the webhook job pokes it
// after each scan).
func (d *Dispatcher) Poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run dispatches whenever it is poked or an attempt ends, until ctx ends; then it waits
// for the attempts in flight, each of which ends within Timeout.
func (d *Dispatcher) Run(ctx context.Context) error {
	for {
		if _, err := d.Dispatch(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("webhook dispatch failed", "err", err)
		}
		select {
		case <-ctx.Done():
			d.Wait()
			return nil
		case <-d.wake:
		}
	}
}

// Wait waits for the attempts in flight.
func (d *Dispatcher) Wait() { d.wg.Wait() }

// Dispatch starts the deliveries due now, as many as the free capacity takes, without
// waiting for them (Wait does); it returns how many it started.
//
// Each is claimed first, so that two dispatchers (aggregate replicas) rarely send one
// delivery twice: 1. read what is due and not claimed, 2. write a claim row one step
// above the state read (the earliest claim of a step wins, whoever's lands last), 3. wait
// Settle, 4. read the deliveries back and send those whose winning row is this
// dispatcher's claim. Two dispatchers both send only when a rival's claim, stamped
// earlier, lands more than Settle after this one's, or when a claim outlives its lease (a
// stalled process): at least once, with the event ID for receivers to drop the copy.
func (d *Dispatcher) Dispatch(ctx context.Context) (int, error) {
	now := d.now().UTC()
	d.mu.Lock()
	free := d.cfg.Concurrency - d.busy
	room := map[string]int{}
	var full []string
	for ep, n := range d.inflight {
		if n >= d.cfg.PerEndpoint {
			full = append(full, ep)
		}
		room[ep] = d.cfg.PerEndpoint - n
	}
	sending := make([]string, 0, len(d.sending))
	for id := range d.sending {
		sending = append(sending, id)
	}
	d.mu.Unlock()
	if free <= 0 {
		return 0, nil
	}
	eps, err := d.store.endpoints(ctx, "1 = 1")
	if err != nil {
		return 0, err
	}
	byID := map[string]Endpoint{}
	for _, e := range eps {
		byID[e.ID] = e
		if !e.Enabled {
			full = append(full, e.ID) // its deliveries wait until it is enabled again
		}
	}
	q := sqlset.Fill(dueDeliveriesSQL, "db", d.cfg.Database, "now", strconv.FormatInt(now.Unix(), 10),
		"per_endpoint", strconv.Itoa(d.cfg.PerEndpoint), "limit", strconv.Itoa(4*free))
	due, err := d.store.deliveries(ctx, q, orEmpty(full), orEmpty(sending))
	if err != nil || len(due) == 0 {
		return 0, err
	}
	var eventIDs, endpointIDs []string
	for _, c := range due {
		eventIDs, endpointIDs = append(eventIDs, c.EventID), append(endpointIDs, c.EndpointID)
	}
	payloads, err := d.payloads(ctx, eventIDs)
	if err != nil {
		return 0, err
	}
	keys, err := d.store.secrets(ctx, slices.Compact(slices.Sorted(slices.Values(endpointIDs))), now)
	if err != nil {
		return 0, err
	}
	var claims []Delivery
	claimedAt := time.Now()
	for _, c := range due {
		if len(claims) == free {
			break
		}
		e, ok := byID[c.EndpointID]
		if !ok || payloads[c.EventID] == nil || len(keys[c.EndpointID]) == 0 {
			// An endpoint or event still being written (the detector writes deliveries
			// first), or an endpoint without a secret: left for a later round.
			continue
		}
		if seqOf(c.version) >= maxSeq {
			d.giveUp(ctx, c)
			continue
		}
		r, seen := room[e.ID]
		if !seen {
			r = d.cfg.PerEndpoint
		}
		if r <= 0 {
			continue
		}
		room[e.ID] = r - 1
		c.claimedBy, c.claimedUntil = d.cfg.Name, now.Add(d.cfg.lease())
		c.version = claimVersion(seqOf(c.version)+1, claimedAt)
		claims = append(claims, c)
	}
	if len(claims) == 0 {
		return 0, nil
	}
	if err := insertDeliveries(ctx, d.conn, d.cfg.Database, claims); err != nil {
		return 0, fmt.Errorf("claim: %w", err)
	}
	select {
	case <-time.After(d.cfg.Settle):
	case <-ctx.Done():
		return 0, ctx.Err() // the claims expire with their lease
	}
	d.syncClaims(ctx)
	ids := make([]string, len(claims))
	for i, c := range claims {
		ids[i] = c.ID
	}
	back, err := d.store.deliveries(ctx, sqlset.Fill(deliveriesSQL, "db", d.cfg.Database, "where", "has(?, delivery_id)",
		"limit", strconv.Itoa(len(ids))), ids)
	if err != nil {
		return 0, fmt.Errorf("read claims back: %w", err)
	}
	won := map[string]bool{}
	mine := map[string]uint64{}
	for _, c := range claims {
		mine[c.ID] = c.version
	}
	for _, b := range back {
		won[b.ID] = b.version == mine[b.ID] && b.claimedBy == d.cfg.Name
	}
	started := 0
	for _, c := range claims {
		if !won[c.ID] {
			d.metrics.lostClaims.Inc()
			continue
		}
		d.mu.Lock()
		d.busy++
		d.inflight[c.EndpointID]++
		d.sending[c.ID] = true
		d.mu.Unlock()
		d.wg.Add(1)
		go d.attempt(c, byID[c.EndpointID], keys[c.EndpointID], payloads[c.EventID])
		started++
	}
	return started, nil
}

// syncTimeout bounds the wait for this server to fetch the other replicas' claims.
const syncTimeout = 10 * time.Second

// syncClaims makes the server this dispatcher reads fetch the claims written on the other
// servers before they are read back, when the deliveries table is replicated (a cluster:
// each aggregate role's dispatcher may be connected to another server). Settle lets a
// rival's claim reach ZooKeeper's replication log; SYSTEM SYNC REPLICA then waits until
// this replica has fetched what the log holds, so both dispatchers read the same claims.
// Without it, a rival's claim was still in flight at read-back for 12 to 72 of 80
// deliveries in TestClusterWebhookDispatchersOnTwoServers (ClickHouse 18.16, 2x2), each
// sent twice. A sync that fails is logged and the claims are read anyway: at least once.
func (d *Dispatcher) syncClaims(ctx context.Context) {
	d.mu.Lock()
	known := d.replicated
	d.mu.Unlock()
	if known == nil {
		var engine string
		if err := d.conn.QueryRow(ctx, deliveriesEngineSQL, d.cfg.Database).Scan(&engine); err != nil {
			d.log.Warn("webhook: cannot read the deliveries table's engine", "err", err)
			return
		}
		replicated := strings.HasPrefix(engine, "Replicated") || strings.HasPrefix(engine, "Shared")
		known = &replicated
		d.mu.Lock()
		d.replicated = known
		d.mu.Unlock()
	}
	if !*known {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if err := d.conn.Exec(sctx, sqlset.Fill(syncDeliveriesSQL, "db", d.cfg.Database)); err != nil {
		d.log.Warn("webhook: claims read back before this server fetched the other replicas' (a delivery may be sent twice)", "err", err)
	}
}

// orEmpty is s, or a list of only "" for none: ClickHouse 18.16 cannot type has([], x),
// and no ID is empty.
func orEmpty(s []string) []string {
	if len(s) == 0 {
		return []string{""}
	}
	return s
}

func (d *Dispatcher) payloads(ctx context.Context, ids []string) (map[string][]byte, error) {
	rows, err := d.conn.Query(ctx, sqlset.Fill(payloadsSQL, "db", d.cfg.Database), slices.Compact(slices.Sorted(slices.Values(ids))))
	if err != nil {
		return nil, fmt.Errorf("read webhook event bodies: %w", err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var id, payload string
		if err := rows.Scan(&id, &payload); err != nil {
			return nil, fmt.Errorf("scan webhook event body: %w", err)
		}
		out[id] = []byte(payload)
	}
	return out, rows.Err()
}

// giveUp marks a delivery failed without an attempt: it has run out of version steps
// (thousands of writes, which no schedule makes).
func (d *Dispatcher) giveUp(ctx context.Context, c Delivery) {
	c.Status, c.claimedBy, c.claimedUntil = StatusFailed, "", time.Time{}
	c.version = stepVersion(seqOf(c.version)+1, time.Now())
	if err := insertDeliveries(ctx, d.conn, d.cfg.Database, []Delivery{c}); err != nil {
		d.log.Error("webhook delivery not given up", "delivery", c.ID, "err", err)
	}
}

// maxResponse is how much of an answer's body is kept in the log, and maxDrain how much
// is read at all (so that the connection can be reused).
const (
	maxResponse = 512
	maxDrain    = 64 << 10
)

// attempt sends c once and records the outcome: 1. the attempt in the log 2. the
// delivery's next state. A crash between them leaves the claim to expire and the
// delivery to be sent again: the log then shows two attempts of one number.
func (d *Dispatcher) attempt(c Delivery, e Endpoint, keys []signingKey, payload []byte) {
	defer func() {
		d.mu.Lock()
		d.busy--
		if d.inflight[c.EndpointID]--; d.inflight[c.EndpointID] <= 0 {
			delete(d.inflight, c.EndpointID)
		}
		delete(d.sending, c.ID)
		d.mu.Unlock()
		d.wg.Done()
		d.Poke() // room for another
	}()
	n := c.AttemptCount + 1
	start := d.now().UTC()
	got := d.post(c, e, keys, payload, n)
	a := Attempt{Attempt: n, URL: e.URL, StartedAt: start.Truncate(time.Second), DurationMS: int(got.took.Milliseconds()),
		StatusCode: got.code, Response: got.body, Dispatcher: d.cfg.Name}
	next := c
	next.AttemptCount, next.LastAttemptAt, next.LastStatusCode, next.LastError = n, a.StartedAt, got.code, ""
	next.claimedBy, next.claimedUntil = "", time.Time{}
	switch {
	case got.err == nil:
		a.Outcome, next.Status, next.NextAttemptAt = OutcomeSucceeded, StatusSucceeded, time.Time{}
	default:
		a.Error, next.LastError = got.err.Error(), got.err.Error()
		retry := start.Add(d.cfg.Backoff(n, c.ID)).Truncate(time.Second)
		if retry.After(c.CreatedAt.Add(d.cfg.RetryFor)) {
			a.Outcome, next.Status, next.NextAttemptAt = OutcomeFailed, StatusFailed, time.Time{}
		} else {
			a.Outcome, next.NextAttemptAt, a.NextAttemptAt = OutcomeRetrying, retry, retry
		}
	}
	next.version = stepVersion(seqOf(c.version)+1, time.Now())
	d.metrics.observe(a.Outcome, got.took)
	// The outcome is written even when shutdown has begun: it is what keeps the delivery
	// from being sent again.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := chdb.Insert(ctx, d.conn, sqlset.Fill(insertAttemptSQL, "db", d.cfg.Database), [][]any{{c.EndpointID, c.ID, uint32(n),
		c.EventID, c.EventType, c.WorkspaceID, e.URL, a.StartedAt, uint32(a.DurationMS), uint16(got.code), a.Error, a.Response,
		a.Outcome, zeroTime(a.NextAttemptAt), d.cfg.Name}})
	if err == nil {
		err = insertDeliveries(ctx, d.conn, d.cfg.Database, []Delivery{next})
	}
	if err != nil {
		d.log.Error("webhook attempt not recorded; the delivery is sent again once its claim expires", "delivery", c.ID, "attempt", n, "err", err)
		return
	}
	switch a.Outcome {
	case OutcomeFailed:
		d.log.Warn("webhook delivery given up", "delivery", c.ID, "event", c.EventID, "endpoint", c.EndpointID, "attempts", n, "err", a.Error)
	case OutcomeRetrying:
		d.log.Debug("webhook attempt failed", "delivery", c.ID, "endpoint", c.EndpointID, "attempt", n, "next", next.NextAttemptAt, "err", a.Error)
	}
}

// answer is what one attempt got.
type answer struct {
	code int           // 0: no HTTP answer
	body string        // the start of the answer's body
	err  error         // nil for a 2xx
	took time.Duration // from sending to the end of the answer
}

// post sends the event once. A non-2xx answer is an error "HTTP <code>".
func (d *Dispatcher) post(c Delivery, e Endpoint, keys []signingKey, payload []byte, n int) answer {
	secrets := make([]string, len(keys))
	for i, k := range keys {
		secrets[i] = k.secret
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL, bytes.NewReader(payload))
	if err != nil {
		return answer{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(EventIDHeader, c.EventID)
	req.Header.Set(EventTypeHeader, c.EventType)
	req.Header.Set(DeliveryHeader, c.ID)
	req.Header.Set(AttemptHeader, strconv.Itoa(n))
	began := time.Now()
	// Signed at the moment it is sent: receivers check the timestamp against their clock.
	req.Header.Set(SignatureHeader, Sign(payload, began, secrets...))
	resp, err := d.client.Do(req)
	if err != nil {
		return answer{err: sendError(err, d.cfg.Timeout), took: time.Since(began)}
	}
	head := make([]byte, maxResponse)
	k, _ := io.ReadFull(resp.Body, head)
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain)) // a 2xx counts even if the rest of its body is cut off
	resp.Body.Close()
	a := answer{code: resp.StatusCode, body: strings.ToValidUTF8(string(head[:k]), "?"), took: time.Since(began)}
	if a.code < 200 || a.code > 299 {
		a.err = fmt.Errorf("HTTP %d", a.code)
	}
	return a
}

// sendError says why no answer came, without the URL (it is in the log row already).
func sendError(err error, timeout time.Duration) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no answer within %s", timeout)
	}
	return err
}

// metrics are the dispatcher's Prometheus series.
type metrics struct {
	attempts   *prometheus.CounterVec
	duration   prometheus.Histogram
	events     *prometheus.CounterVec
	lostClaims prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "venna_webhook_attempts_total",
			Help: "Webhook delivery attempts by outcome: succeeded, retrying (failed, retried later), failed (failed, given up)."}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "venna_webhook_attempt_duration_seconds",
			Help: "Duration of webhook delivery attempts, from sending to the end of the answer.", Buckets: prometheus.ExponentialBuckets(0.005, 3, 9)}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "venna_webhook_events_total",
			Help: "Webhook events recorded by this process's scans, by type."}, []string{"type"}),
		lostClaims: prometheus.NewCounter(prometheus.CounterOpts{Name: "venna_webhook_lost_claims_total",
			Help: "Deliveries this process claimed that another dispatcher claimed first (it did not send them)."}),
	}
	for _, o := range []string{OutcomeSucceeded, OutcomeRetrying, OutcomeFailed} {
		m.attempts.WithLabelValues(o)
	}
	for _, t := range EventTypes {
		m.events.WithLabelValues(t)
	}
	return m
}

func (m *metrics) observe(outcome string, took time.Duration) {
	m.attempts.WithLabelValues(outcome).Inc()
	m.duration.Observe(took.Seconds())
}

// Instrument registers the dispatcher's metrics on reg.
func (d *Dispatcher) Instrument(reg prometheus.Registerer) error {
	inflight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "venna_webhook_attempts_in_flight",
		Help: "Webhook delivery attempts in flight in this process."}, func() float64 {
		d.mu.Lock()
		defer d.mu.Unlock()
		return float64(d.busy)
	})
	for _, c := range []prometheus.Collector{d.metrics.attempts, d.metrics.duration, d.metrics.events, d.metrics.lostClaims, inflight} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
