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

var adminFlags struct {
	name, id, workspace, period, format *string
}

func workspaceFlags(fs *flag.FlagSet) {
	adminFlags.name = fs.String("name", "", "workspace name")
	adminFlags.id = fs.String("id", "", "workspace ID (default: random ws_...)")
}

func keyFlags(fs *flag.FlagSet) {
	adminFlags.name = fs.String("name", "", "key name")
	adminFlags.workspace = fs.String("workspace", "", "workspace ID")
}

func invoiceFlags(fs *flag.FlagSet) {
	adminFlags.workspace = fs.String("workspace", "", "workspace ID")
	adminFlags.period = fs.String("period", "", "month YYYY-MM (default: the current month)")
	adminFlags.format = fs.String("format", "csv", "export format: csv, html or json")
}

func printJSON(env *Env, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(env.Out, string(b))
	return err
}

func runWorkspace(ctx context.Context, env *Env, args []string) error {
	conn, err := openDB(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	store := apikey.NewStore(conn, env.Config.ClickHouse.Database)
	switch sub(args) {
	case "create":
		w, err := store.CreateWorkspace(ctx, *adminFlags.id, *adminFlags.name)
		if err != nil {
			return err
		}
		return printJSON(env, w)
	case "list":
		ws, err := store.Workspaces(ctx)
		if err != nil {
			return err
		}
		return printJSON(env, ws)
	}
	return errors.New("usage: venna workspace create --name N [--id ID] | workspace list")
}

func sub(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

func runKey(ctx context.Context, env *Env, args []string) error {
	conn, err := openDB(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	store := apikey.NewStore(conn, env.Config.ClickHouse.Database)
	switch sub(args) {
	case "create":
		if *adminFlags.workspace == "" {
			return errors.New("key create: --workspace is required")
		}
		k, secret, err := store.IssueKey(ctx, *adminFlags.workspace, *adminFlags.name)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Out, "key %s for workspace %s\nsecret (shown once, store it now): %s\n", k.ID, k.WorkspaceID, secret)
		return nil
	case "list":
		if *adminFlags.workspace == "" {
			return errors.New("key list: --workspace is required")
		}
		keys, err := store.Keys(ctx, *adminFlags.workspace)
		if err != nil {
			return err
		}
		return printJSON(env, keys)
	case "revoke":
		if len(args) != 2 {
			return errors.New("usage: venna key revoke KEY_ID")
		}
		if err := store.Revoke(ctx, args[1]); err != nil {
			return err
		}
		fmt.Fprintf(env.Out, "key %s revoked; gateways stop accepting it within %s\n", args[1], env.Config.KeyRefresh)
		return nil
	}
	return errors.New("usage: venna key create --workspace ID [--name N] | key list --workspace ID | key revoke KEY_ID")
}

func period() (time.Time, time.Time, error) {
	if *adminFlags.period == "" {
		s, e := invoice.Month(time.Now())
		return s, e, nil
	}
	t, err := time.Parse("2006-01", *adminFlags.period)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("--period %q: want YYYY-MM", *adminFlags.period)
	}
	s, e := invoice.Month(t)
	return s, e, nil
}

func runInvoice(ctx context.Context, env *Env, args []string) error {
	conn, err := openDB(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	prices, err := invoice.LoadPriceBook(env.Config.PricesFile)
	if err != nil {
		return err
	}
	inv, err := invoice.New(invoice.Config{Database: env.Config.ClickHouse.Database, Grace: env.Config.InvoiceGrace}, conn, prices)
	if err != nil {
		return err
	}
	switch sub(args) {
	case "run":
		start, end, err := period()
		if err != nil {
			return err
		}
		res, err := inv.Run(ctx, start, end)
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
		if *adminFlags.workspace == "" {
			return errors.New("invoice show: --workspace is required")
		}
		if len(args) == 2 {
			i, err := inv.Get(ctx, *adminFlags.workspace, args[1])
			if err != nil {
				return err
			}
			return printJSON(env, i)
		}
		list, err := inv.List(ctx, *adminFlags.workspace)
		if err != nil {
			return err
		}
		return printJSON(env, list)
	case "finalize", "void":
		if *adminFlags.workspace == "" || len(args) != 2 {
			return fmt.Errorf("usage: venna invoice %s --workspace ID INVOICE_ID", args[0])
		}
		change := inv.Finalize
		if args[0] == "void" {
			change = inv.Void
		}
		i, err := change(ctx, *adminFlags.workspace, args[1])
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Out, "%s  %s  %s  %s %s\n", i.ID, i.WorkspaceID, i.Status, i.Total.StringFixed(2), i.Currency)
		return nil
	case "export":
		if *adminFlags.workspace == "" || len(args) != 2 {
			return errors.New("usage: venna invoice export --workspace ID [--format csv|html|json] INVOICE_ID")
		}
		i, err := inv.Get(ctx, *adminFlags.workspace, args[1])
		if err != nil {
			return err
		}
		switch *adminFlags.format {
		case "csv":
			return i.CSV(env.Out)
		case "html":
			return i.HTML(env.Out)
		case "json":
			return printJSON(env, i)
		}
		return fmt.Errorf("--format %q: want csv, html or json", *adminFlags.format)
	case "reconcile":
		if *adminFlags.workspace == "" || len(args) != 2 {
			return errors.New("usage: venna invoice reconcile --workspace ID INVOICE_ID")
		}
		diffs, err := inv.Reconcile(ctx, *adminFlags.workspace, args[1])
		if err != nil {
			return err
		}
		if len(diffs) == 0 {
			fmt.Fprintf(env.Out, "%s: matches raw events\n", args[1])
			return nil
		}
		for _, d := range diffs {
			fmt.Fprintln(env.Out, d)
		}
		return fmt.Errorf("%s: %d differences from raw events", args[1], len(diffs))
	}
	return errors.New("usage: venna invoice run [--period YYYY-MM] | show --workspace ID [INVOICE_ID] | finalize|void --workspace ID INVOICE_ID | export --workspace ID [--format csv|html|json] INVOICE_ID | reconcile --workspace ID INVOICE_ID")
}
