package main

import (
	"io"
	"os"
	"strings"
	"testing"
)

// README's configuration table is generated from the settings; it must not drift.
func TestReadmeConfigTableIsCurrent(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start := strings.Index(s, "<!-- config-table:start -->\n")
	end := strings.Index(s, "<!-- config-table:end -->")
	if start < 0 || end < start {
		t.Fatal("README.md lacks the config-table markers")
	}
	got := s[start+len("<!-- config-table:start -->\n") : end]
	if got != configTable() {
		t.Errorf("README.md's configuration table is stale; replace it with the output of `venna config-table`:\n%s", configTable())
	}
}

func TestFlagsDefaultToEnvironment(t *testing.T) {
	t.Setenv("VENNA_KAFKA_TOPIC", "from-env")
	t.Setenv("VENNA_INGEST_BATCH_SIZE", "123")
	cases := []struct {
		name  string
		args  []string
		topic string
		batch int
	}{
		{"env only", nil, "from-env", 123},
		{"flag wins", []string{"--kafka-topic", "from-flag", "--ingest-batch-size=7"}, "from-flag", 7},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var cfg Config
			fs, _, bad := lookup("ingest").flagSet(&cfg)
			if len(bad) > 0 {
				t.Fatal(bad)
			}
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			if cfg.KafkaTopic != c.topic || cfg.IngestBatchSize != c.batch {
				t.Errorf("topic %q batch %d, want %q %d", cfg.KafkaTopic, cfg.IngestBatchSize, c.topic, c.batch)
			}
		})
	}
}

// -h must never print a secret taken from the environment, and the secret must still be
// the setting's value.
func TestHelpDoesNotPrintSecrets(t *testing.T) {
	secrets := map[string]string{"VENNA_ADMIN_TOKEN": "admin-secret-0123456789", "VENNA_CLICKHOUSE_PASSWORD": "ch-secret-pw",
		"VENNA_REDIS_PASSWORD": "redis-secret-pw", "VENNA_SIM_API_KEY": "sim-secret-key", "VENNA_STRIPE_API_KEY": "sk_live_stripe-secret"}
	for env, v := range secrets {
		t.Setenv(env, v)
	}
	for _, name := range []string{"all", "api", "gateway", "key", "sim-upstream", "aggregate", "stripe"} {
		t.Run(name, func(t *testing.T) {
			var out strings.Builder
			if code := runMain(t.Context(), []string{name, "-h"}, &out, io.Discard); code != 0 {
				t.Fatalf("venna %s -h exited %d", name, code)
			}
			for _, v := range secrets {
				if strings.Contains(out.String(), v) {
					t.Errorf("venna %s -h shows the secret %q:\n%s", name, v, out.String())
				}
			}
			var cfg Config
			fs, _, bad := lookup(name).flagSet(&cfg)
			if len(bad) > 0 {
				t.Fatal(bad)
			}
			if err := fs.Parse(nil); err != nil {
				t.Fatal(err)
			}
			got := map[string]string{"VENNA_ADMIN_TOKEN": cfg.AdminToken, "VENNA_CLICKHOUSE_PASSWORD": cfg.ClickHouse.Password,
				"VENNA_REDIS_PASSWORD": cfg.RedisPassword, "VENNA_SIM_API_KEY": cfg.SimAPIKey, "VENNA_STRIPE_API_KEY": cfg.StripeAPIKey}
			for env, v := range got {
				if v != "" && v != secrets[env] {
					t.Errorf("%s = %q, want the environment's %q", env, v, secrets[env])
				}
			}
			if name == "all" && (cfg.AdminToken != secrets["VENNA_ADMIN_TOKEN"] || cfg.ClickHouse.Password != secrets["VENNA_CLICKHOUSE_PASSWORD"] ||
				cfg.StripeAPIKey != secrets["VENNA_STRIPE_API_KEY"]) {
				t.Errorf("secrets from the environment not applied: %q %q %q", cfg.AdminToken, cfg.ClickHouse.Password, cfg.StripeAPIKey)
			}
		})
	}
}
