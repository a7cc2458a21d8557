package api

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/invoice"
)

// Plans are the price book's plans and the workspaces' subscriptions (invoice.Invoicer).
type Plans interface {
	Plans() []*invoice.Plan
	Subscribe(ctx context.Context, workspaceID, planID string, from time.Time) (invoice.Subscription, error)
	Subscriptions(ctx context.Context, workspaces []string) (map[string][]invoice.Subscription, error)
}

// WithPlans serves a workspace's subscription (GET /v1/subscription) and lets the admin list
// plans and subscribe or cancel workspaces.
func WithPlans(p Plans) Option { return func(s *Server) { s.plans = p } }

type tierView struct {
	UpTo       uint64          `json:"up_to"` // 0: no bound (the last tier)
	PerMillion decimal.Decimal `json:"usd_per_million"`
}

type rateView struct {
	Model        string           `json:"model"`
	TokenClass   string           `json:"token_class"`
	Pricing      string           `json:"pricing"`
	PerMillion   *decimal.Decimal `json:"usd_per_million,omitempty"`
	Tiers        []tierView       `json:"tiers,omitempty"`
	PackageSize  uint64           `json:"package_size,omitempty"`
	PackagePrice *decimal.Decimal `json:"package_price,omitempty"`
}

type planVersionView struct {
	EffectiveFrom time.Time       `json:"effective_from"`
	Fee           decimal.Decimal `json:"fee"`
	Commitment    decimal.Decimal `json:"commitment"`
	IncludedUsage decimal.Decimal `json:"included_usage"`
	Rates         []rateView      `json:"rates"`
}

type planView struct {
	Object   string            `json:"object"`
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Versions []planVersionView `json:"versions"`
}

func viewPlan(p *invoice.Plan) planView {
	v := planView{Object: "plan", ID: p.ID, Name: p.Name, Versions: []planVersionView{}}
	for _, pv := range p.Versions {
		vv := planVersionView{EffectiveFrom: pv.EffectiveFrom, Fee: pv.Fee, Commitment: pv.Commitment, IncludedUsage: pv.IncludedUsage, Rates: []rateView{}}
		for _, r := range pv.Rates {
			rv := rateView{Model: r.Model, TokenClass: r.Class, Pricing: r.Pricing}
			switch r.Pricing {
			case invoice.PricingPerUnit:
				rv.PerMillion = &r.PerMillion
			case invoice.PricingPackage:
				rv.PackageSize, rv.PackagePrice = r.PackageSize, &r.PackagePrice
			default:
				for _, t := range r.Tiers {
					rv.Tiers = append(rv.Tiers, tierView{UpTo: t.UpTo, PerMillion: t.PerMillion})
				}
			}
			vv.Rates = append(vv.Rates, rv)
		}
		slices.SortFunc(vv.Rates, func(a, b rateView) int {
			return strings.Compare(a.Model+"/"+a.TokenClass, b.Model+"/"+b.TokenClass)
		})
		v.Versions = append(v.Versions, vv)
	}
	return v
}

func (s *Server) listPlans(w http.ResponseWriter, r *http.Request) {
	out := []planView{}
	for _, p := range s.plans.Plans() {
		out = append(out, viewPlan(p))
	}
	apierr.JSON(w, http.StatusOK, map[string]any{"object": "list", "data": out})
}

// subscriptionView is a workspace's plan now and every change of it.
type subscriptionView struct {
	Object      string                 `json:"object"`
	WorkspaceID string                 `json:"workspace_id"`
	PlanID      string                 `json:"plan_id"` // in force now; "" is the default plan (the price book)
	Changes     []invoice.Subscription `json:"changes"`
}

func (s *Server) subscription(w http.ResponseWriter, r *http.Request) {
	if s.plans == nil {
		apierr.Write(w, http.StatusNotFound, "invalid_request_error", "unknown_url", "Plans are not configured on this API.", "")
		return
	}
	s.writeSubscription(w, r, http.StatusOK)
}

func (s *Server) writeSubscription(w http.ResponseWriter, r *http.Request, status int) {
	ws := workspace(r)
	subs, err := s.plans.Subscriptions(r.Context(), []string{ws})
	if err != nil {
		s.serverError(w, "read subscription", err)
		return
	}
	v := subscriptionView{Object: "subscription", WorkspaceID: ws, Changes: subs[ws]}
	if v.Changes == nil {
		v.Changes = []invoice.Subscription{}
	}
	now := s.now()
	for _, c := range v.Changes {
		if !c.EffectiveFrom.After(now) {
			v.PlanID = c.PlanID
		}
	}
	apierr.JSON(w, status, v)
}

// setSubscription puts the workspace on a plan from effective_from (default: the start of
// the current hour, which is billed on the plan).
func (s *Server) setSubscription(w http.ResponseWriter, r *http.Request) {
	var body struct {
		PlanID        string     `json:"plan_id"`
		EffectiveFrom *time.Time `json:"effective_from"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	if body.PlanID == "" {
		badParam(w, "plan_id", "'plan_id' is required: a plan of GET /v1/admin/plans (DELETE the subscription to go back to the default plan).")
		return
	}
	from := s.now().UTC().Truncate(time.Hour)
	if body.EffectiveFrom != nil {
		from = *body.EffectiveFrom
	}
	s.changeSubscription(w, r, body.PlanID, from, "effective_from")
}

// cancelSubscription returns the workspace to the default plan from effective_from
// (default: the end of the current hour, which is still billed on the plan).
func (s *Server) cancelSubscription(w http.ResponseWriter, r *http.Request) {
	from := s.now().UTC().Truncate(time.Hour).Add(time.Hour)
	if q := r.URL.Query(); q.Has("effective_from") {
		t, err := time.Parse(time.RFC3339, q.Get("effective_from"))
		if err != nil {
			badParam(w, "effective_from", "'effective_from' must be an RFC 3339 time on a whole UTC hour, e.g. 2026-12-01T00:00:00Z.")
			return
		}
		from = t
	}
	s.changeSubscription(w, r, invoice.DefaultPlan, from, "effective_from")
}

func (s *Server) changeSubscription(w http.ResponseWriter, r *http.Request, planID string, from time.Time, param string) {
	if _, err := s.plans.Subscribe(r.Context(), workspace(r), planID, from); err != nil {
		if errors.Is(err, invoice.ErrInvalidSubscription) {
			field := param
			if errors.Is(err, invoice.ErrNoPlan) {
				field = "plan_id"
			}
			badParam(w, field, strings.TrimPrefix(err.Error(), invoice.ErrInvalidSubscription.Error()+": "))
			return
		}
		s.serverError(w, "change subscription", err)
		return
	}
	s.writeSubscription(w, r, http.StatusOK)
}
