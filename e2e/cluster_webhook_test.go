package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"

	"github.com/venna/metering/internal/chdb"
	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/webhook"
)

// Two aggregate roles' webhook dispatchers, each on its own ClickHouse server of the
// cluster (ch-1-1 and ch-2-2: the webhook tables are on every server, kept equal by
// replication through ZooKeeper), detect the same 40 credit grants racing, then race
// round after round over their 80 deliveries to two endpoints. A claim is read back from
// the dispatcher's own server, which a rival's claim reaches only by replication: every
// delivery must reach its endpoint and end succeeded with one logged attempt per request,
// one event per grant, and a copy sent twice stays rare: without the replica sync before
// the read-back (webhook.syncClaims) 12, 52 and 72 of the 80 were sent twice (three runs),
// with it 0, 0 and 0; the bound leaves room for a loaded machine.
func TestClusterWebhookDispatchersOnTwoServers(t *testing.T) {
	r := newClusterRun(t, 0)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	book, err := invoice.LoadPriceBook("../deploy/prices.yaml")
	if err != nil {
		t.Fatal(err)
	}
	open := func(node string) driver.Conn {
		conn, err := chdb.Open(ctx, testenv.ClickHouseConfig(r.c.nodes[node], r.db))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	nodes := []string{"ch-1-1", "ch-2-2"}
	conns := []driver.Conn{open(nodes[0]), open(nodes[1])}
	inv, err := invoice.New(invoice.Config{Database: r.db}, conns[0], book)
	if err != nil {
		t.Fatal(err)
	}
	hooks := newHookReceiver(t)
	store := webhook.NewStore(conns[0], r.db)
	for i := range 2 {
		if _, _, err := store.CreateEndpoint(ctx, webhook.EndpointSpec{URL: fmt.Sprintf("%s/endpoint-%d", hooks.URL, i)}); err != nil {
			t.Fatal(err)
		}
	}
	const grants = 40
	for i := range grants {
		if _, err := inv.AddGrant(ctx, invoice.Grant{WorkspaceID: fmt.Sprintf("ws_%d", i), AmountUSD: decimal.NewFromInt(3),
			EffectiveFrom: time.Now().UTC().Truncate(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	ds := make([]*webhook.Dispatcher, 2)
	for i, conn := range conns {
		d, err := webhook.New(webhook.Config{Database: r.db, Concurrency: 8, Name: "aggregate-on-" + nodes[i]}, conn,
			webhook.Sources{Invoices: inv}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		ds[i] = d
	}
	// Each detector reads its own server: the grants reach ch-2-2 by replication.
	waitFor(t, time.Minute, func() (bool, string) {
		var n uint64
		err := conns[1].QueryRow(ctx, "SELECT count() FROM "+r.db+".credit_grants").Scan(&n)
		return err == nil && n == grants, fmt.Sprintf("%s has %d of %d grants (%v)", nodes[1], n, grants, err)
	})
	race(t, ds, func(d *webhook.Dispatcher) (int, error) { _, err := d.Detect(ctx); return 0, err })
	const deliveries = 2 * grants
	rounds := 0
	for ; rounds < 100; rounds++ {
		sent := race(t, ds, func(d *webhook.Dispatcher) (int, error) {
			n, err := d.Dispatch(ctx)
			d.Wait()
			return n, err
		})
		if sent == 0 && len(perDelivery(hooks)) == deliveries {
			break
		}
		time.Sleep(50 * time.Millisecond) // a delivery another server has not seen yet
	}
	per := perDelivery(hooks)
	copies := 0
	for _, k := range per {
		copies += k - 1
	}
	t.Logf("%d deliveries, dispatchers on %s and %s racing for %d rounds: %d requests, %d sent twice or more",
		deliveries, nodes[0], nodes[1], rounds, len(hooks.requests()), copies)
	if len(per) != deliveries {
		t.Fatalf("%d of %d deliveries reached the endpoints", len(per), deliveries)
	}
	if copies > deliveries/20 {
		t.Errorf("%d of %d deliveries sent twice: claims do not keep dispatchers on two servers apart", copies, deliveries)
	}
	events, err := store.Events(ctx, webhook.EventFilter{Limit: webhook.MaxList})
	if err != nil || len(events) != grants {
		t.Errorf("%d events recorded by two racing detectors, want %d (%v)", len(events), grants, err)
	}
	// Both servers end with the same log: every delivery succeeded, an attempt per request.
	for i, conn := range conns {
		waitFor(t, time.Minute, func() (bool, string) {
			list, err := webhook.NewStore(conn, r.db).Deliveries(ctx, webhook.DeliveryFilter{Limit: webhook.MaxList})
			if err != nil {
				return false, err.Error()
			}
			if len(list) != deliveries {
				return false, fmt.Sprintf("%s lists %d deliveries, want %d", nodes[i], len(list), deliveries)
			}
			for _, dl := range list {
				if dl.Status != webhook.StatusSucceeded || len(dl.Attempts) != per[dl.ID] {
					return false, fmt.Sprintf("%s: delivery %s %s with %d attempts logged, %d requests", nodes[i], dl.ID, dl.Status,
						len(dl.Attempts), per[dl.ID])
				}
			}
			return true, ""
		})
	}
}

// race runs f on every dispatcher at once and adds up the counts they return.
func race(t *testing.T, ds []*webhook.Dispatcher, f func(*webhook.Dispatcher) (int, error)) int {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for _, d := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := f(d)
			mu.Lock()
			defer mu.Unlock()
			total += n
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	return total
}

// perDelivery counts the requests the receiver got per delivery ID.
func perDelivery(r *hookReceiver) map[string]int {
	per := map[string]int{}
	for _, rq := range r.requests() {
		per[rq.header.Get(webhook.DeliveryHeader)]++
	}
	return per
}
