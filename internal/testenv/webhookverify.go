package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// WebhookVerifier runs one of README's signature verification snippets on a file holding
// a delivery's raw body, its Venna-Signature header, a secret and a time (Unix seconds),
// and says "ok" or "error: why".
type WebhookVerifier func(t testing.TB, bodyFile, header, secret string, now int64) string

// ReadmeWebhookVerifier builds the snippet README (its path) has in lang — go, python or
// node — right after <!-- webhook-verify:lang -->, wrapped into a program taking those
// arguments, exactly as a user would paste it. Go is always there; a test is skipped
// where python3 or node is missing.
func ReadmeWebhookVerifier(t testing.TB, readme, lang string) WebhookVerifier {
	t.Helper()
	h, ok := harnesses[lang]
	if !ok {
		t.Fatalf("no verification harness for %q", lang)
	}
	if _, err := exec.LookPath(h.tool); err != nil && lang != "go" {
		t.Skipf("%s is not installed", h.tool)
	}
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- webhook-verify:" + lang + " -->\n```[a-z]+\n(.*?)\n```").FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s has no %s verification snippet after <!-- webhook-verify:%s -->", readme, lang, lang)
	}
	return h.build(t, t.TempDir(), string(m[1]))
}

// WebhookVerifierLangs are the languages README has a verification snippet in.
var WebhookVerifierLangs = []string{"go", "python", "node"}

var harnesses = map[string]struct {
	tool  string
	build func(t testing.TB, dir, snippet string) WebhookVerifier
}{
	"go": {"go", func(t testing.TB, dir, snippet string) WebhookVerifier {
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
		WriteFile(t, dir, "go.mod", "module verify\n\ngo 1.21\n")
		WriteFile(t, dir, "verify.go", strings.Replace(snippet, "package venna", "package main", 1))
		WriteFile(t, dir, "main.go", main)
		bin := filepath.Join(dir, "verify")
		cmd := exec.Command(goTool(), "build", "-o", bin, ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("README's Go snippet does not build: %v\n%s", err, out)
		}
		return func(t testing.TB, bodyFile, header, secret string, now int64) string {
			return runTool(t, bin, bodyFile, header, secret, fmt.Sprint(now))
		}
	}},
	"python": {"python3", func(t testing.TB, dir, snippet string) WebhookVerifier {
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
		path := WriteFile(t, dir, "verify.py", harness)
		return func(t testing.TB, bodyFile, header, secret string, now int64) string {
			return runTool(t, "python3", path, bodyFile, header, secret, fmt.Sprint(now))
		}
	}},
	"node": {"node", func(t testing.TB, dir, snippet string) WebhookVerifier {
		harness := snippet + `

const [bodyFile, header, secret, now] = process.argv.slice(2);
try {
  verifyVennaSignature(require("node:fs").readFileSync(bodyFile), header, secret, Number(now));
  console.log("ok");
} catch (e) {
  console.log("error: " + e.message);
}
`
		path := WriteFile(t, dir, "verify.js", harness)
		return func(t testing.TB, bodyFile, header, secret string, now int64) string {
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

// WriteFile writes content to dir/name and returns its path, failing the test if it cannot.
func WriteFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func runTool(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return strings.TrimSpace(string(out))
}
