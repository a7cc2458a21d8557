// Package webhook tells other systems what happened in Venna: invoices created, finalized
// and voided, budget alerts, credit grants created and voided, prepaid credit used up.
//
// It is an outbox read from ClickHouse: Detect scans the tables the invoice and spend jobs
// write for facts that are new since its last scan and records each as an event whose ID
// is fixed by the fact, so that nothing those jobs do waits for a receiver and a fact seen
// twice is one event. Dispatch sends every event to every endpoint subscribed to it as a
// POST signed with HMAC-SHA256 (Sign), retried with exponential backoff for RetryFor,
// every attempt logged in webhook_attempts; Replay sends an event again on demand.
// Delivery is at least once: receivers drop redeliveries by event ID. See README.md,
// "Webhooks".
package webhook

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/sqlset"
	"github.com/venna/metering/spend"
)

//go:embed queries.sql
var queriesFile string

// Queries is every statement this package sends to ClickHouse (queries.sql).
var Queries = sqlset.MustParse("webhook", queriesFile)

var (
	insertEndpointSQL   = Queries.Get("insert_endpoint")
	endpointsSQL        = Queries.Get("endpoints")
	insertSecretSQL     = Queries.Get("insert_secret")
	secretsSQL          = Queries.Get("secrets")
	readWatermarkSQL    = Queries.Get("read_watermark")
	advanceWatermarkSQL = Queries.Get("advance_watermark")
	changedInvoicesSQL  = Queries.Get("changed_invoices")
	changedAlertsSQL    = Queries.Get("changed_alerts")
	changedGrantsSQL    = Queries.Get("changed_grants")
	recordedEventsSQL   = Queries.Get("recorded_events")
	insertEventsSQL     = Queries.Get("insert_events")
	insertDeliveriesSQL = Queries.Get("insert_deliveries")
	dueDeliveriesSQL    = Queries.Get("due_deliveries")
	deliveriesSQL       = Queries.Get("deliveries")
	payloadsSQL         = Queries.Get("payloads")
	eventsSQL           = Queries.Get("events")
	insertAttemptSQL    = Queries.Get("insert_attempt")
	attemptsSQL         = Queries.Get("attempts")
	deliveriesEngineSQL = Queries.Get("deliveries_engine")
	syncDeliveriesSQL   = Queries.Get("sync_deliveries")
)

// Event types.
const (
	InvoiceCreated   = "invoice.created"         // an invoice's first draft (or the invoice, if first seen finalized)
	InvoiceFinalized = "invoice.finalized"       // an invoice became immutable
	InvoiceVoided    = "invoice.voided"          // a finalized invoice was cancelled
	BudgetThreshold  = spend.AlertThreshold      // a budget's soft threshold was reached
	BudgetExceeded   = spend.AlertExceeded       // a budget was spent (100 % or more)
	GrantCreated     = "credit_grant.created"    // prepaid credit was granted
	GrantVoided      = "credit_grant.voided"     // a grant was voided
	CreditsDepleted  = "credit_balance.depleted" // a prepaid workspace's month's spend reached its credit
)

// EventTypes are every event type, in the order README lists them.
var EventTypes = []string{InvoiceCreated, InvoiceFinalized, InvoiceVoided, BudgetThreshold, BudgetExceeded,
	GrantCreated, GrantVoided, CreditsDepleted}

// AllEvents in an endpoint's EnabledEvents subscribes it to every event type, those added
// later included.
const AllEvents = "*"

// Delivery statuses.
const (
	StatusPending   = "pending"   // to be attempted at NextAttemptAt
	StatusSucceeded = "succeeded" // a 2xx answer
	StatusFailed    = "failed"    // every attempt of the retry window failed: given up
)

// Attempt outcomes.
const (
	OutcomeSucceeded = "succeeded"
	OutcomeRetrying  = "retrying"
	OutcomeFailed    = "failed"
)

// ErrNotFound is returned for an endpoint or event that does not exist.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned for a replay the endpoint cannot take: it is disabled, or it
// belongs to another workspace than the event.
var ErrConflict = errors.New("conflict")

