package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/venna/metering/apikey"
	"github.com/venna/metering/invoice"
)

func printJSON(env *Env, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(env.Out, string(b))
	return err
}

func workspaceCmd() *command {
	var name, id string
	return &command{
		name:    "workspace",
		kind:    kindAdmin,
		summary: "create and list workspaces",
		about:   "Creates a workspace (the unit that is billed, owns API keys, budgets and credits) or lists them as JSON.",
		example: []string{"venna workspace create --name \"Acme Robotics\"", "venna workspace list"},
		groups:  []string{"clickhouse", "log"},
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&name, "name", "", "name `N` of the workspace, for people")
			fs.StringVar(&id, "id", "", "workspace `ID` (default: a random ws_...)")
		},
		forms: []form{
			{sub: "create", opts: "--name N [--id ID]", note: "prints the workspace as JSON", flags: []string{"name", "id"}, need: []string{"name"}},
			{sub: "list"},
		},
		run: func(ctx context.Context, env *Env, sub string, _ []string) error {
			conn, err := openDB(ctx, env)
			if err != nil {
				return err
			}
			defer conn.Close()
			store := apikey.NewStore(conn, env.Config.ClickHouse.Database)
			if sub == "create" {
				w, err := store.CreateWorkspace(ctx, id, name)
				if err != nil {
					return err
				}
				return printJSON(env, w)
			}
			ws, err := store.Workspaces(ctx)
			if err != nil {
				return err
			}
			return printJSON(env, ws)
		},
	}
}

func keyCmd() *command {
	var workspace, name string
	return &command{
		name:    "key",
		kind:    kindAdmin,
		summary: "issue, list and revoke API keys",
		about: "Issues an API key for a workspace (its secret is printed once; only its SHA-256 is stored),\n" +
			"lists a workspace's keys, or revokes one: gateways stop accepting it within their --key-refresh.",
		example: []string{"venna key create --workspace ws_8f3a2c61d0 --name laptop", "venna key revoke key_8d1e07b2"},
		groups:  []string{"clickhouse", "keys", "log"},
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&workspace, "workspace", "", "workspace `ID`")
			fs.StringVar(&name, "name", "", "name `N` of the key, for people")
		},
		forms: []form{
			{sub: "create", opts: "--workspace ID [--name N]", note: "prints the secret once", flags: []string{"workspace", "name"}, need: []string{"workspace"}},
			{sub: "list", opts: "--workspace ID", flags: []string{"workspace"}, need: []string{"workspace"}},
			{sub: "revoke", args: "KEY_ID", min: 1, max: 1},
		},
		run: func(ctx context.Context, env *Env, sub string, args []string) error {
			conn, err := openDB(ctx, env)
			if err != nil {
				return err
			}
			defer conn.Close()
			store := apikey.NewStore(conn, env.Config.ClickHouse.Database)
			switch sub {
			case "create":
				k, secret, err := store.IssueKey(ctx, workspace, name)
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Out, "key %s for workspace %s\nsecret (shown once, store it now): %s\n", k.ID, k.WorkspaceID, secret)
				return nil
			case "list":
				keys, err := store.Keys(ctx, workspace)
				if err != nil {
					return err
				}
				return printJSON(env, keys)
			}
			if err := store.Revoke(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(env.Out, "key %s revoked; gateways stop accepting it within %s\n", args[0], env.Config.KeyRefresh)
			return nil
		},
	}
}

