package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/venna/metering/schema"
)

// ProducerConfig configures the Kafka producer behind Publish.
type ProducerConfig struct {
	Brokers    []string
	Topic      string
	BatchSize  int           // events per Kafka produce; default 1000
	MaxBackoff time.Duration // cap on the retry delay while Kafka is unreachable; default 5s
	Spool      SpoolConfig
}

// Validate names the first bad field.
func (c ProducerConfig) Validate() error {
	switch {
	case len(c.Brokers) == 0 || c.Brokers[0] == "":
		return errors.New("producer: Brokers (VENNA_KAFKA_BROKERS) is empty")
	case c.Topic == "":
		return errors.New("producer: Topic (VENNA_KAFKA_TOPIC) is empty")
	case c.BatchSize < 0:
		return errors.New("producer: BatchSize must not be negative")
	}
	return c.Spool.Validate()
}

// Producer makes usage events durable in the spool on Publish and ships them to Kafka
// from one goroutine, oldest first, keyed by workspace ID so that a workspace's events
// keep their order within a partition. A failed produce is retried with backoff, never
// dropped; while Kafka is unreachable events wait in the spool, which survives restarts.
type Producer struct {
	cfg   ProducerConfig
	w     *kafka.Writer
	spool *Spool
	log   *slog.Logger
	stop  context.CancelFunc
	done  chan struct{}

	spooled, refused, shipped, failures atomic.Int64
}

// NewProducer opens the spool (shipping what an earlier process left in it first) and
// starts the shipping goroutine; Close drains and stops it.
func NewProducer(cfg ProducerConfig, log *slog.Logger) (*Producer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 1000
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	spool, err := OpenSpool(cfg.Spool, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Producer{
		cfg:   cfg,
		spool: spool,
		w: &kafka.Writer{
			Addr:                   kafka.TCP(cfg.Brokers...),
			Topic:                  cfg.Topic,
			Balancer:               &kafka.Hash{},
			RequiredAcks:           kafka.RequireAll,
			BatchSize:              cfg.BatchSize,
			BatchTimeout:           time.Millisecond,
			MaxAttempts:            1, // retries are ours, so that nothing is ever given up on
			WriteTimeout:           10 * time.Second,
			Compression:            kafka.Lz4,
			AllowAutoTopicCreation: false,
			Transport:              &kafka.Transport{}, // not the shared default: its metadata cache is process-wide
		},
		log:  log,
		stop: cancel,
		done: make(chan struct{}),
	}
	go p.run(ctx)
	return p, nil
}

// Publish records ev durably (see Spool) and returns; shipping to Kafka happens later.
// It fails only when the spool is full or closed: the caller must then withhold the
// completion, since it could not be billed.
func (p *Producer) Publish(_ context.Context, ev schema.UsageEvent) error {
	// One buffer: frame header space | key length | key (workspace) | event JSON.
	rec := make([]byte, frameHeader+2, frameHeader+2+len(ev.WorkspaceID)+768)
	binary.LittleEndian.PutUint16(rec[frameHeader:], uint16(len(ev.WorkspaceID)))
	rec = append(rec, ev.WorkspaceID...)
	rec = ev.AppendJSON(rec)
	if err := p.spool.appendFrame(rec); err != nil {
		p.refused.Add(1)
		return err
	}
	p.spooled.Add(1)
	return nil
}

// ProducerStats counts what the producer did.
type ProducerStats struct {
	Shipped    int64 // events acknowledged by Kafka
	Failures   int64 // failed produce attempts (each retried)
	SpoolBytes int64 // bytes in the spool, shipped segments excluded
}

// Stats returns the producer's counters.
func (p *Producer) Stats() ProducerStats {
	return ProducerStats{Shipped: p.shipped.Load(), Failures: p.failures.Load(), SpoolBytes: p.spool.Bytes()}
}

func (p *Producer) run(ctx context.Context) {
	defer close(p.done)
	for {
		recs, pos, err := p.spool.Next(ctx, p.cfg.BatchSize)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			p.log.Error("read usage spool", "err", err)
			time.Sleep(time.Second)
			continue
		}
		msgs := make([]kafka.Message, 0, len(recs))
		for _, r := range recs {
			if len(r) < 2 || int(binary.LittleEndian.Uint16(r)) > len(r)-2 {
				p.log.Error("malformed usage spool record skipped", "bytes", len(r))
				continue
			}
			k := int(binary.LittleEndian.Uint16(r))
			msgs = append(msgs, kafka.Message{Key: r[2 : 2+k], Value: r[2+k:]})
		}
		if !p.ship(ctx, msgs) {
			return // stopping: the records stay in the spool for the next process
		}
		p.shipped.Add(int64(len(msgs)))
		if err := p.spool.Ack(pos); err != nil {
			p.log.Error("advance usage spool cursor", "err", err)
		}
	}
}

// ship retries until Kafka takes the batch or ctx ends. A retry after a timeout may write
// a batch twice; the event_id dedup downstream makes that harmless, while giving up would
// lose usage.
func (p *Producer) ship(ctx context.Context, batch []kafka.Message) bool {
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := p.w.WriteMessages(ctx, batch...)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		p.failures.Add(1)
		if attempt == 1 || attempt%20 == 0 {
			p.log.Warn("kafka produce failed; events wait in the spool", "events", len(batch), "attempt", attempt, "spool_bytes", p.spool.Bytes(), "err", err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, p.cfg.MaxBackoff)
	}
}

// Close stops taking events and waits until the spool is shipped or ctx ends; what is
// not shipped by then stays in the spool for the next start.
func (p *Producer) Close(ctx context.Context) error {
	p.spool.closeAppends()
	var err error
	for p.spool.Pending() {
		select {
		case <-ctx.Done():
			err = fmt.Errorf("drain usage spool: %d bytes left for the next start: %w", p.spool.Bytes(), ctx.Err())
		case <-time.After(10 * time.Millisecond):
			continue
		}
		break
	}
	p.stop()
	<-p.done
	return errors.Join(err, p.w.Close(), p.spool.Close())
}
