package spend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"time"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/sqlset"
	"github.com/venna/metering/invoice"
)

// Alert types.
const (
	AlertThreshold = "budget.threshold_reached" // a soft threshold below 100 % of a budget
	AlertExceeded  = "budget.exceeded"          // 100 % (or more) of a budget
)

// Alert is an event a budget raised: once per budget, month and threshold. It is the
// payload webhooks deliver (its ID lets a receiver drop a redelivery).
type Alert struct {
	ID               string          `json:"id"`
	Type             string          `json:"type"`
	WorkspaceID      string          `json:"workspace_id"`
	APIKeyID         string          `json:"api_key_id,omitempty"`
	PeriodStart      time.Time       `json:"period_start"`
	ThresholdPercent int             `json:"threshold_percent"`
	BudgetUSD        decimal.Decimal `json:"budget_usd"`
	SpendUSD         decimal.Decimal `json:"spend_usd"`
	HardLimit        bool            `json:"hard_limit"`
	CreatedAt        time.Time       `json:"created_at"`
}

// AlertID is the one ID of a budget's alert for a month and threshold.
func AlertID(workspaceID, keyID string, period time.Time, threshold int) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s|%s|%d|%d", workspaceID, keyID, period.Unix(), threshold)))
	return "alert_" + hex.EncodeToString(h[:12])
}

// Alerter raises the alerts of every budget from the month-to-date spend in ClickHouse.
// Any number may run at once (aggregate replicas): an alert's ID is fixed by what it is,
// so racing alerters write the same row, which ClickHouse folds.
type Alerter struct {
	store  *Store
	prices *invoice.PriceBook
	log    *slog.Logger
	now    func() time.Time
	raised func(Alert) // each alert raised, for metrics
}

// NewAlerter returns an Alerter; raised, if not nil, sees every alert it raises.
func NewAlerter(store *Store, prices *invoice.PriceBook, log *slog.Logger, raised func(Alert)) *Alerter {
	return &Alerter{store: store, prices: prices, log: log, now: time.Now, raised: raised}
}

// Run raises the alerts of the current month not raised yet, and returns them.
func (a *Alerter) Run(ctx context.Context) ([]Alert, error) {
	now := a.now().UTC()
	budgets, err := a.store.Budgets(ctx, now)
	if err != nil || len(budgets) == 0 {
		return nil, err
	}
	ms, err := a.store.MonthToDate(ctx, a.prices, now, "")
	if err != nil {
		return nil, err
	}
	done, err := a.store.alerted(ctx, ms.Start)
	if err != nil {
		return nil, err
	}
	owners := make([]string, 0, len(budgets))
	for o := range budgets {
		owners = append(owners, o)
	}
	sort.Strings(owners)
	var out []Alert
	for _, o := range owners {
		b := budgets[o]
		spent := ms.ByOwner[o]
		if !spent.IsPositive() {
			continue
		}
		for _, t := range b.Thresholds {
			id := AlertID(b.WorkspaceID, b.APIKeyID, ms.Start, t)
			if done[id] || spent.LessThan(b.MonthlyUSD.Mul(decimal.NewFromInt(int64(t))).Shift(-2)) {
				continue
			}
			typ := AlertThreshold
			if t >= 100 {
				typ = AlertExceeded
			}
			out = append(out, Alert{ID: id, Type: typ, WorkspaceID: b.WorkspaceID, APIKeyID: b.APIKeyID, PeriodStart: ms.Start,
				ThresholdPercent: t, BudgetUSD: b.MonthlyUSD, SpendUSD: spent, HardLimit: b.HardLimit, CreatedAt: now.Truncate(time.Second)})
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	rows := make([][]any, len(out))
	for i, al := range out {
		// The earliest detection of an alert is the one kept.
		version := uint64(1)<<63 - uint64(now.UnixNano())
		rows[i] = []any{al.ID, al.Type, al.WorkspaceID, al.APIKeyID, al.PeriodStart, uint16(al.ThresholdPercent), al.BudgetUSD,
			al.SpendUSD, boolByte(al.HardLimit), al.CreatedAt, version}
	}
	if err := chdb.Insert(ctx, a.store.conn, sqlset.Fill(insertAlertSQL, "db", a.store.db), rows); err != nil {
		return nil, fmt.Errorf("store %d spend alerts: %w", len(out), err)
	}
	for _, al := range out {
		a.log.Warn("budget alert", "type", al.Type, "workspace", al.WorkspaceID, "api_key_id", al.APIKeyID,
			"threshold_percent", al.ThresholdPercent, "budget_usd", al.BudgetUSD.String(), "spend_usd", al.SpendUSD.String())
		if a.raised != nil {
			a.raised(al)
		}
	}
	return out, nil
}

// alerted returns the IDs of the alerts already raised for the month starting at period.
func (s *Store) alerted(ctx context.Context, period time.Time) (map[string]bool, error) {
	rows, err := s.conn.Query(ctx, sqlset.Fill(alertedSQL, "db", s.db, "period", strconv.FormatInt(period.Unix(), 10)))
	if err != nil {
		return nil, fmt.Errorf("read raised alerts: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("scan raised alert: %w", err)
		}
		out[id] = true
	}
	return out, rows.Err()
}

// Alerts returns a workspace's alerts of periods from since on, newest first.
func (s *Store) Alerts(ctx context.Context, workspaceID string, since time.Time) ([]Alert, error) {
	rows, err := s.conn.Query(ctx, sqlset.Fill(alertsSQL, "db", s.db, "since", strconv.FormatInt(since.Unix(), 10)), workspaceID)
	if err != nil {
		return nil, fmt.Errorf("read alerts: %w", err)
	}
	defer rows.Close()
	out := []Alert{}
	for rows.Next() {
		var al Alert
		var th uint16
		var hard uint8
		if err := rows.Scan(&al.ID, &al.Type, &al.WorkspaceID, &al.APIKeyID, &al.PeriodStart, &th, &al.BudgetUSD, &al.SpendUSD,
			&hard, &al.CreatedAt); err != nil {
			return nil, fmt.Errorf("scan alert: %w", err)
		}
		al.ThresholdPercent, al.HardLimit = int(th), hard == 1
		al.PeriodStart, al.CreatedAt = al.PeriodStart.UTC(), al.CreatedAt.UTC()
		out = append(out, al)
	}
	return out, rows.Err()
}
