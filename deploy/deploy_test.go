package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/venna/metering/gateway"
	"gopkg.in/yaml.v3"
)

// Paths are relative to this package's directory, where go test runs.
const (
	repoRoot          = ".."
	composePath       = "../docker-compose.yml"
	envExamplePath    = "../.env.example"
	dockerfilePath    = "../Dockerfile"
	configPath        = "../cmd/venna/config.go"
	pomPath           = "kafka/pom.xml"
	routesPath        = "routes.yaml"
	composeRoutesPath = "compose/routes.yaml"
)

// vennaCommands are the subcommands a compose service may run, from the usage text in
// cmd/venna/main.go: the roles and migrate.
var vennaCommands = []string{"gateway", "ingest", "aggregate", "api", "all", "sim-upstream", "migrate"}

// wantServices are the services docker-compose.yml must define.
var wantServices = []string{"kafka", "clickhouse", "migrate", "gateway", "ingest", "aggregate", "api", "sim-upstream"}

// longRunning are the venna roles that serve until stopped, each with a /healthz on the
// addresses listenEnv names: compose health-checks them with `venna probe`. migrate runs
// once and exits.
var longRunning = []string{"gateway", "ingest", "aggregate", "api", "all", "sim-upstream"}

// probeTimeout is how long `venna probe` waits (cmd/venna/probe.go): a healthcheck must
// give it longer, or Docker kills it before it can report.
const probeTimeout = 2 * time.Second

// vennaServices are the services that run this repo's binary.
var vennaServices = []string{"migrate", "gateway", "ingest", "aggregate", "api", "sim-upstream"}

// listenEnv names, per role, the settings holding its listen addresses. The binary's
// defaults bind 127.0.0.1, which nothing outside the container can reach.
var listenEnv = map[string][]string{
	"gateway":      {"VENNA_GATEWAY_ADDR"},
	"api":          {"VENNA_API_ADDR"},
	"ingest":       {"VENNA_INGEST_METRICS_ADDR"},
	"aggregate":    {"VENNA_AGGREGATE_METRICS_ADDR"},
	"all":          {"VENNA_GATEWAY_ADDR", "VENNA_API_ADDR"},
	"sim-upstream": {"VENNA_SIM_ADDR"},
}

// clientEnv names, per role, the settings pointing it at ClickHouse and Kafka. Their
// defaults are 127.0.0.1, which inside a container is the container itself.
var clientEnv = map[string][]string{
	"gateway":   {"VENNA_CLICKHOUSE_ADDR", "VENNA_KAFKA_BROKERS"},
	"ingest":    {"VENNA_CLICKHOUSE_ADDR", "VENNA_KAFKA_BROKERS"},
	"aggregate": {"VENNA_CLICKHOUSE_ADDR"},
	"api":       {"VENNA_CLICKHOUSE_ADDR"},
	"all":       {"VENNA_CLICKHOUSE_ADDR", "VENNA_KAFKA_BROKERS"},
	"migrate":   {"VENNA_CLICKHOUSE_ADDR", "VENNA_KAFKA_BROKERS"},
}

var dependsConditions = []string{"service_started", "service_healthy", "service_completed_successfully"}

// compose is the part of the Compose file format these tests read.
type compose struct {
	Services map[string]service `yaml:"services"`
	Volumes  map[string]any     `yaml:"volumes"`
}

type service struct {
	Image       string       `yaml:"image"`
	Build       any          `yaml:"build"`
	Command     stringList   `yaml:"command"`
	Environment environment  `yaml:"environment"`
	DependsOn   dependsOn    `yaml:"depends_on"`
	Healthcheck *healthcheck `yaml:"healthcheck"`
	Volumes     []mount      `yaml:"volumes"`
	Ports       []port       `yaml:"ports"`
	Restart     string       `yaml:"restart"`
	StopGrace   string       `yaml:"stop_grace_period"`
}

type healthcheck struct {
	Test    stringList `yaml:"test"`
	Disable bool       `yaml:"disable"`
	Timeout string     `yaml:"timeout"`
}

// stringList is a command or healthcheck test: a list, or a string split on spaces.
type stringList []string

func (l *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*l = strings.Fields(n.Value)
		return nil
	}
	var s []string
	err := n.Decode(&s)
	*l = s
	return err
}

