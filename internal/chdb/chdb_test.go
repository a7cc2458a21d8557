package chdb_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/testenv"
)

func TestValidate(t *testing.T) {
	ok := chdb.Config{Addr: "h:9000", Database: "venna"}
	cases := []struct {
		name string
		edit func(*chdb.Config)
		want string // in the error; empty: valid
	}{
		{"native", func(c *chdb.Config) {}, ""},
		{"http over TLS with a CA", func(c *chdb.Config) { c.Protocol, c.Secure, c.CAFile = chdb.HTTP, true, "/ca.pem" }, ""},
		{"no address", func(c *chdb.Config) { c.Addr = "" }, "VENNA_CLICKHOUSE_ADDR"},
		{"only commas", func(c *chdb.Config) { c.Addr = " , ," }, "VENNA_CLICKHOUSE_ADDR"},
		{"several servers", func(c *chdb.Config) { c.Addr = "a:9000, b:9000" }, ""},
		{"no database", func(c *chdb.Config) { c.Database = "" }, "VENNA_CLICKHOUSE_DATABASE"},
		{"unknown protocol", func(c *chdb.Config) { c.Protocol = "grpc" }, "VENNA_CLICKHOUSE_PROTOCOL"},
		{"CA without TLS", func(c *chdb.Config) { c.CAFile = "/ca.pem" }, "VENNA_CLICKHOUSE_SECURE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := ok
			c.edit(&cfg)
			err := cfg.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want an error naming %s", err, c.want)
			}
		})
	}
}

func TestAddrs(t *testing.T) {
	got := chdb.Config{Addr: " a:9000,,b:9000 , c:9440"}.Addrs()
	if strings.Join(got, "|") != "a:9000|b:9000|c:9440" {
		t.Fatalf("Addrs() = %q", got)
	}
}

// With several servers, a connection goes to the first that answers: a server that is down
// (a closed port first in the list) is passed over, as a cluster's replicas are.
func TestOpenFailsOverToTheNextServer(t *testing.T) {
	cfg := testenv.ClickHouseConfig(testenv.ClickHouseAddr(t), "default")
	down := closedPort(t)
	cfg.Addr = down + "," + cfg.Addr
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := chdb.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("open %s: %v", cfg.Addr, err)
	}
	defer conn.Close()
	var one uint8
	if err := conn.QueryRow(ctx, "SELECT toUInt8(1)").Scan(&one); err != nil || one != 1 {
		t.Fatalf("query through %s: %v %d", cfg.Addr, err, one)
	}
	cfg.Addr = down
	if c, err := chdb.Open(ctx, cfg); err == nil {
		c.Close()
		t.Fatalf("opened %s, where nothing listens", down)
	}
}

// closedPort is a 127.0.0.1 address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// endpoints are the ways scripts/test.sh makes the server under test reachable: the one
// the suite uses, and, where the server has them, native over TLS (18.16 here) and plain
// HTTP (the 26.9 harness, whose main endpoint is HTTPS).
func endpoints(t *testing.T) map[string]chdb.Config {
	t.Helper()
	out := map[string]chdb.Config{"suite's": testenv.ClickHouseConfig(testenv.ClickHouseAddr(t), "")}
	for name, env := range map[string]string{"TLS": "VENNA_TEST_CLICKHOUSE_TLS", "plain HTTP": "VENNA_TEST_CLICKHOUSE_PLAIN"} {
		if raw := os.Getenv(env); raw != "" {
			cfg, err := testenv.ParseURL(raw, "")
			if err != nil {
				t.Fatal(err)
			}
			out[name] = cfg
		}
	}
	return out
}

// Every endpoint carries a write and a read of each type Venna stores, exactly.
func TestRoundTripOnEveryEndpoint(t *testing.T) {
	for name, cfg := range endpoints(t) {
		t.Run(name, func(t *testing.T) {
			cfg.Database = testenv.Name(t)
			ctx := context.Background()
			conn, err := chdb.Open(ctx, cfg)
			if err != nil {
				t.Fatalf("%s://%s (secure %t): %v", cfg.Protocol, cfg.Addr, cfg.Secure, err)
			}
			defer conn.Close()
			t.Cleanup(func() { conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.Database) })
			for _, q := range []string{
				"CREATE DATABASE " + cfg.Database,
				"CREATE TABLE " + cfg.Database + ".t (id String, at DateTime('UTC'), n UInt64, amount Decimal(38, 12)) ENGINE = MergeTree ORDER BY id",
			} {
				if err := conn.Exec(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			at := time.Date(2026, 2, 28, 23, 59, 59, 0, time.UTC)
			amount := decimal.RequireFromString("12345678901234567890.123456789012")
			if err := chdb.Insert(ctx, conn, chdb.InsertInto(cfg.Database+".t", []string{"id", "at", "n", "amount"}),
				[][]any{{"a", at, uint64(1<<63 + 5), amount}, {"b", at.Add(time.Second), uint64(0), amount.Neg()}}); err != nil {
				t.Fatal(err)
			}
			var gotAt time.Time
			var n uint64
			var sum, first decimal.Decimal
			if err := conn.QueryRow(ctx, "SELECT min(at), max(n), sum(amount), argMin(amount, id) FROM "+cfg.Database+".t WHERE id IN (?, ?)", "a", "b").
				Scan(&gotAt, &n, &sum, &first); err != nil {
				t.Fatal(err)
			}
			if !gotAt.Equal(at) || n != 1<<63+5 || !sum.IsZero() || !first.Equal(amount) {
				t.Errorf("read back %s %d %s %s, want %s %d 0 %s", gotAt, n, sum, first, at, uint64(1<<63+5), amount)
			}
		})
	}
}

// A TLS endpoint is trusted only through the CA given: not by the system's roots, not by
// another CA.
func TestTLSVerifiesTheServer(t *testing.T) {
	var secure []chdb.Config
	for _, cfg := range endpoints(t) {
		if cfg.Secure {
			secure = append(secure, cfg)
		}
	}
	if len(secure) == 0 {
		t.Skip("no TLS endpoint: scripts/test.sh gives every server one (VENNA_TEST_CLICKHOUSE_TLS, or an HTTPS VENNA_CLICKHOUSE_ADDR)")
	}
	other := writeCA(t)
	for _, cfg := range secure {
		for name, ca := range map[string]string{"system roots": "", "another CA": other} {
			t.Run(cfg.Protocol+"/"+name, func(t *testing.T) {
				cfg := cfg
				cfg.Database, cfg.CAFile = "default", ca
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				conn, err := chdb.Open(ctx, cfg)
				if err == nil {
					conn.Close()
					t.Fatalf("connected to %s trusting %s", cfg.Addr, name)
				}
				if !strings.Contains(err.Error(), "certificate") {
					t.Fatalf("got %v, want a certificate error", err)
				}
			})
		}
	}
	t.Run("CA file missing", func(t *testing.T) {
		cfg := secure[0]
		cfg.Database, cfg.CAFile = "default", filepath.Join(t.TempDir(), "none.pem")
		if _, err := chdb.Open(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "CAFile") {
			t.Fatalf("got %v, want an error naming CAFile", err)
		}
	})
}

// writeCA writes a self-signed CA certificate that signed nothing the servers present.
func writeCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not the servers' CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
