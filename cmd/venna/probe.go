package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// roleHealth names, per role, the setting holding the address its /healthz is served on.
var roleHealth = map[string]string{
	"gateway":      "VENNA_GATEWAY_ADDR",
	"all":          "VENNA_GATEWAY_ADDR",
	"api":          "VENNA_API_ADDR",
	"ingest":       "VENNA_INGEST_METRICS_ADDR",
	"aggregate":    "VENNA_AGGREGATE_METRICS_ADDR",
	"sim-upstream": "VENNA_SIM_ADDR",
}

func probeCmd() *command {
	var target, roleName string
	timeout := 2 * time.Second
	roleName = "gateway"
	return &command{
		name:    "probe",
		kind:    kindTool,
		summary: "GET a role's /healthz: exit 0 on 200 OK, 1 otherwise (container healthchecks)",
		about: "GETs URL — by default the /healthz of --role at the listen address its environment variable\n" +
			"gives — and exits 0 on 200 OK, 1 on anything else, printing nothing on success. It is the\n" +
			"healthcheck of distroless containers, which have no shell and no curl.",
		example: []string{"venna probe http://127.0.0.1:8080/healthz", "VENNA_INGEST_METRICS_ADDR=0.0.0.0:9101 venna probe --role ingest"},
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&target, "url", "", "`URL` to GET, instead of the positional URL")
			fs.Var(choiceValue{&roleName, []string{"gateway", "api", "ingest", "aggregate", "sim-upstream", "all"}}, "role",
				"without a URL, probe this role's /healthz at its listen address (VENNA_GATEWAY_ADDR, VENNA_API_ADDR,\n"+
					"VENNA_INGEST_METRICS_ADDR, VENNA_AGGREGATE_METRICS_ADDR or VENNA_SIM_ADDR)")
			fs.DurationVar(&timeout, "timeout", timeout, "longest wait for the whole exchange")
		},
		forms: []form{{opts: "[--role ROLE] [--timeout D]", args: "[URL | --url URL]", flags: []string{"url", "role", "timeout"}, max: 1}},
		run: func(ctx context.Context, env *Env, _ string, args []string) error {
			roleSet, urlSet := env.given["role"], env.given["url"]
			switch {
			case len(args) == 1 && urlSet:
				return usagef("probe: give the URL once, as an argument or with --url")
			case (len(args) == 1 || urlSet) && roleSet:
				return usagef("probe: give a URL or --role, not both")
			case timeout <= 0:
				return usagef("probe: --timeout %s: want a positive duration", timeout)
			case len(args) == 1:
				target = args[0]
			case target == "":
				addr := envDefault(roleHealth[roleName])
				if addr == "" {
					return usagef("probe: %s serves no /healthz: %s is empty", roleName, roleHealth[roleName])
				}
				target = "http://" + dialAddr(addr) + "/healthz"
			}
			if u, err := url.Parse(target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return usagef("probe: %q: want an http:// or https:// URL", target)
			}
			return probe(ctx, target, timeout)
		},
	}
}

// probe GETs target and fails unless it answers 200 OK within timeout. It goes straight
// to the address, never through a proxy the environment names, and follows no redirect:
// a probe is about this process.
func probe(ctx context.Context, target string, timeout time.Duration) error {
	client := &http.Client{
		Timeout:       timeout,
		Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe: GET %s: %s", target, resp.Status)
	}
	return nil
}

// dialAddr is where to reach a server listening on addr: a wildcard host (":8080",
// "0.0.0.0:8080") is reached on loopback.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
