// Command venna runs the roles of Venna metering: the gateway, the ingest consumer, the
// aggregator (rollups and invoices on a cron schedule) and the REST API, separately or all
// in one process, plus the admin commands around them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `venna — usage metering and billing for an OpenAI-compatible LLM gateway

Usage: venna <command> [flags]

Roles (run until SIGINT/SIGTERM, then drain):
  gateway        POST /v1/chat/completions → upstream; usage events → Kafka
  ingest         Kafka → ClickHouse consumer (one member of the consumer group)
  aggregate      cron: hourly rollups and invoices
  api            REST API: /v1/usage, /v1/invoices
  all            every role above in one process (single machine)
  sim-upstream   the simulated OpenAI-compatible upstream (demo and tests)

Admin:
  migrate                          create/upgrade the ClickHouse schema, the Kafka topic, the price book
  workspace create --name N [--id ID]
  workspace list
  key create --workspace ID [--name N]   prints the secret once
  key list --workspace ID
  key revoke KEY_ID
  invoice run [--period YYYY-MM]   compute (or finalize) invoices for a month
  invoice show --workspace ID [INVOICE_ID]
  invoice finalize|void --workspace ID INVOICE_ID
  invoice export --workspace ID [--format csv|html|json] INVOICE_ID
  invoice reconcile --workspace ID INVOICE_ID
  budget set --workspace ID [--key KEY_ID] --monthly-usd N [--thresholds 50,80,100] [--hard]
  budget clear --workspace ID [--key KEY_ID]
  budget show --workspace ID       the month so far against budgets and limits, and its alerts
  ratelimit set --workspace ID [--key KEY_ID] [--rpm N] [--tpm N]
  credit grant --workspace ID --amount-usd N [--effective-from T] [--expires-at T] [--priority N] [--reason R]
  credit balance --workspace ID    each grant: used, remaining
  credit void --workspace ID GRANT_ID
  credit prepaid --workspace ID on|off   refuse completions once credits are used up
  dlq redrive [--limit N]          put dead-lettered events that now validate back on the usage topic
  demo [--requests N]              send traffic for two new workspaces, print usage and invoices
  config-table                     print the configuration reference (Markdown)

Every command takes the flags below; each defaults to its environment variable.
Run 'venna <command> -h' to list them.
`

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "venna: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		fmt.Fprint(os.Stdout, usage)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "venna: %v\n", err)
		os.Exit(1)
	}
}

// command is a subcommand's body: it gets the parsed config and the remaining arguments.
type command func(ctx context.Context, env *Env, args []string) error

// Env is what every command gets: the config and the logger.
type Env struct {
	Config Config
	Log    *slog.Logger
	Out    io.Writer
	Flags  *flag.FlagSet
}

func commands() map[string]struct {
	run   command
	extra func(fs *flag.FlagSet) // command-specific flags
} {
	type entry = struct {
		run   command
		extra func(fs *flag.FlagSet)
	}
	return map[string]entry{
		"gateway":      {run: runGateway},
		"ingest":       {run: runIngest},
		"aggregate":    {run: runAggregate, extra: aggregateFlags},
		"api":          {run: runAPI},
		"all":          {run: runAll, extra: allFlags},
		"sim-upstream": {run: runSim},
		"migrate":      {run: runMigrate},
		"dlq":          {run: runDLQ, extra: dlqFlags},
		"workspace":    {run: runWorkspace, extra: workspaceFlags},
		"key":          {run: runKey, extra: keyFlags},
		"invoice":      {run: runInvoice, extra: invoiceFlags},
		"budget":       {run: runBudget, extra: budgetFlags},
		"ratelimit":    {run: runRateLimit, extra: rateLimitFlags},
		"credit":       {run: runCredit, extra: creditCmdFlags},
		"demo":         {run: runDemo, extra: demoFlags},
		"config-table": {run: func(_ context.Context, env *Env, _ []string) error { fmt.Fprint(env.Out, configTable()); return nil }},
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	name := args[0]
	cmd, ok := commands()[name]
	if !ok {
		return fmt.Errorf("unknown command %q (venna --help lists them)", name)
	}
	env := &Env{Out: out}
	fs := newFlagSet(name)
	env.Config.bind(fs)
	if cmd.extra != nil {
		cmd.extra(fs)
	}
	// Flags may come before or after positional arguments: "key revoke KEY --x".
	rest, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(env.Config.LogLevel)); err != nil {
		return fmt.Errorf("log-level %q: want debug, info, warn or error", env.Config.LogLevel)
	}
	env.Log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("role", name)
	env.Flags = fs
	return cmd.run(ctx, env, rest)
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("venna "+name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	return fs
}

func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		if args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
		if len(args) == 0 || !strings.HasPrefix(args[0], "-") {
			for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
				positional = append(positional, args[0])
				args = args[1:]
			}
		}
	}
}
