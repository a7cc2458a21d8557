package apikey_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/venna/metering/apikey"
	"github.com/venna/metering/internal/testenv"
)

// env is a Store on a fresh, migrated database.
type env struct {
	db    string
	conn  driver.Conn
	store *apikey.Store
}

func newEnv(t *testing.T) env {
	t.Helper()
	cfg, conn := testenv.ClickHouse(t)
	return env{db: cfg.Database, conn: conn, store: apikey.NewStore(conn, cfg.Database)}
}

func (e env) workspace(t *testing.T, name string) apikey.Workspace {
	t.Helper()
	w, err := e.store.CreateWorkspace(t.Context(), "", name)
	if err != nil {
		t.Fatalf("CreateWorkspace(%s): %v", name, err)
	}
	return w
}

func (e env) issue(t *testing.T, workspaceID, name string) (apikey.Key, string) {
	t.Helper()
	k, token, err := e.store.IssueKey(t.Context(), workspaceID, name)
	if err != nil {
		t.Fatalf("IssueKey(%s, %s): %v", workspaceID, name, err)
	}
	return k, token
}

func (e env) authenticator(t *testing.T) *apikey.Authenticator {
	t.Helper()
	a, err := apikey.NewAuthenticator(t.Context(), e.store, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("NewAuthenticator: %v", err)
	}
	return a
}

// secret is the part of a token after "vk_<id>_".
func secret(t *testing.T, token string) string {
	t.Helper()
	i := strings.LastIndexByte(token, '_')
	if i < 0 || i == len(token)-1 {
		t.Fatalf("token %q has no secret part", token)
	}
	return token[i+1:]
}

func TestIssueAndAuthenticate(t *testing.T) {
	e := newEnv(t)
	w := e.workspace(t, "Acme")
	k, token := e.issue(t, w.ID, "prod")
	if !strings.HasPrefix(token, apikey.Prefix) || len(secret(t, token)) < 20 {
		t.Errorf("token %q: want %q prefix and a long secret", token, apikey.Prefix)
	}
	if k.WorkspaceID != w.ID || k.Name != "prod" || k.CreatedAt.IsZero() || !k.RevokedAt.IsZero() {
		t.Errorf("issued key = %+v, want workspace %s, name prod, created, not revoked", k, w.ID)
	}
	p, err := e.authenticator(t).Authenticate(token)
	if err != nil {
		t.Fatalf("Authenticate(fresh token): %v", err)
	}
	if want := (apikey.Principal{WorkspaceID: w.ID, KeyID: k.ID}); p != want {
		t.Errorf("principal = %+v, want %+v", p, want)
	}
}

// TestTokenIsNotStored reads every column of every table as text: the secret must be in
// none of them, only its hash.
func TestTokenIsNotStored(t *testing.T) {
	e := newEnv(t)
	w := e.workspace(t, "Acme")
	_, token := e.issue(t, w.ID, "prod")
	sec := secret(t, token)

	rows, err := e.conn.Query(t.Context(), "SELECT table, name FROM system.columns WHERE database = ? ORDER BY table, name", e.db)
	if err != nil {
		t.Fatal(err)
	}
	columns := map[string][]string{}
	for rows.Next() {
		var table, col string
		if err := rows.Scan(&table, &col); err != nil {
			t.Fatal(err)
		}
		columns[table] = append(columns[table], col)
	}
	rows.Close()
	if len(columns["api_keys"]) == 0 {
		t.Fatalf("no columns found for %s.api_keys", e.db)
	}

	hashFound := false
	for table, cols := range columns {
		exprs := make([]string, len(cols))
		for i, c := range cols {
			exprs[i] = "toString(`" + c + "`)"
		}
		rows, err := e.conn.Query(t.Context(), "SELECT "+strings.Join(exprs, ", ")+" FROM "+e.db+"."+table)
		if err != nil {
			t.Fatalf("read %s: %v", table, err)
		}
		for rows.Next() {
			vals := make([]string, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatalf("scan %s: %v", table, err)
			}
			for i, v := range vals {
				if strings.Contains(v, sec) {
					t.Errorf("%s.%s holds the key's secret: %q", table, cols[i], v)
				}
				if table == "api_keys" && cols[i] == "secret_sha256" && v == apikey.Hash(token) {
					hashFound = true
				}
			}
		}
		rows.Close()
	}
	if !hashFound {
		t.Errorf("api_keys.secret_sha256 does not hold Hash(token) = %s", apikey.Hash(token))
	}
}

