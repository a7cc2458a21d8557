package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/venna/metering/webhook"
)

// eventsValue is a comma-separated list of webhook event types, or "*".
type eventsValue struct{ p *[]string }

func (v eventsValue) String() string {
	if v.p == nil {
		return ""
	}
	return strings.Join(*v.p, ",")
}

func (v eventsValue) Set(s string) error {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if f != webhook.AllEvents && !slices.Contains(webhook.EventTypes, f) {
			return fmt.Errorf("want event types (%s) or %s, comma-separated", strings.Join(webhook.EventTypes, ", "), webhook.AllEvents)
		}
		out = append(out, f)
	}
	*v.p = out
	return nil
}

func (v eventsValue) typeName() string { return "types" }

func webhookCmd() *command {
	var workspace, url, description, endpoint, event, typ, status string
	var events []string
	var limit uint64
	overlap := 24 * time.Hour
	return &command{
		name:    "webhook",
		kind:    kindAdmin,
		summary: "register webhook endpoints; list, replay and inspect deliveries",
		about: "Registers an endpoint that receives signed webhook events — a workspace's, or every workspace's\n" +
			"without --workspace — and prints its signing secret once; lists, enables and disables endpoints;\n" +
			"rotates a secret (the old one keeps signing for --overlap); lists events and the delivery log (every\n" +
			"attempt: status code, error, duration, next retry); replays an event to an endpoint. The aggregate\n" +
			"role records and sends events, within its --webhook-schedule.",
		example: []string{"venna webhook add --workspace ws_8f3a2c61d0 --url https://billing.example.com/venna --events invoice.finalized,credit_balance.depleted",
			"venna webhook deliveries --endpoint we_1f0c9e2b7a --status failed", "venna webhook replay --endpoint we_1f0c9e2b7a evt_5e0c9a41d2b7f3086c1a4e92"},
		groups: []string{"clickhouse", "log"},
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&workspace, "workspace", "", "workspace `ID`: add registers an endpoint for its events only (default: every workspace's); the others list its own")
			fs.StringVar(&url, "url", "", "`URL` events are POSTed to: http:// or https://")
			fs.Var(eventsValue{&events}, "events", "event `types` the endpoint receives, comma-separated (default: all, *)")
			fs.StringVar(&description, "description", "", "what the endpoint is, for people: `D`")
			fs.DurationVar(&overlap, "overlap", overlap, "how long the previous secret keeps signing beside the new one (0 to 168h)")
			fs.StringVar(&endpoint, "endpoint", "", "endpoint `ID` (we_...)")
			fs.StringVar(&event, "event", "", "event `ID` (evt_...)")
			fs.Var(choiceValue{&typ, webhook.EventTypes}, "type", "event type")
			fs.Var(choiceValue{&status, []string{webhook.StatusPending, webhook.StatusSucceeded, webhook.StatusFailed}}, "status", "delivery status")
			fs.Var(countValue{&limit, webhook.MaxList}, "limit", fmt.Sprintf("at most `N`, newest first (0: %d)", webhook.MaxList))
		},
		forms: []form{
			{sub: "add", opts: "--url URL [--workspace ID] [--events TYPES] [--description D]", note: "prints the secret once",
				flags: []string{"url", "workspace", "events", "description"}, need: []string{"url"}},
			{sub: "list", opts: "[--workspace ID]", flags: []string{"workspace"}},
			{sub: "enable", args: "ENDPOINT_ID", min: 1, max: 1},
			{sub: "disable", args: "ENDPOINT_ID", note: "its deliveries wait until it is enabled", min: 1, max: 1},
			{sub: "rotate", opts: "[--overlap D]", args: "ENDPOINT_ID", note: "prints the new secret once", flags: []string{"overlap"}, min: 1, max: 1},
			{sub: "events", opts: "[--workspace ID] [--type T] [--limit N]", flags: []string{"workspace", "type", "limit"}},
			{sub: "deliveries", opts: "[--endpoint ID] [--event ID] [--workspace ID] [--status S] [--limit N]", note: "each with every attempt",
				flags: []string{"endpoint", "event", "workspace", "status", "limit"}},
			{sub: "replay", opts: "--endpoint ID", args: "EVENT_ID", note: "a new delivery, sent by the aggregate role",
				flags: []string{"endpoint"}, need: []string{"endpoint"}, min: 1, max: 1},
		},
		run: func(ctx context.Context, env *Env, sub string, args []string) error {
			spec := webhook.EndpointSpec{WorkspaceID: workspace, URL: url, Description: description, EnabledEvents: events}
			spec.Normalize()
			switch {
			case sub == "add":
				if err := spec.Validate(); err != nil {
					return invalid(err)
				}
			case sub == "rotate" && (overlap < 0 || overlap > webhook.MaxOverlap):
				return usagef("--overlap %s: want 0 to %s", overlap, webhook.MaxOverlap)
			}
			conn, err := openDB(ctx, env)
			if err != nil {
				return err
			}
			defer conn.Close()
			store := webhook.NewStore(conn, env.Config.ClickHouse.Database)
			switch sub {
			case "add":
				e, secret, err := store.CreateEndpoint(ctx, spec)
				if err != nil {
					return err
				}
				if err := printJSON(env, e); err != nil {
					return err
				}
				fmt.Fprintf(env.Out, "secret (shown once, store it now): %s\n", secret)
				return nil
			case "list":
				es, err := store.Endpoints(ctx, workspace)
				if err != nil {
					return err
				}
				return printJSON(env, es)
			case "enable", "disable":
				e, err := store.SetEnabled(ctx, args[0], sub == "enable")
				if err != nil {
					return err
				}
				return printJSON(env, e)
			case "rotate":
				e, secret, err := store.RotateSecret(ctx, args[0], overlap)
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Out, "endpoint %s: new secret (shown once, store it now): %s\nthe previous secret keeps signing for %s\n", e.ID, secret, overlap)
				return nil
			case "events":
				evs, err := store.Events(ctx, webhook.EventFilter{WorkspaceID: workspace, Type: typ, Limit: int(limit)})
				if err != nil {
					return err
				}
				return printJSON(env, evs)
			case "deliveries":
				ds, err := store.Deliveries(ctx, webhook.DeliveryFilter{EndpointID: endpoint, EventID: event, WorkspaceID: workspace,
					Status: status, Limit: int(limit)})
				if err != nil {
					return err
				}
				return printJSON(env, ds)
			}
			d, err := store.Replay(ctx, args[0], endpoint)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Out, "delivery %s of %s to %s: pending; the aggregate role sends it within its --webhook-schedule\n", d.ID, d.EventID, d.EndpointID)
			return nil
		},
	}
}
