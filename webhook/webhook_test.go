package webhook

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/venna/metering/invoice"
	"github.com/venna/metering/spend"
)

// A receiver that fails with 500, then hangs past the timeout, then fails again, then
// recovers: every event reaches it, every request it got verifies against the endpoint's
// secret, each retry waits its backoff (nothing is sent a second before it is due), the
// delivery log lists every attempt with what it got, and a replay sends an event again.
func TestWebhookFailingReceiverGetsEveryEvent(t *testing.T) {
	e := newEnv(t, Config{Timeout: 2 * time.Second, RetryBase: 30 * time.Second})
	mode := "500"
	var mu sync.Mutex
	r := newReceiver(t, func(int, Event) int {
		mu.Lock()
		defer mu.Unlock()
		return map[string]int{"500": 500, "hang": 0, "ok": 200}[mode]
	})
	setMode := func(m string) { mu.Lock(); mode = m; mu.Unlock() }
	ep, secret := e.endpoint(EndpointSpec{WorkspaceID: "ws_a", URL: r.url(), Description: "billing system"})
	// Not subscribed to grants, and another workspace's: neither gets these events.
	other := newReceiver(t, nil)
	e.endpoint(EndpointSpec{WorkspaceID: "ws_a", URL: other.url(), EnabledEvents: []string{InvoiceVoided}})
	e.endpoint(EndpointSpec{WorkspaceID: "ws_b", URL: other.url()})
	e.detect() // the first scan: nothing yet

	// The facts: last month's draft invoice, a grant, this month's budget alerts.
	start, _ := lastMonth()
	e.usage("ws_a", start.Add(36*time.Hour), 3, 1000, 500)
	if _, err := e.iv.Run(ctx(t), start, start.AddDate(0, 1, 0)); err != nil {
		t.Fatal(err)
	}
	g := e.grant("ws_a", "10")
	if _, err := e.spend.SetBudget(ctx(t), spend.Budget{WorkspaceID: "ws_a", MonthlyUSD: decimal.RequireFromString("0.01"), Thresholds: []int{50, 100}}); err != nil {
		t.Fatal(err)
	}
	e.usage("ws_a", time.Now().UTC().Add(-time.Minute), 2, 1000, 500) // $0.015
	alerts, err := spend.NewAlerter(e.spend, e.prices, e.d.log, nil).Run(ctx(t))
	if err != nil || len(alerts) != 2 {
		t.Fatalf("alerts %v, %v; want 2", alerts, err)
	}
	res := e.detect()
	want := map[string]string{
		EventID(InvoiceCreated, invoice.ID("ws_a", start, start.AddDate(0, 1, 0))): InvoiceCreated,
		EventID(GrantCreated, g.ID):            GrantCreated,
		EventID(BudgetThreshold, alerts[0].ID): BudgetThreshold,
		EventID(BudgetExceeded, alerts[1].ID):  BudgetExceeded,
	}
	if alerts[0].Type != BudgetThreshold {
		want[EventID(BudgetExceeded, alerts[0].ID)], want[EventID(BudgetThreshold, alerts[1].ID)] = BudgetExceeded, BudgetThreshold
		delete(want, EventID(BudgetThreshold, alerts[0].ID))
		delete(want, EventID(BudgetExceeded, alerts[1].ID))
	}
	if got := slices.Sorted(slices.Values(res.Events)); !slices.Equal(got, slices.Sorted(mapKeys(want))) {
		t.Fatalf("detected %v, want %v", got, want)
	}
	if res.Deliveries != 4 {
		t.Fatalf("%d deliveries, want 4 (one endpoint wants them all, the others none)", res.Deliveries)
	}

	// Attempt 1: 500. Attempt 2: no answer within the timeout. 3: 500. 4: 200.
	for i, m := range []string{"500", "hang", "500", "ok"} {
		setMode(m)
		if i > 0 {
			first, last := e.nextDue(t, ep.ID)
			e.clock.set(first.Add(-time.Second))
			if n := e.dispatch(e.d); n != 0 {
				t.Fatalf("round %d: %d sent a second before the first retry was due", i+1, n)
			}
			e.clock.set(last)
		}
		if n := e.dispatch(e.d); n != 4 {
			t.Fatalf("round %d (%s): %d sent, want 4", i+1, m, n)
		}
	}
	if n := e.dispatch(e.d); n != 0 {
		t.Fatalf("%d sent after every delivery succeeded", n)
	}

	got := r.requests()
	if len(got) != 16 {
		t.Fatalf("receiver got %d requests, want 16 (4 events x 4 attempts)", len(got))
	}
	delivered := map[string]bool{}
	for _, rq := range got {
		if err := Verify(rq.body, rq.header.Get(SignatureHeader), secret, DefaultTolerance, time.Now()); err != nil {
			t.Errorf("request for %s: %v", rq.event.ID, err)
		}
		if rq.header.Get(EventIDHeader) != rq.event.ID || rq.header.Get(EventTypeHeader) != rq.event.Type || rq.event.Object != "event" {
			t.Errorf("request headers %v for event %s %s", rq.header, rq.event.ID, rq.event.Type)
		}
		if rq.status == 200 {
			delivered[rq.event.ID] = true
		}
	}
	for id := range want {
		if !delivered[id] {
			t.Errorf("event %s (%s) never delivered", id, want[id])
		}
	}
	if n := len(other.requests()); n != 0 {
		t.Errorf("endpoints that do not want these events got %d requests", n)
	}

	ds := e.deliveries(DeliveryFilter{EndpointID: ep.ID})
	if len(ds) != 4 {
		t.Fatalf("%d deliveries listed, want 4", len(ds))
	}
	for _, dl := range ds {
		if dl.Status != StatusSucceeded || dl.AttemptCount != 4 || len(dl.Attempts) != 4 || !dl.NextAttemptAt.IsZero() {
			t.Errorf("delivery %s: %s after %d attempts (%d logged), next %v", dl.ID, dl.Status, dl.AttemptCount, len(dl.Attempts), dl.NextAttemptAt)
			continue
		}
		codes := []int{}
		for i, a := range dl.Attempts {
			codes = append(codes, a.StatusCode)
			if a.Attempt != i+1 || a.URL != r.url() || a.Dispatcher != "dispatcher-1" {
				t.Errorf("%s attempt %d: %+v", dl.ID, i+1, a)
			}
			if i == 3 {
				if a.Outcome != OutcomeSucceeded || a.Error != "" || !a.NextAttemptAt.IsZero() || !strings.Contains(a.Response, dl.EventID) {
					t.Errorf("%s last attempt: %+v", dl.ID, a)
				}
				continue
			}
			// Retries spaced by the backoff: 30s, 60s, 120s, each plus at most 10 %.
			base := 30 * time.Second << i
			if wait := a.NextAttemptAt.Sub(a.StartedAt); a.Outcome != OutcomeRetrying || wait < base || wait > base+base/10 {
				t.Errorf("%s attempt %d: %s, next attempt %s after it, want %s to %s", dl.ID, i+1, a.Outcome, wait, base, base+base/10)
			}
			if next := dl.Attempts[i+1].StartedAt; next.Before(a.NextAttemptAt) {
				t.Errorf("%s attempt %d started at %s, before it was due at %s", dl.ID, i+2, next, a.NextAttemptAt)
			}
		}
		if !slices.Equal(codes, []int{500, 0, 500, 200}) {
			t.Errorf("%s: status codes %v, want [500 0 500 200]", dl.ID, codes)
		}
		if a := dl.Attempts[1]; a.Error != "no answer within 2s" {
			t.Errorf("%s: the timed-out attempt says %q", dl.ID, a.Error)
		}
		if a := dl.Attempts[0]; a.Error != "HTTP 500" {
			t.Errorf("%s: the 500 says %q", dl.ID, a.Error)
		}
	}
	if strings.Contains(e.logs.String(), secret) {
		t.Error("the dispatcher logged the endpoint's secret")
	}

	// Replay: the event again, a delivery of its own, logged like any other.
	grantEvent := EventID(GrantCreated, g.ID)
	rd, err := e.store.Replay(ctx(t), grantEvent, ep.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := e.dispatch(e.d); n != 1 {
		t.Fatalf("replay: %d sent, want 1", n)
	}
	last := r.requests()[16]
	if last.event.ID != grantEvent || last.header.Get(DeliveryHeader) != rd.ID || !rd.Replay || last.header.Get(AttemptHeader) != "1" {
		t.Errorf("replay sent %s (delivery %s, attempt %s), want %s in delivery %s", last.event.ID, last.header.Get(DeliveryHeader),
			last.header.Get(AttemptHeader), grantEvent, rd.ID)
	}
	for _, rq := range got {
		if rq.event.ID == grantEvent && string(rq.body) != string(last.body) {
			t.Errorf("a replay's body differs from the first delivery's:\n%s\n%s", last.body, rq.body)
		}
	}
	ds = e.deliveries(DeliveryFilter{EventID: grantEvent})
	if len(ds) != 2 || ds[0].ID != rd.ID || !ds[0].Replay || ds[0].Status != StatusSucceeded || len(ds[0].Attempts) != 1 {
		t.Errorf("deliveries of %s after the replay: %+v", grantEvent, ds)
	}
}

// nextDue is the earliest and the latest next attempt of an endpoint's pending deliveries.
func (e *env) nextDue(t *testing.T, endpoint string) (first, last time.Time) {
	t.Helper()
	for _, dl := range e.deliveries(DeliveryFilter{EndpointID: endpoint, Status: StatusPending}) {
		if first.IsZero() || dl.NextAttemptAt.Before(first) {
			first = dl.NextAttemptAt
		}
		if dl.NextAttemptAt.After(last) {
			last = dl.NextAttemptAt
		}
	}
	if first.IsZero() {
		t.Fatal("no pending delivery")
	}
	return first, last
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// A delivery is retried for RetryFor after it was created and then given up, with the
// attempt that gave up marked failed in the log.
func TestWebhookGivesUpAfterTheRetryWindow(t *testing.T) {
	e := newEnv(t, Config{RetryBase: 10 * time.Minute, RetryMax: time.Hour, RetryFor: 3 * time.Hour})
	r := newReceiver(t, func(int, Event) int { return 503 })
	ep, _ := e.endpoint(EndpointSpec{URL: r.url()}) // global
	e.detect()
	e.grant("ws_a", "1")
	e.detect()
	for range 10 {
		if e.dispatch(e.d) == 0 {
			break
		}
		ds := e.deliveries(DeliveryFilter{EndpointID: ep.ID, Status: StatusPending})
		if len(ds) == 0 {
			break
		}
		e.clock.set(ds[0].NextAttemptAt)
	}
	ds := e.deliveries(DeliveryFilter{EndpointID: ep.ID})
	if len(ds) != 1 || ds[0].Status != StatusFailed {
		t.Fatalf("deliveries %+v, want one failed", ds)
	}
	// Attempts at 0, 10m, 30m, 70m and 130m (+ up to 10 % each): the fifth one's retry
	// would be at 190m, past 3h.
	as := ds[0].Attempts
	if len(as) != 5 || as[4].Outcome != OutcomeFailed || as[3].Outcome != OutcomeRetrying {
		t.Fatalf("%d attempts, want 5, the last failed: %+v", len(as), as)
	}
	if last := as[4].StartedAt; last.After(ds[0].CreatedAt.Add(3 * time.Hour)) {
		t.Errorf("an attempt at %s, after the retry window ended at %s", last, ds[0].CreatedAt.Add(3*time.Hour))
	}
	if !strings.Contains(e.logs.String(), "webhook delivery given up") {
		t.Error("giving up was not logged")
	}
}

// A dead receiver (it never answers while the test holds it) delays neither invoicing
// nor the other endpoints: it holds at most PerEndpoint attempts, the other endpoint gets
// every event meanwhile, and an invoice run completes while it is still held.
func TestWebhookDeadReceiverDelaysNothing(t *testing.T) {
	e := newEnv(t, Config{Timeout: time.Minute, Concurrency: 4, PerEndpoint: 2})
	dead := newReceiver(t, nil)
	dead.hold = make(chan struct{})
	good := newReceiver(t, nil)
	e.endpoint(EndpointSpec{URL: dead.url()})
	e.endpoint(EndpointSpec{URL: good.url()})
	e.detect()
	const n = 12
	for i := range n {
		e.grant(fmt.Sprintf("ws_%d", i), "1")
	}
	if res := e.detect(); len(res.Events) != n || res.Deliveries != 2*n {
		t.Fatalf("detected %d events, %d deliveries; want %d and %d", len(res.Events), res.Deliveries, n, 2*n)
	}
	runCtx, stop := contextWithCancel(t)
	done := make(chan error, 1)
	go func() { done <- e.d.Run(runCtx) }()
	e.d.Poke()

	// Not a timing assertion: the deadline only bounds a hang.
	deadline := time.Now().Add(time.Minute)
	for len(good.requests()) < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := len(good.requests()); got != n {
		t.Fatalf("the good endpoint got %d of %d events while the other hung", got, n)
	}
	start, _ := lastMonth()
	e.usage("ws_x", start.Add(time.Hour), 1, 100, 100)
	if res, err := e.iv.Run(ctx(t), start, start.AddDate(0, 1, 0)); err != nil || len(res.Written) == 0 {
		t.Fatalf("invoice run while a receiver hangs: %v %v", res, err)
	}
	if held := dead.waiting.Load(); held != 2 {
		t.Errorf("the dead receiver holds %d attempts after the others were delivered and invoicing ran, want 2 (PerEndpoint)", held)
	}
	close(dead.hold)
	for len(dead.requests()) < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, most := len(dead.requests()), dead.maxHeld.Load(); got != n || most != 2 {
		t.Errorf("once released the dead receiver got %d of %d events, at most %d at once (want 2)", got, n, most)
	}
}

// An invoice's life, end to end: its draft, its finalization and its void each reach the
// endpoint once, signed, with the invoice as the API serves it at that moment.
func TestWebhookInvoiceFinalizedEndToEnd(t *testing.T) {
	e := newEnv(t, Config{})
	r := newReceiver(t, nil)
	_, secret := e.endpoint(EndpointSpec{WorkspaceID: "ws_a", URL: r.url(), EnabledEvents: []string{InvoiceFinalized, InvoiceCreated, InvoiceVoided}})
	e.detect()
	start, end := lastMonth()
	e.usage("ws_a", start.Add(50*time.Hour), 4, 2000, 1000)
	if _, err := e.iv.Run(ctx(t), start, end); err != nil {
		t.Fatal(err)
	}
	id := invoice.ID("ws_a", start, end)
	step := func(typ string, status string) Event {
		t.Helper()
		e.detect()
		e.dispatch(e.d)
		got := r.requests()
		if len(got) == 0 {
			t.Fatalf("%s: nothing received", typ)
		}
		rq := got[len(got)-1]
		if err := Verify(rq.body, rq.header.Get(SignatureHeader), secret, DefaultTolerance, time.Now()); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if rq.event.Type != typ || rq.event.ID != EventID(typ, id) || rq.event.WorkspaceID != "ws_a" {
			t.Fatalf("received %s %s, want %s of %s", rq.event.Type, rq.event.ID, typ, id)
		}
		var inv invoice.Invoice
		if err := json.Unmarshal(rq.event.Data.Object, &inv); err != nil {
			t.Fatal(err)
		}
		api, err := e.iv.Get(ctx(t), "ws_a", id)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(api)
		if inv.Status != status || string(rq.event.Data.Object) != string(want) {
			t.Errorf("%s carries\n%s\nwant the invoice as the API serves it:\n%s", typ, rq.event.Data.Object, want)
		}
		return rq.event
	}
	created := step(InvoiceCreated, invoice.StatusDraft)
	if inv, err := e.iv.Finalize(ctx(t), "ws_a", id); err != nil || inv.Status != invoice.StatusFinalized {
		t.Fatal(inv, err)
	}
	finalized := step(InvoiceFinalized, invoice.StatusFinalized)
	var inv invoice.Invoice
	json.Unmarshal(finalized.Data.Object, &inv)
	if len(inv.Lines) != 2 || !inv.Total.Equal(decimal.RequireFromString("0.06")) || finalized.Created != inv.FinalizedAt.Unix() {
		t.Errorf("finalized invoice in the event: %d lines, total %s, created %d (finalized at %s)", len(inv.Lines), inv.Total, finalized.Created, inv.FinalizedAt)
	}
	if _, err := e.iv.Void(ctx(t), "ws_a", id); err != nil {
		t.Fatal(err)
	}
	step(InvoiceVoided, invoice.StatusVoid)
	if got := len(r.requests()); got != 3 {
		t.Errorf("%d requests, want 3: each event once", got)
	}
	if created.Created > finalized.Created {
		t.Errorf("created %d after finalized %d", created.Created, finalized.Created)
	}
}

// Facts found again — by the overlap of scans, by another detector — are the same events:
// no event or delivery twice, whatever scans race.
func TestWebhookEventIDsAreDeterministic(t *testing.T) {
	e := newEnv(t, Config{})
	r := newReceiver(t, nil)
	e.endpoint(EndpointSpec{URL: r.url()})
	e.detect()
	for i := range 5 {
		e.grant(fmt.Sprintf("ws_%d", i), "2")
	}
	other := e.dispatcher(Config{}, "dispatcher-2")
	var wg sync.WaitGroup
	results := make([]DetectResult, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := e.d
			if i%2 == 1 {
				d = other
			}
			res, err := d.Detect(ctx(t))
			if err != nil {
				t.Error(err)
			}
			results[i] = res
		}()
	}
	wg.Wait()
	again := e.detect()
	if len(again.Events) != 0 {
		t.Errorf("a later scan recorded %d events again", len(again.Events))
	}
	ids := map[string]bool{}
	for _, res := range results {
		for _, id := range res.Events {
			ids[id] = true
		}
	}
	evs, err := e.store.Events(ctx(t), EventFilter{Type: GrantCreated})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 5 || len(evs) != 5 {
		t.Fatalf("%d distinct event IDs detected, %d listed; want 5 and 5", len(ids), len(evs))
	}
	e.dispatch(e.d)
	e.dispatch(other)
	if ds := e.deliveries(DeliveryFilter{}); len(ds) != 5 {
		t.Errorf("%d deliveries, want 5", len(ds))
	}
	if got := len(r.requests()); got != 5 {
		t.Errorf("%d requests, want 5", got)
	}
}

// Two dispatchers on the same deliveries (two aggregate replicas) claim before they send:
// every event is delivered, each copy is logged as a second attempt of the same number,
// and, with the claims left to settle (500 ms here, room for a loaded test machine;
// 100 ms by default), no delivery is sent twice. Without the wait (1 ns) copies happen:
// counted and logged, not asserted.
func TestWebhookConcurrentDispatchersRarelySendTwice(t *testing.T) {
	for _, c := range []struct {
		settle    time.Duration
		maxCopies int // -1: not checked
	}{{time.Nanosecond, -1}, {500 * time.Millisecond, 0}} {
		t.Run(fmt.Sprint("settle ", c.settle), func(t *testing.T) {
			cfg := Config{Concurrency: 8, Settle: c.settle}
			e := newEnv(t, cfg)
			r := newReceiver(t, nil)
			e.endpoint(EndpointSpec{URL: r.url()})
			e.endpoint(EndpointSpec{URL: r.url() + "&copy=2"})
			e.detect()
			const n = 40
			for i := range n {
				e.grant(fmt.Sprintf("ws_%d", i), "3")
			}
			e.detect()
			other := e.dispatcher(cfg, "dispatcher-2")
			for round := 0; round < 60; round++ {
				var wg sync.WaitGroup
				sent := make([]int, 2)
				for i, d := range []*Dispatcher{e.d, other} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						k, err := d.Dispatch(ctx(t))
						if err != nil {
							t.Error(err)
						}
						d.Wait()
						sent[i] = k
					}()
				}
				wg.Wait()
				if sent[0]+sent[1] == 0 {
					break
				}
			}
			per := map[string]int{}
			for _, rq := range r.requests() {
				per[rq.header.Get(DeliveryHeader)]++
			}
			copies := 0
			for _, k := range per {
				copies += k - 1
			}
			t.Logf("%d deliveries by two dispatchers racing, claims read back after %s: %d requests, %d copies", 2*n, c.settle, len(r.requests()), copies)
			if len(per) != 2*n {
				t.Fatalf("%d of %d deliveries reached the receiver", len(per), 2*n)
			}
			if c.maxCopies >= 0 && copies > c.maxCopies {
				t.Errorf("%d copies of %d deliveries: claims do not keep the dispatchers apart", copies, 2*n)
			}
			for _, dl := range e.deliveries(DeliveryFilter{Limit: MaxList}) {
				if dl.Status != StatusSucceeded || len(dl.Attempts) != per[dl.ID] {
					t.Errorf("delivery %s: %s, %d attempts logged, %d requests", dl.ID, dl.Status, len(dl.Attempts), per[dl.ID])
				}
			}
		})
	}
}

