package stripesync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/sqlset"
)

// Push states: the last step of an invoice's push that is done (stripe_invoice_sync.state).
const (
	StateNotPushed      = "not_pushed"      // nothing done yet (a draft, or a push that has not started); never stored
	StateCustomer       = "customer"        // the workspace's Stripe customer exists
	StateInvoiceCreated = "invoice_created" // a draft Stripe invoice exists, no item yet
	StateItems          = "items"           // ItemsDone of ItemsTotal items attached to it
	StateFinalized      = "finalized"       // the Stripe invoice is finalized: the push is complete
	StateVoided         = "voided"          // the Venna invoice was voided, and so was the Stripe invoice
	StateDeleted        = "deleted"         // voided while the Stripe invoice was a draft: the draft was deleted
	StateSkipped        = "skipped"         // nothing to push: no lines, or voided before anything was pushed
)

// Status is where the push of one Venna invoice to Stripe stands.
type Status struct {
	Object         string    `json:"object"`
	InvoiceID      string    `json:"invoice_id"`
	WorkspaceID    string    `json:"workspace_id"`
	PeriodStart    time.Time `json:"period_start,omitzero"`
	InvoiceVersion uint64    `json:"invoice_version"` // the Venna invoice version pushed; its Idempotency-Keys derive from it
	State          string    `json:"state"`
	Done           bool      `json:"done"` // nothing left to do for the invoice's current status
	CustomerID     string    `json:"stripe_customer_id"`
	StripeInvoice  string    `json:"stripe_invoice_id"`
	ItemsDone      int       `json:"items_done"`
	ItemsTotal     int       `json:"items_total"`
	Amount         int64     `json:"amount"` // the Stripe invoice's total, minor units of Currency
	Currency       string    `json:"currency"`
	Attempts       int       `json:"attempts"` // failed tries since the last step done
	LastError      string    `json:"last_error"`
	NextAttemptAt  time.Time `json:"next_attempt_at,omitzero"`
	UpdatedAt      time.Time `json:"updated_at,omitzero"`

	doneFor string
	version uint64
}

const statusObject = "stripe_invoice_sync"

// Store reads and writes the push progress in ClickHouse (stripe_customers,
// stripe_invoice_sync). The API reads it too, with or without Stripe configured.
type Store struct {
	conn driver.Conn
	db   string
}

// NewStore returns the Store of database db.
func NewStore(conn driver.Conn, db string) *Store { return &Store{conn: conn, db: db} }

// Status is where the push of invoice id of workspaceID stands; ok is false when nothing
// was done for it yet.
func (s *Store) Status(ctx context.Context, workspaceID, id string) (st Status, ok bool, err error) {
	list, err := s.states(ctx, "workspace_id = ? AND invoice_id = ?", workspaceID, id)
	if err != nil || len(list) == 0 {
		return Status{}, false, err
	}
	return list[0], true, nil
}

// Statuses are the pushes of a workspace's invoices, or of every workspace's for "",
// newest period first.
func (s *Store) Statuses(ctx context.Context, workspaceID string) ([]Status, error) {
	if workspaceID == "" {
		return s.states(ctx, "1 = 1")
	}
	return s.states(ctx, "workspace_id = ?", workspaceID)
}

func (s *Store) states(ctx context.Context, where string, args ...any) ([]Status, error) {
	rows, err := s.conn.Query(ctx, sqlset.Fill(syncStatesSQL, "db", s.db, "where", where), args...)
	if err != nil {
		return nil, fmt.Errorf("read stripe sync states: %w", err)
	}
	defer rows.Close()
	out := []Status{}
	for rows.Next() {
		var st Status
		var done, total, attempts uint32
		if err := rows.Scan(&st.InvoiceID, &st.WorkspaceID, &st.PeriodStart, &st.InvoiceVersion, &st.State, &st.doneFor,
			&st.CustomerID, &st.StripeInvoice, &done, &total, &st.Amount, &st.Currency, &attempts, &st.LastError,
			&st.NextAttemptAt, &st.UpdatedAt, &st.version); err != nil {
			return nil, fmt.Errorf("scan stripe sync state: %w", err)
		}
		st.Object, st.ItemsDone, st.ItemsTotal, st.Attempts = statusObject, int(done), int(total), int(attempts)
		st.Done = st.doneFor != ""
		st.PeriodStart, st.UpdatedAt = st.PeriodStart.UTC(), st.UpdatedAt.UTC()
		if st.NextAttemptAt = st.NextAttemptAt.UTC(); st.NextAttemptAt.Unix() == 0 {
			st.NextAttemptAt = time.Time{}
		}
		out = append(out, st)
	}
	return out, rows.Err()
}

