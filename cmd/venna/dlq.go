package main

import (
	"context"
	"flag"
	"math"

	"github.com/venna/metering/ingest"
)

// dlqTopic is the ingest role's dead-letter topic.
func (c *Config) dlqTopic() string {
	if c.IngestDLQTopic != "" {
		return c.IngestDLQTopic
	}
	return ingest.DLQTopicFor(c.KafkaTopic)
}

func dlqCmd() *command {
	var limit uint64
	return &command{
		name:    "dlq",
		kind:    kindAdmin,
		summary: "re-drive dead-lettered usage events that now validate",
		about: "After a fix, puts the events the ingest role dead-lettered that now validate back on the usage\n" +
			"topic (ingest dedups them by event_id) and prints what it did as JSON; the rest stay, counted by reason.",
		example: []string{"venna dlq redrive --limit 10000"},
		groups:  []string{"kafka", "dlq", "log"},
		flags: func(fs *flag.FlagSet) {
			fs.Var(countValue{&limit, math.MaxInt32}, "limit", "most dead-lettered messages to read (0: all)")
		},
		forms: []form{{sub: "redrive", opts: "[--limit N]", note: "put dead-lettered events that now validate back on the usage topic", flags: []string{"limit"}}},
		run: func(ctx context.Context, env *Env, _ string, _ []string) error {
			c := env.Config
			cfg := ingest.RedriveConfig{Brokers: c.brokers(), Topic: c.KafkaTopic, DLQTopic: c.dlqTopic(), Limit: int(limit),
				Progress: func(read, total, redriven int) {
					env.Progress.Update("re-driven %s (read %d of %d dead letters)", plural(redriven, "event"), read, total)
				}}
			if err := cfg.Validate(); err != nil {
				return invalid(err)
			}
			res, err := ingest.Redrive(ctx, cfg, env.Log)
			env.Progress.Done()
			if err != nil {
				return err
			}
			return printJSON(env, res)
		},
	}
}
