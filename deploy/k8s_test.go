package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/venna/metering/gateway"
	"gopkg.in/yaml.v3"
)

const (
	k8sDir          = "k8s"
	kustomizePath   = "k8s/kustomization.yaml"
	pricesPath      = "prices.yaml"
	vennaUID        = 65532
	vennaImage      = "venna" // kustomization.yaml's images entry maps it to a registry
	vennaSecretName = "venna"
)

// k8sKinds are the kinds the manifests may hold, with their apiVersion.
var k8sKinds = map[string]string{
	"Namespace": "v1", "ConfigMap": "v1", "Service": "v1", "Deployment": "apps/v1",
	"StatefulSet": "apps/v1", "Job": "batch/v1", "PodDisruptionBudget": "policy/v1",
}

// k8sRoles are the workload kind each venna subcommand runs as. The gateway is a
// StatefulSet: each replica's spool needs a volume of its own that outlives the pod.
var k8sRoles = map[string]string{
	"gateway": "StatefulSet", "ingest": "Deployment", "aggregate": "Deployment", "api": "Deployment", "migrate": "Job",
}

// fileSettings are the files each role reads, by the setting naming them.
var fileSettings = map[string][]string{
	"gateway":   {"VENNA_ROUTES_FILE"},
	"api":       {"VENNA_PRICES_FILE"},
	"aggregate": {"VENNA_PRICES_FILE"},
	"migrate":   {"VENNA_PRICES_FILE"},
}

// minGrace is the shortest termination grace per role beyond compose's stop_grace_period:
// the gateway finishes requests (30s) and then drains its spool to Kafka (60s).
var minGrace = map[string]time.Duration{"gateway": 90 * time.Second}

type kustomizeImage struct {
	Name string `yaml:"name"`
}

type k8sObject struct {
	file       string
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   objectMeta        `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	Spec       yaml.Node         `yaml:"spec"`
}

type objectMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func (o k8sObject) String() string { return fmt.Sprintf("%s: %s %s", o.file, o.Kind, o.Metadata.Name) }

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

func (s labelSelector) matches(labels map[string]string) bool {
	if len(s.MatchLabels) == 0 {
		return false
	}
	for k, v := range s.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

type workloadSpec struct {
	Replicas             *int          `yaml:"replicas"`
	Selector             labelSelector `yaml:"selector"`
	Template             podTemplate   `yaml:"template"`
	VolumeClaimTemplates []struct {
		Metadata objectMeta `yaml:"metadata"`
		Spec     struct {
			Resources struct {
				Requests map[string]string `yaml:"requests"`
			} `yaml:"resources"`
		} `yaml:"spec"`
	} `yaml:"volumeClaimTemplates"`
}

type podTemplate struct {
	Metadata objectMeta `yaml:"metadata"`
	Spec     struct {
		TerminationGracePeriodSeconds *int             `yaml:"terminationGracePeriodSeconds"`
		SecurityContext               *securityContext `yaml:"securityContext"`
		Containers                    []container      `yaml:"containers"`
		InitContainers                []container      `yaml:"initContainers"`
		Volumes                       []struct {
			Name      string `yaml:"name"`
			ConfigMap *struct {
				Name string `yaml:"name"`
			} `yaml:"configMap"`
		} `yaml:"volumes"`
	} `yaml:"spec"`
}

type securityContext struct {
	RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
	RunAsUser                *int  `yaml:"runAsUser"`
	ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []envVar `yaml:"env"`
	EnvFrom []struct {
		ConfigMapRef *struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
		SecretRef *struct {
			Name string `yaml:"name"`
		} `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext *securityContext `yaml:"securityContext"`
	VolumeMounts    []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		SecretKeyRef *struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

func (e envVar) fromSecret() bool { return e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil }

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"` // a number or a port name
	} `yaml:"httpGet"`
}

