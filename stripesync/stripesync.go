// Package stripesync pushes finalized Venna invoices to Stripe: one Stripe customer per
// workspace, the invoice's lines as invoice items on a Stripe invoice, which is then
// finalized; a Venna invoice voided afterwards is voided in Stripe too (or its draft
// deleted). Every Stripe request carries an Idempotency-Key derived from the Venna invoice
// ID, its version and the step, and every step done is recorded in ClickHouse before the
// next one starts, so a push that stopped halfway — a crash, an outage, a deploy — resumes
// at the step it stopped in, and repeating that step is harmless. See README.md, "Stripe".
package stripesync

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/stripe/stripe-go/v82"
	"github.com/venna/metering/internal/sqlset"
	"github.com/venna/metering/invoice"
)

//go:embed queries.sql
var queriesFile string

// Queries is every statement this package sends to ClickHouse (queries.sql).
var Queries = sqlset.MustParse("stripesync", queriesFile)

var (
	pendingSQL         = Queries.Get("pending")
	syncStatesSQL      = Queries.Get("sync_states")
	customerSQL        = Queries.Get("customer")
	workspaceNameSQL   = Queries.Get("workspace_name")
	insertCustomerSQL  = Queries.Get("insert_customer")
	insertSyncStateSQL = Queries.Get("insert_sync_state")
)

// Collection methods of the Stripe invoices (Stripe's names).
const (
	SendInvoice         = "send_invoice"         // Stripe emails the invoice; the customer pays within DaysUntilDue
	ChargeAutomatically = "charge_automatically" // Stripe charges the customer's default payment method
)

// DefaultAPIBase is Stripe's API.
const DefaultAPIBase = "https://api.stripe.com"

// Config configures the push to Stripe.
type Config struct {
	Database string
	// APIKey is the Stripe secret key (VENNA_STRIPE_API_KEY). Without one nothing is pushed:
	// New refuses an empty key, and the commands do not start the push.
	APIKey string
	// APIBase is the Stripe API's URL (VENNA_STRIPE_API_BASE): stripe-mock in tests.
	// Default DefaultAPIBase.
	APIBase string
	// CollectionMethod of the Stripe invoices: SendInvoice (default) or ChargeAutomatically.
	CollectionMethod string
	// DaysUntilDue of a SendInvoice invoice. Default 30.
	DaysUntilDue int
	// Since is the first invoice period pushed (a month's start); zero: every invoice.
	Since time.Time
	// HTTPClient sends the Stripe requests. Default: a client with a 30 s timeout.
	HTTPClient *http.Client
	// MaxNetworkRetries is how often stripe-go retries a request that failed on the
	// network or with a 409, 429 or 5xx, with the same Idempotency-Key, before the step
	// counts as failed. Default 2; negative: none.
	MaxNetworkRetries int64
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Database == "":
		return errors.New("stripesync: Database (VENNA_CLICKHOUSE_DATABASE) is empty")
	case c.APIKey == "":
		return errors.New("stripesync: APIKey (VENNA_STRIPE_API_KEY) is empty")
	case c.CollectionMethod != "" && c.CollectionMethod != SendInvoice && c.CollectionMethod != ChargeAutomatically:
		return fmt.Errorf("stripesync: CollectionMethod (VENNA_STRIPE_COLLECTION_METHOD) %q: want %s or %s", c.CollectionMethod, SendInvoice, ChargeAutomatically)
	case c.DaysUntilDue < 0 || c.DaysUntilDue > 3650:
		return fmt.Errorf("stripesync: DaysUntilDue (VENNA_STRIPE_DAYS_UNTIL_DUE) %d: want 1 to 3650", c.DaysUntilDue)
	}
	if c.APIBase != "" {
		u, err := url.Parse(c.APIBase)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("stripesync: APIBase (VENNA_STRIPE_API_BASE) %q: want an http(s) URL", c.APIBase)
		}
	}
	return nil
}

// Invoices reads Venna invoices (invoice.Invoicer).
type Invoices interface {
	Get(ctx context.Context, workspaceID, id string) (*invoice.Invoice, error)
}

// Syncer pushes invoices to Stripe.
type Syncer struct {
	cfg      Config
	store    *Store
	invoices Invoices
	sc       *stripe.Client
	log      *slog.Logger
	now      func() time.Time
}

