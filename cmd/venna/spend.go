package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

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

var creditFlags struct {
	workspace, amount, from, expires, reason *string
	priority                                 *int
}

func creditCmdFlags(fs *flag.FlagSet) {
	creditFlags.workspace = fs.String("workspace", "", "workspace ID")
	creditFlags.amount = fs.String("amount-usd", "", "credit to grant, USD, e.g. 50.00")
	creditFlags.from = fs.String("effective-from", "", "RFC 3339 time on a whole UTC hour (default: the current hour)")
	creditFlags.expires = fs.String("expires-at", "", "RFC 3339 time on a whole UTC hour (default: never)")
	creditFlags.priority = fs.Int("priority", 0, "among grants expiring together, the lowest is used first")
	creditFlags.reason = fs.String("reason", "", "why the credit was granted (shown on the balance)")
}

func runCredit(ctx context.Context, env *Env, args []string) error {
	const use = "usage: venna credit grant --workspace ID --amount-usd N [--effective-from T] [--expires-at T] [--priority N] [--reason R]" +
		" | credit balance --workspace ID | credit void --workspace ID GRANT_ID | credit prepaid --workspace ID on|off"
	cmd := sub(args)
	if *creditFlags.workspace == "" || (cmd != "grant" && cmd != "balance" && cmd != "void" && cmd != "prepaid") ||
		((cmd == "void" || cmd == "prepaid") && len(args) != 2) {
		return errors.New(use)
	}
	conn, err := openDB(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	prices, err := invoice.LoadPriceBook(env.Config.PricesFile)
	if err != nil {
		return err
	}
	iv, err := invoice.New(invoice.Config{Database: env.Config.ClickHouse.Database, Grace: env.Config.InvoiceGrace}, conn, prices)
	if err != nil {
		return err
	}
	ws := *creditFlags.workspace
	switch cmd {
	case "grant":
		amount, err := decimal.NewFromString(*creditFlags.amount)
		if err != nil {
			return fmt.Errorf("credit grant: --amount-usd %q is not a decimal amount", *creditFlags.amount)
		}
		g := invoice.Grant{WorkspaceID: ws, AmountUSD: amount, EffectiveFrom: time.Now().UTC().Truncate(time.Hour),
			Priority: *creditFlags.priority, Reason: *creditFlags.reason}
		for _, f := range []struct {
			flag string
			val  string
			dst  *time.Time
		}{{"effective-from", *creditFlags.from, &g.EffectiveFrom}, {"expires-at", *creditFlags.expires, &g.ExpiresAt}} {
			if f.val == "" {
				continue
			}
			t, err := time.Parse(time.RFC3339, f.val)
			if err != nil {
				return fmt.Errorf("credit grant: --%s %q: want an RFC 3339 time, e.g. 2026-12-01T00:00:00Z", f.flag, f.val)
			}
			*f.dst = t.UTC()
		}
		g, err = iv.AddGrant(ctx, g)
		if err != nil {
			return err
		}
		return printJSON(env, g)
	case "void":
		g, err := iv.VoidGrant(ctx, ws, args[1])
		if err != nil {
			return err
		}
		return printJSON(env, g)
	case "prepaid":
		on := args[1] == "on"
		if !on && args[1] != "off" {
			return errors.New(use)
		}
		if err := iv.SetPrepaid(ctx, ws, on); err != nil {
			return err
		}
		fmt.Fprintf(env.Out, "workspace %s prepaid: %t; gateways enforce it within %s\n", ws, on, env.Config.SpendRefresh)
		return nil
	}
	b, err := iv.Balance(ctx, ws, time.Now())
	if err != nil {
		return err
	}
	return printJSON(env, b)
}
