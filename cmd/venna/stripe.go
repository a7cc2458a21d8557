package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/stripesync"
)

// stripeOn reports whether invoices are pushed to Stripe: only with a key.
func (c *Config) stripeOn() bool { return c.StripeAPIKey != "" }

func (c *Config) stripeConfig() stripesync.Config {
	return stripesync.Config{Database: c.ClickHouse.Database, APIKey: c.StripeAPIKey, APIBase: c.StripeAPIBase,
		CollectionMethod: c.StripeCollection, DaysUntilDue: c.StripeDaysUntilDue, Since: c.StripeSince}
}

// newSyncer is the Stripe push of the invoices conn holds, read through inv.
func newSyncer(env *Env, conn driver.Conn, inv *invoice.Invoicer) (*stripesync.Syncer, error) {
	return stripesync.New(env.Config.stripeConfig(), conn, inv, env.Log.With("job", "stripe"))
}

func stripeCmd() *command {
	var workspace string
	return &command{
		name:    "stripe",
		kind:    kindAdmin,
		summary: "push finalized invoices to Stripe now; show where the pushes stand",
		about: "sync pushes every finalized invoice not yet in Stripe (a customer per workspace, the lines as\n" +
			"invoice items, the Stripe invoice finalized) and voids in Stripe the invoices voided here, as the\n" +
			"aggregate role does on --stripe-schedule; a push that stopped halfway resumes where it stopped.\n" +
			"status prints, as JSON, where each invoice's push stands. sync needs --stripe-api-key.",
		example: []string{"VENNA_STRIPE_API_KEY=sk_live_... venna stripe sync", "venna stripe status --workspace ws_8f3a2c61d0"},
		groups:  []string{"clickhouse", "prices", "stripe", "log"},
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&workspace, "workspace", "", "workspace `ID` (default: every workspace)")
		},
		forms: []form{
			{sub: "sync", note: "push to Stripe now"},
			{sub: "status", opts: "[--workspace ID]", note: "where each invoice's push stands", flags: []string{"workspace"}},
		},
		run: func(ctx context.Context, env *Env, sub string, _ []string) error {
			return runStripe(ctx, env, sub, workspace)
		},
	}
}

func runStripe(ctx context.Context, env *Env, sub, workspace string) error {
	c := env.Config
	if sub == "sync" {
		if !c.stripeOn() {
			return invalid(errors.New("stripe: no Stripe secret key (VENNA_STRIPE_API_KEY or --stripe-api-key): Stripe is off"))
		}
		if err := errors.Join(c.stripeConfig().Validate(), c.invoiceConfig().Validate()); err != nil {
			return invalid(err)
		}
	}
	conn, err := openDB(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	if sub == "status" {
		list, err := stripesync.NewStore(conn, c.ClickHouse.Database).Statuses(ctx, workspace)
		if err != nil {
			return err
		}
		return printJSON(env, list)
	}
	inv, _, err := newInvoicer(env, conn)
	if err != nil {
		return err
	}
	s, err := newSyncer(env, conn, inv)
	if err != nil {
		return err
	}
	res, err := s.Run(ctx)
	for _, id := range res.Pushed {
		fmt.Fprintf(env.Out, "%s  pushed\n", id)
	}
	for _, id := range res.Voided {
		fmt.Fprintf(env.Out, "%s  voided in stripe\n", id)
	}
	for _, id := range res.Skipped {
		fmt.Fprintf(env.Out, "%s  nothing to push\n", id)
	}
	for _, id := range res.Deferred {
		fmt.Fprintf(env.Out, "%s  waiting to retry\n", id)
	}
	for _, id := range sortedKeys(res.Failed) {
		fmt.Fprintf(env.Out, "%s  failed: %v\n", id, res.Failed[id])
	}
	return err
}

// stripePush is the aggregate role's Stripe job. It takes no part in the jobs' lock: a
// slow or unreachable Stripe never delays a rollup or an invoice run.
func (j *jobs) stripePush(ctx context.Context) (err error) {
	j.stripeMu.Lock()
	defer j.stripeMu.Unlock()
	defer j.metrics.observe(jobStripe, time.Now(), &err)
	res, err := j.stripe.Run(ctx)
	if len(res.Pushed)+len(res.Voided)+len(res.Failed) > 0 {
		j.env.Log.Info("stripe push done", "pushed", len(res.Pushed), "voided", len(res.Voided), "failed", len(res.Failed), "waiting", len(res.Deferred))
	}
	if err != nil {
		j.env.Log.Error("stripe push incomplete", "err", err)
	}
	return err
}
