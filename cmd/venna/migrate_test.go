package main

import (
	"context"
	"io"
	"maps"
	"strings"
	"testing"

	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/kafkaadmin"
	"github.com/venna/metering/internal/testenv"
)

// TestMigrateTopicSettings: `venna migrate` creates the usage topic and its dead-letter
// topic with the production settings it is given, and with cleanup.policy delete.
func TestMigrateTopicSettings(t *testing.T) {
	cfg, _ := testenv.ClickHouse(t)
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.Name(t)
	err := run(t.Context(), []string{"migrate", "--clickhouse-addr", cfg.Addr, "--clickhouse-database", cfg.Database,
		"--kafka-brokers", strings.Join(brokers, ","), "--kafka-topic", topic, "--kafka-partitions", "2",
		"--kafka-min-insync-replicas", "2", "--kafka-retention", "336h",
		"--prices-file", "../../deploy/prices.yaml", "--log-level", "error"}, io.Discard)
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	want := map[string]string{"min.insync.replicas": "2", "retention.ms": "1209600000", "cleanup.policy": "delete"}
	for _, name := range []string{topic, topic + ".dlq"} {
		got, err := kafkaadmin.TopicConfig(t.Context(), brokers, name, "min.insync.replicas", "retention.ms", "cleanup.policy")
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got, want) {
			t.Errorf("topic %s settings = %v, want %v", name, got, want)
		}
	}
}

// TestMigrateClusterSetting: with VENNA_CLICKHOUSE_CLUSTER set, migrate creates the
// cluster layout — or, on a server without Keeper (the test server), fails at the
// distributed DDL instead of quietly creating single-server tables.
func TestMigrateClusterSetting(t *testing.T) {
	addr := testenv.ClickHouseAddr(t)
	db := testenv.Name(t)
	conn, err := chdb.Open(t.Context(), testenv.ClickHouseConfig(addr, db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		conn.Close()
	})
	err = run(t.Context(), []string{"migrate", "--clickhouse-addr", addr, "--clickhouse-database", db,
		"--clickhouse-cluster", "venna_test_cluster", "--kafka-brokers", "127.0.0.1:1", "--log-level", "error"}, io.Discard)
	var engine string
	row := conn.QueryRow(t.Context(), "SELECT engine FROM system.tables WHERE database = ? AND name = 'usage_events'", db)
	if qerr := row.Scan(&engine); qerr != nil {
		engine = ""
	}
	switch {
	case err == nil:
		t.Fatal("migrate succeeded although Kafka at 127.0.0.1:1 is unreachable")
	case engine != "" && engine != "Distributed":
		t.Errorf("migrate with a cluster created usage_events as %s, want Distributed", engine)
	case engine == "" && !strings.Contains(err.Error(), "DDL") && !strings.Contains(err.Error(), "CLUSTER_DOESNT_EXIST"):
		// 18.16 here has the cluster but no distributed DDL (no Keeper); the 26.9 harness
		// has no cluster at all. Either way the server refuses ON CLUSTER.
		t.Errorf("migrate with a cluster on a server without distributed DDL failed with %v, want the server's refusal of ON CLUSTER", err)
	}
}

// Unset topic settings leave the broker's defaults alone: migrate must not lower a
// cluster-wide min.insync.replicas by setting a topic's to 1.
func TestTopicConfigs(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want map[string]string
	}{
		{"defaults", nil, map[string]string{"cleanup.policy": "delete"}},
		{"production", []string{"--kafka-min-insync-replicas", "2", "--kafka-retention", "168h"},
			map[string]string{"cleanup.policy": "delete", "min.insync.replicas": "2", "retention.ms": "604800000"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var cfg Config
			fs, _, bad := lookup("migrate").flagSet(&cfg)
			if len(bad) > 0 {
				t.Fatal(bad)
			}
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			if got := cfg.topicConfigs(); !maps.Equal(got, c.want) {
				t.Errorf("topicConfigs() = %v, want %v", got, c.want)
			}
		})
	}
}