// environment is a service's environment, given as a map or as a list of NAME=value.
type environment map[string]string

func (e *environment) UnmarshalYAML(n *yaml.Node) error {
	*e = environment{}
	if n.Kind == yaml.SequenceNode {
		var list []string
		if err := n.Decode(&list); err != nil {
			return err
		}
		for _, kv := range list {
			k, v, _ := strings.Cut(kv, "=")
			(*e)[k] = v
		}
		return nil
	}
	var m map[string]any // merge keys (<<: *anchor) are resolved here
	if err := n.Decode(&m); err != nil {
		return err
	}
	for k, v := range m {
		if v == nil {
			(*e)[k] = ""
		} else {
			(*e)[k] = fmt.Sprint(v)
		}
	}
	return nil
}

// dependsOn maps each dependency to its condition; the list form means service_started.
type dependsOn map[string]string

func (d *dependsOn) UnmarshalYAML(n *yaml.Node) error {
	*d = dependsOn{}
	if n.Kind == yaml.SequenceNode {
		var list []string
		if err := n.Decode(&list); err != nil {
			return err
		}
		for _, s := range list {
			(*d)[s] = "service_started"
		}
		return nil
	}
	var m map[string]struct {
		Condition string `yaml:"condition"`
	}
	if err := n.Decode(&m); err != nil {
		return err
	}
	for s, c := range m {
		if c.Condition == "" {
			c.Condition = "service_started"
		}
		(*d)[s] = c.Condition
	}
	return nil
}

// mount is one entry of a service's volumes, short ("src:dst[:mode]") or long form.
type mount struct {
	Type, Source, Target string
}

func (m *mount) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		parts := strings.Split(n.Value, ":")
		if len(parts) == 1 {
			*m = mount{Type: "volume", Target: parts[0]} // anonymous volume
			return nil
		}
		m.Source, m.Target, m.Type = parts[0], parts[1], "volume"
		if strings.HasPrefix(m.Source, ".") || strings.HasPrefix(m.Source, "/") || strings.HasPrefix(m.Source, "~") {
			m.Type = "bind"
		}
		return nil
	}
	var long struct {
		Type   string `yaml:"type"`
		Source string `yaml:"source"`
		Target string `yaml:"target"`
	}
	if err := n.Decode(&long); err != nil {
		return err
	}
	*m = mount(long)
	return nil
}

// port is one entry of a service's ports; only the container side is kept.
type port struct{ Container string }

func (p *port) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		// [[ip:]host:]container[/proto]; the host side may hold ${VAR:-default}.
		parts := strings.Split(n.Value, ":")
		p.Container, _, _ = strings.Cut(parts[len(parts)-1], "/")
		return nil
	}
	var long struct {
		Target string `yaml:"target"`
	}
	err := n.Decode(&long)
	p.Container = long.Target
	return err
}

func (s service) role() string {
	if len(s.Command) == 0 {
		return ""
	}
	return s.Command[0]
}

