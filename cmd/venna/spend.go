package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/spend"
)

var spendFlags struct {
	workspace, key, amount, thresholds *string
	hard                               *bool
	rpm, tpm                           *uint64
}

func budgetFlags(fs *flag.FlagSet) {
	spendFlags.workspace = fs.String("workspace", "", "workspace ID")
	spendFlags.key = fs.String("key", "", "API key ID: the key's own budget instead of the workspace's")
	spendFlags.amount = fs.String("monthly-usd", "", "budget per calendar month (UTC), USD, e.g. 25.00")
	spendFlags.thresholds = fs.String("thresholds", "50,80,100", "percentages of the budget that raise an alert")
	spendFlags.hard = fs.Bool("hard", false, "refuse completions (429 insufficient_quota) once the budget is spent")
}

func rateLimitFlags(fs *flag.FlagSet) {
	spendFlags.workspace = fs.String("workspace", "", "workspace ID")
	spendFlags.key = fs.String("key", "", "API key ID: the key's own limit instead of the workspace's")
	spendFlags.rpm = fs.Uint64("rpm", 0, "requests per minute (0: no limit)")
	spendFlags.tpm = fs.Uint64("tpm", 0, "tokens (prompt and completion) per minute (0: no limit)")
}

func runBudget(ctx context.Context, env *Env, args []string) error {
	const use = "usage: venna budget set --workspace ID [--key KEY_ID] --monthly-usd N [--thresholds 50,80,100] [--hard] | budget clear --workspace ID [--key KEY_ID] | budget show --workspace ID"
	if *spendFlags.workspace == "" || (sub(args) != "set" && sub(args) != "clear" && sub(args) != "show") {
		return errors.New(use)
	}
	conn, err := openDB(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	store := spend.NewStore(conn, env.Config.ClickHouse.Database)
	switch sub(args) {
	case "set":
		amount, err := decimal.NewFromString(*spendFlags.amount)
		if err != nil {
			return fmt.Errorf("budget set: --monthly-usd %q is not a decimal amount", *spendFlags.amount)
		}
		var th []int
		for _, f := range strings.Split(*spendFlags.thresholds, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			n, err := strconv.Atoi(f)
			if err != nil {
				return fmt.Errorf("budget set: --thresholds %q: want comma-separated percentages", *spendFlags.thresholds)
			}
			th = append(th, n)
		}
		if th == nil {
			th = []int{}
		}
		b, err := store.SetBudget(ctx, spend.Budget{WorkspaceID: *spendFlags.workspace, APIKeyID: *spendFlags.key,
			MonthlyUSD: amount, Thresholds: th, HardLimit: *spendFlags.hard})
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Out, "budget set; gateways enforce it within %s\n", env.Config.SpendRefresh)
		return printJSON(env, b)
	case "clear":
		if err := store.ClearBudget(ctx, *spendFlags.workspace, *spendFlags.key); err != nil {
			return err
		}
		fmt.Fprintf(env.Out, "budget cleared; gateways stop enforcing it within %s\n", env.Config.SpendRefresh)
		return nil
	}
	prices, err := invoice.LoadPriceBook(env.Config.PricesFile)
	if err != nil {
		return err
	}
	st, err := store.Status(ctx, prices, *spendFlags.workspace)
	if err != nil {
		return err
	}
	return printJSON(env, st)
}

func runRateLimit(ctx context.Context, env *Env, args []string) error {
	if *spendFlags.workspace == "" || sub(args) != "set" {
		return errors.New("usage: venna ratelimit set --workspace ID [--key KEY_ID] [--rpm N] [--tpm N]   (both 0: no limit)")
	}
	if *spendFlags.rpm > 1<<32-1 {
		return fmt.Errorf("ratelimit set: --rpm %d is too large", *spendFlags.rpm)
	}
	conn, err := openDB(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	r, err := spend.NewStore(conn, env.Config.ClickHouse.Database).SetRateLimit(ctx, spend.RateLimit{
		WorkspaceID: *spendFlags.workspace, APIKeyID: *spendFlags.key, RPM: uint32(*spendFlags.rpm), TPM: *spendFlags.tpm})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Out, "rate limit set; gateways enforce it within %s\n", env.Config.SpendRefresh)
	return printJSON(env, r)
}
