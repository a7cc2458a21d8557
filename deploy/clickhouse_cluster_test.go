package deploy

import (
	"encoding/xml"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const (
	clusterConfigPath = "clickhouse/cluster/config.d/venna-cluster.xml"
	clusterUsersPath  = "clickhouse/cluster/users.d/venna-cluster.xml"
)

// xmlNode is any element of a ClickHouse config file.
type xmlNode struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Text    string     `xml:",chardata"`
	Nodes   []xmlNode  `xml:",any"`
}

// child returns the first child element with the given name.
func (n *xmlNode) child(name string) *xmlNode {
	for i := range n.Nodes {
		if n.Nodes[i].XMLName.Local == name {
			return &n.Nodes[i]
		}
	}
	return nil
}

// path follows child names from n.
func (n *xmlNode) path(names ...string) *xmlNode {
	for _, name := range names {
		if n = n.child(name); n == nil {
			return nil
		}
	}
	return n
}

func (n *xmlNode) set() bool {
	if n == nil {
		return false
	}
	if strings.TrimSpace(n.Text) != "" || len(n.Nodes) > 0 {
		return true
	}
	for _, a := range n.Attrs {
		if a.Name.Local == "from_env" || a.Name.Local == "from_zk" || a.Name.Local == "incl" {
			return true
		}
	}
	return false
}

func loadXML(t *testing.T, path string) *xmlNode {
	t.Helper()
	var root xmlNode
	if err := xml.Unmarshal(readFile(t, path), &root); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if root.XMLName.Local != "clickhouse" {
		t.Fatalf("%s: root element <%s>, want <clickhouse>", path, root.XMLName.Local)
	}
	return &root
}

// TestClickHouseClusterConfig checks the sample cluster config against what the schema's
// cluster mode needs (schema/cluster.go) and against the cluster the Kubernetes manifests
// name.
func TestClickHouseClusterConfig(t *testing.T) {
	cfg := loadXML(t, clusterConfigPath)
	m := loadManifests(t)
	name := m.configMaps["venna-env"].Data["VENNA_CLICKHOUSE_CLUSTER"]
	if name == "" {
		t.Fatal("k8s ConfigMap venna-env sets no VENNA_CLICKHOUSE_CLUSTER")
	}

	t.Run("the cluster the manifests name", func(t *testing.T) {
		cluster := cfg.path("remote_servers", name)
		if cluster == nil {
			t.Fatalf("%s: remote_servers has no <%s>, the VENNA_CLICKHOUSE_CLUSTER of k8s/config.yaml", clusterConfigPath, name)
		}
		shards := 0
		for _, s := range cluster.Nodes {
			if s.XMLName.Local != "shard" {
				continue
			}
			shards++
			// With Replicated tables, a Distributed insert must go to one replica per shard.
			if ir := s.child("internal_replication"); ir == nil || strings.TrimSpace(ir.Text) != "true" {
				t.Errorf("%s: shard %d: internal_replication is not true", clusterConfigPath, shards)
			}
			replicas := 0
			for _, r := range s.Nodes {
				if r.XMLName.Local == "replica" {
					replicas++
					if !r.child("host").set() || !r.child("port").set() {
						t.Errorf("%s: shard %d replica %d: host or port missing", clusterConfigPath, shards, replicas)
					}
				}
			}
			if replicas < 2 {
				t.Errorf("%s: shard %d has %d replicas: a production shard needs 2 to survive a server", clusterConfigPath, shards, replicas)
			}
		}
		if shards == 0 {
			t.Errorf("%s: cluster %s has no shard", clusterConfigPath, name)
		}
	})

	t.Run("macros", func(t *testing.T) {
		// schema/cluster.go names them in the Replicated engines' Keeper paths.
		for _, macro := range []string{"shard", "replica"} {
			if !cfg.path("macros", macro).set() {
				t.Errorf("%s: macros.%s is not set", clusterConfigPath, macro)
			}
		}
	})

	t.Run("keeper and distributed DDL", func(t *testing.T) {
		zk := cfg.child("zookeeper")
		nodes := 0
		if zk != nil {
			for _, n := range zk.Nodes {
				if n.XMLName.Local == "node" {
					nodes++
				}
			}
		}
		if nodes < 3 || nodes%2 == 0 {
			t.Errorf("%s: %d Keeper nodes, want an odd number, at least 3 (a quorum that survives one loss)", clusterConfigPath, nodes)
		}
		if !cfg.path("distributed_ddl", "path").set() {
			t.Errorf("%s: distributed_ddl.path is not set: ON CLUSTER needs it", clusterConfigPath)
		}
	})

	t.Run("synchronous Distributed inserts", func(t *testing.T) {
		users := loadXML(t, clusterUsersPath)
		v := users.path("profiles", "default", "insert_distributed_sync")
		if v == nil || strings.TrimSpace(v.Text) != "1" {
			t.Errorf("%s: profiles.default.insert_distributed_sync is not 1: ingest would commit offsets for rows still queued on one server", clusterUsersPath)
		}
	})
}