func (s service) hasHealthcheck() bool {
	h := s.Healthcheck
	return h != nil && !h.Disable && len(h.Test) > 0 && h.Test[0] != "NONE"
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

func loadCompose(t *testing.T) (compose, *yaml.Node) {
	t.Helper()
	b := readFile(t, composePath)
	var c compose
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("%s: parse: %v", composePath, err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: parse: %v", composePath, err)
	}
	if len(c.Services) == 0 {
		t.Fatalf("%s: services: none defined", composePath)
	}
	return c, &doc
}

// interpolations lists the variables a Compose file substitutes (${NAME...} and $NAME;
// $$ is a literal dollar), from its values and keys, comments excluded.
func interpolations(n *yaml.Node) map[string]bool {
	re := regexp.MustCompile(`\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))`)
	out := map[string]bool{}
	var walk func(*yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode {
			for _, m := range re.FindAllStringSubmatch(n.Value, -1) {
				if name := m[1] + m[2]; name != "" {
					out[name] = true
				}
			}
		}
		for _, c := range n.Content { // an alias's target is walked where it is defined
			walk(c)
		}
	}
	walk(n)
	return out
}

// envExampleNames lists the NAME=value lines of .env.example.
func envExampleNames(t *testing.T) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)=`)
	out := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, envExamplePath)))
	for sc.Scan() {
		if m := re.FindStringSubmatch(strings.TrimSpace(sc.Text())); m != nil {
			out[m[1]] = true
		}
	}
	return out
}

// binaryEnv lists the environment variables cmd/venna/config.go reads.
func binaryEnv(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`"(VENNA_[A-Z0-9_]+)"`).FindAllStringSubmatch(string(readFile(t, configPath)), -1) {
		out[m[1]] = true
	}
	if len(out) == 0 {
		t.Fatalf("%s: no \"VENNA_...\" names found; has the config table moved?", configPath)
	}
	return out
}

func kafkaVersion(t *testing.T) string {
	t.Helper()
	var pom struct {
		Properties struct {
			KafkaVersion string `xml:"kafka.version"`
		} `xml:"properties"`
	}
	if err := xml.Unmarshal(readFile(t, pomPath), &pom); err != nil {
		t.Fatalf("%s: parse: %v", pomPath, err)
	}
	if pom.Properties.KafkaVersion == "" {
		t.Fatalf("%s: project.properties.kafka.version is empty", pomPath)
	}
	return pom.Properties.KafkaVersion
}

// listenPort checks that addr listens on every interface and returns its port.
func listenPort(addr string) (string, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if host != "" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
			return "", fmt.Errorf("host %q is not 0.0.0.0: nothing outside the container can connect", host)
		}
	}
	return p, nil
}

func TestCompose(t *testing.T) {
	var c compose
	var doc *yaml.Node
	if !t.Run("parses", func(t *testing.T) { c, doc = loadCompose(t) }) {
		t.FailNow()
	}

	t.Run("services exist", func(t *testing.T) {
		for _, name := range wantServices {
			if _, ok := c.Services[name]; !ok {
				t.Errorf("%s: services.%s is missing", composePath, name)
			}
		}
	})

	t.Run("venna services build this repo", func(t *testing.T) {
		for _, name := range vennaServices {
			s, ok := c.Services[name]
			if !ok {
				continue // reported by "services exist"
			}
			ctx, ok := s.Build.(string)
			if m, isMap := s.Build.(map[string]any); isMap {
				ctx, ok = m["context"].(string)
			}
			if !ok || filepath.Clean(ctx) != "." {
				t.Errorf("%s: services.%s.build = %v, want . (the repo root with the Dockerfile)", composePath, name, s.Build)
			}
		}
	})

	t.Run("commands are venna subcommands", func(t *testing.T) {
		for name, s := range c.Services {
			if s.Build == nil {
				continue // not our image
			}
			if !slices.Contains(vennaCommands, s.role()) {
				t.Errorf("%s: services.%s.command = %q: first element must be one of %v", composePath, name, s.Command, vennaCommands)
			}
		}
	})

	t.Run("depends_on", func(t *testing.T) {
		for name, s := range c.Services {
			for dep, cond := range s.DependsOn {
				target, ok := c.Services[dep]
				switch {
				case !ok:
					t.Errorf("%s: services.%s.depends_on.%s: no such service", composePath, name, dep)
				case !slices.Contains(dependsConditions, cond):
					t.Errorf("%s: services.%s.depends_on.%s.condition = %q, want one of %v", composePath, name, dep, cond, dependsConditions)
				case cond == "service_healthy" && !target.hasHealthcheck():
					t.Errorf("%s: services.%s.depends_on.%s is service_healthy but services.%s.healthcheck is missing", composePath, name, dep, dep)
				case cond == "service_completed_successfully" && (target.Restart == "always" || target.Restart == "unless-stopped"):
					t.Errorf("%s: services.%s.depends_on.%s waits for it to complete, but services.%s.restart = %q restarts it", composePath, name, dep, dep, target.Restart)
				}
			}
		}
	})

	t.Run("kafka image matches pom", func(t *testing.T) {
		want := "apache/kafka:" + kafkaVersion(t)
		if got := c.Services["kafka"].Image; got != want {
			t.Errorf("%s: services.kafka.image = %q, want %q (<kafka.version> of %s, the version the tests prove)", composePath, got, want, pomPath)
		}
	})

	t.Run("clickhouse image is the version the tests prove", func(t *testing.T) {
		// scripts/services.sh pins the chdb-core release whose engine the suite runs on
		// (26.9.x embeds ClickHouse 26.9): compose runs that ClickHouse line.
		m := regexp.MustCompile(`(?m)^CHDB_VERSION=(\d+)\.(\d+)\.`).FindSubmatch(readFile(t, "../scripts/services.sh"))
		if m == nil {
			t.Fatal("scripts/services.sh sets no CHDB_VERSION")
		}
		want := fmt.Sprintf("clickhouse/clickhouse-server:%s.%s", m[1], m[2])
		if got := c.Services["clickhouse"].Image; got != want {
			t.Errorf("%s: services.clickhouse.image = %q, want %q (the ClickHouse the suite proves, scripts/services.sh)", composePath, got, want)
		}
	})

	t.Run("variables are in .env.example", func(t *testing.T) {
		used, documented := interpolations(doc), envExampleNames(t)
		for name := range used {
			if !documented[name] {
				t.Errorf("%s: ${%s} is used but %s has no %s= line", composePath, name, envExamplePath, name)
			}
		}
		for name := range documented {
			if !used[name] {
				t.Errorf("%s: %s= is documented but %s never reads it", envExamplePath, name, composePath)
			}
		}
	})

	t.Run("VENNA_ variables are read by the binary", func(t *testing.T) {
		known := binaryEnv(t)
		for name, s := range c.Services {
			for k := range s.Environment {
				if strings.HasPrefix(k, "VENNA_") && !known[k] {
					t.Errorf("%s: services.%s.environment.%s: venna does not read it (not in %s)", composePath, name, k, configPath)
				}
			}
		}
	})

	t.Run("listen on every interface", func(t *testing.T) {
		for name, s := range c.Services {
			for _, env := range listenEnv[s.role()] {
				addr, ok := s.Environment[env]
				if !ok {
					t.Errorf("%s: services.%s.environment.%s is unset: the default binds 127.0.0.1", composePath, name, env)
					continue
				}
				p, err := listenPort(addr)
				if err != nil {
					t.Errorf("%s: services.%s.environment.%s = %q: %v", composePath, name, env, addr, err)
					continue
				}
				if len(s.Ports) > 0 && !slices.Contains(s.Ports, port{Container: p}) {
					t.Errorf("%s: services.%s.ports = %v publish no container port %s, where %s listens", composePath, name, s.Ports, p, env)
				}
			}
		}
	})

	t.Run("long-running venna services are probed", func(t *testing.T) {
		entrypoint := dockerEntrypoint(t)
		for name, s := range c.Services {
			if s.Build == nil || !slices.Contains(longRunning, s.role()) {
				continue
			}
			if err := checkProbe(s, entrypoint); err != nil {
				t.Errorf("%s: services.%s.healthcheck: %v", composePath, name, err)
			}
		}
	})

	t.Run("ClickHouse and Kafka by service name", func(t *testing.T) {
		advertised := c.Services["kafka"].Environment["KAFKA_ADVERTISED_LISTENERS"]
		for name, s := range c.Services {
			for _, env := range clientEnv[s.role()] {
				val, ok := s.Environment[env]
				if !ok {
					t.Errorf("%s: services.%s.environment.%s is unset: the default 127.0.0.1 is the container itself", composePath, name, env)
					continue
				}
				for _, addr := range strings.Split(val, ",") {
					host, _, err := net.SplitHostPort(strings.TrimSpace(addr))
					if err != nil {
						t.Errorf("%s: services.%s.environment.%s = %q: %v", composePath, name, env, val, err)
						continue
					}
					if _, ok := c.Services[host]; !ok {
						t.Errorf("%s: services.%s.environment.%s = %q: %q is not a service", composePath, name, env, val, host)
					}
					// Kafka clients bootstrap here, then use what the broker advertises.
					if env == "VENNA_KAFKA_BROKERS" && !strings.Contains(advertised, "://"+strings.TrimSpace(addr)) {
						t.Errorf("%s: services.%s.environment.%s = %q, but services.kafka.environment.KAFKA_ADVERTISED_LISTENERS = %q does not advertise it", composePath, name, env, val, advertised)
					}
				}
			}
		}
	})

	t.Run("ClickHouse credentials match", func(t *testing.T) {
		ch := c.Services["clickhouse"].Environment
		pairs := map[string]string{"VENNA_CLICKHOUSE_USER": "CLICKHOUSE_USER", "VENNA_CLICKHOUSE_PASSWORD": "CLICKHOUSE_PASSWORD"}
		for name, s := range c.Services {
			if !slices.Contains(clientEnv[s.role()], "VENNA_CLICKHOUSE_ADDR") {
				continue
			}
			for venna, server := range pairs {
				if got, want := s.Environment[venna], ch[server]; got != want {
					t.Errorf("%s: services.%s.environment.%s = %q, want %q as services.clickhouse.environment.%s", composePath, name, venna, got, want, server)
				}
			}
		}
	})

	t.Run("named volumes are declared", func(t *testing.T) {
		used := map[string]bool{}
		for name, s := range c.Services {
			for _, m := range s.Volumes {
				if m.Type != "volume" || m.Source == "" {
					continue
				}
				used[m.Source] = true
				if _, ok := c.Volumes[m.Source]; !ok {
					t.Errorf("%s: services.%s.volumes: %q is not declared under top-level volumes", composePath, name, m.Source)
				}
			}
		}
		for v := range c.Volumes {
			if !used[v] {
				t.Errorf("%s: volumes.%s is declared but no service mounts it", composePath, v)
			}
		}
	})

	t.Run("bind mounts exist", func(t *testing.T) {
		for name, s := range c.Services {
			for _, m := range s.Volumes {
				if m.Type != "bind" {
					continue
				}
				if _, err := os.Stat(filepath.Join(repoRoot, m.Source)); err != nil {
					t.Errorf("%s: services.%s.volumes: source %q: %v", composePath, name, m.Source, err)
				}
			}
		}
	})
}

// checkProbe checks that s, a long-running venna service, is health-checked by
// `<entrypoint> probe URL`, where URL is the role's /healthz on a port it listens on.
// The image is distroless: a CMD-SHELL test, or curl, would never run.
func checkProbe(s service, entrypoint string) error {
	if !s.hasHealthcheck() {
		return errors.New("missing: want [\"CMD\", \"" + entrypoint + "\", \"probe\", \"http://127.0.0.1:PORT/healthz\"]")
	}
	test := s.Healthcheck.Test
	if len(test) != 4 || test[0] != "CMD" || test[1] != entrypoint || test[2] != "probe" {
		return fmt.Errorf("test = %q, want [\"CMD\", %q, \"probe\", URL] (the image has no shell)", test, entrypoint)
	}
	u, err := url.Parse(test[3])
	if err != nil {
		return fmt.Errorf("probe URL %q: %v", test[3], err)
	}
	if u.Scheme != "http" || (u.Hostname() != "127.0.0.1" && u.Hostname() != "localhost") || u.Path != "/healthz" {
		return fmt.Errorf("probe URL %q, want http://127.0.0.1:PORT/healthz: the role's own /healthz, from inside its container", test[3])
	}
	var ports []string
	for _, env := range listenEnv[s.role()] {
		if p, err := listenPort(s.Environment[env]); err == nil {
			ports = append(ports, p)
		}
	}
	if !slices.Contains(ports, u.Port()) {
		return fmt.Errorf("probe URL %q: %s listens on %v here (%v), not on %q", test[3], s.role(), ports, listenEnv[s.role()], u.Port())
	}
	if t := s.Healthcheck.Timeout; t != "" {
		if d, err := time.ParseDuration(t); err != nil || d <= probeTimeout {
			return fmt.Errorf("timeout %q: want more than the probe's own %s", t, probeTimeout)
		}
	}
	return nil
}

// dockerEntrypoint is the path of the binary the Dockerfile's final stage runs.
func dockerEntrypoint(t *testing.T) string {
	t.Helper()
	var entry []string
	for _, in := range parseDockerfile(t) {
		if in.cmd == "ENTRYPOINT" {
			if err := json.Unmarshal([]byte(in.args), &entry); err != nil || len(entry) == 0 {
				t.Fatalf("%s: ENTRYPOINT %s: want the exec form, [\"/path/to/venna\"]", dockerfilePath, in.args)
			}
		}
	}
	if len(entry) == 0 {
		t.Fatalf("%s: no ENTRYPOINT", dockerfilePath)
	}
	return entry[0]
}

// instruction is one Dockerfile instruction, its continuation lines joined.
type instruction struct{ cmd, args string }

// parseDockerfile reads the Dockerfile's instructions, comments dropped.
func parseDockerfile(t *testing.T) []instruction {
	t.Helper()
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(string(readFile(t, dockerfilePath)), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// shellWords splits a shell command line on blanks, honouring single and double quotes.
func shellWords(s string) []string {
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			w.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// goBuild is the `go build` command of a RUN line.
type goBuild struct {
	env  []string // NAME=value words before `go`
	args []string // after `go build`
	pkgs []string
}

// valueFlags are the go build flags that take the next word as their value.
var valueFlags = []string{"-o", "-ldflags", "-gcflags", "-asmflags", "-tags", "-p", "-mod", "-modfile",
	"-overlay", "-pgo", "-buildmode", "-compiler", "-gccgoflags", "-installsuffix", "-pkgdir", "-toolexec", "-C"}

func findGoBuild(t *testing.T, ins []instruction) goBuild {
	t.Helper()
	for _, in := range ins {
		if in.cmd != "RUN" || !strings.Contains(in.args, "go build") {
			continue
		}
		for _, part := range strings.Split(in.args, "&&") {
			words := shellWords(part)
			var b goBuild
			for len(words) > 0 && strings.Contains(words[0], "=") && !strings.HasPrefix(words[0], "-") {
				b.env, words = append(b.env, words[0]), words[1:]
			}
			if len(words) < 2 || words[0] != "go" || words[1] != "build" {
				continue
			}
			b.args = words[2:]
			for i := 0; i < len(b.args); i++ {
				a := b.args[i]
				switch {
				case slices.Contains(valueFlags, a):
					i++
				case !strings.HasPrefix(a, "-"):
					b.pkgs = append(b.pkgs, a)
				}
			}
			return b
		}
	}
	t.Fatalf("%s: no RUN instruction runs go build", dockerfilePath)
	return goBuild{}
}

func TestDockerfile(t *testing.T) {
	var ins []instruction
	if !t.Run("exists", func(t *testing.T) { ins = parseDockerfile(t) }) {
		t.FailNow()
	}

	var froms []int
	for i, in := range ins {
		if in.cmd == "FROM" {
			froms = append(froms, i)
		}
	}

	t.Run("multi-stage", func(t *testing.T) {
		if len(froms) < 2 {
			t.Fatalf("%s: %d FROM lines, want a build stage and a final stage", dockerfilePath, len(froms))
		}
	})

	t.Run("final stage runs as non-root", func(t *testing.T) {
		if len(froms) == 0 {
			t.Fatalf("%s: no FROM line", dockerfilePath)
		}
		last := froms[len(froms)-1]
		var image string
		for _, w := range strings.Fields(ins[last].args) {
			if !strings.HasPrefix(w, "--") {
				image = w
				break
			}
		}
		user := ""
		for _, in := range ins[last:] {
			if in.cmd == "USER" {
				user = in.args
			}
		}
		name, _, _ := strings.Cut(user, ":")
		switch {
		case user == "" && !strings.HasSuffix(image, ":nonroot"):
			t.Errorf("%s: final stage FROM %s has no USER and is not a :nonroot image", dockerfilePath, image)
		case user != "" && (name == "root" || name == "0"):
			t.Errorf("%s: final stage USER %s is root", dockerfilePath, user)
		}
	})

	t.Run("ENV names are read by the binary", func(t *testing.T) {
		known := binaryEnv(t)
		for _, in := range ins {
			if in.cmd != "ENV" {
				continue
			}
			words := shellWords(in.args)
			if len(words) > 0 && !strings.Contains(words[0], "=") {
				words = words[:1] // legacy form: ENV NAME value
			}
			for _, w := range words {
				name, _, _ := strings.Cut(w, "=")
				if strings.HasPrefix(name, "VENNA_") && !known[name] {
					t.Errorf("%s: ENV %s: venna does not read it (not in %s)", dockerfilePath, name, configPath)
				}
			}
		}
	})

	t.Run("COPY sources from the context exist", func(t *testing.T) {
		for _, in := range ins {
			if in.cmd != "COPY" || strings.Contains(in.args, "--from") {
				continue
			}
			words := strings.Fields(in.args)
			for _, src := range words[:len(words)-1] {
				if strings.HasPrefix(src, "--") || src == "." {
					continue
				}
				if _, err := os.Stat(filepath.Join(repoRoot, src)); err != nil {
					t.Errorf("%s: COPY %s: %v", dockerfilePath, src, err)
				}
			}
		}
	})

	t.Run("go build builds ./cmd/venna", func(t *testing.T) {
		b := findGoBuild(t, ins)
		if !slices.Equal(b.pkgs, []string{"./cmd/venna"}) {
			t.Fatalf("%s: go build %s: builds %v, want ./cmd/venna", dockerfilePath, strings.Join(b.args, " "), b.pkgs)
		}
		if testing.Short() {
			t.Skip("-short: not running the build")
		}
		// Run the Dockerfile's own command, writing the binary here instead of /out.
		bin := filepath.Join(t.TempDir(), "venna")
		args := slices.Clone(b.args)
		for i, a := range args {
			if a == "-o" && i+1 < len(args) {
				args[i+1] = bin
			} else if strings.HasPrefix(a, "-o=") {
				args[i] = "-o=" + bin
			}
		}
		cmd := exec.Command("go", append([]string{"build"}, args...)...)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), b.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %s go build %s: %v\n%s", dockerfilePath, strings.Join(b.env, " "), strings.Join(args, " "), err, out)
		}
		// Every subcommand compose may run, and the probe of its healthchecks, exists in
		// that binary: -h exits 0 for a known command and 2 for an unknown one.
		for _, sub := range append(slices.Clone(vennaCommands), "probe") {
			if out, err := exec.Command(bin, sub, "-h").CombinedOutput(); err != nil {
				t.Errorf("built venna %s -h: %v\n%s", sub, err, out)
			}
		}
	})
}

func TestComposeRoutes(t *testing.T) {
	noKeys := func(string) string { return "" }
	var routes gateway.Routes
	if !t.Run("parses", func(t *testing.T) {
		var err error
		if routes, err = gateway.ParseRoutes(readFile(t, composeRoutesPath), noKeys); err != nil {
			t.Fatalf("%s: %v", composeRoutesPath, err)
		}
	}) {
		t.FailNow()
	}

	t.Run("same models as deploy/routes.yaml", func(t *testing.T) {
		base, err := gateway.ParseRoutes(readFile(t, routesPath), noKeys)
		if err != nil {
			t.Fatalf("%s: %v", routesPath, err)
		}
		if got, want := routes.Models(), base.Models(); !slices.Equal(got, want) {
			t.Errorf("%s: models = %v, want %v as in %s", composeRoutesPath, got, want, routesPath)
		}
	})

	c, _ := loadCompose(t)

	t.Run("upstreams reachable from the gateway container", func(t *testing.T) {
		seen := map[string]bool{}
		for _, model := range routes.Models() {
			r := routes[model]
			if seen[r.Upstream] {
				continue
			}
			seen[r.Upstream] = true
			u, err := url.Parse(r.BaseURL)
			if err != nil {
				t.Errorf("%s: upstream %s: base_url %q: %v", composeRoutesPath, r.Upstream, r.BaseURL, err)
				continue
			}
			host := u.Hostname()
			if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
				t.Errorf("%s: upstream %s: base_url %q is the gateway container itself", composeRoutesPath, r.Upstream, r.BaseURL)
				continue
			}
			if strings.Contains(host, ".") {
				continue // a public host, e.g. api.openai.com
			}
			s, ok := c.Services[host]
			if !ok {
				t.Errorf("%s: upstream %s: base_url %q: %q is not a service of %s", composeRoutesPath, r.Upstream, r.BaseURL, host, composePath)
				continue
			}
			var ports []string
			for _, env := range listenEnv[s.role()] {
				if p, err := listenPort(s.Environment[env]); err == nil {
					ports = append(ports, p)
				}
			}
			if !slices.Contains(ports, u.Port()) {
				t.Errorf("%s: upstream %s: base_url %q: services.%s listens on %v", composeRoutesPath, r.Upstream, r.BaseURL, host, ports)
			}
		}
	})

	t.Run("mounted where the gateway reads routes", func(t *testing.T) {
		want := c.Services["gateway"].Environment["VENNA_ROUTES_FILE"]
		if want == "" {
			for _, in := range parseDockerfile(t) {
				for _, w := range shellWords(in.args) {
					if v, ok := strings.CutPrefix(w, "VENNA_ROUTES_FILE="); ok && in.cmd == "ENV" {
						want = v
					}
				}
			}
		}
		if want == "" {
			t.Fatalf("neither %s services.gateway.environment nor %s ENV sets VENNA_ROUTES_FILE", composePath, dockerfilePath)
		}
		for _, m := range c.Services["gateway"].Volumes {
			if m.Type == "bind" && filepath.Clean(m.Source) == filepath.Join("deploy", composeRoutesPath) {
				if m.Target != want {
					t.Errorf("%s: services.gateway.volumes mounts %s at %s, but the gateway reads VENNA_ROUTES_FILE=%s", composePath, m.Source, m.Target, want)
				}
				return
			}
		}
		t.Errorf("%s: services.gateway.volumes does not mount ./deploy/%s", composePath, composeRoutesPath)
	})
}

// The KRaft cluster IDs scripts/services.sh formats storage with are what Kafka's
// random-uuid prints (22 base64url characters) and never start with '-', which the storage
// tool would read as an option: one start in 64 failed that way.
func TestServicesScriptClusterIDs(t *testing.T) {
	out, err := exec.Command("bash", filepath.Join(repoRoot, "scripts", "services.sh"), "kafka-cluster-id", "500").Output()
	if err != nil {
		t.Fatal(err)
	}
	ids := strings.Fields(string(out))
	if len(ids) != 500 {
		t.Fatalf("%d IDs, want 500", len(ids))
	}
	valid := regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]{21}$`)
	for _, id := range ids {
		if !valid.MatchString(id) {
			t.Fatalf("cluster ID %q: want 22 base64url characters, not starting with '-'", id)
		}
	}
}