// URLPattern is what an endpoint's URL must match: http or https, a host name or IPv4
// address, an optional port and path with query, nothing that needs escaping. openapi.json
// states the same pattern (a test holds them equal).
const URLPattern = `^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~!$&'()*+,;=:@/?-]*)?$`

var urlPattern = regexp.MustCompile(URLPattern)

// Limits of an endpoint's fields.
const (
	MaxURLLen         = 2048
	MaxDescriptionLen = 500
)

// Endpoint is a URL events are delivered to: a workspace's, or global (WorkspaceID empty:
// the events of every workspace). Its signing secret is never part of it.
type Endpoint struct {
	Object        string    `json:"object"` // "webhook_endpoint"
	ID            string    `json:"id"`
	WorkspaceID   string    `json:"workspace_id,omitempty"`
	URL           string    `json:"url"`
	Description   string    `json:"description"`
	EnabledEvents []string  `json:"enabled_events"` // ["*"]: every type
	Enabled       bool      `json:"enabled"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
}

// Wants reports whether the endpoint takes events of type typ from workspace ws.
func (e Endpoint) Wants(typ, ws string) bool {
	return (e.WorkspaceID == "" || e.WorkspaceID == ws) &&
		(slices.Contains(e.EnabledEvents, AllEvents) || slices.Contains(e.EnabledEvents, typ))
}

// EndpointSpec is what registering an endpoint takes.
type EndpointSpec struct {
	WorkspaceID   string   // empty: every workspace
	URL           string   // matching URLPattern
	Description   string   // for people
	EnabledEvents []string // event types, or AllEvents; empty: AllEvents
}

// Normalize sorts the event types and drops repeats; AllEvents (or none) leaves only it.
func (s *EndpointSpec) Normalize() {
	if len(s.EnabledEvents) == 0 || slices.Contains(s.EnabledEvents, AllEvents) {
		s.EnabledEvents = []string{AllEvents}
		return
	}
	s.EnabledEvents = slices.Compact(slices.Sorted(slices.Values(s.EnabledEvents)))
}

// Validate names the first bad field.
func (s EndpointSpec) Validate() error {
	if err := ValidateURL(s.URL); err != nil {
		return err
	}
	if utf8.RuneCountInString(s.Description) > MaxDescriptionLen {
		return fmt.Errorf("webhook endpoint: description is over %d characters", MaxDescriptionLen)
	}
	for _, t := range s.EnabledEvents {
		if t != AllEvents && !slices.Contains(EventTypes, t) {
			return fmt.Errorf("webhook endpoint: enabled_events: unknown event type %q; want %s or %s", t, strings.Join(EventTypes, ", "), AllEvents)
		}
	}
	return nil
}

// ValidateURL says what is wrong with an endpoint URL, if anything.
func ValidateURL(u string) error {
	if len(u) > MaxURLLen || !urlPattern.MatchString(u) {
		return fmt.Errorf("webhook endpoint: url %q: want http:// or https://, a host, an optional port and path, at most %d characters, nothing escaped (%%) or a fragment (#)", u, MaxURLLen)
	}
	return nil
}

// Event is what a delivery's body holds, like a Stripe event: Data.Object is the object
// the event is about as the API serves it (an invoice with its lines, an alert, a grant,
// a depletion).
type Event struct {
	ID          string    `json:"id"`
	Object      string    `json:"object"` // "event"
	Type        string    `json:"type"`
	Created     int64     `json:"created"` // Unix seconds: when the fact happened
	WorkspaceID string    `json:"workspace_id"`
	Data        EventData `json:"data"`
}

// EventData carries the object of an event.
type EventData struct {
	Object json.RawMessage `json:"object"`
}

// EventID is the one ID of the event of type typ about the fact key (an invoice ID, an
// alert ID, a grant ID…): detecting the fact again gives the same event.
func EventID(typ, key string) string { return "evt_" + digest(typ, key) }

// deliveryID is the one delivery of an event to an endpoint; a replay's is also keyed by
// the time it was asked for.
func deliveryID(eventID, endpointID string, replayAt time.Time) string {
	if replayAt.IsZero() {
		return "wd_" + digest(eventID, endpointID)
	}
	return "wd_" + digest(eventID, endpointID, "replay", fmt.Sprint(replayAt.UnixNano()))
}

func digest(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "|")))
	return hex.EncodeToString(h[:12])
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Delivery is the delivery of one event to one endpoint, with its attempts.
type Delivery struct {
	Object         string    `json:"object"` // "webhook_delivery"
	ID             string    `json:"id"`
	EventID        string    `json:"event_id"`
	EventType      string    `json:"event_type"`
	EndpointID     string    `json:"endpoint_id"`
	WorkspaceID    string    `json:"workspace_id"`
	Replay         bool      `json:"replay"` // asked for by Replay
	Status         string    `json:"status"`
	AttemptCount   int       `json:"attempt_count"`
	NextAttemptAt  time.Time `json:"next_attempt_at,omitzero"` // pending deliveries only
	LastAttemptAt  time.Time `json:"last_attempt_at,omitzero"`
	LastStatusCode int       `json:"last_status_code,omitempty"`
	LastError      string    `json:"last_error,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	Attempts       []Attempt `json:"attempts"` // the delivery log, first attempt first

	claimedBy    string
	claimedUntil time.Time
	version      uint64
}