func invoiceCmd() *command {
	var workspace, format string
	var period time.Time
	return &command{
		name:    "invoice",
		kind:    kindAdmin,
		summary: "invoice a month now; show, finalize, void, export and reconcile invoices",
		about: "Computes a month's invoices now for every workspace with usage (as the aggregate role does on its\n" +
			"schedule), shows a workspace's invoices, finalizes or voids one, exports one as CSV, HTML or JSON,\n" +
			"or recomputes one from raw events and prints the differences (exit 1 if there are any).",
		example: []string{"venna invoice run --period 2026-10", "venna invoice export --workspace ws_8f3a2c61d0 --format html inv_5e0c9a41d2b7f3086c1a4e92 > invoice.html"},
		groups:  []string{"clickhouse", "prices", "invoices", "log"},
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&workspace, "workspace", "", "workspace `ID`")
			fs.Var(monthValue{&period}, "period", "month to invoice, `YYYY-MM` (default: the current month)")
			format = "csv"
			fs.Var(choiceValue{&format, []string{"csv", "html", "json"}}, "format", "export format")
		},
		forms: []form{
			{sub: "run", opts: "[--period YYYY-MM]", note: "compute (or finalize) every workspace's invoice for a month", flags: []string{"period"}},
			{sub: "show", opts: "--workspace ID", args: "[INVOICE_ID]", flags: []string{"workspace"}, need: []string{"workspace"}, max: 1},
			{sub: "finalize", opts: "--workspace ID", args: "INVOICE_ID", flags: []string{"workspace"}, need: []string{"workspace"}, min: 1, max: 1},
			{sub: "void", opts: "--workspace ID", args: "INVOICE_ID", flags: []string{"workspace"}, need: []string{"workspace"}, min: 1, max: 1},
			{sub: "export", opts: "--workspace ID [--format csv|html|json]", args: "INVOICE_ID", flags: []string{"workspace", "format"}, need: []string{"workspace"}, min: 1, max: 1},
			{sub: "reconcile", opts: "--workspace ID", args: "INVOICE_ID", flags: []string{"workspace"}, need: []string{"workspace"}, min: 1, max: 1},
		},
		run: func(ctx context.Context, env *Env, sub string, args []string) error {
			return runInvoice(ctx, env, sub, args, workspace, format, period)
		},
	}
}

// openInvoicer connects to ClickHouse and opens the invoicer of the price file; close
// closes the connection.
func openInvoicer(ctx context.Context, env *Env, cfg invoice.Config) (inv *invoice.Invoicer, close func(), err error) {
	prices, err := invoice.LoadPriceBook(env.Config.PricesFile)
	if err != nil {
		return nil, nil, err
	}
	conn, err := openDB(ctx, env)
	if err != nil {
		return nil, nil, err
	}
	if inv, err = invoice.New(cfg, conn, prices); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return inv, func() { conn.Close() }, nil
}

func runInvoice(ctx context.Context, env *Env, sub string, args []string, workspace, format string, period time.Time) error {
	cfg := env.Config.invoiceConfig()
	if err := cfg.Validate(); err != nil {
		return invalid(err)
	}
	if sub == "run" {
		// Shown while the run goes, on a terminal only (invoice.Config.Progress).
		cfg.Progress = func(stored, total int) {
			env.Progress.Update("invoiced %d of %d workspaces", stored, total)
		}
	}
	inv, closeDB, err := openInvoicer(ctx, env, cfg)
	if err != nil {
		return err
	}
	defer closeDB()
	switch sub {
	case "run":
		if period.IsZero() {
			period = time.Now()
		}
		start, end := invoice.Month(period)
		env.Progress.Update("invoicing %s: computing…", start.Format("2006-01"))
		res, err := inv.Run(ctx, start, end)
		env.Progress.Done()
		if err != nil {
			return err
		}
		for _, i := range res.Written {
			fmt.Fprintf(env.Out, "%s  %s  %s  %s %s\n", i.ID, i.WorkspaceID, i.Status, i.Total.StringFixed(2), i.Currency)
		}
		for _, id := range res.Frozen {
			fmt.Fprintf(env.Out, "%s  unchanged (finalized or void)\n", id)
		}
		var errs []error
		for _, e := range res.Failed {
			errs = append(errs, e)
		}
		return errors.Join(errs...)
	case "show":
		if len(args) == 1 {
			i, err := inv.Get(ctx, workspace, args[0])
			if err != nil {
				return err
			}
			return printJSON(env, i)
		}
		list, err := inv.List(ctx, workspace)
		if err != nil {
			return err
		}
		return printJSON(env, list)
	case "finalize", "void":
		change := inv.Finalize
		if sub == "void" {
			change = inv.Void
		}
		i, err := change(ctx, workspace, args[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Out, "%s  %s  %s  %s %s\n", i.ID, i.WorkspaceID, i.Status, i.Total.StringFixed(2), i.Currency)
		return nil
	case "export":
		i, err := inv.Get(ctx, workspace, args[0])
		if err != nil {
			return err
		}
		switch format {
		case "html":
			return i.HTML(env.Out)
		case "json":
			return printJSON(env, i)
		}
		return i.CSV(env.Out)
	}
	// reconcile
	diffs, err := inv.Reconcile(ctx, workspace, args[0])
	if err != nil {
		return err
	}
	if len(diffs) == 0 {
		fmt.Fprintf(env.Out, "%s: matches raw events\n", args[0])
		return nil
	}
	for _, d := range diffs {
		fmt.Fprintln(env.Out, d)
	}
	return fmt.Errorf("%s: %d differences from raw events", args[0], len(diffs))
}
