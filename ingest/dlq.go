package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/venna/metering/schema"
)

// DLQTopicFor is the dead-letter topic of a usage topic when none is configured.
func DLQTopicFor(topic string) string { return topic + ".dlq" }

// Headers of a dead-lettered message. Its key and value are the original message's, and
// so are its other headers.
const (
	HeaderReason    = "venna-dlq-reason"    // why the message was refused (the validation error)
	HeaderTopic     = "venna-dlq-topic"     // where it was read: topic,
	HeaderPartition = "venna-dlq-partition" // partition,
	HeaderOffset    = "venna-dlq-offset"    // and offset
	HeaderTime      = "venna-dlq-time"      // when it was dead-lettered (RFC 3339, UTC)
	// HeaderRedriven marks a message that `venna dlq redrive` put back on the usage
	// topic: the DLQ topic/partition/offset it came from.
	HeaderRedriven = "venna-redriven-from"
)

// Reason classes: the label of the DLQ metric (the full reason is in the header).
const (
	reasonNotJSON       = "not_json"       // not a JSON object of the event's shape
	reasonSchemaVersion = "schema_version" // a schema_version this build does not know
	reasonContract      = "invalid"        // breaks a rule of the contract (schema.UsageEvent.Validate)
)

// check decodes and validates one message value; a non-nil error says why it is refused,
// and its class.
func check(value []byte, ev *schema.UsageEvent, strs *interner, validate func(*schema.UsageEvent) error) (class string, err error) {
	if err := decodeEvent(value, ev, strs); err != nil {
		return reasonNotJSON, fmt.Errorf("%w: not a usage event: %v", schema.ErrInvalidEvent, err)
	}
	if err := validate(ev); err != nil {
		if ev.SchemaVersion != schema.EventVersion {
			return reasonSchemaVersion, err
		}
		return reasonContract, err
	}
	return "", nil
}

// deadLetter is an invalid message on its way to the dead-letter topic.
type deadLetter struct {
	msg    kafka.Message
	class  string
	reason error
}

func (d deadLetter) message(now time.Time) kafka.Message {
	hs := make([]kafka.Header, 0, len(d.msg.Headers)+5)
	for _, h := range d.msg.Headers {
		if !strings.HasPrefix(h.Key, "venna-dlq-") {
			hs = append(hs, h)
		}
	}
	hs = append(hs,
		kafka.Header{Key: HeaderReason, Value: []byte(d.reason.Error())},
		kafka.Header{Key: HeaderTopic, Value: []byte(d.msg.Topic)},
		kafka.Header{Key: HeaderPartition, Value: []byte(strconv.Itoa(d.msg.Partition))},
		kafka.Header{Key: HeaderOffset, Value: []byte(strconv.FormatInt(d.msg.Offset, 10))},
		kafka.Header{Key: HeaderTime, Value: []byte(now.UTC().Format(time.RFC3339Nano))},
	)
	return kafka.Message{Key: d.msg.Key, Value: d.msg.Value, Headers: hs}
}

func newWriter(brokers []string, topic string) *kafka.Writer {
	return &kafka.Writer{
		Addr:                   kafka.TCP(brokers...),
		Topic:                  topic,
		Balancer:               &kafka.Hash{}, // by the original key (the workspace), like the gateway
		RequiredAcks:           kafka.RequireAll,
		BatchSize:              1000,
		BatchTimeout:           time.Millisecond,
		MaxAttempts:            1, // the caller retries, with its own backoff
		WriteTimeout:           10 * time.Second,
		AllowAutoTopicCreation: false,
		Transport:              &kafka.Transport{}, // not the shared default: its metadata cache is process-wide
	}
}

// RedriveConfig says where `venna dlq redrive` reads and writes.
type RedriveConfig struct {
	Brokers  []string
	Topic    string // the usage topic the fixed messages go back to
	DLQTopic string // default DLQTopicFor(Topic)
	Limit    int    // most DLQ messages to read; 0: all
	// Progress, if set, is called every 1000 messages read and once at the end: messages
	// read of the total to read, and how many were produced back so far. It is for showing
	// a long redrive's progress (venna dlq redrive on a terminal) and must not block.
	Progress func(read, total, redriven int)
}

// Validate names the first bad field.
func (c RedriveConfig) Validate() error {
	switch {
	case len(c.Brokers) == 0 || c.Brokers[0] == "":
		return errors.New("redrive: Brokers (VENNA_KAFKA_BROKERS) is empty")
	case c.Topic == "":
		return errors.New("redrive: Topic (VENNA_KAFKA_TOPIC) is empty")
	case c.Limit < 0:
		return errors.New("redrive: Limit is negative")
	}
	return nil
}

