// Command venna runs the roles of Venna metering: the gateway, the ingest consumer, the
// aggregator (rollups and invoices on a cron schedule) and the REST API, separately or all
// in one process, plus the admin commands around them.
//
// Exit status: 0 when the command did its work (or printed the help asked for), 1 when the
// work failed, 2 for a usage error — an unknown command, flag or subcommand, a bad or
// missing flag value — found before anything was connected to.
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
	"syscall"
)

// Exit statuses; exitCode is the one place an outcome becomes one.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError is a mistake in the command line or in the configuration, found before any
// connection was made: venna prints it with the command's usage and exits 2, so that a
// script can tell "you called me wrong" from "the work failed" (exit 1).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return &usageError{fmt.Errorf(format, args...)} }

// invalid marks err, a configuration a component refused, as a usage error.
func invalid(err error) error {
	if err == nil {
		return nil
	}
	return &usageError{err}
}

// exitCode is the exit status of a command that returned err.
func exitCode(err error) int {
	var u *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &u):
		return exitUsage
	}
	return exitFailure
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// runMain runs venna with args, reports a failure on stderr and returns the exit status.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := runWith(ctx, args, streams{Out: stdout, Err: stderr, Terminal: isTerminal(stderr)})
	code := exitCode(err)
	switch code {
	case exitFailure:
		fmt.Fprintf(stderr, "venna: %v\n", err)
	case exitUsage:
		printUsageError(stderr, args, err)
	}
	return code
}

// printUsageError shows what was wrong and how the command is called: its usage lines
// when the command is known, every command's otherwise.
func printUsageError(w io.Writer, args []string, err error) {
	var cmd *command
	if len(args) > 0 {
		cmd = lookup(args[0])
	}
	if cmd == nil {
		fmt.Fprintf(w, "venna: %v\n\n%s", err, overview())
		return
	}
	fmt.Fprintf(w, "venna %s: %v\nUsage:\n", cmd.name, err)
	for _, l := range cmd.usageLines() {
		fmt.Fprintf(w, "  %s\n", l)
	}
	fmt.Fprintf(w, "Run 'venna %s -h' for its flags and an example.\n", cmd.name)
}

// streams are where a command writes: results and asked-for help to Out; logs and
// progress to Err, progress only when Err is a terminal (a person watching).
type streams struct {
	Out, Err io.Writer
	Terminal bool
}

// run runs venna with args, writing results to out; tests call it.
func run(ctx context.Context, args []string, out io.Writer) error {
	return runWith(ctx, args, streams{Out: out, Err: os.Stderr})
}

func runWith(ctx context.Context, args []string, st streams) error {
	if len(args) == 0 {
		return usagef("no command given")
	}
	switch name := args[0]; name {
	case "-h", "-help", "--help":
		fmt.Fprint(st.Out, overview())
		return nil
	case "help":
		return runHelp(st, args[1:])
	default:
		cmd := lookup(name)
		if cmd == nil {
			return usagef("unknown command %q", name)
		}
		return cmd.execute(ctx, args[1:], st)
	}
}

// runHelp is `venna help [COMMAND]`.
func runHelp(st streams, args []string) error {
	switch {
	case len(args) == 0:
		fmt.Fprint(st.Out, overview())
		return nil
	case len(args) > 1:
		return usagef("help: want at most one command, got %q", args)
	}
	cmd := lookup(args[0])
	if cmd == nil {
		return usagef("help: unknown command %q", args[0])
	}
	var cfg Config
	fs, _, _ := cmd.flagSet(&cfg)
	cmd.help(st.Out, fs)
	return nil
}

// Env is what every command gets: the config, the logger and where to write.
type Env struct {
	Config Config
	Log    *slog.Logger
	Out    io.Writer // results
	Err    io.Writer // logs, progress
	// Progress is shown on Err when it is a terminal, nowhere otherwise.
	Progress *progress
	given    map[string]bool // flags given on the command line
}

// execute parses args against the command's flags, picks its form, checks everything
// that can be checked without a connection, then runs it.
func (c *command) execute(ctx context.Context, args []string, st streams) error {
	env := &Env{Out: st.Out, Err: st.Err, Progress: newProgress(st.Err, st.Terminal)}
	fs, own, bad := c.flagSet(&env.Config)
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		c.help(st.Out, fs)
		return flag.ErrHelp
	}
	if err != nil {
		return &usageError{err}
	}
	env.given = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { env.given[f.Name] = true })
	for _, name := range sortedKeys(bad) {
		if !env.given[name] { // an environment variable its flag would refuse, and no flag
			return &usageError{bad[name]}
		}
	}
	sub, rest, err := c.pick(fs, own, pos)
	if err != nil {
		return err
	}
	if c.takes("clickhouse") {
		if err := env.Config.ClickHouse.Validate(); err != nil {
			return invalid(err)
		}
	}
	env.Log = slog.New(slog.DiscardHandler)
	if c.takes("log") {
		var level slog.Level
		level.UnmarshalText([]byte(env.Config.LogLevel)) // checked by the flag
		env.Log = slog.New(slog.NewJSONHandler(st.Err, &slog.HandlerOptions{Level: level})).With("role", c.name)
	}
	return c.run(ctx, env, sub, rest)
}

// flagSet is the command's flags: its own, then the settings of its groups. own names
// its own; bad, the settings whose environment variable holds a value their flag refuses
// (Config.bind).
func (c *command) flagSet(cfg *Config) (fs *flag.FlagSet, own map[string]bool, bad map[string]error) {
	fs = flag.NewFlagSet("venna "+c.name, flag.ContinueOnError)
	// execute prints help and errors itself: to stdout when asked for, with the usage
	// lines on stderr when something is wrong.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if c.flags != nil {
		c.flags(fs)
	}
	own = map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { own[f.Name] = true })
	return fs, own, cfg.bind(fs, c.groups...)
}

// parseInterspersed parses flags before, between and after positional arguments
// ("key revoke KEY --log-level debug"); everything after "--" is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		// Parse stops at the first non-flag argument, or just after a "--", which it drops.
		if i := len(args) - len(rest); i > 0 && args[i-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// pick finds the form args call — the subcommand, for a command that has them — and
// checks its flags and arguments: sub is the subcommand, rest the arguments after it.
func (c *command) pick(fs *flag.FlagSet, own map[string]bool, pos []string) (sub string, rest []string, err error) {
	f, rest := c.forms[0], pos
	if subs := c.subs(); len(subs) > 0 {
		if len(pos) == 0 {
			return "", nil, usagef("missing subcommand: want %s", orList(subs))
		}
		var ok bool
		if f, ok = c.form(pos[0]); !ok {
			return "", nil, usagef("unknown subcommand %q: want %s", pos[0], orList(subs))
		}
		rest = pos[1:]
	}
	// printUsageError puts "venna <command>: " before these; the subcommand is said here.
	what := ""
	if f.sub != "" {
		what = f.sub + ": "
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	for _, name := range sortedKeys(set) {
		if own[name] && !contains(f.flags, name) {
			return "", nil, usagef("%s does not take --%s", f.sub, name)
		}
	}
	for _, name := range f.need {
		if !set[name] {
			return "", nil, usagef("%s--%s is required", what, name)
		}
	}
	switch {
	case len(rest) < f.min:
		return "", nil, usagef("%smissing %s", what, f.args)
	case len(rest) > f.max:
		return "", nil, usagef("%sunexpected argument %q", what, rest[f.max])
	}
	if f.check != nil {
		if err := f.check(rest); err != nil {
			return "", nil, usagef("%s%v", what, err)
		}
	}
	return f.sub, rest, nil
}
