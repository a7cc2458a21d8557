package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
)

// command is one subcommand of venna: its help, the setting groups its code reads (and
// so the only settings it takes as flags), its own flags and its body.
type command struct {
	name    string
	kind    string   // the heading it is listed under in `venna -h`: kindRole, kindAdmin, kindTool
	summary string   // its line in `venna -h`
	about   string   // what it does, for its -h: a sentence or two
	example []string // command lines for its -h
	groups  []string // setting groups it reads (config.go)
	// forms are the ways to call it: one per subcommand for a command that has them,
	// else one (nil: one taking no flags and no arguments).
	forms []form
	flags func(fs *flag.FlagSet) // registers its own flags, into variables run reads
	run   func(ctx context.Context, env *Env, sub string, args []string) error
}

// form is one way to call a command, e.g. `venna key create --workspace ID [--name N]`.
type form struct {
	sub      string   // subcommand; "" for a command without
	opts     string   // its flags as its usage line shows them
	args     string   // its positional arguments as its usage line shows them
	note     string   // what it does, in a few words
	flags    []string // the command's own flags it takes: any other is refused
	need     []string // the flags it requires
	min, max int      // how many positional arguments it takes
	// check, if set, checks the positional arguments before anything is connected to.
	check func(args []string) error
}

const (
	kindRole  = "Roles (run until SIGINT/SIGTERM, then drain)"
	kindAdmin = "Admin"
	kindTool  = "Tools"
)

// commands is every command, in the order `venna -h` lists them. Each call returns fresh
// ones: their flags are bound to variables of their own.
func commands() []*command {
	return []*command{
		gatewayCmd(), ingestCmd(), aggregateCmd(), apiCmd(), allCmd(), simCmd(),
		migrateCmd(), workspaceCmd(), keyCmd(), invoiceCmd(), budgetCmd(), rateLimitCmd(), creditCmd(), planCmd(), stripeCmd(), webhookCmd(), dlqCmd(), demoCmd(),
		probeCmd(), configTableCmd(),
	}
}

// lookup is the command called name, nil if there is none.
func lookup(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			c.init()
			return c
		}
	}
	return nil
}

func (c *command) init() {
	if len(c.forms) == 0 {
		c.forms = []form{{}}
	}
}

func (c *command) takes(group string) bool { return slices.Contains(c.groups, group) }

// subs are the command's subcommands, none for a command without.
func (c *command) subs() []string {
	var out []string
	for _, f := range c.forms {
		if f.sub != "" {
			out = append(out, f.sub)
		}
	}
	return out
}

func (c *command) form(sub string) (form, bool) {
	for _, f := range c.forms {
		if f.sub == sub && sub != "" {
			return f, true
		}
	}
	return form{}, false
}

// usageLines are the command's forms as usage lines.
func (c *command) usageLines() []string {
	c.init()
	var out []string
	for _, f := range c.forms {
		out = append(out, f.line(c.name))
	}
	return out
}

func (f form) line(name string) string {
	parts := []string{"venna", name}
	for _, p := range []string{f.sub, f.opts, f.args} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, " ")
}