// Rotating a secret: deliveries carry a signature with the new secret and, during the
// overlap, one with the old; once the overlap is over, only the new one verifies. The new
// secret differs from the old and from every other endpoint's.
func TestWebhookSecretRotation(t *testing.T) {
	e := newEnv(t, Config{})
	r := newReceiver(t, nil)
	ep, old := e.endpoint(EndpointSpec{URL: r.url()})
	_, other := e.endpoint(EndpointSpec{URL: r.url() + "&2", EnabledEvents: []string{InvoiceVoided}})
	_, rotated, err := e.store.RotateSecret(ctx(t), ep.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if rotated == old || rotated == other || !strings.HasPrefix(rotated, "whsec_") || len(rotated) != 70 {
		t.Fatalf("rotated secret %q (old %q)", rotated, old)
	}
	e.detect()
	e.grant("ws_a", "1")
	e.detect()
	e.dispatch(e.d)
	rq := r.requests()[0]
	sig := rq.header.Get(SignatureHeader)
	for name, s := range map[string]string{"new": rotated, "old": old} {
		if err := Verify(rq.body, sig, s, DefaultTolerance, time.Now()); err != nil {
			t.Errorf("during the overlap, the %s secret: %v (%s)", name, err, sig)
		}
	}
	if strings.Count(sig, "v1=") != 2 {
		t.Errorf("signature %q, want two v1", sig)
	}
	// Rotating again with no overlap retires both earlier secrets at once.
	_, third, err := e.store.RotateSecret(ctx(t), ep.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Replay(ctx(t), rq.event.ID, ep.ID); err != nil {
		t.Fatal(err)
	}
	e.clock.set(time.Now().Add(time.Second)) // past the rotation
	e.dispatch(e.d)
	rq = r.requests()[1]
	sig = rq.header.Get(SignatureHeader)
	if err := Verify(rq.body, sig, third, DefaultTolerance, time.Now()); err != nil || strings.Count(sig, "v1=") != 1 {
		t.Errorf("after a rotation without overlap: %v, signature %q", err, sig)
	}
	for _, s := range []string{old, rotated} {
		if err := Verify(rq.body, sig, s, DefaultTolerance, time.Now()); err == nil {
			t.Error("a retired secret still verifies")
		}
	}
}

// A disabled endpoint gets nothing: no delivery of what happens while it is disabled, and
// its pending deliveries wait until it is enabled again.
func TestWebhookDisabledEndpointWaits(t *testing.T) {
	e := newEnv(t, Config{})
	r := newReceiver(t, nil)
	ep, _ := e.endpoint(EndpointSpec{URL: r.url()})
	e.detect()
	e.grant("ws_a", "1")
	e.detect() // a delivery, pending
	if _, err := e.store.SetEnabled(ctx(t), ep.ID, false); err != nil {
		t.Fatal(err)
	}
	e.grant("ws_b", "1")
	if res := e.detect(); len(res.Events) != 1 || res.Deliveries != 0 {
		t.Fatalf("while disabled: %+v, want 1 event and no delivery", res)
	}
	if n := e.dispatch(e.d); n != 0 {
		t.Fatalf("%d sent to a disabled endpoint", n)
	}
	if _, err := e.store.Replay(ctx(t), EventID(GrantCreated, "x"), ep.ID); err == nil {
		t.Error("replay of an unknown event")
	}
	if _, err := e.store.SetEnabled(ctx(t), ep.ID, true); err != nil {
		t.Fatal(err)
	}
	if n := e.dispatch(e.d); n != 1 {
		t.Fatalf("%d sent once enabled, want the 1 pending", n)
	}
	if got := r.requests(); len(got) != 1 || got[0].event.WorkspaceID != "ws_a" {
		t.Errorf("received %+v", got)
	}
}

// A replay goes only to an enabled endpoint that sees the event's workspace.
func TestWebhookReplayRefusals(t *testing.T) {
	e := newEnv(t, Config{})
	e.detect()
	g := e.grant("ws_a", "1")
	e.detect()
	mine, _ := e.endpoint(EndpointSpec{WorkspaceID: "ws_a", URL: "http://127.0.0.1:9/a"})
	theirs, _ := e.endpoint(EndpointSpec{WorkspaceID: "ws_b", URL: "http://127.0.0.1:9/b"})
	global, _ := e.endpoint(EndpointSpec{URL: "http://127.0.0.1:9/g"})
	off, _ := e.endpoint(EndpointSpec{URL: "http://127.0.0.1:9/off"})
	if _, err := e.store.SetEnabled(ctx(t), off.ID, false); err != nil {
		t.Fatal(err)
	}
	ev := EventID(GrantCreated, g.ID)
	for _, c := range []struct {
		endpoint, event string
		want            error
	}{
		{mine.ID, ev, nil}, {global.ID, ev, nil}, {theirs.ID, ev, ErrConflict}, {off.ID, ev, ErrConflict},
		{"we_nope", ev, ErrNotFound}, {mine.ID, "evt_nope", ErrNotFound},
	} {
		_, err := e.store.Replay(ctx(t), c.event, c.endpoint)
		if (c.want == nil) != (err == nil) || (c.want != nil && !errorsIs(err, c.want)) {
			t.Errorf("replay %s to %s: %v, want %v", c.event, c.endpoint, err, c.want)
		}
	}
}

// A prepaid workspace whose month's spend reaches its credit raises
// credit_balance.depleted once; more credit makes a later depletion a new event.
func TestWebhookCreditDepletion(t *testing.T) {
	e := newEnv(t, Config{})
	r := newReceiver(t, nil)
	e.endpoint(EndpointSpec{WorkspaceID: "ws_p", URL: r.url(), EnabledEvents: []string{CreditsDepleted}})
	e.detect()
	if err := e.iv.SetPrepaid(ctx(t), "ws_p", true); err != nil {
		t.Fatal(err)
	}
	e.grant("ws_p", "0.01")
	e.usage("ws_p", time.Now().UTC().Add(-time.Minute), 1, 1000, 500) // $0.0075
	e.clock.set(e.clock.now().Add(depletionEvery))
	if res := e.detect(); len(res.Events) != 1 { // the grant only
		t.Fatalf("under the credit: %v", res.Events)
	}
	e.usage("ws_p", time.Now().UTC().Add(-time.Minute), 1, 1000, 500) // $0.015 in all
	e.clock.set(e.clock.now().Add(depletionEvery))
	res := e.detect()
	e.clock.set(e.clock.now().Add(depletionEvery))
	if again := e.detect(); len(res.Events) != 1 || len(again.Events) != 0 {
		t.Fatalf("past the credit: %v, then %v; want one event", res.Events, again.Events)
	}
	e.dispatch(e.d)
	got := r.requests()
	if len(got) != 1 || got[0].event.Type != CreditsDepleted {
		t.Fatalf("received %+v", got)
	}
	var dep Depletion
	json.Unmarshal(got[0].event.Data.Object, &dep)
	if dep.WorkspaceID != "ws_p" || !dep.CreditUSD.Equal(decimal.RequireFromString("0.01")) || !dep.SpendUSD.Equal(decimal.RequireFromString("0.015")) {
		t.Errorf("depletion %+v", dep)
	}
	e.grant("ws_p", "1")
	e.usage("ws_p", time.Now().UTC().Add(-time.Minute), 140, 1000, 500) // $1.05 more: the $1.01 of credit used up again
	e.clock.set(e.clock.now().Add(depletionEvery))
	if res := e.detect(); len(res.Events) != 2 {
		t.Errorf("after more credit ran out: %v, want the grant and a second depletion", res.Events)
	}
}

// The backoff doubles from RetryBase up to RetryMax, plus at most 10 %, the same for a
// delivery and attempt however often it is asked.
func TestWebhookBackoff(t *testing.T) {
	c := Config{}
	var total time.Duration
	var rows []string
	for n := 1; n <= 30; n++ {
		d := c.Backoff(n, "wd_x")
		base := 6 * time.Hour
		if n <= 10 {
			base = 30 * time.Second << (n - 1)
		}
		if d < base || d > base+base/10 || d != c.Backoff(n, "wd_x") {
			t.Errorf("Backoff(%d) = %s, want %s to %s, stable", n, d, base, base+base/10)
		}
		total += base
		if total <= 72*time.Hour {
			rows = append(rows, fmt.Sprintf("%d:%s", n+1, total))
		}
	}
	t.Logf("attempts within 72h (attempt:due after the first, before jitter): %s", strings.Join(rows, " "))
	if len(rows) != 20 {
		t.Errorf("%d retries within 72h, want 20", len(rows))
	}
	// Jitter spreads deliveries that failed together.
	seen := map[time.Duration]bool{}
	for i := range 50 {
		seen[c.Backoff(3, fmt.Sprint("wd_", i))] = true
	}
	if len(seen) < 20 {
		t.Errorf("50 deliveries' third retry at only %d distinct delays", len(seen))
	}
}

func TestSignAndVerify(t *testing.T) {
	body := []byte(`{"id":"evt_1","type":"invoice.finalized"}`)
	now := time.Unix(1_800_000_000, 0)
	sig := Sign(body, now, "whsec_new", "whsec_old")
	cases := []struct {
		name   string
		body   []byte
		header string
		secret string
		at     time.Time
		want   error
	}{
		{"new secret", body, sig, "whsec_new", now, nil},
		{"old secret", body, sig, "whsec_old", now.Add(4 * time.Minute), nil},
		{"wrong secret", body, sig, "whsec_other", now, ErrBadSignature},
		{"body changed", append([]byte(nil), append(body, ' ')...), sig, "whsec_new", now, ErrBadSignature},
		{"too old", body, sig, "whsec_new", now.Add(6 * time.Minute), ErrTimestamp},
		{"from the future", body, sig, "whsec_new", now.Add(-6 * time.Minute), ErrTimestamp},
		{"timestamp changed", body, strings.Replace(sig, "t=1800000000", "t=1800000001", 1), "whsec_new", now, ErrBadSignature},
		{"no header", body, "", "whsec_new", now, ErrNoSignature},
		{"no v1", body, "t=1800000000,v0=abc", "whsec_new", now, ErrNoSignature},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := Verify(c.body, c.header, c.secret, DefaultTolerance, c.at); err != c.want {
				t.Errorf("Verify = %v, want %v", err, c.want)
			}
		})
	}
	if want := "t=1800000000,v1="; !strings.HasPrefix(sig, want) || len(strings.Split(sig, ",")) != 3 {
		t.Errorf("signature %q", sig)
	}
}

