package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Services is a private ClickHouse server, Kafka broker (and Redis) for one test that stops and
// restarts them (fault tests), so that it never disturbs tests sharing the main ones.
type Services struct {
	t       testing.TB
	script  string
	env     []string
	CHAddr  string
	Brokers []string
}

// PrivateServices starts a ClickHouse server and a Kafka broker of the test's own on free
// ports through scripts/services.sh (named by VENNA_SERVICES_SCRIPT, which scripts/test.sh
// sets), and stops them when the test ends. It fails the test when the script is unknown.
func PrivateServices(t testing.TB) *Services {
	t.Helper()
	script := os.Getenv("VENNA_SERVICES_SCRIPT")
	if script == "" {
		t.Fatalf("VENNA_SERVICES_SCRIPT is not set: this fault test starts and stops its own services; %s", hint)
	}
	dir := t.TempDir()
	ports := freePorts(t, 6)
	// The engine (VENNA_CLICKHOUSE_ENGINE) and the TLS directory are the run's, from the
	// environment: a private server is of the version the suite runs on, and trusted by
	// the same CA.
	s := &Services{t: t, script: script, env: append(os.Environ(),
		"VENNA_STATE_DIR="+filepath.Join(dir, "stack"),
		fmt.Sprintf("VENNA_CH_TCP_PORT=%d", ports[0]), fmt.Sprintf("VENNA_CH_HTTP_PORT=%d", ports[1]),
		fmt.Sprintf("VENNA_KAFKA_PORT=%d", ports[2]), fmt.Sprintf("VENNA_KAFKA_CONTROLLER_PORT=%d", ports[3]),
		fmt.Sprintf("VENNA_CH_TLS_PORT=%d", ports[4]), fmt.Sprintf("VENNA_REDIS_PORT=%d", ports[5]),
	)}
	t.Cleanup(func() { s.run("stop") })
	s.run("start")
	env := map[string]string{}
	for _, line := range strings.Split(s.run("env"), "\n") {
		if k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "="); ok {
			env[k] = v
		}
	}
	s.CHAddr = env["VENNA_CLICKHOUSE_ADDR"]
	s.Brokers = strings.Split(env["VENNA_KAFKA_BROKERS"], ",")
	if s.CHAddr == "" || env["VENNA_KAFKA_BROKERS"] == "" {
		t.Fatalf("%s env printed no VENNA_CLICKHOUSE_ADDR or VENNA_KAFKA_BROKERS: %v", filepath.Base(script), env)
	}
	return s
}

// run runs the services script with args and returns what it printed on stdout.
func (s *Services) run(args ...string) string {
	s.t.Helper()
	cmd := exec.Command(s.script, args...)
	cmd.Env = s.env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		s.t.Fatalf("%s %s: %v\n%s%s", filepath.Base(s.script), strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// StopKafka stops the broker (SIGTERM) and waits until it is gone.
func (s *Services) StopKafka() { s.run("kafka-stop") }

// KillKafka kills the broker with SIGKILL.
func (s *Services) KillKafka() { s.run("kafka-stop", "KILL") }

// StartKafka starts the broker again on the same port and data and waits until it listens.
func (s *Services) StartKafka() { s.run("kafka-start") }

// StopClickHouse stops the server and waits until it is gone.
func (s *Services) StopClickHouse() { s.run("clickhouse-stop") }

// StartClickHouse starts the server again on the same port and data.
func (s *Services) StartClickHouse() { s.run("clickhouse-start") }

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}
