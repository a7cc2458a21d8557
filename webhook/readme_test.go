package webhook

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/venna/metering/internal/testenv"
)

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
	body := testenv.WriteFile(t, dir, "body.json", string(got[0].body))
	tampered := testenv.WriteFile(t, dir, "tampered.json", strings.Replace(string(got[0].body), `"12.5"`, `"1250"`, 1))
	if tampered == body || string(got[0].body) == strings.Replace(string(got[0].body), `"12.5"`, `"1250"`, 1) {
		t.Fatalf("the grant's amount is not in the body: %s", got[0].body)
	}
	rotatedBody := testenv.WriteFile(t, dir, "rotated.json", string(got[1].body))
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
	for _, lang := range testenv.WebhookVerifierLangs {
		t.Run(lang, func(t *testing.T) {
			verify := testenv.ReadmeWebhookVerifier(t, "../README.md", lang)
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