// TestClusterTestsRunTheDeployLayout holds the cluster the tests run (scripts/cluster.sh,
// e2e/cluster_test.go) to the deploy material: the same shards and replicas per shard,
// internal_replication, macros and distributed DDL path as clickhouse/cluster/, the deploy
// users.d itself, and the Kafka replication and min.insync.replicas of k8s/config.yaml.
func TestClusterTestsRunTheDeployLayout(t *testing.T) {
	script := "../scripts/cluster.sh"
	out, err := exec.Command("bash", script, "config", "ch-2-1").Output()
	if err != nil {
		t.Fatalf("%s config: %v", script, err)
	}
	var tested xmlNode
	if err := xml.Unmarshal(out, &tested); err != nil {
		t.Fatalf("%s config: %v\n%s", script, err, out)
	}
	deployed := loadXML(t, clusterConfigPath)
	m := loadManifests(t)
	env := m.configMaps["venna-env"].Data
	name := env["VENNA_CLICKHOUSE_CLUSTER"]

	shape := func(cluster *xmlNode) (shards []int, internal []string) {
		if cluster == nil {
			return nil, nil
		}
		for _, s := range cluster.Nodes {
			if s.XMLName.Local != "shard" {
				continue
			}
			n := 0
			for _, r := range s.Nodes {
				if r.XMLName.Local == "replica" {
					n++
				}
			}
			shards = append(shards, n)
			if ir := s.child("internal_replication"); ir != nil {
				internal = append(internal, strings.TrimSpace(ir.Text))
			} else {
				internal = append(internal, "")
			}
		}
		return shards, internal
	}
	ds, di := shape(deployed.path("remote_servers", name))
	ts, ti := shape(tested.path("remote_servers", name))
	if len(ds) == 0 || !slices.Equal(ds, ts) || !slices.Equal(di, ti) {
		t.Errorf("cluster %s: deployed shards (replicas each) %v internal_replication %v, tested %v %v", name, ds, di, ts, ti)
	}
	for _, macro := range []string{"shard", "replica"} {
		if !tested.path("macros", macro).set() {
			t.Errorf("the tested servers have no %s macro", macro)
		}
	}
	if got, want := strings.TrimSpace(tested.path("distributed_ddl", "path").Text), strings.TrimSpace(deployed.path("distributed_ddl", "path").Text); got != want {
		t.Errorf("distributed_ddl path: tested %q, deployed %q", got, want)
	}
	if tested.path("zookeeper", "node") == nil {
		t.Error("the tested servers have no Keeper")
	}
	if !strings.Contains(string(readFile(t, script)), "deploy/clickhouse/cluster/users.d/venna-cluster.xml") {
		t.Error("scripts/cluster.sh does not give its servers the deploy users.d")
	}

	envOut, err := exec.Command("bash", script, "env").Output()
	if err != nil {
		t.Fatalf("%s env: %v", script, err)
	}
	for _, k := range []string{"VENNA_CLICKHOUSE_CLUSTER", "VENNA_KAFKA_REPLICATION", "VENNA_KAFKA_MIN_INSYNC_REPLICAS"} {
		if line := "export " + k + "=" + env[k] + "\n"; !strings.Contains(string(envOut), line) {
			t.Errorf("k8s/config.yaml sets %s=%s; the cluster tests run with something else:\n%s", k, env[k], envOut)
		}
	}
}