// New returns a Syncer; it refuses an invalid Config.
func New(cfg Config, conn driver.Conn, invoices Invoices, log *slog.Logger) (*Syncer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.APIBase == "" {
		cfg.APIBase = DefaultAPIBase
	}
	if cfg.CollectionMethod == "" {
		cfg.CollectionMethod = SendInvoice
	}
	if cfg.DaysUntilDue == 0 {
		cfg.DaysUntilDue = 30
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	switch {
	case cfg.MaxNetworkRetries == 0:
		cfg.MaxNetworkRetries = 2
	case cfg.MaxNetworkRetries < 0:
		cfg.MaxNetworkRetries = 0
	}
	backends := stripe.NewBackendsWithConfig(&stripe.BackendConfig{
		URL: stripe.String(cfg.APIBase), HTTPClient: cfg.HTTPClient, MaxNetworkRetries: stripe.Int64(cfg.MaxNetworkRetries),
		LeveledLogger: &stripe.LeveledLogger{Level: stripe.LevelNull},
	})
	return &Syncer{
		cfg: cfg, store: NewStore(conn, cfg.Database), invoices: invoices, log: log, now: time.Now,
		sc: stripe.NewClient(cfg.APIKey, stripe.WithBackends(backends)),
	}, nil
}

// Result says what one Run did.
type Result struct {
	Pushed   []string         // invoices whose Stripe invoice was finalized by this run
	Voided   []string         // invoices voided (or their draft deleted) in Stripe by this run
	Skipped  []string         // invoices with nothing to push
	Deferred []string         // invoices left for later: a failed try's backoff has not elapsed
	Failed   map[string]error // by invoice: the step that failed, retried after a backoff
}

// Backoff after a failed try: 1 minute, doubling per failed try, at most 6 hours.
const (
	backoffBase = time.Minute
	backoffMax  = 6 * time.Hour
)

func backoff(attempts int) time.Duration {
	if attempts > 20 {
		return backoffMax
	}
	return min(backoffBase<<max(attempts-1, 0), backoffMax)
}

// Run pushes every finalized invoice not yet in Stripe and mirrors every void one, oldest
// period first, one step at a time. A step that Stripe refuses fails that invoice until its
// backoff has elapsed, and the run goes on with the next; a step that cannot reach Stripe
// ends the run (an outage only delays the pushes: the next run resumes them). The error
// is non-nil when any invoice failed or ClickHouse could not be read or written.
func (s *Syncer) Run(ctx context.Context) (Result, error) {
	res := Result{Failed: map[string]error{}}
	todo, err := s.store.pending(ctx, s.cfg.Since)
	if err != nil {
		return res, err
	}
	for _, p := range todo {
		st, ok, err := s.store.Status(ctx, p.WorkspaceID, p.ID)
		if err != nil {
			return res, err
		}
		if !ok {
			st = Status{Object: statusObject, InvoiceID: p.ID, WorkspaceID: p.WorkspaceID, PeriodStart: p.PeriodStart, State: StateNotPushed}
		}
		if st.NextAttemptAt.After(s.now()) {
			res.Deferred = append(res.Deferred, p.ID)
			continue
		}
		if p.Status == invoice.StatusVoid {
			err = s.void(ctx, &st)
		} else {
			err = s.push(ctx, p, &st)
		}
		switch {
		case err == nil:
			switch st.State {
			case StateFinalized:
				res.Pushed = append(res.Pushed, p.ID)
			case StateVoided, StateDeleted:
				res.Voided = append(res.Voided, p.ID)
			default:
				res.Skipped = append(res.Skipped, p.ID)
			}
			continue
		case ctx.Err() != nil:
			// Stopping (or a crash, as far as Stripe is concerned): the step under way is
			// not recorded as failed; the next run repeats it with the same key.
			return res, ctx.Err()
		}
		res.Failed[p.ID] = err
		if ferr := s.failed(ctx, &st, err); ferr != nil {
			return res, errors.Join(err, ferr)
		}
		if unavailable(err) {
			// Stripe is unreachable, unwell or refuses the key: every other invoice would
			// fail the same way.
			s.log.Warn("stripe unavailable: push resumes on a later run", "invoice", p.ID, "err", err)
			break
		}
		s.log.Error("stripe push failed", "invoice", p.ID, "workspace", p.WorkspaceID, "state", st.State, "attempts", st.Attempts, "err", err)
	}
	if len(res.Failed) > 0 {
		return res, fmt.Errorf("stripe: %d invoices not pushed yet (retried after a backoff): first %w", len(res.Failed), firstError(res.Failed))
	}
	return res, nil
}

func firstError(m map[string]error) error {
	var first string
	for id := range m {
		if first == "" || id < first {
			first = id
		}
	}
	return fmt.Errorf("%s: %w", first, m[first])
}

// requestError is a Stripe request that failed: Stripe refused it, or it did not get an
// answer.
type requestError struct{ err error }

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// request marks err as the failure of a Stripe request.
func request(err error) error {
	if err == nil {
		return nil
	}
	return &requestError{err}
}

// unavailable reports whether err is a Stripe request that got no answer, or an answer
// saying Stripe cannot take requests now (429, 5xx) or takes none with this key (401), as
// opposed to one refusing this step alone.
func unavailable(err error) bool {
	var re *requestError
	if !errors.As(err, &re) {
		return false
	}
	var se *stripe.Error
	return !errors.As(err, &se) || se.HTTPStatusCode >= 500 || se.HTTPStatusCode == http.StatusTooManyRequests ||
		se.HTTPStatusCode == http.StatusUnauthorized
}

// failed records a failed try of the invoice's current step, and when to try again.
func (s *Syncer) failed(ctx context.Context, st *Status, cause error) error {
	st.Attempts++
	st.LastError = cause.Error()
	if len(st.LastError) > 1000 {
		st.LastError = st.LastError[:1000]
	}
	st.NextAttemptAt = s.now().UTC().Add(backoff(st.Attempts)).Truncate(time.Second)
	return s.store.put(ctx, st, s.now())
}

// done records a step done: the failure count starts over.
func (s *Syncer) done(ctx context.Context, st *Status, state string) error {
	st.State, st.Attempts, st.LastError, st.NextAttemptAt = state, 0, "", time.Time{}
	return s.store.put(ctx, st, s.now())
}

// key is the Idempotency-Key of a step of an invoice's push: the same for every try of
// that step, whichever process makes it, and different for every other step and version.
func key(st *Status, step string) string {
	return "venna:" + st.InvoiceID + ":v" + strconv.FormatUint(st.InvoiceVersion, 10) + ":" + step
}

// customerKey is the Idempotency-Key of a workspace's customer: one per workspace,
// whichever invoice creates it.
func customerKey(workspaceID string) string { return "venna:customer:" + workspaceID }

// push takes a finalized invoice's push from where st stands to the end, one step at a
// time. Each step is: 1. the Stripe request, with the step's Idempotency-Key, 2. the step
// recorded in ClickHouse. A stop between 1 and 2 repeats the request on the next run with
// the same key, so Stripe answers it from its idempotency cache instead of doing it
// twice; a step recorded is never requested again.
func (s *Syncer) push(ctx context.Context, p pendingInvoice, st *Status) error {
	inv, err := s.invoices.Get(ctx, p.WorkspaceID, p.ID)
	if err != nil {
		return fmt.Errorf("read invoice %s: %w", p.ID, err)
	}
	if st.State == StateNotPushed || st.InvoiceVersion == 0 {
		// The version is fixed here, by the first step. A later finalized version (two
		// invoice runs finalizing at once write the same lines at two versions) keeps
		// this push and its keys.
		st.InvoiceVersion = inv.Version
	}
	if len(inv.Lines) == 0 {
		st.doneFor = invoice.StatusFinalized
		return s.done(ctx, st, StateSkipped)
	}
	plan, err := PlanFor(inv)
	if err != nil {
		return err
	}
	st.ItemsTotal, st.Amount, st.Currency = len(plan.Items), plan.Total, plan.Currency

	if st.State == StateNotPushed {
		if err := s.customer(ctx, st); err != nil {
			return err
		}
	}
	if st.State == StateCustomer {
		params := &stripe.InvoiceCreateParams{
			Customer: stripe.String(st.CustomerID), Currency: stripe.String(plan.Currency),
			CollectionMethod: stripe.String(s.cfg.CollectionMethod),
			// Items are attached to this invoice by ID (below), never picked up from the
			// customer's pending ones: another invoice's items cannot land on it.
			PendingInvoiceItemsBehavior: stripe.String("exclude"),
			AutoAdvance:                 stripe.Bool(false), // finalized by this push, once every item is on it
			Description:                 stripe.String(fmt.Sprintf("Venna invoice %s, %s", inv.ID, inv.PeriodStart.Format("January 2006"))),
			Metadata: metadata("venna_invoice_id", inv.ID, "venna_workspace_id", inv.WorkspaceID,
				"venna_invoice_version", strconv.FormatUint(st.InvoiceVersion, 10), "venna_period", inv.PeriodStart.Format("2006-01")),
		}
		if s.cfg.CollectionMethod == SendInvoice {
			params.DaysUntilDue = stripe.Int64(int64(s.cfg.DaysUntilDue))
		}
		params.SetIdempotencyKey(key(st, "invoice"))
		created, err := do(s.sc.V1Invoices.Create(ctx, params))
		if err != nil {
			return fmt.Errorf("create stripe invoice: %w", err)
		}
		st.StripeInvoice = created.ID
		if err := s.done(ctx, st, StateInvoiceCreated); err != nil {
			return err
		}
	}
	if st.State == StateInvoiceCreated || st.State == StateItems {
		for i := st.ItemsDone; i < len(plan.Items); i++ {
			it := plan.Items[i]
			params := &stripe.InvoiceItemCreateParams{
				Customer: stripe.String(st.CustomerID), Invoice: stripe.String(st.StripeInvoice),
				Amount: stripe.Int64(it.Amount), Currency: stripe.String(plan.Currency),
				Description: stripe.String(it.Description), Metadata: it.Metadata,
			}
			if it.Line > 0 {
				l := inv.Lines[it.Line-1]
				params.Period = &stripe.InvoiceItemCreatePeriodParams{
					Start: stripe.Int64(l.ServicePeriodStart.Unix()), End: stripe.Int64(l.ServicePeriodEnd.Unix())}
			}
			params.SetIdempotencyKey(key(st, it.Key))
			if _, err := do(s.sc.V1InvoiceItems.Create(ctx, params)); err != nil {
				return fmt.Errorf("create stripe invoice item %d of %d (%s): %w", i+1, len(plan.Items), it.Key, err)
			}
			st.ItemsDone = i + 1
			if err := s.done(ctx, st, StateItems); err != nil {
				return err
			}
		}
		params := &stripe.InvoiceFinalizeInvoiceParams{AutoAdvance: stripe.Bool(true)} // Stripe sends or charges it from here
		params.SetIdempotencyKey(key(st, "finalize"))
		if _, err := do(s.sc.V1Invoices.FinalizeInvoice(ctx, st.StripeInvoice, params)); err != nil {
			return fmt.Errorf("finalize stripe invoice %s: %w", st.StripeInvoice, err)
		}
		st.doneFor = invoice.StatusFinalized
		if err := s.done(ctx, st, StateFinalized); err != nil {
			return err
		}
	}
	return nil
}

// customer makes sure the invoice's workspace has its Stripe customer, creating it once.
func (s *Syncer) customer(ctx context.Context, st *Status) error {
	id, err := s.store.Customer(ctx, st.WorkspaceID)
	if err != nil {
		return err
	}
	if id == "" {
		name, err := s.store.workspaceName(ctx, st.WorkspaceID)
		if err != nil {
			return err
		}
		if name == "" {
			name = st.WorkspaceID
		}
		params := &stripe.CustomerCreateParams{Name: stripe.String(name), Metadata: metadata("venna_workspace_id", st.WorkspaceID)}
		params.SetIdempotencyKey(customerKey(st.WorkspaceID))
		c, err := do(s.sc.V1Customers.Create(ctx, params))
		if err != nil {
			return fmt.Errorf("create stripe customer of %s: %w", st.WorkspaceID, err)
		}
		if err := s.store.putCustomer(ctx, st.WorkspaceID, c.ID, s.now()); err != nil {
			return err
		}
		id = c.ID
	}
	st.CustomerID = id
	return s.done(ctx, st, StateCustomer)
}

// void mirrors a void Venna invoice: its finalized Stripe invoice is voided, a draft one
// deleted (with the items attached to it), and one never pushed is left alone.
func (s *Syncer) void(ctx context.Context, st *Status) error {
	st.doneFor = invoice.StatusVoid
	switch st.State {
	case StateFinalized:
		params := &stripe.InvoiceVoidInvoiceParams{}
		params.SetIdempotencyKey(key(st, "void"))
		if _, err := do(s.sc.V1Invoices.VoidInvoice(ctx, st.StripeInvoice, params)); err != nil {
			st.doneFor = ""
			return fmt.Errorf("void stripe invoice %s: %w", st.StripeInvoice, err)
		}
		return s.done(ctx, st, StateVoided)
	case StateInvoiceCreated, StateItems:
		params := &stripe.InvoiceDeleteParams{}
		params.SetIdempotencyKey(key(st, "delete"))
		_, err := do(s.sc.V1Invoices.Delete(ctx, st.StripeInvoice, params))
		var se *stripe.Error
		if err != nil && !(errors.As(err, &se) && se.HTTPStatusCode == http.StatusNotFound) { // 404: deleted already
			st.doneFor = ""
			return fmt.Errorf("delete stripe draft invoice %s: %w", st.StripeInvoice, err)
		}
		return s.done(ctx, st, StateDeleted)
	case StateVoided, StateDeleted:
		return s.done(ctx, st, st.State)
	}
	// Nothing of it reached Stripe but, perhaps, the workspace's customer.
	return s.done(ctx, st, StateSkipped)
}

// do marks the error of a Stripe call as a request's.
func do[T any](v T, err error) (T, error) { return v, request(err) }
