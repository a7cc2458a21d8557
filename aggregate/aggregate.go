// Package aggregate rolls deduplicated raw usage events up into hourly and daily rollups.
// Each run recomputes, completely, every hour touched by events ingested since its
// watermark, then every day containing such an hour, so late events are folded in and a
// rerun writes the same numbers again.
//
// Any number of aggregators may run at once (replicas, a manual run beside the cron):
// a rollup row's version is not a clock but 2^62 + the number of billable events of its
// window in the snapshot it was computed from. Raw events are only ever added and every
// reader dedups them, so that count grows with every new event of the window: of two
// computations of a window the more complete one always wins (ReplacingMergeTree keeps the
// highest version), and two with the same count read the same events and wrote the same
// numbers. No run can double count (every computation dedups by event_id and writes whole
// windows) or leave a window older than the most complete computation written so far,
// whatever the interleaving or the replicas' clocks.
package aggregate

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/venna/metering/internal/instant"
	"github.com/venna/metering/internal/sqlset"
)

//go:embed queries.sql
var queriesFile string

// Queries is every statement this package sends to ClickHouse (queries.sql).
var Queries = sqlset.MustParse("aggregate", queriesFile)

var (
	readWatermarkSQL    = Queries.Get("read_watermark")
	touchedHoursSQL     = Queries.Get("touched_hours")
	advanceWatermarkSQL = Queries.Get("advance_watermark")
	daysWithoutDailySQL = Queries.Get("days_without_daily_rollup")
	recomputeHoursSQL   = Queries.Get("recompute_hours")
	recomputeDaysSQL    = Queries.Get("recompute_days")
)

// Config configures the aggregator.
type Config struct {
	Database string
	// SafetyLag is how far behind "now" the watermark stays: a row whose insert was still in
	// flight when a run read the table is picked up by the next run as long as its insert
	// took less than SafetyLag. Default 2m.
	SafetyLag time.Duration
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Database == "":
		return errors.New("aggregate: Database (VENNA_CLICKHOUSE_DATABASE) is empty")
	case c.SafetyLag < 0:
		return errors.New("aggregate: SafetyLag is negative")
	}
	return nil
}

// Aggregator maintains usage_hourly and usage_daily.
type Aggregator struct {
	cfg        Config
	conn       driver.Conn
	now        func() time.Time
	backfilled atomic.Bool
}

// New returns an Aggregator; it refuses an invalid Config.
func New(cfg Config, conn driver.Conn) (*Aggregator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.SafetyLag == 0 {
		cfg.SafetyLag = 2 * time.Minute
	}
	return &Aggregator{cfg: cfg, conn: conn, now: time.Now}, nil
}

// Result says what one run did.
type Result struct {
	Hours     []time.Time // hours recomputed
	Days      []time.Time // days recomputed from those hours
	Watermark time.Time   // ingested_at up to which events are now rolled up
}

const job = "usage_hourly"

// versionBase lifts rollup versions above the wall-clock (UnixNano) versions written before
// migration 0003, so that a recomputation replaces such a row.
const versionBase = uint64(1) << 62

