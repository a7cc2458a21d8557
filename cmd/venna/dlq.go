package main

import (
	"context"
	"errors"
	"flag"

	"github.com/venna/metering/ingest"
)

var dlqLimit *int

func dlqFlags(fs *flag.FlagSet) {
	dlqLimit = fs.Int("limit", 0, "most dead-lettered messages to read (0: all)")
}

// dlqTopic is the ingest role's dead-letter topic.
func (c *Config) dlqTopic() string {
	if c.IngestDLQTopic != "" {
		return c.IngestDLQTopic
	}
	return ingest.DLQTopicFor(c.KafkaTopic)
}

// runDLQ is `venna dlq redrive`: after a fix, events the ingest role dead-lettered that
// now validate go back to the usage topic; the rest stay, counted by reason.
func runDLQ(ctx context.Context, env *Env, args []string) error {
	if sub(args) != "redrive" {
		return errors.New("usage: venna dlq redrive [--limit N]")
	}
	c := env.Config
	res, err := ingest.Redrive(ctx, ingest.RedriveConfig{Brokers: c.brokers(), Topic: c.KafkaTopic, DLQTopic: c.dlqTopic(), Limit: *dlqLimit}, env.Log)
	if err != nil {
		return err
	}
	return printJSON(env, res)
}
