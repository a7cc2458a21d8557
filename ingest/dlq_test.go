package ingest

import (
	"errors"
	"strings"
	"testing"

	"github.com/venna/metering/internal/testenv"
	"github.com/venna/metering/schema"
)

// A build whose validation wrongly refuses a model dead-letters that model's events; after
// the fix (the real validation), a redrive sends them back and they are billed, once,
// however often the redrive runs. Truly bad messages stay in the DLQ and are counted.
func TestRedriveAfterAFix(t *testing.T) {
	chCfg, conn := testenv.ClickHouse(t)
	brokers, topic := testenv.Topic(t, 2)
	evs := testEvents(300, "ws_redrive")
	for i := range evs {
		if i%3 == 0 {
			evs[i].Model = "venna-1-mini" // the model the buggy build refuses: 100 events
		}
	}
	produce(t, brokers, topic, evs, []byte("not json"), []byte(`{"schema_version":7}`))

	buggy := newConsumer(t, brokers, topic, "g-redrive", chCfg.Database, conn, 1000)
	buggy.validate = func(e *schema.UsageEvent) error {
		if e.Model == "venna-1-mini" {
			return errors.New("model venna-1-mini is unknown (a bug)")
		}
		return e.Validate()
	}
	stop := start(buggy)
	waitUntil(t, "the buggy consumer to dead-letter", func() bool { return buggy.Stats().Invalid == 102 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := count(t, conn, chCfg.Database); got.distinct != 200 {
		t.Fatalf("%d events stored before the fix, want the 200 the bug let through", got.distinct)
	}

	fixed := newConsumer(t, brokers, topic, "g-redrive", chCfg.Database, conn, 1000)
	stop = start(fixed)
	defer stop()
	cfg := RedriveConfig{Brokers: brokers, Topic: topic}

	t.Run("limit", func(t *testing.T) {
		res, err := Redrive(t.Context(), RedriveConfig{Brokers: brokers, Topic: topic, Limit: 10}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		if res.Read != 10 || res.Redriven+res.StillBad != 10 {
			t.Errorf("with --limit 10: %+v, want 10 read", res)
		}
	})
	t.Run("all", func(t *testing.T) {
		res, err := Redrive(t.Context(), cfg, quiet)
		if err != nil {
			t.Fatal(err)
		}
		if res.Read != 102 || res.Redriven != 100 || res.StillBad != 2 || res.Reasons[reasonNotJSON] != 1 || res.Reasons[reasonSchemaVersion] != 1 {
			t.Errorf("redrive: %+v, want 102 read, 100 redriven, 2 still bad (1 not_json, 1 schema_version)", res)
		}
		waitUntil(t, "the redriven events", func() bool { return count(t, conn, chCfg.Database).distinct == 300 })
	})
	t.Run("again", func(t *testing.T) {
		before := fixed.Stats().Inserted
		res, err := Redrive(t.Context(), cfg, quiet)
		if err != nil {
			t.Fatal(err)
		}
		if res.Redriven != 100 {
			t.Errorf("second redrive: %+v, want the same 100 redriven again", res)
		}
		waitUntil(t, "the second copies", func() bool { return fixed.Stats().Inserted >= before+100 })
		billedOnce(t, conn, chCfg.Database, evs)
	})
	t.Run("redriven messages are marked", func(t *testing.T) {
		var marked int
		for _, m := range readAll(t, brokers, topic, -1) {
			if from := header(m, HeaderRedriven); from != "" {
				marked++
				if !strings.HasPrefix(from, DLQTopicFor(topic)+"/") || header(m, HeaderReason) != "" {
					t.Errorf("redriven message headers %v", m.Headers)
				}
			}
		}
		if marked < 200 {
			t.Errorf("%d messages on the usage topic carry %s, want at least 200", marked, HeaderRedriven)
		}
	})
}