// The probe check refuses what would leave a container unchecked or wrongly checked.
func TestCheckProbe(t *testing.T) {
	const bin = "/usr/local/bin/venna"
	gateway := func(test []string, timeout string) service {
		s := service{Command: stringList{"gateway"}, Environment: environment{"VENNA_GATEWAY_ADDR": "0.0.0.0:8080"}}
		if test != nil {
			s.Healthcheck = &healthcheck{Test: test, Timeout: timeout}
		}
		return s
	}
	cases := []struct {
		name string
		s    service
		ok   bool
	}{
		{"probe of its port", gateway([]string{"CMD", bin, "probe", "http://127.0.0.1:8080/healthz"}, "5s"), true},
		{"no healthcheck", gateway(nil, ""), false},
		{"disabled", service{Command: stringList{"gateway"}, Healthcheck: &healthcheck{Disable: true}}, false},
		{"a port it does not listen on", gateway([]string{"CMD", bin, "probe", "http://127.0.0.1:8081/healthz"}, ""), false},
		{"another container", gateway([]string{"CMD", bin, "probe", "http://api:8080/healthz"}, ""), false},
		{"not /healthz", gateway([]string{"CMD", bin, "probe", "http://127.0.0.1:8080/metrics"}, ""), false},
		{"a shell the image lacks", gateway([]string{"CMD-SHELL", "curl -f http://127.0.0.1:8080/healthz"}, ""), false},
		{"another binary", gateway([]string{"CMD", "/bin/venna", "probe", "http://127.0.0.1:8080/healthz"}, ""), false},
		{"timeout under the probe's", gateway([]string{"CMD", bin, "probe", "http://127.0.0.1:8080/healthz"}, "1s"), false},
		{"ingest on its metrics port", service{Command: stringList{"ingest"}, Environment: environment{"VENNA_INGEST_METRICS_ADDR": "0.0.0.0:9101"},
			Healthcheck: &healthcheck{Test: stringList{"CMD", bin, "probe", "http://127.0.0.1:9101/healthz"}}}, true},
		{"ingest without its metrics address", service{Command: stringList{"ingest"}, Environment: environment{},
			Healthcheck: &healthcheck{Test: stringList{"CMD", bin, "probe", "http://127.0.0.1:9101/healthz"}}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := checkProbe(c.s, bin); (err == nil) != c.ok {
				t.Errorf("checkProbe = %v, want ok %t", err, c.ok)
			}
		})
	}
}
