package main

import (
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
			fs := newFlagSet("test")
			cfg.bind(fs)
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			if cfg.KafkaTopic != c.topic || cfg.IngestBatchSize != c.batch {
				t.Errorf("topic %q batch %d, want %q %d", cfg.KafkaTopic, cfg.IngestBatchSize, c.topic, c.batch)
			}
		})
	}
}

func TestUnknownCommandAndBadFlagFail(t *testing.T) {
	var out strings.Builder
	if err := run(t.Context(), []string{"nope"}, &out); err == nil {
		t.Error("unknown command accepted")
	}
	if err := run(t.Context(), []string{"migrate", "--ingest-batch-size", "many"}, &out); err == nil {
		t.Error("non-numeric flag accepted")
	}
	if err := run(t.Context(), []string{"migrate", "--log-level", "loud"}, &out); err == nil {
		t.Error("bad log level accepted")
	}
}

// -h must never print a secret taken from the environment.
func TestHelpDoesNotPrintSecrets(t *testing.T) {
	t.Setenv("VENNA_ADMIN_TOKEN", "admin-secret-0123456789")
	t.Setenv("VENNA_CLICKHOUSE_PASSWORD", "ch-secret-pw")
	var cfg Config
	fs := newFlagSet("test")
	var help strings.Builder
	fs.SetOutput(&help)
	cfg.bind(fs)
	fs.PrintDefaults()
	if strings.Contains(help.String(), "admin-secret") || strings.Contains(help.String(), "ch-secret") {
		t.Errorf("help shows a secret:\n%s", help.String())
	}
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if cfg.AdminToken != "admin-secret-0123456789" || cfg.ClickHouse.Password != "ch-secret-pw" {
		t.Errorf("secrets from the environment not applied: %q %q", cfg.AdminToken, cfg.ClickHouse.Password)
	}
}