// role is the venna subcommand a container runs: its args after the image's entrypoint,
// or its command after the binary.
func (c container) role() (string, error) {
	argv := append(slices.Clone(c.Command), c.Args...)
	if len(c.Command) > 0 {
		if filepath.Base(argv[0]) != "venna" {
			return "", fmt.Errorf("command %q does not run the venna binary", c.Command)
		}
		argv = argv[1:]
	}
	if len(argv) == 0 || !slices.Contains(vennaCommands, argv[0]) {
		return "", fmt.Errorf("command %q args %q: first word must be one of %v", c.Command, c.Args, vennaCommands)
	}
	return argv[0], nil
}

// port resolves a probe's or Service's port (number or name) to one the container declares.
func (c container) port(p string) (int, bool) {
	for _, cp := range c.Ports {
		if p == cp.Name || p == strconv.Itoa(cp.ContainerPort) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// workload is a Deployment, StatefulSet or Job with its venna container.
type workload struct {
	obj  k8sObject
	spec workloadSpec
	c    container
	role string
	env  map[string]string // the container's environment: envFrom ConfigMaps, then env
}

type manifests struct {
	objects    []k8sObject
	configMaps map[string]k8sObject
	workloads  map[string]*workload // by role
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("%s: no manifests (%v)", k8sDir, err)
	}
	m := manifests{configMaps: map[string]k8sObject{}, workloads: map[string]*workload{}}
	for _, f := range files {
		if f == kustomizePath {
			continue
		}
		dec := yaml.NewDecoder(bytes.NewReader(readFile(t, f)))
		for i := 0; ; i++ {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: document %d: %v", f, i+1, err)
			}
			o.file = f
			if o.Kind == "" && o.Metadata.Name == "" {
				continue // an empty document
			}
			m.objects = append(m.objects, o)
			if o.Kind == "ConfigMap" {
				m.configMaps[o.Metadata.Name] = o
			}
		}
	}
	for _, o := range m.objects {
		if o.Kind != "Deployment" && o.Kind != "StatefulSet" && o.Kind != "Job" {
			continue
		}
		var spec workloadSpec
		if err := o.Spec.Decode(&spec); err != nil {
			t.Fatalf("%s: spec: %v", o, err)
		}
		if len(spec.Template.Spec.Containers) != 1 {
			t.Fatalf("%s: %d containers, want the venna container alone", o, len(spec.Template.Spec.Containers))
		}
		c := spec.Template.Spec.Containers[0]
		role, err := c.role()
		if err != nil {
			t.Fatalf("%s: container %s: %v", o, c.Name, err)
		}
		if prev, ok := m.workloads[role]; ok {
			t.Fatalf("%s and %s both run venna %s", prev.obj, o, role)
		}
		env := map[string]string{}
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef != nil {
				cm, ok := m.configMaps[ef.ConfigMapRef.Name]
				if !ok {
					t.Fatalf("%s: envFrom ConfigMap %s is not in the manifests", o, ef.ConfigMapRef.Name)
				}
				maps.Copy(env, cm.Data)
			}
		}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		m.workloads[role] = &workload{obj: o, spec: spec, c: c, role: role, env: env}
	}
	return m
}