// RedriveResult counts what a redrive did.
type RedriveResult struct {
	Read     int            `json:"read"`      // DLQ messages read
	Redriven int            `json:"redriven"`  // now valid: produced back to the usage topic
	StillBad int            `json:"still_bad"` // still invalid: left in the DLQ
	Reasons  map[string]int `json:"still_bad_reasons,omitempty"`
}

// Redrive reads the dead-letter topic from its first offset up to its end as of the call
// (at most Limit messages) and produces every message that now validates — after a fix
// of the validation, or of data a producer sent — back to the usage topic, with its
// original key, value and headers. Messages that are still invalid are counted and left.
//
// Kafka cannot delete single messages, so a redriven message stays in the DLQ and a
// second redrive sends it again: that is harmless, since its event_id is already stored
// and every reader dedups on it (see README.md).
func Redrive(ctx context.Context, cfg RedriveConfig, log *slog.Logger) (RedriveResult, error) {
	res := RedriveResult{Reasons: map[string]int{}}
	if err := cfg.Validate(); err != nil {
		return res, err
	}
	if cfg.DLQTopic == "" {
		cfg.DLQTopic = DLQTopicFor(cfg.Topic)
	}
	client := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Timeout: 10 * time.Second, Transport: &kafka.Transport{}}
	_, offs, err := offsets(ctx, client, cfg.DLQTopic)
	if err != nil {
		return res, err
	}
	total := 0
	for _, o := range offs {
		total += int(max(o.LastOffset-o.FirstOffset, 0))
	}
	if cfg.Limit > 0 {
		total = min(total, cfg.Limit)
	}
	progress := func() {
		if cfg.Progress != nil {
			cfg.Progress(res.Read, total, res.Redriven)
		}
	}
	w := newWriter(cfg.Brokers, cfg.Topic)
	w.MaxAttempts = 10
	defer w.Close()
	var out []kafka.Message
	send := func() error {
		if len(out) == 0 {
			return nil
		}
		if err := w.WriteMessages(ctx, out...); err != nil {
			return fmt.Errorf("produce %d redriven messages to %s: %w", len(out), cfg.Topic, err)
		}
		res.Redriven += len(out)
		out = out[:0]
		return nil
	}
	for _, o := range offs {
		if o.Error != nil {
			return res, fmt.Errorf("offsets of %s/%d: %w", cfg.DLQTopic, o.Partition, o.Error)
		}
		if o.LastOffset <= o.FirstOffset {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: cfg.Brokers, Topic: cfg.DLQTopic, Partition: o.Partition,
			MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 250 * time.Millisecond})
		if err := r.SetOffset(o.FirstOffset); err != nil {
			r.Close()
			return res, fmt.Errorf("seek %s/%d: %w", cfg.DLQTopic, o.Partition, err)
		}
		for offset := o.FirstOffset; offset < o.LastOffset && (cfg.Limit == 0 || res.Read < cfg.Limit); {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				return res, fmt.Errorf("read %s/%d at %d: %w", cfg.DLQTopic, o.Partition, offset, err)
			}
			offset = m.Offset + 1
			res.Read++
			if res.Read%1000 == 0 {
				progress()
			}
			var ev schema.UsageEvent
			if class, err := check(m.Value, &ev, nil, (*schema.UsageEvent).Validate); err != nil {
				res.StillBad++
				res.Reasons[class]++
				log.Debug("dead letter still invalid", "partition", m.Partition, "offset", m.Offset, "err", err)
				continue
			}
			hs := make([]kafka.Header, 0, len(m.Headers)+1)
			for _, h := range m.Headers {
				if !strings.HasPrefix(h.Key, "venna-dlq-") && h.Key != HeaderRedriven {
					hs = append(hs, h)
				}
			}
			hs = append(hs, kafka.Header{Key: HeaderRedriven, Value: fmt.Appendf(nil, "%s/%d/%d", cfg.DLQTopic, m.Partition, m.Offset)})
			out = append(out, kafka.Message{Key: m.Key, Value: m.Value, Headers: hs})
			if len(out) == 1000 {
				if err := send(); err != nil {
					r.Close()
					return res, err
				}
			}
		}
		r.Close()
	}
	if err := send(); err != nil {
		return res, err
	}
	progress()
	log.Info("redrive done", "dlq", cfg.DLQTopic, "topic", cfg.Topic, "read", res.Read, "redriven", res.Redriven, "still_bad", res.StillBad)
	return res, nil
}
