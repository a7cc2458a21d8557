package ingest

import (
	"fmt"
	"testing"
	"time"

	"github.com/venna/metering/aggregate"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/schema"
)

const testPrices = `currency: USD
prices:
  - model: venna-1
    effective_from: "2026-01-01T00:00:00Z"
    input: "2.50"
    cached_input: "1.25"
    output: "10.00"
  - model: venna-1-mini
    effective_from: "2026-01-01T00:00:00Z"
    input: "0.15"
    cached_input: "0.075"
    output: "0.60"
`

// The same 10,000 events produced twice (a gateway replaying its spool) are stored twice
// but billed once: deduplicated usage sums, the hourly rollups and the invoices computed
// from them are what they were after the first copy.
func TestSameEventsTwiceBillOnce(t *testing.T) {
	chCfg, conn := testenv.ClickHouse(t)
	brokers, topic := testenv.Topic(t, 4)
	prices, err := invoice.ParsePriceBook([]byte(testPrices))
	if err != nil {
		t.Fatal(err)
	}
	agg, err := aggregate.New(aggregate.Config{Database: chCfg.Database}, conn)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := invoice.New(invoice.Config{Database: chCfg.Database}, conn, prices)
	if err != nil {
		t.Fatal(err)
	}
	evs := make([]schema.UsageEvent, 0, 10000)
	for w := range 5 {
		for _, e := range testEvents(2000, fmt.Sprintf("ws_dup%d", w)) {
			if len(evs)%4 == 0 {
				e.Model = "venna-1-mini"
			}
			evs = append(evs, e)
		}
	}
	month, end := invoice.Month(evs[0].OccurredAt)
	hours := []time.Time{}
	for h := evs[0].OccurredAt.Truncate(time.Hour); !h.After(evs[len(evs)-1].OccurredAt); h = h.Add(time.Hour) {
		hours = append(hours, h)
	}
	type billing struct {
		usage    counts
		totals   map[string]string
		subtotal map[string]string
	}
	bill := func() billing {
		t.Helper()
		if err := agg.Recompute(t.Context(), hours); err != nil {
			t.Fatal(err)
		}
		invs, failed, err := inv.Compute(t.Context(), month, end)
		if err != nil || len(failed) > 0 {
			t.Fatalf("compute invoices: %v %v", err, failed)
		}
		b := billing{usage: count(t, conn, chCfg.Database), totals: map[string]string{}, subtotal: map[string]string{}}
		for ws, i := range invs {
			b.totals[ws], b.subtotal[ws] = i.Total.String(), i.Subtotal.String()
		}
		return b
	}

	c := newConsumer(t, brokers, topic, "g-dup", chCfg.Database, conn, 2000)
	stop := start(c)
	defer stop()
	produce(t, brokers, topic, evs)
	waitUntil(t, "the first copy", func() bool { return c.Stats().Inserted == 10000 })
	once := bill()
	prompt, completion := sums(evs)
	if once.usage.distinct != 10000 || once.usage.prompt != prompt || once.usage.completion != completion || len(once.totals) != 5 {
		t.Fatalf("after one copy: %+v, %d invoices; want 10000 events, tokens %d/%d, 5 invoices", once.usage, len(once.totals), prompt, completion)
	}

	produce(t, brokers, topic, evs)
	waitUntil(t, "the second copy", func() bool { return c.Stats().Inserted == 20000 })
	twice := bill()
	// Both copies were inserted (c.Stats().Inserted is 20000); raw row counts would prove
	// nothing more, since a background merge may fold copies at any time.
	if twice.usage.distinct != once.usage.distinct || twice.usage.prompt != once.usage.prompt || twice.usage.completion != once.usage.completion {
		t.Errorf("usage changed by the second copy: %+v, was %+v", twice.usage, once.usage)
	}
	for ws, total := range once.totals {
		if twice.totals[ws] != total || twice.subtotal[ws] != once.subtotal[ws] {
			t.Errorf("%s invoice: total %s subtotal %s after the second copy, was %s / %s", ws, twice.totals[ws], twice.subtotal[ws], total, once.subtotal[ws])
		}
	}
}