func TestAuthenticateRejects(t *testing.T) {
	e := newEnv(t)
	w := e.workspace(t, "Acme")
	k, token := e.issue(t, w.ID, "prod")
	_, other := e.issue(t, w.ID, "staging")
	a := e.authenticator(t)
	id := strings.TrimPrefix(k.ID, "key_")
	tests := []struct {
		name, token string
	}{
		{"wrong secret for a valid key id", apikey.Prefix + id + "_" + strings.Repeat("a", len(secret(t, token)))},
		{"another key's secret with this key's id", apikey.Prefix + id + "_" + secret(t, other)},
		{"unknown key id", apikey.Prefix + "zzzzzzzzzzzzz_" + secret(t, token)},
		{"empty", ""},
		{"prefix only", "vk_"},
		{"no secret", "vk_abc"},
		{"id and separator only", apikey.Prefix + id + "_"},
		{"empty id", "vk__" + secret(t, token)},
		{"OpenAI-style key", "sk-proj-abcdefghijklmnopqrstuvwxyz"},
		{"trailing junk", token + "x"},
		{"trailing space", token + " "},
		{"truncated", token[:len(token)-1]},
		{"upper case", strings.ToUpper(token)},
		{"key id instead of token", k.ID},
		{"hash instead of token", apikey.Hash(token)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := a.Authenticate(tt.token)
			if !errors.Is(err, apikey.ErrUnauthorized) {
				t.Errorf("Authenticate(%q) = %+v, %v; want ErrUnauthorized", tt.token, p, err)
			}
			if p != (apikey.Principal{}) {
				t.Errorf("a rejected token returned principal %+v", p)
			}
		})
	}
	if _, err := a.Authenticate(token); err != nil {
		t.Errorf("the real token stopped working: %v", err)
	}
}

func TestIssueKeyForMissingWorkspace(t *testing.T) {
	e := newEnv(t)
	k, token, err := e.store.IssueKey(t.Context(), "ws_doesnotexist", "prod")
	if err == nil {
		t.Fatalf("IssueKey for a missing workspace returned %+v, %q", k, token)
	}
	if token != "" {
		t.Errorf("a failed IssueKey handed out a token")
	}
	keys, err := e.store.Keys(t.Context(), "ws_doesnotexist")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Errorf("keys stored for a missing workspace: %+v", keys)
	}
}

func TestRevoke(t *testing.T) {
	e := newEnv(t)
	w := e.workspace(t, "Acme")
	revoked, revokedToken := e.issue(t, w.ID, "leaked")
	kept, keptToken := e.issue(t, w.ID, "prod")
	a := e.authenticator(t)

	if err := e.store.Revoke(t.Context(), revoked.ID); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if err := a.Refresh(t.Context()); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if _, err := a.Authenticate(revokedToken); !errors.Is(err, apikey.ErrUnauthorized) {
		t.Errorf("revoked key after Refresh: err = %v, want ErrUnauthorized", err)
	}
	if p, err := a.Authenticate(keptToken); err != nil || p.KeyID != kept.ID || p.WorkspaceID != w.ID {
		t.Errorf("the workspace's other key: %+v, %v; want it still accepted", p, err)
	}
	if _, err := e.authenticator(t).Authenticate(revokedToken); !errors.Is(err, apikey.ErrUnauthorized) {
		t.Errorf("revoked key on a new Authenticator: err = %v, want ErrUnauthorized", err)
	}

	if err := e.store.Revoke(t.Context(), revoked.ID); err != nil {
		t.Errorf("revoking twice: %v, want nil", err)
	}
	if err := e.store.Revoke(t.Context(), "key_doesnotexist"); !errors.Is(err, apikey.ErrNotFound) {
		t.Errorf("Revoke(unknown) = %v, want ErrNotFound", err)
	}
}

