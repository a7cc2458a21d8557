package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/spend"
)

func budgetCmd() *command {
	var workspace, key string
	var amount decimal.Decimal
	thresholds := []int{50, 80, 100}
	var hard bool
	return &command{
		name:    "budget",
		kind:    kindAdmin,
		summary: "set, clear and show monthly budgets",
		about: "Sets or clears the monthly budget of a workspace or of one of its keys — soft thresholds raise\n" +
			"alerts, --hard refuses completions once it is spent — or shows the month so far against budgets\n" +
			"and rate limits, with its alerts. Gateways enforce a change within their --spend-refresh.",
		example: []string{"venna budget set --workspace ws_8f3a2c61d0 --monthly-usd 25.00 --thresholds 80,100 --hard", "venna budget show --workspace ws_8f3a2c61d0"},
		groups:  []string{"clickhouse", "prices", "limits", "log"},
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&workspace, "workspace", "", "workspace `ID`")
			fs.StringVar(&key, "key", "", "`KEY_ID` of an API key, for the key's own budget instead of the workspace's")
			fs.Var(decimalValue{&amount}, "monthly-usd", "budget per calendar month (UTC): `N` USD, e.g. 25.00")
			fs.Var(percentsValue{&thresholds}, "thresholds", "`percentages` of the budget that raise an alert, comma-separated (empty: none)")
			fs.BoolVar(&hard, "hard", false, "refuse completions (429 insufficient_quota) once the budget is spent")
		},
		forms: []form{
			{sub: "set", opts: "--workspace ID [--key KEY_ID] --monthly-usd N [--thresholds 50,80,100] [--hard]",
				flags: []string{"workspace", "key", "monthly-usd", "thresholds", "hard"}, need: []string{"workspace", "monthly-usd"}},
			{sub: "clear", opts: "--workspace ID [--key KEY_ID]", flags: []string{"workspace", "key"}, need: []string{"workspace"}},
			{sub: "show", opts: "--workspace ID", note: "the month so far against budgets and limits, and its alerts", flags: []string{"workspace"}, need: []string{"workspace"}},
		},
		run: func(ctx context.Context, env *Env, sub string, _ []string) error {
			b := spend.Budget{WorkspaceID: workspace, APIKeyID: key, MonthlyUSD: amount, Thresholds: thresholds, HardLimit: hard}
			if sub == "set" {
				if err := b.Validate(); err != nil {
					return invalid(err)
				}
			}
			conn, err := openDB(ctx, env)
			if err != nil {
				return err
			}
			defer conn.Close()
			store := spend.NewStore(conn, env.Config.ClickHouse.Database)
			switch sub {
			case "set":
				b, err := store.SetBudget(ctx, b)
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Out, "budget set; gateways enforce it within %s\n", env.Config.SpendRefresh)
				return printJSON(env, b)
			case "clear":
				if err := store.ClearBudget(ctx, workspace, key); err != nil {
					return err
				}
				fmt.Fprintf(env.Out, "budget cleared; gateways stop enforcing it within %s\n", env.Config.SpendRefresh)
				return nil
			}
			prices, err := invoice.LoadPriceBook(env.Config.PricesFile)
			if err != nil {
				return err
			}
			st, err := store.Status(ctx, prices, workspace)
			if err != nil {
				return err
			}
			return printJSON(env, st)
		},
	}
}

func rateLimitCmd() *command {
	var workspace, key string
	var rpm, tpm uint64
	return &command{
		name:    "ratelimit",
		kind:    kindAdmin,
		summary: "set requests and tokens per minute",
		about: "Sets the requests-per-minute and tokens-per-minute limits of a workspace or of one of its keys\n" +
			"(0: no limit). Gateways enforce a change within their --spend-refresh.",
		example: []string{"venna ratelimit set --workspace ws_8f3a2c61d0 --key key_8d1e07b2 --rpm 600 --tpm 150000"},
		groups:  []string{"clickhouse", "limits", "log"},
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&workspace, "workspace", "", "workspace `ID`")
			fs.StringVar(&key, "key", "", "`KEY_ID` of an API key, for the key's own limit instead of the workspace's")
			fs.Var(countValue{&rpm, 1<<32 - 1}, "rpm", "requests per minute (0: no limit)")
			fs.Var(countValue{&tpm, 0}, "tpm", "tokens (prompt and completion) per minute (0: no limit)")
		},
		forms: []form{{sub: "set", opts: "--workspace ID [--key KEY_ID] [--rpm N] [--tpm N]", note: "both 0: no limit",
			flags: []string{"workspace", "key", "rpm", "tpm"}, need: []string{"workspace"}}},
		run: func(ctx context.Context, env *Env, _ string, _ []string) error {
			r := spend.RateLimit{WorkspaceID: workspace, APIKeyID: key, RPM: uint32(rpm), TPM: tpm}
			if err := r.Validate(); err != nil {
				return invalid(err)
			}
			conn, err := openDB(ctx, env)
			if err != nil {
				return err
			}
			defer conn.Close()
			r, err = spend.NewStore(conn, env.Config.ClickHouse.Database).SetRateLimit(ctx, r)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Out, "rate limit set; gateways enforce it within %s\n", env.Config.SpendRefresh)
			return printJSON(env, r)
		},
	}
}