// quantity parses a Kubernetes resource quantity in bytes (plain, or with a binary or
// decimal suffix).
func quantity(s string) (int64, error) {
	mult := map[string]int64{"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
	for suffix, m := range mult {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * m, err
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

func TestKubernetes(t *testing.T) {
	var m manifests
	if !t.Run("parses", func(t *testing.T) { m = loadManifests(t) }) {
		t.FailNow()
	}

	t.Run("kinds", func(t *testing.T) {
		for _, o := range m.objects {
			want, ok := k8sKinds[o.Kind]
			switch {
			case !ok:
				t.Errorf("%s: kind %s is not one the deployment uses (%v)", o, o.Kind, slices.Sorted(maps.Keys(k8sKinds)))
			case o.APIVersion != want:
				t.Errorf("%s: apiVersion %q, want %q", o, o.APIVersion, want)
			case o.Metadata.Name == "":
				t.Errorf("%s: metadata.name is empty", o)
			}
		}
	})

	t.Run("every role", func(t *testing.T) {
		for role, kind := range k8sRoles {
			w, ok := m.workloads[role]
			switch {
			case !ok:
				t.Errorf("no workload runs venna %s", role)
			case w.obj.Kind != kind:
				t.Errorf("%s: venna %s runs as a %s, want a %s", w.obj, role, w.obj.Kind, kind)
			}
		}
	})

	t.Run("kustomization lists every file", func(t *testing.T) {
		var k struct {
			Namespace string           `yaml:"namespace"`
			Resources []string         `yaml:"resources"`
			Images    []kustomizeImage `yaml:"images"`
		}
		if err := yaml.Unmarshal(readFile(t, kustomizePath), &k); err != nil {
			t.Fatalf("%s: %v", kustomizePath, err)
		}
		files, _ := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
		var want []string
		for _, f := range files {
			if f != kustomizePath {
				want = append(want, filepath.Base(f))
			}
		}
		if got := slices.Sorted(slices.Values(k.Resources)); !slices.Equal(got, want) {
			t.Errorf("%s: resources = %v, want every manifest of %s: %v", kustomizePath, got, k8sDir, want)
		}
		var namespaces []string
		for _, o := range m.objects {
			if o.Kind == "Namespace" {
				namespaces = append(namespaces, o.Metadata.Name)
			}
		}
		if !slices.Equal(namespaces, []string{k.Namespace}) {
			t.Errorf("%s: namespace %q, but the manifests create namespaces %v", kustomizePath, k.Namespace, namespaces)
		}
		if !slices.ContainsFunc(k.Images, func(i kustomizeImage) bool { return i.Name == vennaImage }) {
			t.Errorf("%s: images has no entry for %q, the image every venna container names", kustomizePath, vennaImage)
		}
	})

	known := binaryEnv(t)
	compose, _ := loadCompose(t)
	for _, role := range slices.Sorted(maps.Keys(m.workloads)) {
		w := m.workloads[role]
		c := w.c
		t.Run(role, func(t *testing.T) {
			t.Run("image", func(t *testing.T) {
				for _, ic := range w.spec.Template.Spec.InitContainers {
					if ic.Image != vennaImage {
						t.Errorf("%s: init container %s image %q, want %q", w.obj, ic.Name, ic.Image, vennaImage)
					}
				}
				if c.Image != vennaImage {
					t.Errorf("%s: image %q, want %q like every venna container (kustomization.yaml sets the registry and tag)", w.obj, c.Image, vennaImage)
				}
			})

			t.Run("VENNA_ variables are read by the binary", func(t *testing.T) {
				for name := range w.env {
					if strings.HasPrefix(name, "VENNA_") && !known[name] {
						t.Errorf("%s: %s: venna does not read it (not in %s)", w.obj, name, configPath)
					}
				}
			})

			t.Run("pod selector", func(t *testing.T) {
				if w.obj.Kind != "Job" && !w.spec.Selector.matches(w.spec.Template.Metadata.Labels) {
					t.Errorf("%s: selector %v does not select its own pod labels %v", w.obj, w.spec.Selector.MatchLabels, w.spec.Template.Metadata.Labels)
				}
			})

			t.Run("probes on the port the role listens on", func(t *testing.T) {
				envs := listenEnv[role]
				if w.obj.Kind == "Job" {
					if c.LivenessProbe != nil || c.ReadinessProbe != nil {
						t.Errorf("%s: a one-shot job has probes", w.obj)
					}
					return
				}
				if len(envs) != 1 {
					t.Fatalf("listenEnv[%s] = %v: the test needs the one setting of the role's /healthz port", role, envs)
				}
				addr, ok := w.env[envs[0]]
				if !ok {
					t.Fatalf("%s: %s is unset: the default binds 127.0.0.1, unreachable for probes", w.obj, envs[0])
				}
				lp, err := listenPort(addr)
				if err != nil {
					t.Fatalf("%s: %s = %q: %v", w.obj, envs[0], addr, err)
				}
				for name, pr := range map[string]struct {
					p    *probe
					path string
				}{"livenessProbe": {c.LivenessProbe, "/healthz"}, "readinessProbe": {c.ReadinessProbe, "/readyz"}} {
					if pr.p == nil || pr.p.HTTPGet == nil {
						t.Errorf("%s: no %s httpGet", w.obj, name)
						continue
					}
					if pr.p.HTTPGet.Path != pr.path {
						t.Errorf("%s: %s path %q, want %s", w.obj, name, pr.p.HTTPGet.Path, pr.path)
					}
					port, ok := c.port(pr.p.HTTPGet.Port)
					if !ok {
						t.Errorf("%s: %s port %q is not a port the container declares", w.obj, name, pr.p.HTTPGet.Port)
					} else if strconv.Itoa(port) != lp {
						t.Errorf("%s: %s probes port %d, but %s = %q", w.obj, name, port, envs[0], addr)
					}
				}
				if a := w.spec.Template.Metadata.Annotations; a["prometheus.io/scrape"] == "true" && a["prometheus.io/port"] != lp {
					t.Errorf("%s: prometheus.io/port %q, but /metrics is served on %s", w.obj, a["prometheus.io/port"], lp)
				}
				// The same port as the role's service in docker-compose.yml.
				for name, s := range compose.Services {
					if s.role() != role {
						continue
					}
					if cp, err := listenPort(s.Environment[envs[0]]); err != nil || cp != lp {
						t.Errorf("%s: %s listens on %s; %s services.%s.environment.%s = %q", w.obj, role, lp, composePath, name, envs[0], s.Environment[envs[0]])
					}
				}
			})

			t.Run("resources", func(t *testing.T) {
				for _, r := range []string{"cpu", "memory"} {
					if c.Resources.Requests[r] == "" {
						t.Errorf("%s: resources.requests.%s is unset", w.obj, r)
					}
					if c.Resources.Limits[r] == "" {
						t.Errorf("%s: resources.limits.%s is unset", w.obj, r)
					}
				}
			})

			t.Run("non-root, read-only", func(t *testing.T) {
				pod, ctr := w.spec.Template.Spec.SecurityContext, c.SecurityContext
				if ctr == nil {
					ctr = &securityContext{}
				}
				if pod == nil {
					pod = &securityContext{}
				}
				nonRoot, uid := ctr.RunAsNonRoot, ctr.RunAsUser
				if nonRoot == nil {
					nonRoot = pod.RunAsNonRoot
				}
				if uid == nil {
					uid = pod.RunAsUser
				}
				if nonRoot == nil || !*nonRoot {
					t.Errorf("%s: runAsNonRoot is not true", w.obj)
				}
				if uid == nil || *uid != vennaUID {
					t.Errorf("%s: runAsUser is not %d (the image's user)", w.obj, vennaUID)
				}
				if ctr.ReadOnlyRootFilesystem == nil || !*ctr.ReadOnlyRootFilesystem {
					t.Errorf("%s: readOnlyRootFilesystem is not true", w.obj)
				}
				if ctr.AllowPrivilegeEscalation == nil || *ctr.AllowPrivilegeEscalation {
					t.Errorf("%s: allowPrivilegeEscalation is not false", w.obj)
				}
			})

			t.Run("termination grace", func(t *testing.T) {
				if w.obj.Kind == "Job" {
					return
				}
				grace := 30 * time.Second // Kubernetes' default
				if g := w.spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
					grace = time.Duration(*g) * time.Second
				}
				want := minGrace[role]
				for name, s := range compose.Services {
					if s.role() == role && s.StopGrace != "" {
						d, err := time.ParseDuration(s.StopGrace)
						if err != nil {
							t.Errorf("%s: services.%s.stop_grace_period %q: %v", composePath, name, s.StopGrace, err)
						}
						want = max(want, d)
					}
				}
				if grace < want {
					t.Errorf("%s: terminationGracePeriodSeconds %v, want at least %v (the role's drain; docker-compose.yml's stop_grace_period)", w.obj, grace, want)
				}
			})

			t.Run("files mounted where the role reads them", func(t *testing.T) {
				for _, setting := range fileSettings[role] {
					path := w.env[setting]
					if path == "" {
						t.Errorf("%s: %s is unset (the image's default is baked in, not the ConfigMap)", w.obj, setting)
						continue
					}
					found := false
					for _, vm := range c.VolumeMounts {
						rel, ok := strings.CutPrefix(path, strings.TrimSuffix(vm.MountPath, "/")+"/")
						if !ok {
							continue
						}
						for _, v := range w.spec.Template.Spec.Volumes {
							if v.Name != vm.Name || v.ConfigMap == nil {
								continue
							}
							cm, ok := m.configMaps[v.ConfigMap.Name]
							if _, has := cm.Data[rel]; ok && has {
								found = true
							}
						}
					}
					if !found {
						t.Errorf("%s: %s = %q is no key of a ConfigMap mounted there", w.obj, setting, path)
					}
				}
			})

			t.Run("secrets", func(t *testing.T) {
				doc := string(readFile(t, filepath.Join(k8sDir, "config.yaml")))
				for _, e := range c.Env {
					if !e.fromSecret() {
						continue
					}
					ref := e.ValueFrom.SecretKeyRef
					if ref.Name != vennaSecretName {
						t.Errorf("%s: %s from Secret %q, want %q (the one Secret config.yaml tells to create)", w.obj, e.Name, ref.Name, vennaSecretName)
					}
					if !strings.Contains(doc, "--from-literal="+ref.Key+"=") {
						t.Errorf("%s: %s from Secret key %q, which config.yaml's `kubectl create secret` line does not create", w.obj, e.Name, ref.Key)
					}
				}
			})
		})
	}

	t.Run("gateway spool", func(t *testing.T) {
		w := m.workloads["gateway"]
		if w == nil {
			t.Skip("no gateway (reported above)")
		}
		dir := w.env["VENNA_SPOOL_DIR"]
		var claim string
		for _, vm := range w.c.VolumeMounts {
			if vm.MountPath == dir {
				claim = vm.Name
			}
		}
		var size string
		for _, vct := range w.spec.VolumeClaimTemplates {
			if vct.Metadata.Name == claim {
				size = vct.Spec.Resources.Requests["storage"]
			}
		}
		if size == "" {
			t.Fatalf("%s: VENNA_SPOOL_DIR %q is not on a volumeClaimTemplate's claim: each replica needs its own durable spool", w.obj, dir)
		}
		capacity, err := quantity(size)
		if err != nil {
			t.Fatalf("%s: claim %s storage %q: %v", w.obj, claim, size, err)
		}
		limit, err := strconv.ParseInt(w.env["VENNA_SPOOL_MAX_BYTES"], 10, 64)
		if err != nil || limit <= 0 || limit >= capacity {
			t.Errorf("%s: VENNA_SPOOL_MAX_BYTES %q, want a limit below the claim's %s, so the gateway refuses completions before the disk is full", w.obj, w.env["VENNA_SPOOL_MAX_BYTES"], size)
		}
	})

	t.Run("ingest replicas fit the partitions", func(t *testing.T) {
		w := m.workloads["ingest"]
		if w == nil {
			t.Skip("no ingest (reported above)")
		}
		parts, err := strconv.Atoi(w.env["VENNA_KAFKA_PARTITIONS"])
		if err != nil {
			t.Fatalf("%s: VENNA_KAFKA_PARTITIONS %q: %v", w.obj, w.env["VENNA_KAFKA_PARTITIONS"], err)
		}
		if w.spec.Replicas == nil {
			t.Fatalf("%s: replicas unset", w.obj)
		}
		if *w.spec.Replicas > parts {
			t.Errorf("%s: replicas %d, want at most the topic's %d partitions (more sit idle)", w.obj, *w.spec.Replicas, parts)
		}
	})

	t.Run("services", func(t *testing.T) {
		for _, o := range m.objects {
			if o.Kind != "Service" {
				continue
			}
			var spec struct {
				Selector map[string]string `yaml:"selector"`
				Ports    []struct {
					TargetPort string `yaml:"targetPort"`
				} `yaml:"ports"`
			}
			if err := o.Spec.Decode(&spec); err != nil {
				t.Fatalf("%s: %v", o, err)
			}
			var selected []*workload
			for _, w := range m.workloads {
				if (labelSelector{MatchLabels: spec.Selector}).matches(w.spec.Template.Metadata.Labels) {
					selected = append(selected, w)
				}
			}
			if len(selected) != 1 {
				t.Errorf("%s: selector %v selects %d workloads, want one", o, spec.Selector, len(selected))
				continue
			}
			for _, p := range spec.Ports {
				if _, ok := selected[0].c.port(p.TargetPort); !ok {
					t.Errorf("%s: targetPort %q is not a port of %s", o, p.TargetPort, selected[0].obj)
				}
			}
		}
	})

	t.Run("disruption budgets", func(t *testing.T) {
		covered := map[string]bool{}
		for _, o := range m.objects {
			if o.Kind != "PodDisruptionBudget" {
				continue
			}
			var spec struct {
				Selector       labelSelector `yaml:"selector"`
				MinAvailable   *string       `yaml:"minAvailable"`
				MaxUnavailable *string       `yaml:"maxUnavailable"`
			}
			if err := o.Spec.Decode(&spec); err != nil {
				t.Fatalf("%s: %v", o, err)
			}
			if (spec.MinAvailable == nil) == (spec.MaxUnavailable == nil) {
				t.Errorf("%s: set one of minAvailable and maxUnavailable", o)
			}
			n := 0
			for role, w := range m.workloads {
				if spec.Selector.matches(w.spec.Template.Metadata.Labels) {
					covered[role] = true
					n++
				}
			}
			if n != 1 {
				t.Errorf("%s: selector %v selects %d workloads, want one", o, spec.Selector.MatchLabels, n)
			}
		}
		for role, w := range m.workloads {
			if w.obj.Kind != "Job" && !covered[role] {
				t.Errorf("%s: no PodDisruptionBudget selects its pods", w.obj)
			}
		}
	})

	t.Run("routes", func(t *testing.T) {
		w := m.workloads["gateway"]
		if w == nil {
			t.Skip("no gateway (reported above)")
		}
		text := m.configMaps["venna-files"].Data["routes.yaml"]
		var keyEnvs []string
		routes, err := gateway.ParseRoutes([]byte(text), func(name string) string { keyEnvs = append(keyEnvs, name); return "set" })
		if err != nil {
			t.Fatalf("ConfigMap venna-files routes.yaml: %v", err)
		}
		base, err := gateway.ParseRoutes(readFile(t, routesPath), func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		if got, want := routes.Models(), base.Models(); !slices.Equal(got, want) {
			t.Errorf("ConfigMap venna-files routes.yaml: models %v, want %v as in %s", got, want, routesPath)
		}
		if len(keyEnvs) == 0 {
			t.Error("ConfigMap venna-files routes.yaml: no upstream names an api_key_env")
		}
		for _, name := range keyEnvs {
			if !slices.ContainsFunc(w.c.Env, func(e envVar) bool { return e.Name == name && e.fromSecret() }) {
				t.Errorf("%s: routes.yaml's api_key_env %s is not set from the Secret", w.obj, name)
			}
		}
	})

	t.Run("prices are deploy/prices.yaml", func(t *testing.T) {
		got := m.configMaps["venna-files"].Data["prices.yaml"]
		if want := string(readFile(t, pricesPath)); strings.TrimSpace(got) != strings.TrimSpace(want) {
			t.Errorf("ConfigMap venna-files prices.yaml differs from %s; copy it over:\n%s", pricesPath, want)
		}
	})
}

// TestKubernetesFilesExist guards the manifests' own directory: an editor's stray file
// (a .yml, a backup) would be missed by both kustomize and the tests above.
func TestKubernetesFilesExist(t *testing.T) {
	entries, err := os.ReadDir(k8sDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || filepath.Ext(e.Name()) != ".yaml" {
			t.Errorf("%s/%s: the manifests are *.yaml files only", k8sDir, e.Name())
		}
	}
}
