package webhook

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// readmeSnippet is the code block README.md has right after <!-- webhook-verify:lang -->.
func readmeSnippet(t *testing.T, lang string) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- webhook-verify:" + lang + " -->\n```[a-z]+\n(.*?)\n```").FindSubmatch(b)
	if m == nil {
		t.Fatalf("README.md has no %s verification snippet after <!-- webhook-verify:%s -->", lang, lang)
	}
	return string(m[1])
}

// verifier runs one README snippet on a body file, a header, a secret and a time (Unix
// seconds), and says "ok" or why not.
type verifier func(t *testing.T, bodyFile, header, secret string, now int64) string

// harnesses wrap each README snippet into a program taking those arguments.
var harnesses = map[string]struct {
	tool  string
	build func(t *testing.T, dir, snippet string) verifier
}{
	"go": {"go", func(t *testing.T, dir, snippet string) verifier {
		main := `package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	body, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	now, _ := strconv.ParseInt(os.Args[4], 10, 64)
	if err := VerifyVennaSignature(body, os.Args[2], os.Args[3], time.Unix(now, 0)); err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println("ok")
}
`
		write(t, dir, "go.mod", "module verify\n\ngo 1.21\n")
		write(t, dir, "verify.go", strings.Replace(snippet, "package venna", "package main", 1))
		write(t, dir, "main.go", main)
		bin := filepath.Join(dir, "verify")
		cmd := exec.Command(goTool(), "build", "-o", bin, ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("README's Go snippet does not build: %v\n%s", err, out)
		}
		return func(t *testing.T, bodyFile, header, secret string, now int64) string {
			return runTool(t, bin, bodyFile, header, secret, fmt.Sprint(now))
		}
	}},
	"python": {"python3", func(t *testing.T, dir, snippet string) verifier {
		harness := snippet + `

if __name__ == "__main__":
    import sys
    with open(sys.argv[1], "rb") as f:
        body = f.read()
    try:
        verify_venna_signature(body, sys.argv[2], sys.argv[3], now=float(sys.argv[4]))
        print("ok")
    except ValueError as e:
        print("error:", e)
`
		path := write(t, dir, "verify.py", harness)
		return func(t *testing.T, bodyFile, header, secret string, now int64) string {
			return runTool(t, "python3", path, bodyFile, header, secret, fmt.Sprint(now))
		}
	}},
	"node": {"node", func(t *testing.T, dir, snippet string) verifier {
		harness := snippet + `

const [bodyFile, header, secret, now] = process.argv.slice(2);
try {
  verifyVennaSignature(require("node:fs").readFileSync(bodyFile), header, secret, Number(now));
  console.log("ok");
} catch (e) {
  console.log("error: " + e.message);
}
`
		path := write(t, dir, "verify.js", harness)
		return func(t *testing.T, bodyFile, header, secret string, now int64) string {
			return runTool(t, "node", path, bodyFile, header, secret, fmt.Sprint(now))
		}
	}},
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// README's verification snippets, in Go, Python and Node, accept what the dispatcher
// really sent and refuse a tampered body, a wrong secret and a stale timestamp; during a
// rotation's overlap both secrets verify. The Python and Node ones are skipped where
// python3 or node is missing.
func TestWebhookReadmeSnippetsVerifyDeliveries(t *testing.T) {
	e := newEnv(t, Config{})
	r := newReceiver(t, nil)
	ep, old := e.endpoint(EndpointSpec{URL: r.url()})
	e.detect()
	e.grant("ws_a", "12.5")
	e.detect()
	e.dispatch(e.d)
	_, rotated, err := e.store.RotateSecret(ctx(t), ep.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := e.store.Events(ctx(t), EventFilter{})
	if err != nil || len(evs) != 1 {
		t.Fatalf("events %v %v", evs, err)
	}
	if _, err := e.store.Replay(ctx(t), EventID(GrantCreated, e.grantID(t)), ep.ID); err != nil {
		t.Fatal(err)
	}
	e.dispatch(e.d)
	got := r.requests()
	if len(got) != 2 {
		t.Fatalf("%d requests, want 2", len(got))
	}
	dir := t.TempDir()
	body := write(t, dir, "body.json", string(got[0].body))
	tampered := write(t, dir, "tampered.json", strings.Replace(string(got[0].body), `"12.5"`, `"1250"`, 1))
	if tampered == body || string(got[0].body) == strings.Replace(string(got[0].body), `"12.5"`, `"1250"`, 1) {
		t.Fatalf("the grant's amount is not in the body: %s", got[0].body)
	}
	rotatedBody := write(t, dir, "rotated.json", string(got[1].body))
	sig, both := got[0].header.Get(SignatureHeader), got[1].header.Get(SignatureHeader)
	ts := func(h string) int64 {
		var v int64
		fmt.Sscanf(h, "t=%d,", &v)
		return v
	}
	cases := []struct {
		name, body, header, secret string
		now                        int64
		ok                         bool
	}{
		{"as sent", body, sig, old, ts(sig), true},
		{"4 minutes later", body, sig, old, ts(sig) + 240, true},
		{"tampered body", tampered, sig, old, ts(sig), false},
		{"wrong secret", body, sig, rotated, ts(sig), false},
		{"6 minutes later", body, sig, old, ts(sig) + 360, false},
		{"from 6 minutes ahead", body, sig, old, ts(sig) - 360, false},
		{"no signature", body, "t=" + fmt.Sprint(ts(sig)), old, ts(sig), false},
		{"rotation: the new secret", rotatedBody, both, rotated, ts(both), true},
		{"rotation: the old secret", rotatedBody, both, old, ts(both), true},
	}
	for lang, h := range harnesses {
		t.Run(lang, func(t *testing.T) {
			if _, err := exec.LookPath(h.tool); err != nil && lang != "go" {
				t.Skipf("%s is not installed", h.tool)
			}
			verify := h.build(t, t.TempDir(), readmeSnippet(t, lang))
			for _, c := range cases {
				out := verify(t, c.body, c.header, c.secret, c.now)
				if (out == "ok") != c.ok {
					t.Errorf("%s: %q, want ok %t", c.name, out, c.ok)
				}
				// The package's Verify agrees, case by case.
				b, _ := os.ReadFile(c.body)
				if err := Verify(b, c.header, c.secret, DefaultTolerance, time.Unix(c.now, 0)); (err == nil) != c.ok {
					t.Errorf("%s: Verify says %v", c.name, err)
				}
			}
		})
	}
}

// grantID is the one grant of the test's database.
func (e *env) grantID(t *testing.T) string {
	t.Helper()
	gs, err := e.iv.Grants(ctx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		return g[0].ID
	}
	t.Fatal("no grant")
	return ""
}