// Attempt is one attempt of a delivery, as the delivery log holds it.
type Attempt struct {
	Attempt       int       `json:"attempt"`
	URL           string    `json:"url"`
	StartedAt     time.Time `json:"started_at"`
	DurationMS    int       `json:"duration_ms"`
	StatusCode    int       `json:"status_code"`        // 0: no HTTP answer (Error says why)
	Error         string    `json:"error,omitempty"`    // empty on success
	Response      string    `json:"response,omitempty"` // the start of the answer's body
	Outcome       string    `json:"outcome"`
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"` // outcome retrying only
	Dispatcher    string    `json:"dispatcher"`
}

// Store keeps endpoints and their secrets, and reads events and deliveries, for the admin
// API and CLI. It sends nothing: the aggregate role's Dispatcher does.
type Store struct {
	conn driver.Conn
	db   string
	now  func() time.Time
}

// NewStore returns a Store on database db.
func NewStore(conn driver.Conn, db string) *Store { return &Store{conn: conn, db: db, now: time.Now} }

// newSecret is a fresh signing secret: 32 random bytes.
func newSecret() string { return "whsec_" + randomHex(32) }

// CreateEndpoint registers an endpoint and returns it with its signing secret, which is
// shown this once.
func (s *Store) CreateEndpoint(ctx context.Context, spec EndpointSpec) (Endpoint, string, error) {
	spec.Normalize()
	if err := spec.Validate(); err != nil {
		return Endpoint{}, "", err
	}
	now := s.now().UTC()
	e := Endpoint{Object: "webhook_endpoint", ID: "we_" + randomHex(10), WorkspaceID: spec.WorkspaceID, URL: spec.URL,
		Description: spec.Description, EnabledEvents: spec.EnabledEvents, Enabled: true,
		CreatedAt: now.Truncate(time.Second), UpdatedAt: now.Truncate(time.Second)}
	secret := newSecret()
	// 1. the secret 2. the endpoint: an endpoint is never seen without a secret to sign with.
	if err := chdb.Insert(ctx, s.conn, sqlset.Fill(insertSecretSQL, "db", s.db),
		[][]any{{e.ID, secret, e.CreatedAt, time.Unix(0, 0).UTC(), uint64(now.UnixNano())}}); err != nil {
		return Endpoint{}, "", fmt.Errorf("store secret of webhook endpoint %s: %w", e.ID, err)
	}
	if err := s.writeEndpoint(ctx, e, now); err != nil {
		return Endpoint{}, "", err
	}
	return e, secret, nil
}