// Run recomputes the hours touched since the watermark, then their days, and advances the
// watermark.
//
// Order: 1. read the watermark 2. recompute hours 3. recompute their days 4. advance the
// watermark. A crash before 4 leaves the watermark where it was and the next run redoes
// the same windows. Whatever watermark a run writes is safe on its own (it covers only
// events that run could see), so racing runs need no coordination.
func (a *Aggregator) Run(ctx context.Context) (Result, error) {
	db := a.cfg.Database
	var wm time.Time
	err := a.conn.QueryRow(ctx, sqlset.Fill(readWatermarkSQL, "db", db), job).Scan(&wm)
	if err != nil {
		return Result{}, fmt.Errorf("read watermark: %w", err)
	}
	if !a.backfilled.Load() {
		if err := a.backfillDays(ctx); err != nil {
			return Result{}, err
		}
		a.backfilled.Store(true)
	}
	next := a.now().UTC().Add(-a.cfg.SafetyLag).Truncate(time.Second)
	rows, err := a.conn.Query(ctx, sqlset.Fill(touchedHoursSQL, "db", db), wm)
	if err != nil {
		return Result{}, fmt.Errorf("find touched hours: %w", err)
	}
	var hours []time.Time
	for rows.Next() {
		var h time.Time
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return Result{}, fmt.Errorf("scan touched hour: %w", err)
		}
		hours = append(hours, h.UTC())
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Result{}, fmt.Errorf("find touched hours: %w", err)
	}
	days, err := a.recompute(ctx, hours)
	if err != nil {
		return Result{}, err
	}
	if next.After(wm) {
		err = a.conn.Exec(ctx, sqlset.Fill(advanceWatermarkSQL, "db", db), job, next.Unix(), uint64(a.now().UnixNano()))
		if err != nil {
			return Result{}, fmt.Errorf("advance watermark to %s: %w", next.Format(time.RFC3339), err)
		}
		wm = next
	}
	return Result{Hours: hours, Days: days, Watermark: wm}, nil
}

// backfillDays computes the daily rows of every day that has hourly rows but no daily
// row: days rolled up before usage_daily existed (migration 0003). Each aggregator does it
// on its first run; afterwards every recomputed hour refreshes its day.
func (a *Aggregator) backfillDays(ctx context.Context) error {
	db := a.cfg.Database
	rows, err := a.conn.Query(ctx, sqlset.Fill(daysWithoutDailySQL, "db", db))
	if err != nil {
		return fmt.Errorf("find days without a daily rollup: %w", err)
	}
	var days []time.Time
	for rows.Next() {
		var d time.Time
		if err := rows.Scan(&d); err != nil {
			rows.Close()
			return fmt.Errorf("scan day: %w", err)
		}
		days = append(days, d.UTC())
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("find days without a daily rollup: %w", err)
	}
	return a.rewrite(ctx, recomputeDaysSQL, "days", 24*time.Hour, days)
}

// Recompute rewrites the rollup rows of the given hours from deduplicated raw events, then
// the daily rows of the days that contain them from the hourly rollup.
func (a *Aggregator) Recompute(ctx context.Context, hours []time.Time) error {
	_, err := a.recompute(ctx, hours)
	return err
}

// chunk bounds the windows one INSERT ... SELECT recomputes.
const chunk = 200

func (a *Aggregator) recompute(ctx context.Context, hours []time.Time) ([]time.Time, error) {
	seen := map[int64]bool{}
	var days []time.Time
	for _, h := range hours {
		d := h.UTC().Truncate(24 * time.Hour)
		if !seen[d.Unix()] {
			seen[d.Unix()] = true
			days = append(days, d)
		}
	}
	// Hours before days: a day is summed from the hourly rows as they are now.
	if err := a.rewrite(ctx, recomputeHoursSQL, "hours", time.Hour, hours); err != nil {
		return nil, err
	}
	if err := a.rewrite(ctx, recomputeDaysSQL, "days", 24*time.Hour, days); err != nil {
		return nil, err
	}
	return days, nil
}

func (a *Aggregator) rewrite(ctx context.Context, query, what string, width time.Duration, windows []time.Time) error {
	for len(windows) > 0 {
		n := min(chunk, len(windows))
		part := windows[:n]
		windows = windows[n:]
		list := make([]string, len(part))
		lo, hi := part[0], part[0]
		for i, w := range part {
			list[i] = sqlset.DateTime(w)
			lo, hi = instant.Min(lo, w), instant.Max(hi, w)
		}
		q := sqlset.Fill(query, "db", a.cfg.Database, "windows", strings.Join(list, ", "),
			"lo", fmt.Sprint(lo.Unix()), "hi", fmt.Sprint(hi.Add(width).Unix()), "base", fmt.Sprint(versionBase))
		if err := a.conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("recompute %d %s from %s: %w", len(part), what, part[0].Format(time.RFC3339), err)
		}
	}
	return nil
}
