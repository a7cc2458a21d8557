// Package chdb opens ClickHouse connections with the settings every Venna role shares.
package chdb

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// The protocols Config.Protocol names.
const (
	Native = "native" // ClickHouse's native TCP protocol (9000; 9440 with TLS)
	HTTP   = "http"   // ClickHouse's HTTP interface (8123; 8443 with TLS, as ClickHouse Cloud serves it)
)

// Config points at one ClickHouse server and database.
type Config struct {
	// Addr is host:port, e.g. 127.0.0.1:9000 (native) or abc.clickhouse.cloud:8443 (HTTPS),
	// or several, comma-separated: the servers of a cluster, tried in order when a
	// connection is opened, so that one down server fails over to the next.
	Addr     string
	Protocol string // Native or HTTP; empty: Native
	Secure   bool   // TLS, verified against the system's roots or CAFile
	CAFile   string // PEM bundle of the CAs to trust instead of the system's (Secure only)
	Database string
	User     string
	Password string
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case len(c.Addrs()) == 0:
		return errors.New("clickhouse: Addr (VENNA_CLICKHOUSE_ADDR) is empty")
	case c.Database == "":
		return errors.New("clickhouse: Database (VENNA_CLICKHOUSE_DATABASE) is empty")
	case c.Protocol != "" && c.Protocol != Native && c.Protocol != HTTP:
		return fmt.Errorf("clickhouse: Protocol (VENNA_CLICKHOUSE_PROTOCOL) is %q; use native or http", c.Protocol)
	case c.CAFile != "" && !c.Secure:
		return errors.New("clickhouse: CAFile (VENNA_CLICKHOUSE_CA_FILE) is set but Secure (VENNA_CLICKHOUSE_SECURE) is off")
	}
	return nil
}

// Addrs is Addr split at commas, without blanks.
func (c Config) Addrs() []string {
	var addrs []string
	for _, a := range strings.Split(c.Addr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// tlsConfig is the TLS client configuration of a secure connection: nil when c is not
// Secure. The server name is the host of Addr (crypto/tls takes it from the address).
func (c Config) tlsConfig() (*tls.Config, error) {
	if !c.Secure {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("clickhouse: read CAFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("clickhouse: CAFile %s holds no PEM certificate", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// Open connects and pings. The connection's default database is "default" so that a
// database that does not exist yet (before `venna migrate`) is not an error here;
// every query names cfg.Database explicitly or runs on a connection from OpenDB.
func Open(ctx context.Context, cfg Config) (driver.Conn, error) {
	return open(ctx, cfg, "default")
}

// OpenDB connects with cfg.Database as the default database.
func OpenDB(ctx context.Context, cfg Config) (driver.Conn, error) {
	return open(ctx, cfg, cfg.Database)
}

func open(ctx context.Context, cfg Config, database string) (driver.Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	user := cfg.User
	if user == "" {
		user = "default"
	}
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	protocol := clickhouse.Native
	if cfg.Protocol == HTTP {
		protocol = clickhouse.HTTP
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:             cfg.Addrs(),
		Protocol:         protocol,
		TLS:              tlsCfg,
		Auth:             clickhouse.Auth{Database: database, Username: user, Password: cfg.Password},
		DialTimeout:      5 * time.Second,
		ReadTimeout:      60 * time.Second,
		MaxOpenConns:     16,
		MaxIdleConns:     8,
		ConnMaxLifetime:  time.Hour,
		ConnOpenStrategy: clickhouse.ConnOpenInOrder,
	})
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", cfg.Addr, err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("ping clickhouse %s: %w", cfg.Addr, err)
	}
	return conn, nil
}

// Insert writes rows in one batch with insert, an "INSERT INTO db.table (columns)"
// statement: it must name its columns, the only form of native insert older servers
// (18.16) accept.
func Insert(ctx context.Context, conn driver.Conn, insert string, rows [][]any) error {
	if len(rows) == 0 {
		return nil
	}
	table := tableOf(insert)
	batch, err := conn.PrepareBatch(ctx, insert)
	if err != nil {
		return fmt.Errorf("prepare insert into %s: %w", table, err)
	}
	for _, r := range rows {
		if err := batch.Append(r...); err != nil {
			batch.Abort()
			return fmt.Errorf("append row to %s: %w", table, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d rows into %s: %w", len(rows), table, err)
	}
	return nil
}

// tableOf is the table an INSERT statement names, for error messages.
func tableOf(insert string) string {
	f := strings.Fields(insert)
	if len(f) >= 3 {
		return strings.TrimSuffix(f[2], "(")
	}
	return insert
}

// InsertInto is the INSERT statement Insert takes for table and columns, for inserts that
// are not in a package's catalogue (tests, tools).
func InsertInto(table string, columns []string) string {
	return "INSERT INTO " + table + " (" + strings.Join(columns, ", ") + ")"
}
