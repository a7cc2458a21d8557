// Package chdb opens ClickHouse connections with the settings every Venna role shares.
package chdb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Config points at one ClickHouse server (native protocol) and database.
type Config struct {
	Addr     string // host:port of the native protocol, e.g. 127.0.0.1:9000
	Database string
	User     string
	Password string
}

// Validate names the first missing field.
func (c Config) Validate() error {
	switch {
	case c.Addr == "":
		return errors.New("clickhouse: Addr (VENNA_CLICKHOUSE_ADDR) is empty")
	case c.Database == "":
		return errors.New("clickhouse: Database (VENNA_CLICKHOUSE_DATABASE) is empty")
	}
	return nil
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
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:             []string{cfg.Addr},
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

// Insert writes rows into table in one batch over the native protocol. The INSERT names
// its columns: older servers (18.16) accept native inserts only in that form.
func Insert(ctx context.Context, conn driver.Conn, table string, columns []string, rows [][]any) error {
	if len(rows) == 0 {
		return nil
	}
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+table+" ("+strings.Join(columns, ", ")+")")
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
