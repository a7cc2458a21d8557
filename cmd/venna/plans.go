package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/venna/metering/invoice"
)

func planCmd() *command {
	var workspace, plan string
	var from time.Time
	return &command{
		name:    "plan",
		kind:    kindAdmin,
		summary: "list plans; subscribe a workspace to a plan, cancel, show",
		about: "Lists the price file's plans (monthly fee, commitment, included usage, rate cards), puts a\n" +
			"workspace on a plan from an hour (default: the current one), returns it to the default plan (the\n" +
			"price book; default: from the next hour), or shows its plan and every change of it.",
		example: []string{"venna plan subscribe --workspace ws_8f3a2c61d0 --plan team",
			"venna plan cancel --workspace ws_8f3a2c61d0 --effective-from 2027-01-01T00:00:00Z"},
		groups: []string{"clickhouse", "prices", "invoices", "log"},
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&workspace, "workspace", "", "workspace `ID`")
			fs.StringVar(&plan, "plan", "", "plan `ID` of the price file")
			fs.Var(timeValue{&from}, "effective-from", "when the change takes effect: `T`, an RFC 3339 time on a whole UTC hour")
		},
		forms: []form{
			{sub: "list", note: "the price file's plans"},
			{sub: "subscribe", opts: "--workspace ID --plan ID [--effective-from T]", flags: []string{"workspace", "plan", "effective-from"},
				need: []string{"workspace", "plan"}},
			{sub: "cancel", opts: "--workspace ID [--effective-from T]", note: "back to the default plan",
				flags: []string{"workspace", "effective-from"}, need: []string{"workspace"}},
			{sub: "show", opts: "--workspace ID", flags: []string{"workspace"}, need: []string{"workspace"}},
		},
		run: func(ctx context.Context, env *Env, sub string, _ []string) error {
			if sub == "list" {
				prices, err := invoice.LoadPriceBook(env.Config.PricesFile)
				if err != nil {
					return err
				}
				return printJSON(env, prices.Plans())
			}
			cfg := env.Config.invoiceConfig()
			if err := cfg.Validate(); err != nil {
				return invalid(err)
			}
			iv, closeDB, err := openInvoicer(ctx, env, cfg)
			if err != nil {
				return err
			}
			defer closeDB()
			now := time.Now().UTC().Truncate(time.Hour)
			switch sub {
			case "subscribe", "cancel":
				if from.IsZero() {
					from = now
					if sub == "cancel" {
						from = now.Add(time.Hour) // the hour begun stays on the plan
					}
				}
				if sub == "cancel" {
					plan = invoice.DefaultPlan
				}
				s, err := iv.Subscribe(ctx, workspace, plan, from)
				if err != nil {
					return err
				}
				name := s.PlanID
				if name == invoice.DefaultPlan {
					name = "the default plan"
				}
				fmt.Fprintf(env.Out, "workspace %s on %s from %s\n", s.WorkspaceID, name, s.EffectiveFrom.Format(time.RFC3339))
				return nil
			}
			subs, err := iv.Subscriptions(ctx, []string{workspace})
			if err != nil {
				return err
			}
			return printJSON(env, subs[workspace])
		},
	}
}