// put stores st as the invoice's new state, at a version above the one it was read at.
func (s *Store) put(ctx context.Context, st *Status, now time.Time) error {
	st.version = max(st.version+1, uint64(now.UnixNano()))
	st.UpdatedAt = now.UTC().Truncate(time.Second)
	st.Done = st.doneFor != ""
	next := st.NextAttemptAt
	if next.IsZero() {
		next = time.Unix(0, 0).UTC()
	}
	row := []any{st.InvoiceID, st.WorkspaceID, st.PeriodStart, st.InvoiceVersion, st.State, st.doneFor, st.CustomerID,
		st.StripeInvoice, uint32(st.ItemsDone), uint32(st.ItemsTotal), st.Amount, st.Currency, uint32(st.Attempts),
		st.LastError, next, st.UpdatedAt, st.version}
	if err := chdb.Insert(ctx, s.conn, sqlset.Fill(insertSyncStateSQL, "db", s.db), [][]any{row}); err != nil {
		return fmt.Errorf("store stripe sync state of %s (%s): %w", st.InvoiceID, st.State, err)
	}
	return nil
}

// Customer is the Stripe customer of a workspace, "" if it has none yet.
func (s *Store) Customer(ctx context.Context, workspaceID string) (string, error) {
	var id string
	err := s.conn.QueryRow(ctx, sqlset.Fill(customerSQL, "db", s.db), workspaceID).Scan(&id)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("read stripe customer of %s: %w", workspaceID, err)
	}
	return id, nil
}

func (s *Store) putCustomer(ctx context.Context, workspaceID, customerID string, now time.Time) error {
	row := []any{workspaceID, customerID, now.UTC().Truncate(time.Second), uint64(now.UnixNano())}
	if err := chdb.Insert(ctx, s.conn, sqlset.Fill(insertCustomerSQL, "db", s.db), [][]any{row}); err != nil {
		return fmt.Errorf("store stripe customer of %s: %w", workspaceID, err)
	}
	return nil
}

func (s *Store) workspaceName(ctx context.Context, workspaceID string) (string, error) {
	var name string
	err := s.conn.QueryRow(ctx, sqlset.Fill(workspaceNameSQL, "db", s.db), workspaceID).Scan(&name)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("read name of workspace %s: %w", workspaceID, err)
	}
	return name, nil
}

// pendingInvoice is a frozen Venna invoice whose push is not complete for its status.
type pendingInvoice struct {
	ID, WorkspaceID, Status string
	PeriodStart             time.Time
	Version                 uint64
}

func (s *Store) pending(ctx context.Context, since time.Time) ([]pendingInvoice, error) {
	rows, err := s.conn.Query(ctx, sqlset.Fill(pendingSQL, "db", s.db, "since", fmt.Sprint(max(since.Unix(), 0))))
	if err != nil {
		return nil, fmt.Errorf("read invoices to push to stripe: %w", err)
	}
	defer rows.Close()
	var out []pendingInvoice
	for rows.Next() {
		var p pendingInvoice
		if err := rows.Scan(&p.ID, &p.WorkspaceID, &p.PeriodStart, &p.Status, &p.Version); err != nil {
			return nil, fmt.Errorf("scan invoice to push: %w", err)
		}
		p.PeriodStart = p.PeriodStart.UTC()
		out = append(out, p)
	}
	return out, rows.Err()
}
