package invoice

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/instant"
	"github.com/venna/metering/internal/sqlset"
)

// Subscription is a workspace's move to a plan (DefaultPlan: back to the price book) from
// EffectiveFrom, a whole UTC hour, until its next Subscription.
type Subscription struct {
	WorkspaceID   string    `json:"workspace_id"`
	PlanID        string    `json:"plan_id"`
	EffectiveFrom time.Time `json:"effective_from"`
	CreatedAt     time.Time `json:"created_at"`
}

// ErrInvalidSubscription is returned for a subscription change Subscribe refuses.
var ErrInvalidSubscription = errors.New("invalid subscription")

// Subscribe puts workspaceID on plan planID (DefaultPlan cancels) from `from`, which must
// be a whole UTC hour, not before the current month (a closed month's invoice may be
// finalized already: plans do not change what it billed) and at most a year ahead. A change
// at an instant that already has one replaces it.
func (iv *Invoicer) Subscribe(ctx context.Context, workspaceID, planID string, from time.Time) (Subscription, error) {
	now := iv.now().UTC()
	from = from.UTC()
	monthStart, _ := Month(now)
	switch {
	case !from.Equal(from.Truncate(time.Hour)):
		return Subscription{}, fmt.Errorf("%w: effective_from %s is not a whole UTC hour", ErrInvalidSubscription, from.Format(time.RFC3339))
	case from.Before(monthStart):
		return Subscription{}, fmt.Errorf("%w: effective_from %s is before this month (%s): a closed month keeps its plan", ErrInvalidSubscription,
			from.Format(time.RFC3339), monthStart.Format("2006-01"))
	case from.After(now.AddDate(1, 0, 0)):
		return Subscription{}, fmt.Errorf("%w: effective_from %s is more than a year ahead", ErrInvalidSubscription, from.Format(time.RFC3339))
	}
	if planID != DefaultPlan {
		p, err := iv.prices.Plan(planID)
		if err != nil {
			return Subscription{}, fmt.Errorf("%w: %w", ErrInvalidSubscription, err)
		}
		if _, ok := p.At(from); !ok {
			return Subscription{}, fmt.Errorf("%w: plan %s has no version in force at %s", ErrInvalidSubscription, planID, from.Format(time.RFC3339))
		}
	}
	s := Subscription{WorkspaceID: workspaceID, PlanID: planID, EffectiveFrom: from, CreatedAt: now.Truncate(time.Second)}
	row := []any{s.WorkspaceID, s.EffectiveFrom, s.PlanID, s.CreatedAt, uint64(now.UnixNano())}
	if err := chdb.Insert(ctx, iv.conn, sqlset.Fill(insertSubscriptionSQL, "db", iv.cfg.Database), [][]any{row}); err != nil {
		return Subscription{}, fmt.Errorf("store subscription of %s: %w", workspaceID, err)
	}
	return s, nil
}

// Plans lists the price book's plans.
func (iv *Invoicer) Plans() []*Plan { return iv.prices.Plans() }

// Subscriptions returns the subscription changes of the given workspaces (nil: every
// workspace), by workspace, in time order.
func (iv *Invoicer) Subscriptions(ctx context.Context, workspaces []string) (map[string][]Subscription, error) {
	rows, err := iv.conn.Query(ctx, sqlset.Fill(subscriptionsSQL, "db", iv.cfg.Database, "workspaces", wsFilter(workspaces)))
	if err != nil {
		return nil, fmt.Errorf("read subscriptions: %w", err)
	}
	defer rows.Close()
	out := map[string][]Subscription{}
	for rows.Next() {
		var s Subscription
		if err := rows.Scan(&s.WorkspaceID, &s.EffectiveFrom, &s.PlanID, &s.CreatedAt); err != nil {
			return nil, fmt.Errorf("scan subscription: %w", err)
		}
		s.EffectiveFrom, s.CreatedAt = s.EffectiveFrom.UTC(), s.CreatedAt.UTC()
		out[s.WorkspaceID] = append(out[s.WorkspaceID], s)
	}
	return out, rows.Err()
}

// planStretch is part of a period a workspace spent on one version of one plan.
type planStretch struct {
	plan       *Plan
	version    PlanVersion
	start, end time.Time
}

// stretches cuts [start, end) into the parts a workspace spent on a plan, by its
// subscription changes and the plans' version changes; hours on the default plan are left
// out. A subscription to a plan the price book no longer defines is an error (its usage
// cannot be priced), as a model without a price is.
func (pb *PriceBook) stretches(subs []Subscription, start, end time.Time) ([]planStretch, error) {
	var out []planStretch
	for i, s := range subs {
		from, to := s.EffectiveFrom, end
		if i+1 < len(subs) {
			to = subs[i+1].EffectiveFrom
		}
		from, to = instant.Max(from, start), instant.Min(to, end)
		if !to.After(from) || s.PlanID == DefaultPlan {
			continue
		}
		p, err := pb.Plan(s.PlanID)
		if err != nil {
			return nil, err
		}
		// Cut at the plan's version changes.
		cuts := []time.Time{from}
		for _, v := range p.Versions {
			if v.EffectiveFrom.After(from) && v.EffectiveFrom.Before(to) {
				cuts = append(cuts, v.EffectiveFrom)
			}
		}
		cuts = append(cuts, to)
		for k := 0; k+1 < len(cuts); k++ {
			v, ok := p.At(cuts[k])
			if !ok {
				continue // before the plan's first version: the default plan
			}
			out = append(out, planStretch{plan: p, version: v, start: cuts[k], end: cuts[k+1]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].start.Before(out[j].start) })
	return out, nil
}

// at returns the stretch holding t.
func at(ss []planStretch, t time.Time) (planStretch, bool) {
	for _, s := range ss {
		if !t.Before(s.start) && t.Before(s.end) {
			return s, true
		}
	}
	return planStretch{}, false
}

// subscriptionBreakpoints are the instants inside (start, end) at which some workspace's
// plan changes.
func subscriptionBreakpoints(subs map[string][]Subscription, start, end time.Time) []time.Time {
	var out []time.Time
	for _, ss := range subs {
		for _, s := range ss {
			if s.EffectiveFrom.After(start) && s.EffectiveFrom.Before(end) {
				out = append(out, s.EffectiveFrom)
			}
		}
	}
	return out
}
