// Package aggregate rolls deduplicated raw usage events up into hourly rollups. Each run
// recomputes, completely, every hour touched by events ingested since its watermark, so
// late events are folded in and a rerun writes the same numbers again.
package aggregate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
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

// Aggregator maintains usage_hourly.
type Aggregator struct {
	cfg  Config
	conn driver.Conn
	now  func() time.Time
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
	Watermark time.Time   // ingested_at up to which events are now rolled up
}

const job = "usage_hourly"

// Run recomputes the hours touched since the watermark and advances it.
func (a *Aggregator) Run(ctx context.Context) (Result, error) {
	db := a.cfg.Database
	var wm time.Time
	err := a.conn.QueryRow(ctx, "SELECT argMax(watermark, version) FROM "+db+".aggregate_watermarks WHERE job = ?", job).Scan(&wm)
	if err != nil {
		return Result{}, fmt.Errorf("read watermark: %w", err)
	}
	next := a.now().UTC().Add(-a.cfg.SafetyLag).Truncate(time.Second)
	rows, err := a.conn.Query(ctx, "SELECT DISTINCT toStartOfHour(occurred_at) AS h FROM "+db+".usage_events WHERE ingested_at >= ? ORDER BY h", wm)
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
	if err := a.Recompute(ctx, hours); err != nil {
		return Result{}, err
	}
	if next.After(wm) {
		err = a.conn.Exec(ctx, "INSERT INTO "+db+".aggregate_watermarks (job, watermark, version) SELECT ?, toDateTime(?, 'UTC'), ?",
			job, next.Unix(), uint64(a.now().UnixNano()))
		if err != nil {
			return Result{}, fmt.Errorf("advance watermark to %s: %w", next.Format(time.RFC3339), err)
		}
		wm = next
	}
	return Result{Hours: hours, Watermark: wm}, nil
}

// Recompute rewrites the rollup rows of the given hours from deduplicated raw events.
// The new rows carry a higher version than any before, so they replace the old ones;
// two aggregators recomputing the same hour write the same numbers, so either may win.
func (a *Aggregator) Recompute(ctx context.Context, hours []time.Time) error {
	const chunk = 200
	for len(hours) > 0 {
		n := min(chunk, len(hours))
		if err := a.recompute(ctx, hours[:n]); err != nil {
			return err
		}
		hours = hours[n:]
	}
	return nil
}

func (a *Aggregator) recompute(ctx context.Context, hours []time.Time) error {
	list := make([]string, len(hours))
	for i, h := range hours {
		list[i] = fmt.Sprintf("toDateTime(%d, 'UTC')", h.Unix())
	}
	q := fmt.Sprintf(recomputeSQL, a.cfg.Database, a.cfg.Database, strings.Join(list, ", "))
	if err := a.conn.Exec(ctx, q, uint64(a.now().UnixNano())); err != nil {
		return fmt.Errorf("recompute %d hours from %s: %w", len(hours), hours[0].Format(time.RFC3339), err)
	}
	return nil
}

// recomputeSQL dedups raw events by event_id (LIMIT 1 BY: merges fold duplicates only
// eventually) and sums the billable (status ok) ones per workspace x hour x model x key.
const recomputeSQL = `INSERT INTO %s.usage_hourly (workspace_id, hour, model, api_key_id, requests,
    prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
    accepted_prediction_tokens, rejected_prediction_tokens, total_tokens, version)
SELECT workspace_id, toStartOfHour(occurred_at) AS hour, model, api_key_id, count(),
    sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens), sum(reasoning_tokens),
    sum(accepted_prediction_tokens), sum(rejected_prediction_tokens), sum(total_tokens), ?
FROM (
    SELECT event_id, workspace_id, occurred_at, model, api_key_id, prompt_tokens, cached_tokens,
        completion_tokens, reasoning_tokens, accepted_prediction_tokens, rejected_prediction_tokens, total_tokens
    FROM %s.usage_events
    WHERE toStartOfHour(occurred_at) IN (%s) AND status = 'ok'
    LIMIT 1 BY event_id
)
GROUP BY workspace_id, hour, model, api_key_id`