func (s *Store) writeEndpoint(ctx context.Context, e Endpoint, now time.Time) error {
	err := chdb.Insert(ctx, s.conn, sqlset.Fill(insertEndpointSQL, "db", s.db), [][]any{{e.ID, e.WorkspaceID, e.URL, e.Description,
		e.EnabledEvents, boolByte(e.Enabled), e.CreatedAt, e.UpdatedAt, uint64(now.UnixNano())}})
	if err != nil {
		return fmt.Errorf("store webhook endpoint %s: %w", e.ID, err)
	}
	return nil
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// Endpoints returns the endpoints registered for workspaceID, or every endpoint (global
// ones included) when it is empty, oldest first.
func (s *Store) Endpoints(ctx context.Context, workspaceID string) ([]Endpoint, error) {
	if workspaceID == "" {
		return s.endpoints(ctx, "1 = 1")
	}
	return s.endpoints(ctx, "workspace_id = ?", workspaceID)
}

// Endpoint returns one endpoint, ErrNotFound if there is none.
func (s *Store) Endpoint(ctx context.Context, id string) (Endpoint, error) {
	es, err := s.endpoints(ctx, "endpoint_id = ?", id)
	if err != nil {
		return Endpoint{}, err
	}
	if len(es) == 0 {
		return Endpoint{}, fmt.Errorf("webhook endpoint %q: %w", id, ErrNotFound)
	}
	return es[0], nil
}

func (s *Store) endpoints(ctx context.Context, where string, args ...any) ([]Endpoint, error) {
	rows, err := s.conn.Query(ctx, sqlset.Fill(endpointsSQL, "db", s.db, "where", where), args...)
	if err != nil {
		return nil, fmt.Errorf("read webhook endpoints: %w", err)
	}
	defer rows.Close()
	out := []Endpoint{}
	for rows.Next() {
		e := Endpoint{Object: "webhook_endpoint"}
		var enabled uint8
		if err := rows.Scan(&e.ID, &e.WorkspaceID, &e.URL, &e.Description, &e.EnabledEvents, &enabled, &e.CreatedAt, &e.UpdatedAt); err != nil {
			return nil, fmt.Errorf("scan webhook endpoint: %w", err)
		}
		e.Enabled, e.CreatedAt, e.UpdatedAt = enabled == 1, e.CreatedAt.UTC(), e.UpdatedAt.UTC()
		out = append(out, e)
	}
	return out, rows.Err()
}

// SetEnabled enables or disables an endpoint. A disabled endpoint gets no delivery of the
// events detected meanwhile; its pending deliveries wait until it is enabled again.
func (s *Store) SetEnabled(ctx context.Context, id string, enabled bool) (Endpoint, error) {
	e, err := s.Endpoint(ctx, id)
	if err != nil {
		return Endpoint{}, err
	}
	now := s.now().UTC()
	e.Enabled, e.UpdatedAt = enabled, now.Truncate(time.Second)
	return e, s.writeEndpoint(ctx, e, now)
}

// MaxOverlap bounds how long a rotated secret keeps signing beside its successor.
const MaxOverlap = 7 * 24 * time.Hour

// RotateSecret gives an endpoint a new signing secret and returns it (shown this once).
// Deliveries are signed with the new secret and, for overlap more, with the previous
// ones too (a second v1 in the signature header), so that the receiver can switch
// without losing a delivery; overlap 0 retires them at once.
func (s *Store) RotateSecret(ctx context.Context, id string, overlap time.Duration) (Endpoint, string, error) {
	if overlap < 0 || overlap > MaxOverlap {
		return Endpoint{}, "", fmt.Errorf("webhook endpoint: overlap %s: want 0 to %s", overlap, MaxOverlap)
	}
	e, err := s.Endpoint(ctx, id)
	if err != nil {
		return Endpoint{}, "", err
	}
	now := s.now().UTC()
	old, err := s.secrets(ctx, []string{id}, now)
	if err != nil {
		return Endpoint{}, "", err
	}
	secret := newSecret()
	v := uint64(now.UnixNano())
	until := now.Add(overlap).Truncate(time.Second)
	// One insert: the new secret and the older ones' expiry land together.
	rows := [][]any{{id, secret, now.Truncate(time.Second), time.Unix(0, 0).UTC(), v}}
	for _, k := range old[id] {
		exp := until
		if !k.expiresAt.IsZero() && k.expiresAt.Before(until) {
			exp = k.expiresAt
		}
		rows = append(rows, []any{id, k.secret, k.createdAt, exp, v})
	}
	if err := chdb.Insert(ctx, s.conn, sqlset.Fill(insertSecretSQL, "db", s.db), rows); err != nil {
		return Endpoint{}, "", fmt.Errorf("rotate secret of webhook endpoint %s: %w", id, err)
	}
	return e, secret, nil
}

// signingKey is one secret of an endpoint.
type signingKey struct {
	secret    string
	createdAt time.Time
	expiresAt time.Time // zero: never
}

// secrets returns, by endpoint, the secrets of the endpoints given still valid at t,
// newest first.
func (s *Store) secrets(ctx context.Context, ids []string, t time.Time) (map[string][]signingKey, error) {
	rows, err := s.conn.Query(ctx, sqlset.Fill(secretsSQL, "db", s.db, "where", "has(?, endpoint_id)"), ids)
	if err != nil {
		return nil, fmt.Errorf("read webhook secrets: %w", err)
	}
	defer rows.Close()
	out := map[string][]signingKey{}
	for rows.Next() {
		var id string
		var k signingKey
		if err := rows.Scan(&id, &k.secret, &k.createdAt, &k.expiresAt); err != nil {
			return nil, fmt.Errorf("scan webhook secret: %w", err)
		}
		if k.expiresAt.Unix() == 0 {
			k.expiresAt = time.Time{}
		} else if !k.expiresAt.After(t) {
			continue
		}
		out[id] = append(out[id], k)
	}
	return out, rows.Err()
}

// EventFilter selects events; zero fields select everything.
type EventFilter struct {
	WorkspaceID string
	Type        string
	Limit       int // default and at most MaxList
}

// MaxList bounds what one listing returns.
const MaxList = 100

func listLimit(n int) int {
	if n <= 0 || n > MaxList {
		return MaxList
	}
	return n
}

// Events returns events, newest first, each as its JSON body.
func (s *Store) Events(ctx context.Context, f EventFilter) ([]json.RawMessage, error) {
	where, args := []string{"1 = 1"}, []any{}
	if f.WorkspaceID != "" {
		where, args = append(where, "workspace_id = ?"), append(args, f.WorkspaceID)
	}
	if f.Type != "" {
		where, args = append(where, "type = ?"), append(args, f.Type)
	}
	return s.events(ctx, strings.Join(where, " AND "), listLimit(f.Limit), args...)
}

// Event returns one event's JSON body, ErrNotFound if there is none.
func (s *Store) Event(ctx context.Context, id string) (json.RawMessage, error) {
	evs, err := s.events(ctx, "event_id = ?", 1, id)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, fmt.Errorf("webhook event %q: %w", id, ErrNotFound)
	}
	return evs[0], nil
}