// help writes the command's -h: usage lines, what it does, an example, then its flags —
// its own, then its settings by group.
func (c *command) help(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "Usage:")
	for _, l := range c.usageLines() {
		fmt.Fprintf(w, "  %s\n", l)
	}
	fmt.Fprintf(w, "\n%s\n", c.about)
	if len(c.example) > 0 {
		fmt.Fprintln(w, "\nExample:")
		for _, e := range c.example {
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
	var own []*flag.Flag
	byGroup := map[string][]*flag.Flag{}
	fs.VisitAll(func(f *flag.Flag) {
		if g := settingGroup(f.Name); g != "" && c.takes(g) {
			byGroup[g] = append(byGroup[g], f)
		} else {
			own = append(own, f)
		}
	})
	if len(own) > 0 {
		fmt.Fprintln(w, "\nFlags:")
		for _, f := range own {
			printFlag(w, f, c.formsTaking(f.Name))
		}
	}
	if len(byGroup) > 0 {
		fmt.Fprintln(w, "\nSettings (each flag defaults to its environment variable):")
	}
	var c0 Config
	order := map[string]int{}
	for i, s := range c0.settings() {
		order[s.flag] = i
	}
	for _, g := range groups {
		fl := byGroup[g.name]
		if len(fl) == 0 {
			continue
		}
		sort.Slice(fl, func(i, j int) bool { return order[fl[i].Name] < order[fl[j].Name] })
		fmt.Fprintf(w, "\n%s:\n", g.title)
		for _, f := range fl {
			printFlag(w, f, "")
		}
	}
}

// formsTaking names the subcommands that take the command's own flag name, when not all do.
func (c *command) formsTaking(name string) string {
	var in []string
	for _, f := range c.forms {
		if slices.Contains(f.flags, name) {
			in = append(in, f.sub)
		}
	}
	if len(c.subs()) == 0 || len(in) == len(c.forms) {
		return ""
	}
	return strings.Join(in, ", ")
}

// typeNamer is a flag.Value that names the kind of value it takes in help.
type typeNamer interface{ typeName() string }

// printFlag writes one flag the way the flag package does, with two dashes.
func printFlag(w io.Writer, f *flag.Flag, forms string) {
	name, usage := flag.UnquoteUsage(f)
	if t, ok := f.Value.(typeNamer); ok && name == "value" {
		name = t.typeName()
	}
	line := "  --" + f.Name
	if name != "" {
		line += " " + name
	}
	if forms != "" {
		usage += " (" + forms + ")"
	}
	switch def := f.DefValue; {
	case def == "", def == "0", def == "false", def == "0s":
	case name == "string", strings.Contains(def, " "):
		usage += fmt.Sprintf(" (default %q)", def)
	default:
		usage += fmt.Sprintf(" (default %s)", def)
	}
	fmt.Fprintf(w, "%s\n        %s\n", line, strings.ReplaceAll(usage, "\n", "\n        "))
}

// overview is `venna -h`: every command, every form of those with subcommands, and the
// exit statuses.
func overview() string {
	var b strings.Builder
	b.WriteString("venna — usage metering and billing for an OpenAI-compatible LLM gateway\n\n")
	b.WriteString("Usage: venna <command> [subcommand] [flags] [arguments]\n")
	cmds := commands()
	width := 0
	for _, c := range cmds {
		width = max(width, len(c.name))
	}
	for _, kind := range []string{kindRole, kindAdmin, kindTool} {
		fmt.Fprintf(&b, "\n%s:\n", kind)
		for _, c := range cmds {
			if c.kind == kind {
				fmt.Fprintf(&b, "  %-*s  %s\n", width, c.name, c.summary)
			}
		}
	}
	fmt.Fprintf(&b, "  %-*s  %s\n", width, "help", "show a command's usage, flags and an example: venna help key = venna key -h")
	b.WriteString("\nSubcommands:\n")
	for _, c := range cmds {
		for _, f := range c.forms {
			if f.sub != "" {
				fmt.Fprintf(&b, "  %s\n", f.line(c.name))
			}
		}
	}
	b.WriteString(`
Each command takes only the settings it reads, as flags that default to environment
variables ('venna config-table' lists every one). 'venna <command> -h' shows a command's
flags and an example.

Exit status: 0 done, 1 the work failed, 2 usage error (nothing was attempted).
`)
	return b.String()
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

func configTableCmd() *command {
	return &command{
		name:    "config-table",
		kind:    kindTool,
		summary: "print the configuration reference (Markdown), as in README.md",
		about:   "Prints every setting — flag, environment variable, default, group — and which commands take each group, as the Markdown tables README.md carries.",
		example: []string{"venna config-table > settings.md"},
		run: func(_ context.Context, env *Env, _ string, _ []string) error {
			_, err := fmt.Fprint(env.Out, configTable())
			return err
		},
	}
}