func TestRefreshPicksUpNewKeys(t *testing.T) {
	e := newEnv(t)
	w := e.workspace(t, "Acme")
	a := e.authenticator(t)
	k, token := e.issue(t, w.ID, "late")
	if err := a.Refresh(t.Context()); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if p, err := a.Authenticate(token); err != nil || p.KeyID != k.ID {
		t.Errorf("key issued after start, after Refresh: %+v, %v; want accepted", p, err)
	}
}

func TestKeysList(t *testing.T) {
	e := newEnv(t)
	w := e.workspace(t, "Acme")
	active, activeToken := e.issue(t, w.ID, "prod")
	revoked, revokedToken := e.issue(t, w.ID, "old")
	if err := e.store.Revoke(t.Context(), revoked.ID); err != nil {
		t.Fatal(err)
	}
	keys, err := e.store.Keys(t.Context(), w.ID)
	if err != nil {
		t.Fatalf("Keys: %v", err)
	}
	if len(keys) != 2 {
		t.Fatalf("Keys = %+v, want the active and the revoked key", keys)
	}
	byID := map[string]apikey.Key{}
	for _, k := range keys {
		byID[k.ID] = k
	}
	tests := []struct {
		name        string
		issued      apikey.Key
		wantRevoked bool
	}{
		{"active", active, false},
		{"revoked", revoked, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := byID[tt.issued.ID]
			if !ok {
				t.Fatalf("key %s not listed", tt.issued.ID)
			}
			if got.Name != tt.issued.Name || got.WorkspaceID != w.ID || !got.CreatedAt.Equal(tt.issued.CreatedAt) {
				t.Errorf("listed %+v, want %+v", got, tt.issued)
			}
			if revokedNow := !got.RevokedAt.IsZero(); revokedNow != tt.wantRevoked {
				t.Errorf("RevokedAt = %v, want revoked=%v", got.RevokedAt, tt.wantRevoked)
			}
		})
	}
	b, err := json.Marshal(keys)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{activeToken, revokedToken} {
		if strings.Contains(string(b), secret(t, tok)) || strings.Contains(string(b), apikey.Hash(tok)) {
			t.Errorf("listing exposes a secret or its hash: %s", b)
		}
	}
}

func TestWorkspaceIsolation(t *testing.T) {
	e := newEnv(t)
	type issued struct {
		ws    apikey.Workspace
		key   apikey.Key
		token string
	}
	var all []issued
	for _, name := range []string{"Acme", "Globex"} {
		w := e.workspace(t, name)
		for _, kn := range []string{"prod", "dev"} {
			k, tok := e.issue(t, w.ID, kn)
			all = append(all, issued{w, k, tok})
		}
	}
	a := e.authenticator(t)
	for _, is := range all {
		t.Run(is.ws.Name+"/"+is.key.Name, func(t *testing.T) {
			p, err := a.Authenticate(is.token)
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if want := (apikey.Principal{WorkspaceID: is.ws.ID, KeyID: is.key.ID}); p != want {
				t.Errorf("principal = %+v, want %+v", p, want)
			}
			keys, err := e.store.Keys(t.Context(), is.ws.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				if k.WorkspaceID != is.ws.ID {
					t.Errorf("Keys(%s) lists %+v of another workspace", is.ws.ID, k)
				}
			}
			if len(keys) != 2 {
				t.Errorf("Keys(%s) = %d keys, want its own 2", is.ws.ID, len(keys))
			}
		})
	}
}

// Revocation reaches every running replica through its background refresh, with no
// restart and no query on the request path: here two authenticators refreshing every
// 2s, the default, must both refuse the key within 5s.
func TestRevocationReachesEveryReplicaWithin5s(t *testing.T) {
	e := newEnv(t)
	w := e.workspace(t, "acme")
	k, token := e.issue(t, w.ID, "leaked")
	replicas := []*apikey.Authenticator{e.authenticator(t), e.authenticator(t)}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for _, a := range replicas {
		go a.Run(ctx, 2*time.Second)
		if _, err := a.Authenticate(token); err != nil {
			t.Fatalf("fresh key refused: %v", err)
		}
	}
	if err := e.store.Revoke(t.Context(), k.ID); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	for i, a := range replicas {
		for {
			if _, err := a.Authenticate(token); errors.Is(err, apikey.ErrUnauthorized) {
				break
			}
			if time.Since(revoked) > 5*time.Second {
				t.Fatalf("replica %d still accepts the key 5s after revocation", i)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