func creditCmd() *command {
	var workspace, reason string
	var amount decimal.Decimal
	var from, expires time.Time
	var priority int
	return &command{
		name:    "credit",
		kind:    kindAdmin,
		summary: "grant, void and show prepaid credits; switch prepaid mode",
		about: "Grants a workspace credit (applied by its invoices, expiring grants first), shows each grant's\n" +
			"use, voids a grant, or switches prepaid mode: a prepaid workspace is refused completions once its\n" +
			"credits are used up, within the gateways' --spend-refresh.",
		example: []string{"venna credit grant --workspace ws_8f3a2c61d0 --amount-usd 50 --expires-at 2027-06-01T00:00:00Z --reason \"annual plan\"",
			"venna credit prepaid --workspace ws_8f3a2c61d0 on"},
		groups: []string{"clickhouse", "prices", "invoices", "limits", "log"},
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&workspace, "workspace", "", "workspace `ID`")
			fs.Var(decimalValue{&amount}, "amount-usd", "credit to grant: `N` USD, e.g. 50.00")
			fs.Var(timeValue{&from}, "effective-from", "when the credit starts: `T`, an RFC 3339 time on a whole UTC hour (default: the current hour)")
			fs.Var(timeValue{&expires}, "expires-at", "when the credit expires: `T`, an RFC 3339 time on a whole UTC hour (default: never)")
			fs.IntVar(&priority, "priority", 0, "priority `N`: among grants expiring together, the lowest is used first")
			fs.StringVar(&reason, "reason", "", "`R`: why the credit was granted (shown on the balance)")
		},
		forms: []form{
			{sub: "grant", opts: "--workspace ID --amount-usd N [--effective-from T] [--expires-at T] [--priority N] [--reason R]",
				flags: []string{"workspace", "amount-usd", "effective-from", "expires-at", "priority", "reason"}, need: []string{"workspace", "amount-usd"}},
			{sub: "balance", opts: "--workspace ID", note: "each grant: used, remaining", flags: []string{"workspace"}, need: []string{"workspace"}},
			{sub: "void", opts: "--workspace ID", args: "GRANT_ID", flags: []string{"workspace"}, need: []string{"workspace"}, min: 1, max: 1},
			{sub: "prepaid", opts: "--workspace ID", args: "on|off", note: "refuse completions once credits are used up",
				flags: []string{"workspace"}, need: []string{"workspace"}, min: 1, max: 1,
				check: func(args []string) error {
					if args[0] != "on" && args[0] != "off" {
						return fmt.Errorf("%q: want on or off", args[0])
					}
					return nil
				}},
		},
		run: func(ctx context.Context, env *Env, sub string, args []string) error {
			if from.IsZero() {
				from = time.Now().UTC().Truncate(time.Hour)
			}
			g := invoice.Grant{WorkspaceID: workspace, AmountUSD: amount, EffectiveFrom: from, ExpiresAt: expires, Priority: priority, Reason: reason}
			cfg := env.Config.invoiceConfig()
			if err := cfg.Validate(); err != nil {
				return invalid(err)
			}
			if sub == "grant" {
				if err := g.Validate(); err != nil {
					return invalid(err)
				}
			}
			iv, closeDB, err := openInvoicer(ctx, env, cfg)
			if err != nil {
				return err
			}
			defer closeDB()
			switch sub {
			case "grant":
				g, err = iv.AddGrant(ctx, g)
				if err != nil {
					return err
				}
				return printJSON(env, g)
			case "void":
				g, err := iv.VoidGrant(ctx, workspace, args[0])
				if err != nil {
					return err
				}
				return printJSON(env, g)
			case "prepaid":
				on := args[0] == "on"
				if err := iv.SetPrepaid(ctx, workspace, on); err != nil {
					return err
				}
				fmt.Fprintf(env.Out, "workspace %s prepaid: %t; gateways enforce it within %s\n", workspace, on, env.Config.SpendRefresh)
				return nil
			}
			b, err := iv.Balance(ctx, workspace, time.Now())
			if err != nil {
				return err
			}
			return printJSON(env, b)
		},
	}
}
