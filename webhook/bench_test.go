package webhook

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/venna/metering/internal/sqlset"
	"github.com/venna/metering/internal/testenv"
)

// BenchmarkDueDeliveries times one dispatch round's due list over a deliveries table that
// keeps many finished deliveries (VENNA_BENCH_DELIVERIES, default 1,000,000; 64 of them
// pending), written as the dispatcher writes them — a pending row, then the outcome, in
// batches that ClickHouse merges in the background — against the baseline in the same
// run: the same statement reading the whole table with FINAL, as it did before.
func BenchmarkDueDeliveries(b *testing.B) {
	kept := 1_000_000
	if v := os.Getenv("VENNA_BENCH_DELIVERIES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1000 {
			b.Fatalf("VENNA_BENCH_DELIVERIES=%q: want a count of at least 1000", v)
		}
		kept = n
	}
	const pending = 64
	ccfg, conn := testenv.ClickHouse(b)
	ctx := context.Background()
	const batch = 10_000
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).Unix()
	row := func(status string, version int) string {
		return fmt.Sprintf(`SELECT concat('wd_', toString(number)), concat('evt_', toString(number)), concat('we_', toString(number %% 20)),
			concat('ws_', toString(number %% 1000)), 'invoice.created', 0, toDateTime(%d + number, 'UTC'), %s, %d,
			toDateTime(%d + number, 'UTC'), toDateTime(0, 'UTC'), 0, '', '', toDateTime(0, 'UTC'), %d FROM system.numbers`,
			base, status, version, base, version)
	}
	into := "INSERT INTO " + ccfg.Database + ".webhook_deliveries (delivery_id, event_id, endpoint_id, workspace_id, event_type, replay, " +
		"created_at, status, attempts, next_attempt_at, last_attempt_at, last_status_code, last_error, claimed_by, claimed_until, version) "
	for lo := 0; lo < kept; lo += batch {
		n := min(batch, kept-lo)
		outcome := fmt.Sprintf("if(number >= %d, 'pending', 'succeeded')", kept-pending)
		for _, q := range []string{into + row("'pending'", 1), into + row(outcome, 3)} {
			if err := conn.Exec(ctx, fmt.Sprintf("%s LIMIT %d, %d", q, lo, n)); err != nil {
				b.Fatal(err)
			}
		}
	}
	statement := sqlset.Fill(dueDeliveriesSQL, "db", ccfg.Database, "now", strconv.FormatInt(base+int64(kept)+3600, 10),
		"per_endpoint", "4", "limit", "64")
	wholeTable := strings.Replace(statement, "WHERE delivery_id IN (SELECT delivery_id FROM "+ccfg.Database+".webhook_deliveries WHERE status = 'pending')\n    AND ", "WHERE ", 1)
	if wholeTable == statement {
		b.Fatal("due_deliveries no longer has the pending-first subquery the baseline removes")
	}
	store := NewStore(conn, ccfg.Database)
	for _, c := range []struct{ name, sql string }{{"whole-table-FINAL(baseline)", wholeTable}, {"pending-first", statement}} {
		b.Run(fmt.Sprintf("kept=%d/%s", kept, c.name), func(b *testing.B) {
			for range b.N {
				due, err := store.deliveries(ctx, c.sql, []string{""}, []string{""})
				if err != nil {
					b.Fatal(err)
				}
				if len(due) != pending {
					b.Fatalf("%d due, want %d", len(due), pending)
				}
			}
		})
	}
}