func TestEndpointSpec(t *testing.T) {
	for _, c := range []struct {
		spec EndpointSpec
		ok   bool
	}{
		{EndpointSpec{URL: "https://hooks.example.com/venna"}, true},
		{EndpointSpec{URL: "http://10.0.0.7:8080/in?token=abc&x=1"}, true},
		{EndpointSpec{URL: "https://hooks.example.com", EnabledEvents: []string{InvoiceFinalized, BudgetExceeded}}, true},
		{EndpointSpec{URL: "ftp://hooks.example.com/"}, false},
		{EndpointSpec{URL: "https://hooks.example.com/a b"}, false},
		{EndpointSpec{URL: "https://hooks.example.com/#frag"}, false},
		{EndpointSpec{URL: "https://hooks.example.com/%zz"}, false},
		{EndpointSpec{URL: "https:///path"}, false},
		{EndpointSpec{URL: "https://hooks.example.com/\n"}, false},
		{EndpointSpec{URL: "https://x/" + strings.Repeat("a", MaxURLLen)}, false},
		{EndpointSpec{URL: "https://x/", EnabledEvents: []string{"invoice.paid"}}, false},
		{EndpointSpec{URL: "https://x/", Description: strings.Repeat("é", MaxDescriptionLen+1)}, false},
	} {
		c.spec.Normalize()
		if err := c.spec.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: %v, want ok %t", c.spec, err, c.ok)
		}
	}
	s := EndpointSpec{EnabledEvents: []string{InvoiceVoided, InvoiceCreated, InvoiceVoided}}
	s.Normalize()
	if !slices.Equal(s.EnabledEvents, []string{InvoiceCreated, InvoiceVoided}) {
		t.Errorf("normalized %v", s.EnabledEvents)
	}
	s = EndpointSpec{EnabledEvents: []string{InvoiceVoided, AllEvents}}
	if s.Normalize(); !slices.Equal(s.EnabledEvents, []string{AllEvents}) {
		t.Errorf("normalized %v", s.EnabledEvents)
	}
	types := slices.Clone(EventTypes)
	sort.Strings(types)
	if len(slices.Compact(types)) != len(EventTypes) {
		t.Error("an event type is listed twice")
	}
	if (Endpoint{WorkspaceID: "ws_a", EnabledEvents: []string{AllEvents}}).Wants(InvoiceCreated, "ws_b") {
		t.Error("a workspace's endpoint wants another workspace's event")
	}
}