func (s *Store) events(ctx context.Context, where string, limit int, args ...any) ([]json.RawMessage, error) {
	rows, err := s.conn.Query(ctx, sqlset.Fill(eventsSQL, "db", s.db, "where", where, "limit", fmt.Sprint(limit)), args...)
	if err != nil {
		return nil, fmt.Errorf("read webhook events: %w", err)
	}
	defer rows.Close()
	out := []json.RawMessage{}
	for rows.Next() {
		var id, typ, ws, payload string
		var created time.Time
		if err := rows.Scan(&id, &typ, &ws, &created, &payload); err != nil {
			return nil, fmt.Errorf("scan webhook event: %w", err)
		}
		out = append(out, json.RawMessage(payload))
	}
	return out, rows.Err()
}

// DeliveryFilter selects deliveries; zero fields select everything.
type DeliveryFilter struct {
	EndpointID  string
	EventID     string
	WorkspaceID string
	Status      string
	Limit       int // default and at most MaxList
}

// Deliveries returns deliveries, newest first, each with its attempts.
func (s *Store) Deliveries(ctx context.Context, f DeliveryFilter) ([]Delivery, error) {
	where, args := []string{"1 = 1"}, []any{}
	for _, c := range []struct{ col, v string }{{"endpoint_id", f.EndpointID}, {"event_id", f.EventID},
		{"workspace_id", f.WorkspaceID}, {"status", f.Status}} {
		if c.v != "" {
			where, args = append(where, c.col+" = ?"), append(args, c.v)
		}
	}
	ds, err := s.deliveries(ctx, sqlset.Fill(deliveriesSQL, "db", s.db, "where", strings.Join(where, " AND "),
		"limit", fmt.Sprint(listLimit(f.Limit))), args...)
	if err != nil {
		return nil, err
	}
	return ds, s.withAttempts(ctx, ds)
}

