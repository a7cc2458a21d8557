// Package apikey manages workspaces and their API keys: issuing (the secret is shown once
// and only its SHA-256 is stored), listing, revoking, and authenticating a bearer token
// against an in-memory snapshot that is refreshed in the background, so the request path
// never queries ClickHouse.
package apikey

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/sqlset"
)

//go:embed queries.sql
var queriesFile string

// Queries is every statement this package sends to ClickHouse (queries.sql).
var Queries = sqlset.MustParse("apikey", queriesFile)

var (
	workspacesSQL      = Queries.Get("workspaces")
	workspaceExistsSQL = Queries.Get("workspace_exists")
	keysSQL            = Queries.Get("keys")
	insertWorkspaceSQL = Queries.Get("insert_workspace")
	insertKeySQL       = Queries.Get("insert_key")
)

// Prefix starts every workspace API key.
const Prefix = "vk_"

var enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Key is a stored API key; it never holds the secret.
type Key struct {
	ID          string    `json:"id"`
	WorkspaceID string    `json:"workspace_id"`
	Name        string    `json:"name"`
	CreatedAt   time.Time `json:"created_at"`
	RevokedAt   time.Time `json:"revoked_at,omitzero"`
}

// Workspace is a billing account.
type Workspace struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Store reads and writes workspaces and keys in ClickHouse.
type Store struct {
	conn driver.Conn
	db   string
}

// NewStore returns a Store on database db.
func NewStore(conn driver.Conn, db string) *Store { return &Store{conn: conn, db: db} }

func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // the OS has no entropy: nothing safe to do
	}
	return enc.EncodeToString(b)
}

// NewWorkspaceID returns a fresh random workspace ID.
func NewWorkspaceID() string { return "ws_" + randomToken(10) }

// CreateWorkspace stores a new workspace. An empty id draws a random one.
func (s *Store) CreateWorkspace(ctx context.Context, id, name string) (Workspace, error) {
	if id == "" {
		id = NewWorkspaceID()
	}
	if strings.IndexFunc(id, unicode.IsSpace) >= 0 || utf8.RuneCountInString(id) > 64 {
		return Workspace{}, fmt.Errorf("workspace id %q: want at most 64 characters without spaces", id)
	}
	w := Workspace{ID: id, Name: name, CreatedAt: time.Now().UTC().Truncate(time.Second)}
	err := chdb.Insert(ctx, s.conn, sqlset.Fill(insertWorkspaceSQL, "db", s.db),
		[][]any{{w.ID, w.Name, w.CreatedAt, uint64(time.Now().UnixNano())}})
	if err != nil {
		return Workspace{}, fmt.Errorf("create workspace %s: %w", id, err)
	}
	return w, nil
}

