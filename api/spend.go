package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/internal/apierr"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/spend"
)

// Spend is the store of budgets, rate limits and alerts (spend.Store).
type Spend interface {
	Status(ctx context.Context, prices *invoice.PriceBook, workspaceID string) (spend.Status, error)
	SetBudget(ctx context.Context, b spend.Budget) (spend.Budget, error)
	ClearBudget(ctx context.Context, workspaceID, keyID string) error
	SetRateLimit(ctx context.Context, r spend.RateLimit) (spend.RateLimit, error)
}

// WithSpend serves a workspace's budgets, limits and alerts (GET /v1/spend) and lets the
// admin set them. It needs WithPrices: spend is priced as invoices price it.
func WithSpend(sp Spend) Option { return func(s *Server) { s.spend = sp } }

func (s *Server) spendStatus(w http.ResponseWriter, r *http.Request) {
	if s.spend == nil || s.prices == nil {
		apierr.Write(w, http.StatusNotFound, "invalid_request_error", "unknown_url", "Spend control is not configured on this API.", "")
		return
	}
	st, err := s.spend.Status(r.Context(), s.prices, workspace(r))
	if err != nil {
		s.serverError(w, "read spend status", err)
		return
	}
	apierr.JSON(w, http.StatusOK, st)
}

// keyOfWorkspace checks that keyID (if any) is one of the workspace's keys; it answers
// the 404 itself.
func (s *Server) keyOfWorkspace(w http.ResponseWriter, r *http.Request, keyID string) bool {
	if keyID == "" {
		return true
	}
	keys, err := s.accounts.Keys(r.Context(), workspace(r))
	if err != nil {
		s.serverError(w, "list keys", err)
		return false
	}
	if !slices.ContainsFunc(keys, func(k apikey.Key) bool { return k.ID == keyID }) {
		apierr.Write(w, http.StatusNotFound, "invalid_request_error", "key_not_found",
			fmt.Sprintf("Workspace %s has no key %q.", workspace(r), keyID), "api_key_id")
		return false
	}
	return true
}

func (s *Server) setBudget(w http.ResponseWriter, r *http.Request) {
	var body struct {
		APIKeyID      string     `json:"api_key_id"`
		MonthlyUSD    string     `json:"monthly_usd"`
		Thresholds    []int      `json:"thresholds"`
		HardLimit     bool       `json:"hard_limit"`
		EffectiveFrom *time.Time `json:"effective_from"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	amount, err := decimal.NewFromString(body.MonthlyUSD)
	if err != nil {
		badParam(w, "monthly_usd", "'monthly_usd' is required: a decimal string of USD, e.g. \"25.00\".")
		return
	}
	if !s.keyOfWorkspace(w, r, body.APIKeyID) {
		return
	}
	b := spend.Budget{WorkspaceID: workspace(r), APIKeyID: body.APIKeyID, MonthlyUSD: amount, Thresholds: body.Thresholds, HardLimit: body.HardLimit}
	if body.EffectiveFrom != nil {
		b.EffectiveFrom = body.EffectiveFrom.UTC()
	}
	if b.Thresholds == nil {
		b.Thresholds = spend.DefaultThresholds
	}
	if len(b.Thresholds) > 10 {
		badParam(w, "thresholds", "At most 10 thresholds.")
		return
	}
	b.Normalize()
	if err := b.Validate(); err != nil {
		param := "monthly_usd"
		if strings.Contains(err.Error(), "threshold") {
			param = "thresholds"
		}
		badParam(w, param, err.Error())
		return
	}
	b, err = s.spend.SetBudget(r.Context(), b)
	if err != nil {
		s.serverError(w, "set budget", err)
		return
	}
	apierr.JSON(w, http.StatusOK, b)
}

func (s *Server) clearBudget(w http.ResponseWriter, r *http.Request) {
	keyID := r.URL.Query().Get("api_key_id")
	if !s.keyOfWorkspace(w, r, keyID) {
		return
	}
	if err := s.spend.ClearBudget(r.Context(), workspace(r), keyID); err != nil {
		s.serverError(w, "clear budget", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) setRateLimit(w http.ResponseWriter, r *http.Request) {
	var body struct {
		APIKeyID string `json:"api_key_id"`
		RPM      uint32 `json:"rpm"`
		TPM      uint64 `json:"tpm"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	if !s.keyOfWorkspace(w, r, body.APIKeyID) {
		return
	}
	rl := spend.RateLimit{WorkspaceID: workspace(r), APIKeyID: body.APIKeyID, RPM: body.RPM, TPM: body.TPM}
	if err := rl.Validate(); err != nil {
		badParam(w, "tpm", err.Error())
		return
	}
	rl, err := s.spend.SetRateLimit(r.Context(), rl)
	if err != nil {
		s.serverError(w, "set rate limit", err)
		return
	}
	apierr.JSON(w, http.StatusOK, rl)
}