func (s *Store) deliveries(ctx context.Context, q string, args ...any) ([]Delivery, error) {
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read webhook deliveries: %w", err)
	}
	defer rows.Close()
	out := []Delivery{}
	for rows.Next() {
		d := Delivery{Object: "webhook_delivery", Attempts: []Attempt{}}
		var replay uint8
		var attempts uint32
		var code uint16
		if err := rows.Scan(&d.ID, &d.EventID, &d.EndpointID, &d.WorkspaceID, &d.EventType, &replay, &d.CreatedAt, &d.Status,
			&attempts, &d.NextAttemptAt, &d.LastAttemptAt, &code, &d.LastError, &d.claimedBy, &d.claimedUntil, &d.version); err != nil {
			return nil, fmt.Errorf("scan webhook delivery: %w", err)
		}
		d.Replay, d.AttemptCount, d.LastStatusCode = replay == 1, int(attempts), int(code)
		d.CreatedAt, d.claimedUntil = d.CreatedAt.UTC(), d.claimedUntil.UTC()
		d.NextAttemptAt, d.LastAttemptAt = orZero(d.NextAttemptAt), orZero(d.LastAttemptAt)
		if d.Status != StatusPending {
			d.NextAttemptAt = time.Time{}
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// orZero is t in UTC, or the zero time for ClickHouse's zero (1970-01-01).
func orZero(t time.Time) time.Time {
	if t.Unix() <= 0 {
		return time.Time{}
	}
	return t.UTC()
}

// zeroTime is t, or 1970-01-01 (ClickHouse's zero DateTime) for the zero time.
func zeroTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return t.UTC()
}

// withAttempts reads the attempts of ds into them.
func (s *Store) withAttempts(ctx context.Context, ds []Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	ids := make([]string, len(ds))
	at := map[string]int{}
	for i, d := range ds {
		ids[i], at[d.ID] = d.ID, i
	}
	rows, err := s.conn.Query(ctx, sqlset.Fill(attemptsSQL, "db", s.db), ids)
	if err != nil {
		return fmt.Errorf("read webhook attempts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var a Attempt
		var n, ms uint32
		var code uint16
		if err := rows.Scan(&id, &n, &a.URL, &a.StartedAt, &ms, &code, &a.Error, &a.Response, &a.Outcome, &a.NextAttemptAt, &a.Dispatcher); err != nil {
			return fmt.Errorf("scan webhook attempt: %w", err)
		}
		a.Attempt, a.DurationMS, a.StatusCode = int(n), int(ms), int(code)
		a.StartedAt, a.NextAttemptAt = a.StartedAt.UTC(), orZero(a.NextAttemptAt)
		i := at[id]
		ds[i].Attempts = append(ds[i].Attempts, a)
	}
	return rows.Err()
}

// Replay asks for eventID to be delivered to endpointID again (or for the first time, to
// an endpoint that did not exist or was not subscribed when it happened): a new delivery,
// due now, that the aggregate role's dispatcher sends on its next round and retries like
// any other. The endpoint must be enabled and see the event's workspace (ErrConflict).
func (s *Store) Replay(ctx context.Context, eventID, endpointID string) (Delivery, error) {
	raw, err := s.Event(ctx, eventID)
	if err != nil {
		return Delivery{}, err
	}
	var ev Event
	if err := json.Unmarshal(raw, &ev); err != nil {
		return Delivery{}, fmt.Errorf("webhook event %s: %w", eventID, err)
	}
	e, err := s.Endpoint(ctx, endpointID)
	if err != nil {
		return Delivery{}, err
	}
	switch {
	case !e.Enabled:
		return Delivery{}, fmt.Errorf("%w: webhook endpoint %s is disabled; enable it first", ErrConflict, e.ID)
	case e.WorkspaceID != "" && e.WorkspaceID != ev.WorkspaceID:
		return Delivery{}, fmt.Errorf("%w: webhook endpoint %s receives the events of workspace %s, and event %s is of %s",
			ErrConflict, e.ID, e.WorkspaceID, ev.ID, ev.WorkspaceID)
	}
	now := s.now().UTC()
	d := newDelivery(ev.ID, ev.Type, ev.WorkspaceID, e.ID, now, true)
	if err := insertDeliveries(ctx, s.conn, s.db, []Delivery{d}); err != nil {
		return Delivery{}, err
	}
	return d, nil
}

// newDelivery is a pending delivery of an event to an endpoint, due at now.
func newDelivery(eventID, typ, ws, endpointID string, now time.Time, replay bool) Delivery {
	var replayAt time.Time
	if replay {
		replayAt = now
	}
	at := now.Truncate(time.Second)
	return Delivery{Object: "webhook_delivery", ID: deliveryID(eventID, endpointID, replayAt), EventID: eventID, EventType: typ,
		EndpointID: endpointID, WorkspaceID: ws, Replay: replay, Status: StatusPending, NextAttemptAt: at, CreatedAt: at,
		Attempts: []Attempt{}, version: createVersion(now)}
}

func insertDeliveries(ctx context.Context, conn driver.Conn, db string, ds []Delivery) error {
	rows := make([][]any, len(ds))
	for i, d := range ds {
		rows[i] = []any{d.ID, d.EventID, d.EndpointID, d.WorkspaceID, d.EventType, boolByte(d.Replay), d.CreatedAt, d.Status,
			uint32(d.AttemptCount), zeroTime(d.NextAttemptAt), zeroTime(d.LastAttemptAt), uint16(d.LastStatusCode), d.LastError,
			d.claimedBy, zeroTime(d.claimedUntil), d.version}
	}
	if err := chdb.Insert(ctx, conn, sqlset.Fill(insertDeliveriesSQL, "db", db), rows); err != nil {
		return fmt.Errorf("store %d webhook deliveries: %w", len(ds), err)
	}
	return nil
}

// Delivery versions order the writes of a delivery (webhook_deliveries in migration 0007):
// seq counts the steps since its creation, in the top 11 bits, so that a later step
// always wins; below it a claim bit and a time in microseconds (52 bits: until 2112).
// Among claims of one step the earliest wins; among other writes of one step, the latest.
const (
	seqShift = 53
	claimBit = uint64(1) << 52
	timeMask = uint64(1)<<52 - 1
	maxSeq   = 1<<11 - 3 // room for a claim and an outcome after it
)

func seqOf(v uint64) uint64 { return v >> seqShift }

// createVersion is a new delivery's: step 0, the earliest creation winning (racing
// detectors create the same delivery).
func createVersion(at time.Time) uint64 { return timeMask - uint64(at.UnixMicro())&timeMask }

// claimVersion is that of a claim at step seq: the earliest claim wins.
func claimVersion(seq uint64, at time.Time) uint64 {
	return seq<<seqShift | claimBit | (timeMask - uint64(at.UnixMicro())&timeMask)
}

// stepVersion is that of an outcome at step seq.
func stepVersion(seq uint64, at time.Time) uint64 {
	return seq<<seqShift | uint64(at.UnixMicro())&timeMask
}