// Workspaces lists every workspace.
func (s *Store) Workspaces(ctx context.Context) ([]Workspace, error) {
	rows, err := s.conn.Query(ctx, sqlset.Fill(workspacesSQL, "db", s.db))
	if err != nil {
		return nil, fmt.Errorf("list workspaces: %w", err)
	}
	defer rows.Close()
	var out []Workspace
	for rows.Next() {
		var w Workspace
		if err := rows.Scan(&w.ID, &w.Name, &w.CreatedAt); err != nil {
			return nil, fmt.Errorf("scan workspace: %w", err)
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// Hash is the stored form of a secret token.
func Hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// IssueKey creates a key for an existing workspace and returns it with its secret token,
// which is not stored and cannot be shown again.
func (s *Store) IssueKey(ctx context.Context, workspaceID, name string) (Key, string, error) {
	ok, err := s.WorkspaceExists(ctx, workspaceID)
	if err != nil {
		return Key{}, "", err
	}
	if !ok {
		return Key{}, "", fmt.Errorf("issue key: workspace %q does not exist", workspaceID)
	}
	k := Key{ID: "key_" + randomToken(8), WorkspaceID: workspaceID, Name: name, CreatedAt: time.Now().UTC().Truncate(time.Second)}
	token := Prefix + strings.TrimPrefix(k.ID, "key_") + "_" + randomToken(20)
	if err := s.writeKey(ctx, k, Hash(token)); err != nil {
		return Key{}, "", err
	}
	return k, token, nil
}

func (s *Store) writeKey(ctx context.Context, k Key, hash string) error {
	err := chdb.Insert(ctx, s.conn, sqlset.Fill(insertKeySQL, "db", s.db),
		[][]any{{k.ID, k.WorkspaceID, k.Name, hash, k.CreatedAt, zeroIfUnset(k.RevokedAt), uint64(time.Now().UnixNano())}})
	if err != nil {
		return fmt.Errorf("write key %s: %w", k.ID, err)
	}
	return nil
}

func zeroIfUnset(t time.Time) time.Time {
	if t.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return t
}

// WorkspaceExists reports whether the workspace id exists.
func (s *Store) WorkspaceExists(ctx context.Context, id string) (bool, error) {
	var n uint64
	if err := s.conn.QueryRow(ctx, sqlset.Fill(workspaceExistsSQL, "db", s.db), id).Scan(&n); err != nil {
		return false, fmt.Errorf("look up workspace %s: %w", id, err)
	}
	return n > 0, nil
}

type storedKey struct {
	Key
	hash string
}

func (s *Store) keys(ctx context.Context, where string, args ...any) ([]storedKey, error) {
	rows, err := s.conn.Query(ctx, sqlset.Fill(keysSQL, "db", s.db, "where", where), args...)
	if err != nil {
		return nil, fmt.Errorf("read keys: %w", err)
	}
	defer rows.Close()
	var out []storedKey
	for rows.Next() {
		var k storedKey
		if err := rows.Scan(&k.ID, &k.WorkspaceID, &k.Name, &k.hash, &k.CreatedAt, &k.RevokedAt); err != nil {
			return nil, fmt.Errorf("scan key: %w", err)
		}
		if k.RevokedAt.Unix() == 0 {
			k.RevokedAt = time.Time{}
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// Keys lists a workspace's keys, revoked ones included, never their secrets.
func (s *Store) Keys(ctx context.Context, workspaceID string) ([]Key, error) {
	stored, err := s.keys(ctx, "WHERE workspace_id = ?", workspaceID)
	if err != nil {
		return nil, err
	}
	out := make([]Key, len(stored))
	for i, k := range stored {
		out[i] = k.Key
	}
	return out, nil
}

// ErrNotFound is returned for a key or workspace that does not exist.
var ErrNotFound = errors.New("not found")

// Revoke marks a key revoked; gateways stop accepting it at their next refresh.
func (s *Store) Revoke(ctx context.Context, keyID string) error {
	stored, err := s.keys(ctx, "WHERE key_id = ?", keyID)
	if err != nil {
		return err
	}
	if len(stored) == 0 {
		return fmt.Errorf("revoke key %s: %w", keyID, ErrNotFound)
	}
	k := stored[0]
	if !k.RevokedAt.IsZero() {
		return nil
	}
	k.RevokedAt = time.Now().UTC().Truncate(time.Second)
	return s.writeKey(ctx, k.Key, k.hash)
}

// Principal is who a valid token belongs to.
type Principal struct {
	WorkspaceID string
	KeyID       string
}

type entry struct {
	workspaceID string
	hash        [sha256.Size]byte
}

// Authenticator checks bearer tokens against a snapshot of the active keys.
type Authenticator struct {
	store    *Store
	snapshot atomic.Pointer[map[string]entry]
	log      *slog.Logger
}

// NewAuthenticator loads the active keys once; call Run to keep them fresh.
func NewAuthenticator(ctx context.Context, store *Store, log *slog.Logger) (*Authenticator, error) {
	a := &Authenticator{store: store, log: log}
	if err := a.Refresh(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// Refresh reloads the active keys from ClickHouse.
func (a *Authenticator) Refresh(ctx context.Context) error {
	stored, err := a.store.keys(ctx, "")
	if err != nil {
		return err
	}
	m := make(map[string]entry, len(stored))
	for _, k := range stored {
		if !k.RevokedAt.IsZero() {
			continue
		}
		var e entry
		if _, err := hex.Decode(e.hash[:], []byte(k.hash)); err != nil {
			a.log.Warn("key with malformed hash skipped", "key_id", k.ID)
			continue
		}
		e.workspaceID = k.WorkspaceID
		m[k.ID] = e
	}
	a.snapshot.Store(&m)
	return nil
}

// Run refreshes every interval until ctx ends. A failed refresh keeps the last snapshot.
func (a *Authenticator) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.Refresh(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("refresh api keys", "err", err)
			}
		}
	}
}

// ErrUnauthorized is returned for any token that is not an active key.
var ErrUnauthorized = errors.New("invalid api key")

var dummyHash [sha256.Size]byte

// Authenticate returns the principal of an active token. Every failure is the same
// ErrUnauthorized, and the hash comparison runs even for unknown key IDs, so neither
// the error nor the timing tells a caller which part was wrong.
func (a *Authenticator) Authenticate(token string) (Principal, error) {
	sum := sha256.Sum256([]byte(token))
	id, ok := keyID(token)
	e, found := (*a.snapshot.Load())[id]
	want := dummyHash
	if ok && found {
		want = e.hash
	}
	if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 || !ok || !found {
		return Principal{}, ErrUnauthorized
	}
	return Principal{WorkspaceID: e.workspaceID, KeyID: id}, nil
}

// keyID extracts "key_<id>" from "vk_<id>_<secret>".
func keyID(token string) (string, bool) {
	rest, ok := strings.CutPrefix(token, Prefix)
	if !ok {
		return "", false
	}
	id, secret, ok := strings.Cut(rest, "_")
	if !ok || id == "" || secret == "" {
		return "", false
	}
	return "key_" + id, true
}
